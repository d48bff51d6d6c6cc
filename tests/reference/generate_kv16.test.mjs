// generate_kv16.test.mjs - proves `llorch generate --kv-type f16` gives llama.cpp's greedy tokens and per-step top-5 probabilities with F16 K and V caches (llama.cpp's default), on stories260K and a generated GQA model, in every kernel variant this CPU runs.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {bestIsa, compareTop, llamaCpp, llamaGreedy, llorch, mkmodel, otherIsas, requireLlorch, sharedFile} from "./lib.mjs";

const N_PREDICT = 64;
const TOP = 5;

// Tolerance on |p_llorch - p_llama.cpp| of the top-5 probabilities per step. Both
// round q, K, V and the softmax weights to F16 at the same points, so the remaining
// differences are the summation orders (llama.cpp's sgemm for the prompt, its
// 32-lane dot products over positions for V): float noise that an F16 rounding
// boundary can magnify to a step of 2^-11 relative, as with F16 weights in
// generate.test.mjs, whose tolerance this is. Seen: stories260K 2.0e-4 (AVX2) and
// 7.0e-4 (scalar), the generated model 3.0e-5 and 5.7e-5; llorch's F32 cache against
// the same F16 reference is 6.1e-4 to 1.03e-3 away.
const TOL = 1e-3;

const vocab = () => sharedFile("vocab/ggml-vocab-llama-spm.gguf");

const cases = [
    {name: "stories260K (GQA 8/4)", prompt: "Once upon a time",
     file: () => sharedFile("models/stories260K.gguf")},
    {name: "generated gqa-dim128 F32", prompt: "The quick brown fox jumps over the lazy dog.",
     file: () => mkmodel("gen-gqa-dim128-F32", {dim: 128, heads: 8, "kv-heads": 2, ffn: 344,
                                                 type: "f32", layers: 2, ctx: 512,
                                                 vocab: vocab(), seed: 7})},
];

let llama;

before(async () => {
    requireLlorch();
    llama = await llamaCpp();
});

after(async () => {
    await llama?.dispose();
});

function llorchGreedy(file, prompt, kvType, isa) {
    const out = llorch(["generate", "-m", file, "-p", prompt, "-n", String(N_PREDICT), "--temp", "0",
                        "--top", String(TOP + 1), "--json", "--in-process", "--threads", "2",
                        "--kv-type", kvType],
                       isa ? {LLORCH_ISA: isa} : {});
    return JSON.parse(out);
}

function maxTopDiff(got, ref) {
    let maxDiff = 0;
    for (let s = 0; s < Math.min(got.tokens.length, ref.steps.length); s++)
        for (let k = 0; k < TOP; k++)
            maxDiff = Math.max(maxDiff, Math.abs(got.top[s][k].p - ref.steps[s].top[k].p));
    return maxDiff;
}

for (const c of cases) {
    for (const isa of [null, ...otherIsas()]) {
        test(`--kv-type f16: greedy ${N_PREDICT} tokens and top-${TOP} probabilities equal llama.cpp's ` +
             `with an F16 cache: ${c.name} (${isa ? `LLORCH_ISA=${isa}` : bestIsa()})`, async (t) => {
            const file = c.file();
            const ref = await llamaGreedy(llama, file, c.prompt, {nPredict: N_PREDICT, top: TOP, kvType: "F16"});
            const got = llorchGreedy(file, c.prompt, "f16", isa);
            assert.deepEqual(got.prompt_tokens, ref.prompt_tokens, "prompt tokens");
            const refTokens = ref.steps.map((s) => s.token).filter((_, i) => !(ref.eos && i === ref.steps.length - 1));
            assert.deepEqual(got.tokens, refTokens, "greedy tokens");
            assert.equal(got.stop_reason, ref.eos ? "eos" : "length");
            let maxDiff = 0;
            for (let s = 0; s < got.tokens.length; s++)
                maxDiff = Math.max(maxDiff, compareTop(got.top[s], ref.steps[s].top, TOP, TOL, `step ${s}`));
            // The F32 cache against the same F16 reference: how far apart the two cache
            // types are, which the F16 cache must beat.
            const f32Diff = maxTopDiff(llorchGreedy(file, c.prompt, "f32", isa), ref);
            t.diagnostic(`max |dp| over ${got.tokens.length} steps: ${maxDiff.toExponential(2)} ` +
                         `(tolerance ${TOL}); an F32 cache against the same reference: ` +
                         `${f32Diff.toExponential(2)}`);
            assert.ok(maxDiff < f32Diff, `the F16 cache (${maxDiff}) is no closer to llama.cpp's ` +
                                         `F16 cache than the F32 cache (${f32Diff})`);
        });
    }
}
