// api.test.mjs - the HTTP API at the wire: SSE framing, every error path, /metrics, and a client that disconnects mid-stream.
import assert from "node:assert/strict";
import {after, before, describe, test} from "node:test";

import {metrics, MODEL_NAME, Pipeline, postJSON, sseEvents, streamText, waitFor} from "./lib.mjs";

describe("HTTP API at the wire", () => {
    let p;
    before(async () => { p = await new Pipeline().start(); });
    after(async () => p && p.stop());

    const base = {model: MODEL_NAME, prompt: "Once upon a time", temperature: 0};

    test("SSE framing: data events, one JSON object each, [DONE] last", async () => {
        const r = await postJSON(p, "/v1/completions", {...base, max_tokens: 12, stream: true});
        assert.equal(r.status, 200);
        assert.match(r.res.headers.get("content-type"), /^text\/event-stream/);
        assert.equal(r.res.headers.get("cache-control"), "no-cache");
        const events = sseEvents(r.text);
        assert.deepEqual(events.at(-1), {done: true});
        const data = events.filter((e) => e.data);
        assert.equal(data.length, 13, "12 tokens and a closing chunk");
        const ids = new Set(data.map((e) => e.data.id));
        assert.equal(ids.size, 1, "one id for the whole stream");
        assert.match([...ids][0], /^cmpl-[0-9a-f]+$/);
        for (const e of data) {
            assert.equal(e.data.object, "text_completion");
            assert.equal(e.data.model, MODEL_NAME);
            assert.equal(e.data.choices.length, 1);
        }
        assert.equal(data.at(-1).data.choices[0].finish_reason, "length");
        assert.ok(data.slice(0, -1).every((e) => e.data.choices[0].finish_reason === null));
        const whole = await postJSON(p, "/v1/completions", {...base, max_tokens: 12});
        assert.equal(streamText(events).text, whole.json.choices[0].text);
    });

    test("chat SSE: the role first, content deltas, usage chunk on request", async () => {
        const r = await postJSON(p, "/v1/chat/completions", {
            model: MODEL_NAME, temperature: 0, max_tokens: 5, stream: true,
            stream_options: {include_usage: true}, messages: [{role: "user", content: "Hi"}]});
        const data = sseEvents(r.text).filter((e) => e.data).map((e) => e.data);
        assert.deepEqual(data[0].choices[0].delta, {role: "assistant", content: ""});
        assert.equal(data[0].object, "chat.completion.chunk");
        const usage = data.at(-1);
        assert.deepEqual(usage.choices, []);
        assert.equal(usage.usage.completion_tokens, 5);
        assert.equal(data.at(-2).choices[0].finish_reason, "length");
    });

    // Each: body, status, param, a piece of the message.
    const bad = [
        ["{not json", 400, null, /not valid JSON/],
        ["[1,2]", 400, null, /JSON object/],
        [{prompt: "x"}, 400, "model", /model is missing/],
        [{model: "no-such-model", prompt: "x"}, 404, "model", /does not exist/],
        [{model: MODEL_NAME}, 400, "prompt", /prompt is missing/],
        [{model: MODEL_NAME, prompt: {}}, 400, "prompt", /prompt must be/],
        [{model: MODEL_NAME, prompt: [1, 99999]}, 400, "prompt", /token id/],
        [{model: MODEL_NAME, prompt: "x", max_tokens: "8"}, 400, "max_tokens", /integer/],
        [{model: MODEL_NAME, prompt: "x", max_tokens: 0}, 400, "max_tokens", /is 0/],
        [{model: MODEL_NAME, prompt: "x", max_tokens: 100000}, 400, "max_tokens", /\[1, 4096\]/],
        [{model: MODEL_NAME, prompt: "x", temperature: -1}, 400, "temperature", /\[0, 2\]/],
        [{model: MODEL_NAME, prompt: "x", temperature: "warm"}, 400, "temperature", /number/],
        [{model: MODEL_NAME, prompt: "x", top_p: 1.01}, 400, "top_p", /\[0, 1\]/],
        [{model: MODEL_NAME, prompt: "x", top_k: 1.5}, 400, "top_k", /integer/],
        [{model: MODEL_NAME, prompt: "x", min_p: -0.5}, 400, "min_p", /\[0, 1\]/],
        [{model: MODEL_NAME, prompt: "x", seed: "x"}, 400, "seed", /integer/],
        [{model: MODEL_NAME, prompt: "x", presence_penalty: 9}, 400, "presence_penalty", /\[-2, 2\]/],
        [{model: MODEL_NAME, prompt: "x", frequency_penalty: -3}, 400, "frequency_penalty", /\[-2, 2\]/],
        [{model: MODEL_NAME, prompt: "x", n: 3}, 400, "n", /n must be 1/],
        [{model: MODEL_NAME, prompt: "x", stop: 5}, 400, "stop", /string or an array/],
        [{model: MODEL_NAME, prompt: "x", stop: [""]}, 400, "stop", /1\.\.256 bytes/],
        [{model: MODEL_NAME, prompt: "x", stream: "yes"}, 400, "stream", /true or false/],
        [{model: MODEL_NAME, prompt: "x", logprobs: 50}, 400, "logprobs", /\[0, 20\]/],
        [{model: MODEL_NAME, prompt: "x", echo: true}, 400, "echo", /not supported/],
    ];
    for (const [body, status, param, message] of bad) {
        test(`completions: ${JSON.stringify(body).slice(0, 70)} -> ${status}`, async () => {
            const r = await postJSON(p, "/v1/completions", body);
            assert.equal(r.status, status, r.text);
            assert.match(r.res.headers.get("content-type"), /application\/json/);
            assert.deepEqual(Object.keys(r.json.error).sort(), ["code", "message", "param", "type"]);
            assert.equal(r.json.error.param, param);
            assert.match(r.json.error.message, message);
            assert.equal(typeof r.json.error.type, "string");
        });
    }

    test("chat errors: roles, order, content", async () => {
        const cases = [
            [[], /empty/], [[{role: "user"}], /content/], [[{role: "robot", content: "x"}], /system, user or assistant/],
            [[{role: "assistant", content: "x"}], /user was expected/],
            [[{role: "user", content: "x"}, {role: "assistant", content: "y"}], /last message/],
        ];
        for (const [messages, message] of cases) {
            const r = await postJSON(p, "/v1/chat/completions", {model: MODEL_NAME, messages});
            assert.equal(r.status, 400, r.text);
            assert.match(r.json.error.message, message);
        }
        const none = await postJSON(p, "/v1/chat/completions", {model: MODEL_NAME});
        assert.equal(none.json.error.param, "messages");
    });

    test("an oversize body gets 413 before it is read", async () => {
        const big = JSON.stringify({model: MODEL_NAME, prompt: "a".repeat(2 << 20)});
        const r = await postJSON(p, "/v1/completions", big);
        assert.equal(r.status, 413);
        assert.match(r.json.error.message, /at most 1048576/);
    });

    test("unknown endpoints and methods", async () => {
        let r = await fetch(p.url("/v2/things"));
        assert.equal(r.status, 404);
        assert.match((await r.json()).error.message, /no such endpoint/);
        r = await fetch(p.url("/v1/completions"));
        assert.equal(r.status, 405);
        assert.equal(r.headers.get("allow"), "POST");
        r = await fetch(p.url("/v1/models"), {method: "DELETE"});
        assert.equal(r.status, 405);
        r = await fetch(p.url(`/v1/models/${MODEL_NAME}`));
        assert.equal((await r.json()).id, MODEL_NAME);
        r = await fetch(p.url("/v1/models/other"));
        assert.equal(r.status, 404);
    });

    test("/metrics: Prometheus text with requests, tokens, latency, queue, sessions, workers", async () => {
        await postJSON(p, "/v1/completions", {...base, max_tokens: 7});
        const m = await metrics(p);
        assert.equal(m.status, 200);
        for (const family of ["llorch_http_requests_total", "llorch_http_time_to_first_token_seconds",
                              "llorch_http_tokens_per_second", "llorch_http_queue_depth",
                              "llorch_router_sessions_active", "llorch_router_workers_alive"])
            assert.match(m.text, new RegExp(`^# TYPE ${family} `, "m"), family);
        const v = m.values;
        assert.ok(v['llorch_http_requests_total{endpoint="/v1/completions",code="200"}'] >= 1);
        assert.ok(v['llorch_http_requests_total{endpoint="/v1/completions",code="400"}'] >= 1);
        assert.ok(v.llorch_http_completion_tokens_total >= 7);
        assert.ok(v.llorch_http_time_to_first_token_seconds_count >= 1);
        assert.equal(v.llorch_router_up, 1);
        assert.equal(v.llorch_router_workers_alive, 1);
        // Per-worker liveness, labelled with the worker's id.
        const alive = Object.keys(v).filter(k => k.startsWith("llorch_router_worker_alive{id="));
        assert.equal(alive.length, 1, m.text);
        assert.equal(v[alive[0]], 1);
        assert.equal(v.llorch_router_pipelines_ready, 1);
        assert.equal(v.llorch_http_requests_in_flight, 0);
        assert.ok(v.llorch_router_tokens_out >= v.llorch_http_completion_tokens_total);
    });

    test("a client that disconnects mid-stream cancels its generation and frees the session", async () => {
        const before0 = (await metrics(p)).values;
        const ctrl = new AbortController();
        const res = await fetch(p.url("/v1/completions"), {
            method: "POST", signal: ctrl.signal, headers: {"Content-Type": "application/json"},
            body: JSON.stringify({...base, max_tokens: 2000, stream: true})});
        const reader = res.body.getReader();
        let got = "";
        while (!got.includes("\n\ndata: ")) /* two events: generation is under way */
            got += new TextDecoder().decode((await reader.read()).value);
        const during = (await metrics(p)).values;
        assert.equal(during.llorch_http_requests_in_flight, 1);
        ctrl.abort();
        await waitFor("the session to end", async () => {
            const v = (await metrics(p)).values;
            return v.llorch_router_sessions_active === 0 && v.llorch_http_requests_in_flight === 0 &&
                   v.llorch_router_sessions_done === before0.llorch_router_sessions_done + 1;
        });
        const v = (await metrics(p)).values;
        assert.equal(v.llorch_http_cancelled_client_total, before0.llorch_http_cancelled_client_total + 1);
        assert.equal(v.llorch_router_sessions_done, before0.llorch_router_sessions_done + 1);
        const made = v.llorch_router_tokens_out - before0.llorch_router_tokens_out;
        assert.ok(made < 2000, `generation stopped early (${made} of 2000 tokens)`);
    });

    test("a non-streaming client that disconnects cancels too", async () => {
        const before0 = (await metrics(p)).values;
        const ctrl = new AbortController();
        const pending = fetch(p.url("/v1/completions"), {
            method: "POST", signal: ctrl.signal, headers: {"Content-Type": "application/json"},
            body: JSON.stringify({...base, max_tokens: 2000})}).catch((e) => e);
        await waitFor("the request to start", async () =>
            (await metrics(p)).values.llorch_router_sessions_active === 1);
        ctrl.abort();
        await pending;
        await waitFor("the session to end", async () => {
            const v = (await metrics(p)).values;
            return v.llorch_router_sessions_active === 0 &&
                   v.llorch_router_sessions_done === before0.llorch_router_sessions_done + 1;
        });
        const v = (await metrics(p)).values;
        assert.equal(v.llorch_http_cancelled_client_total, before0.llorch_http_cancelled_client_total + 1);
        assert.ok(v.llorch_router_tokens_out - before0.llorch_router_tokens_out < 2000);
    });
});
