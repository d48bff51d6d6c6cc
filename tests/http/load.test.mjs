// load.test.mjs - a bounded load: 32 concurrent streaming clients, every text correct, no errors, the router's memory flat.
import assert from "node:assert/strict";
import {after, before, describe, test} from "node:test";

import {metrics, MODEL_NAME, Pipeline, postJSON, sseEvents, streamText, waitFor} from "./lib.mjs";

const CLIENTS = 32;
const ROUNDS = 4;           /* the first one warms up (threads, arenas, pooled clients) */
const MAX_TOKENS = 32;
const PROMPTS = ["Once upon a time", "The little dog", "Lily and Tom went", "One day, a bird",
                 "The sun was", "In the park", "Mom said", "A big red ball"];

describe(`${CLIENTS} concurrent streaming clients, ${ROUNDS} rounds`, () => {
    let p;
    const want = {};
    before(async () => {
        p = await new Pipeline({splits: ["0:3", "3:5"]}).start();
        for (const prompt of PROMPTS) {
            const r = await postJSON(p, "/v1/completions", {model: MODEL_NAME, prompt, temperature: 0,
                                                            max_tokens: MAX_TOKENS});
            assert.equal(r.status, 200, r.text);
            want[prompt] = r.json.choices[0].text;
        }
    });
    after(async () => p && p.stop());

    async function one(i) {
        const prompt = PROMPTS[i % PROMPTS.length];
        const res = await fetch(p.url(i % 2 ? "/v1/completions" : "/completions"), {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({model: MODEL_NAME, prompt, temperature: 0, max_tokens: MAX_TOKENS,
                                  stream: true})});
        const text = await res.text();
        return {prompt, status: res.status, ...streamText(sseEvents(text))};
    }

    test("every stream completes with the text it has alone; memory stays flat", async (t) => {
        const rss = [];
        let batched = 0;
        for (let round = 0; round < ROUNDS; round++) {
            const results = await Promise.all(Array.from({length: CLIENTS}, (_, i) => one(i)));
            for (const r of results) {
                assert.equal(r.status, 200);
                assert.equal(r.finish, "length");
                assert.equal(r.text, want[r.prompt], `round ${round}: ${r.prompt}`);
            }
            await waitFor("the router to be idle", async () =>
                (await metrics(p)).values.llorch_router_sessions_active === 0);
            rss.push(p.routerRssKiB());
            batched = Math.max(batched, (await metrics(p)).values.llorch_router_max_rows_in_batch);
        }
        const m = (await metrics(p)).values;
        const served = m['llorch_http_requests_total{endpoint="/v1/completions",code="200"}'];
        assert.equal(served, PROMPTS.length + CLIENTS * ROUNDS);
        assert.equal(Object.keys(m).filter((k) => /endpoint="\/v1.*code="(4|5)\d\d"/.test(k)).length, 0, "no errors");
        assert.equal(m.llorch_router_errors, 0);
        assert.equal(m.llorch_http_requests_in_flight, 0);
        assert.equal(m.llorch_http_queue_depth, 0);
        assert.ok(batched > 1, `the router batched concurrent sessions (max ${batched} rows)`);
        const growth = rss.at(-1) - rss[0];
        t.diagnostic(`router RSS after each round (KiB): ${rss.join(", ")}; max rows in a batch ${batched}`);
        assert.ok(growth < 4096, `router RSS after each round (KiB): ${rss.join(", ")}; ` +
                                 `grew ${growth} KiB after the warm-up round`);
    });
});
