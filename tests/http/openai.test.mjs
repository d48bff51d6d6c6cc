// openai.test.mjs - the official openai npm client against llorch's HTTP API: completions and chat, streamed and not, equal to the in-process text.
import assert from "node:assert/strict";
import {after, before, describe, test} from "node:test";

import {inProcessText, MODEL_NAME, openaiClass, Pipeline, startUp} from "./lib.mjs";

describe("the openai client against llorch-router --http (2 workers)", () => {
    let p, client;
    before(async () => {
        p = await new Pipeline({splits: ["0:3", "3:5"]}).start();
        const OpenAI = await openaiClass();
        client = new OpenAI({baseURL: p.url("/v1"), apiKey: "unused", maxRetries: 0});
    });
    after(async () => p && p.stop());

    const prompt = "Once upon a time";

    test("models.list names the served model", async () => {
        const ids = [];
        for await (const m of client.models.list())
            ids.push(m.id);
        assert.deepEqual(ids, [MODEL_NAME]);
    });

    test("greedy completion: non-streamed == streamed == in-process generate", async () => {
        const want = inProcessText(prompt, 48);
        const r = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 48,
                                                   temperature: 0});
        assert.equal(r.object, "text_completion");
        assert.equal(r.choices[0].text, want);
        assert.equal(r.choices[0].finish_reason, "length");
        assert.equal(r.usage.completion_tokens, 48);
        assert.equal(r.usage.prompt_tokens, 5);
        assert.equal(r.usage.total_tokens, 53);

        const stream = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 48,
                                                        temperature: 0, stream: true});
        let text = "", finish = null, chunks = 0;
        for await (const chunk of stream) {
            text += chunk.choices[0].text;
            finish = chunk.choices[0].finish_reason ?? finish;
            chunks++;
        }
        assert.equal(text, want);
        assert.equal(finish, "length");
        assert.ok(chunks >= 10, `token by token: ${chunks} chunks`);
    });

    test("greedy chat: non-streamed == streamed, with usage, role and finish_reason", async () => {
        const messages = [{role: "system", content: "You tell short stories."},
                          {role: "user", content: "Tell me about a cat."}];
        const r = await client.chat.completions.create({model: MODEL_NAME, messages, max_tokens: 40,
                                                        temperature: 0});
        assert.equal(r.object, "chat.completion");
        assert.equal(r.choices[0].message.role, "assistant");
        assert.ok(r.choices[0].message.content.length > 0);
        assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
        assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);

        const stream = await client.chat.completions.create({model: MODEL_NAME, messages,
                                                             max_tokens: 40, temperature: 0,
                                                             stream: true,
                                                             stream_options: {include_usage: true}});
        let text = "", role = null, finish = null, usage = null;
        for await (const chunk of stream) {
            if (chunk.usage)
                usage = chunk.usage;
            const c = chunk.choices[0];
            if (!c)
                continue;
            role = c.delta.role ?? role;
            text += c.delta.content ?? "";
            finish = c.finish_reason ?? finish;
        }
        assert.equal(role, "assistant");
        assert.equal(text, r.choices[0].message.content);
        assert.equal(finish, r.choices[0].finish_reason);
        assert.deepEqual(usage, r.usage);
    });

    test("a multi-turn chat renders and generates", async () => {
        const r = await client.chat.completions.create({
            model: MODEL_NAME, max_tokens: 16, temperature: 0,
            messages: [{role: "user", content: "Hi"}, {role: "assistant", content: "Hello."},
                       {role: "user", content: "Go on"}]});
        assert.ok(r.usage.prompt_tokens > 10);
        assert.equal(r.usage.completion_tokens <= 16, true);
    });

    test("stop strings end the text before them, streamed or not", async () => {
        const full = inProcessText(prompt, 60);
        const stop = "Lily";
        assert.ok(full.includes(stop), `the reference text has "${stop}": ${full}`);
        const want = full.slice(0, full.indexOf(stop));
        const r = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 60,
                                                   temperature: 0, stop: [stop, "zzzz"]});
        assert.equal(r.choices[0].text, want);
        assert.equal(r.choices[0].finish_reason, "stop");
        const stream = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 60,
                                                        temperature: 0, stop, stream: true});
        let text = "";
        for await (const chunk of stream)
            text += chunk.choices[0].text;
        assert.equal(text, want);
    });

    test("logprobs: one entry per token with top alternatives", async () => {
        const r = await client.chat.completions.create({
            model: MODEL_NAME, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3,
            messages: [{role: "user", content: "Hi"}]});
        const content = r.choices[0].logprobs.content;
        assert.equal(content.length, r.usage.completion_tokens);
        for (const t of content) {
            assert.equal(t.top_logprobs.length, 3);
            assert.ok(t.logprob <= 0);
            /* greedy: the sampled token is the most probable one */
            assert.equal(t.logprob, t.top_logprobs[0].logprob);
        }
        const c = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 4,
                                                   temperature: 0, logprobs: 2});
        assert.equal(c.choices[0].logprobs.tokens.join(""), c.choices[0].text);
        assert.equal(c.choices[0].logprobs.token_logprobs.length, 4);
    });

    test("a seed makes sampling reproducible", async () => {
        const ask = () => client.completions.create({model: MODEL_NAME, prompt, max_tokens: 24,
                                                     temperature: 1, seed: 1234});
        const [a, b] = [await ask(), await ask()];
        assert.equal(a.choices[0].text, b.choices[0].text);
    });

    test("errors arrive as the client's typed errors", async () => {
        await assert.rejects(client.completions.create({model: "gpt-4", prompt, max_tokens: 4}),
                             (e) => e.status === 404 && /does not exist/.test(e.message));
        await assert.rejects(client.completions.create({model: MODEL_NAME, prompt, top_p: 3}),
                             (e) => e.status === 400 && e.param === "top_p" &&
                                    /\[0, 1\]/.test(e.message));
    });
});

describe("llorch up --http", () => {
    test("starts the whole pipeline with the HTTP API, served to the openai client", async () => {
        const up = await startUp(["--workers", "2", "--http-model-name", MODEL_NAME]);
        try {
            const OpenAI = await openaiClass();
            const client = new OpenAI({baseURL: `http://127.0.0.1:${up.port}/v1`, apiKey: "unused",
                                       maxRetries: 0});
            const r = await client.completions.create({model: MODEL_NAME, prompt: "The little dog",
                                                       max_tokens: 24, temperature: 0});
            assert.equal(r.choices[0].text, inProcessText("The little dog", 24));
        } finally {
            await up.stop();
        }
    });
});
