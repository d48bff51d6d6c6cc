// limits.test.mjs - concurrency and queue limits (429 + Retry-After), SSE keep-alive, request timeout, prompt and max_tokens bounds, a config file.
import assert from "node:assert/strict";
import fs from "node:fs";
import {after, before, describe, test} from "node:test";

import {metrics, MODEL_NAME, Pipeline, postJSON, sleep, sseEvents, streamText, waitFor} from "./lib.mjs";

// A worker stopped with SIGSTOP holds every request where it is: the router and the HTTP
// server see a pipeline that makes no progress, deterministically. The router's liveness
// is raised so that the paused worker is not declared dead meanwhile.
const pause = (p) => process.kill(p.pid("worker0"), "SIGSTOP");
const resume = (p) => process.kill(p.pid("worker0"), "SIGCONT");

// Starts a streaming request and collects its body as it arrives.
function streamInto(p, body) {
    const out = {text: "", status: 0};
    out.done = fetch(p.url("/v1/completions"), {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({...body, stream: true})})
        .then(async (res) => {
            out.status = res.status;
            const dec = new TextDecoder();
            for await (const chunk of res.body)
                out.text += dec.decode(chunk, {stream: true});
        });
    return out;
}

describe("limits from a config file: 1 generating, 1 queued, 1 s keep-alive", () => {
    let p, conf;
    before(async () => {
        conf = `/tmp/llorch-http-limits-${process.pid}.conf`;
        fs.writeFileSync(conf, "# the HTTP API's limits\nhttp-max-concurrent = 1\nhttp-max-queue = 1\n" +
                               "http-keepalive = 1\nhttp-max-prompt-tokens = 12\nhttp-max-tokens = 64\n");
        p = await new Pipeline({routerArgs: ["--config", conf, "--liveness", "20"]}).start();
    });
    after(async () => {
        if (p) {
            try { resume(p); } catch { /* already running */ }
            await p.stop();
        }
        fs.rmSync(conf, {force: true});
    });

    const base = {model: MODEL_NAME, prompt: "Once upon a time", temperature: 0, max_tokens: 20};

    test("a full queue answers 429 with Retry-After; silent streams get keep-alive comments", async () => {
        pause(p);
        const a = streamInto(p, base);
        await waitFor("the first request to hold the slot", async () =>
            (await metrics(p)).values.llorch_http_requests_in_flight === 1);
        const b = streamInto(p, base);
        await waitFor("the second request to queue", async () =>
            (await metrics(p)).values.llorch_http_queue_depth === 1);
        const c = await postJSON(p, "/v1/completions", base);
        assert.equal(c.status, 429);
        assert.equal(c.res.headers.get("retry-after"), "1");
        assert.equal(c.json.error.type, "rate_limit_error");
        assert.match(c.json.error.message, /--http-max-queue 1/);
        await sleep(1600);
        assert.match(a.text, /^: keep-alive\n\n/, "the generating stream is kept alive");
        assert.match(b.text, /^: keep-alive\n\n/, "the queued stream is kept alive");
        resume(p);
        await Promise.all([a.done, b.done]);
        for (const s of [a, b]) {
            const events = sseEvents(s.text);
            assert.ok(events.some((e) => e.comment === ": keep-alive"));
            assert.deepEqual(events.at(-1), {done: true});
            assert.equal(streamText(events).finish, "length");
        }
        assert.equal(streamText(sseEvents(a.text)).text, streamText(sseEvents(b.text)).text);
        const m = (await metrics(p)).values;
        assert.ok(m.llorch_http_rejected_busy_total >= 1);
        assert.ok(m['llorch_http_requests_total{endpoint="/v1/completions",code="429"}'] >= 1);
    });

    test("prompt tokens and max_tokens are bounded", async () => {
        const long = await postJSON(p, "/v1/completions", {...base, prompt: "one two three four five six seven eight nine ten eleven twelve"});
        assert.equal(long.status, 400);
        assert.equal(long.json.error.code, "context_length_exceeded");
        assert.match(long.json.error.message, /at most 12 are allowed/);
        const many = await postJSON(p, "/v1/completions", {...base, max_tokens: 65});
        assert.equal(many.status, 400);
        assert.equal(many.json.error.param, "max_tokens");
        assert.match(many.json.error.message, /\[1, 64\]/);
    });
});

describe("the request timeout", () => {
    let p;
    before(async () => {
        p = await new Pipeline({routerArgs: ["--http-timeout", "1", "--liveness", "20"]}).start();
    });
    after(async () => {
        if (p) {
            try { resume(p); } catch { /* already running */ }
            await p.stop();
        }
    });

    test("a request that outlives --http-timeout is cancelled: 504, or an error event when streaming", async () => {
        const body = {model: MODEL_NAME, prompt: "Once upon a time", temperature: 0, max_tokens: 20};
        pause(p);
        const stream = streamInto(p, body);
        const t0 = Date.now();
        const r = await postJSON(p, "/v1/completions", body);
        assert.equal(r.status, 504);
        assert.equal(r.json.error.code, "timeout");
        assert.match(r.json.error.message, /longer than 1 s/);
        assert.ok(Date.now() - t0 < 6000);
        resume(p);
        await stream.done;
        const events = sseEvents(stream.text);
        assert.equal(events.at(-1).data?.error?.code, "timeout");
        await waitFor("the sessions to be freed", async () => {
            const v = (await metrics(p)).values;
            return v.llorch_router_sessions_active === 0 && v.llorch_http_requests_in_flight === 0;
        });
        assert.equal((await metrics(p)).values.llorch_http_cancelled_timeout_total, 2);
        const ok = await postJSON(p, "/v1/completions", body);
        assert.equal(ok.status, 200, "the server serves on afterwards");
    });
});
