// auth_health.test.mjs - API keys (Bearer, /health public) and /health through start-up, a lost worker and its return.
import assert from "node:assert/strict";
import fs from "node:fs";
import {after, before, describe, test} from "node:test";

import {metrics, MODEL_NAME, openaiClass, Pipeline, postJSON, waitFor} from "./lib.mjs";

describe("API keys", () => {
    let p, keys;
    before(async () => {
        keys = `/tmp/llorch-http-keys-${process.pid}`;
        fs.writeFileSync(keys, "# clients\nsk-test-alpha\nsk-test-beta\n", {mode: 0o600});
        p = await new Pipeline({routerArgs: ["--api-key-file", keys]}).start();
    });
    after(async () => {
        if (p)
            await p.stop();
        fs.rmSync(keys, {force: true});
    });

    const body = {model: MODEL_NAME, prompt: "Once", max_tokens: 3, temperature: 0};

    test("a missing or wrong key gets 401; /health stays public", async () => {
        let r = await postJSON(p, "/v1/completions", body);
        assert.equal(r.status, 401);
        assert.equal(r.res.headers.get("www-authenticate"), "Bearer");
        assert.equal(r.json.error.code, "invalid_api_key");
        assert.match(r.json.error.message, /API key is required/);
        for (const auth of ["Bearer sk-test-alph", "Bearer sk-test-alphaX", "sk-test-alpha", "Basic abc"]) {
            r = await postJSON(p, "/v1/completions", body, {Authorization: auth});
            assert.equal(r.status, 401, auth);
            assert.match(r.json.error.message, /not valid/);
        }
        assert.equal((await fetch(p.url("/v1/models"))).status, 401);
        assert.equal((await metrics(p)).status, 401);
        assert.equal((await fetch(p.url("/health"))).status, 200);
    });

    test("a listed key is accepted, also through the openai client", async () => {
        const r = await postJSON(p, "/v1/completions", body, {Authorization: "Bearer sk-test-beta"});
        assert.equal(r.status, 200);
        const OpenAI = await openaiClass();
        const client = new OpenAI({baseURL: p.url("/v1"), apiKey: "sk-test-alpha", maxRetries: 0});
        const c = await client.completions.create(body);
        assert.equal(c.choices[0].text, r.json.choices[0].text);
        const wrong = new OpenAI({baseURL: p.url("/v1"), apiKey: "sk-nope", maxRetries: 0});
        await assert.rejects(wrong.completions.create(body), (e) => e.status === 401);
        assert.equal((await metrics(p, {Authorization: "Bearer sk-test-alpha"})).status, 200);
    });
});

describe("/health through the pipeline's life", () => {
    let p;
    before(() => {
        p = new Pipeline({routerArgs: ["--heartbeat-ms", "100", "--liveness", "3"]});
    });
    after(async () => p && p.stop());

    test("503 loading, 503 without workers, 200 ready, 503 after a lost worker, 200 again", async () => {
        await p.startRouter(); /* no loader yet: the router waits for the manifest */
        let r = await fetch(p.url("/health"));
        assert.equal(r.status, 503);
        assert.equal(r.headers.get("retry-after"), "1");
        let h = await r.json();
        assert.equal(h.status, "loading");
        assert.match(h.reason, /manifest/);
        const gen = await postJSON(p, "/v1/completions", {model: MODEL_NAME, prompt: "x"});
        assert.equal(gen.status, 503);
        assert.equal(gen.json.error.code, "model_not_ready");
        assert.equal((await metrics(p)).values.llorch_http_model_ready, 0);

        p.startLoader();
        h = await p.waitHealth(503, 10000);
        await waitFor("the manifest", async () => {
            h = await (await fetch(p.url("/health"))).json();
            return h.status === "unavailable";
        });
        assert.match(h.reason, /no pipeline covers all 5 layers/);
        assert.equal(h.workers_alive, 0);

        p.startWorker(0);
        h = await p.waitHealth(200);
        assert.equal(h.status, "ok");
        assert.equal(h.pipelines_ready, 1);
        assert.equal(h.workers_alive, 1);

        await p.kill("worker0", "SIGKILL");
        h = await p.waitHealth(503, 10000);
        assert.equal(h.status, "unavailable");
        const lost = await postJSON(p, "/v1/completions", {model: MODEL_NAME, prompt: "x", max_tokens: 2});
        assert.ok(lost.status >= 500, `no pipeline: ${lost.status} ${lost.text}`);

        p.startWorker(0);
        await p.waitHealth(200);
        const ok = await postJSON(p, "/v1/completions", {model: MODEL_NAME, prompt: "x", max_tokens: 2});
        assert.equal(ok.status, 200);
    });
});
