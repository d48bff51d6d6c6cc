// generate.test.mjs - proves `llorch generate` (in-process) gives llama.cpp's greedy tokens and per-step top-5 probabilities, on stories260K (v3 and v1) and generated models of several shapes and types, in every kernel variant this CPU runs.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {bestIsa, compareTop, llamaCpp, llamaGreedy, llorch, mkmodel, otherIsas, requireLlorch, sharedFile} from "./lib.mjs";

const N_PREDICT = 64;
const TOP = 5;

// Tolerances on |p_llorch - p_llama.cpp| of the top-5 probabilities per step.
// A single-token step is computed with llama.cpp's arithmetic where llorch can (same
// activation rounding, same summation order); the prompt is not: llama.cpp runs
// batches through llamafile's sgemm, another summation order, while llorch gives a row
// the same result in any batch. Those float-noise differences in the prompt's K/V move
// activations across rounding boundaries later on:
// F32 (no rounding of activations): seen <= 6e-5.
// F16 (activations rounded to F16, a step of 2^-11 relative): seen up to 1.1e-3 (AVX2
// sums in another order than llama.cpp's AVX-512 build on an AVX-512 CPU).
// Q8_0 in GGUF rows (ggml's arithmetic, integer dot products identical): a quantum is
// 1/127 of the block's maximum, so noise rarely crosses a boundary and the
// probabilities agree to <= 6e-5; 2e-4 leaves a margin of 3.
// Q8_0 repacked for AVX-512 VNNI (the whole block's dot summed in integers, then one
// rounding: another order than ggml's eight lanes): the float noise crosses Q8_0
// boundaries now and then, seen up to 1.3e-3; greedy tokens stay identical.
const TOL = {F32: 1e-4, F16: 2e-3, Q8_0: 2e-4, Q8_0_R16: 3e-3};
const tolerance = (type, isa) => (type === "Q8_0" && (isa ?? bestIsa()) === "avx512" ? TOL.Q8_0_R16 : TOL[type]);

const vocab = () => sharedFile("vocab/ggml-vocab-llama-spm.gguf");
const gen = (name, type, shape) => ({
    name: `${name} ${type}`, type, prompt: "The quick brown fox jumps over the lazy dog.",
    file: () => mkmodel(`gen-${name}-${type}`, {...shape, type: type.toLowerCase(), layers: 2, ctx: 512,
                                                 vocab: vocab(), seed: 7}),
});

const cases = [
    {name: "stories260K (GGUF v3)", type: "F32", prompt: "Once upon a time",
     file: () => sharedFile("models/stories260K.gguf")},
    {name: "stories260K (GGUF v1; llama.cpp runs the v3 file)", type: "F32", prompt: "Once upon a time",
     file: () => sharedFile("models/tinyllamas-stories-260k-f32.gguf"),
     ref: () => sharedFile("models/stories260K.gguf")},
    gen("gqa-dim128", "F32", {dim: 128, heads: 8, "kv-heads": 2, ffn: 344}),
    gen("mqa-dim96", "F32", {dim: 96, heads: 6, "kv-heads": 1, ffn: 200}),
    gen("plain-dim160", "F16", {dim: 160, heads: 5, "kv-heads": 5, ffn: 416}),
    gen("gqa-dim96", "F16", {dim: 96, heads: 4, "kv-heads": 2, ffn: 256}),
    gen("gqa-dim128", "Q8_0", {dim: 128, heads: 8, "kv-heads": 2, ffn: 352}),
    gen("mqa-dim160", "Q8_0", {dim: 160, heads: 10, "kv-heads": 1, ffn: 416}),
    gen("plain-dim96", "Q8_0", {dim: 96, heads: 3, "kv-heads": 3, ffn: 288}),
];

let llama;

before(async () => {
    requireLlorch();
    llama = await llamaCpp();
});

after(async () => {
    await llama?.dispose();
});

// The scalar runs also read the weights from the mapped file (--mmap), the others from
// the copy on huge pages: both placements are held to llama.cpp.
function llorchGreedy(file, prompt, isa) {
    const out = llorch(["generate", "-m", file, "-p", prompt, "-n", String(N_PREDICT), "--temp", "0",
                        "--top", String(TOP + 1), "--json", "--in-process", "--threads", "2",
                        ...(isa === "scalar" ? ["--mmap"] : [])],
                       isa ? {LLORCH_ISA: isa} : {});
    return JSON.parse(out);
}

for (const c of cases) {
    for (const isa of [null, ...otherIsas()]) {
        test(`greedy ${N_PREDICT} tokens and top-${TOP} probabilities equal llama.cpp's: ${c.name}` +
             `${isa ? ` (LLORCH_ISA=${isa}${isa === "scalar" ? ", --mmap" : ""})` : ` (${bestIsa()})`}`, async (t) => {
            const file = c.file();
            const ref = await llamaGreedy(llama, c.ref ? c.ref() : file, c.prompt, {nPredict: N_PREDICT, top: TOP, kvType: "F32"});
            const got = llorchGreedy(file, c.prompt, isa);
            assert.deepEqual(got.prompt_tokens, ref.prompt_tokens, "prompt tokens");
            const refTokens = ref.steps.map((s) => s.token).filter((_, i) => !(ref.eos && i === ref.steps.length - 1));
            assert.deepEqual(got.tokens, refTokens, "greedy tokens");
            assert.equal(got.stop_reason, ref.eos ? "eos" : "length");
            assert.equal(got.top.length, got.tokens.length);
            let maxDiff = 0;
            for (let s = 0; s < got.tokens.length; s++)
                maxDiff = Math.max(maxDiff, compareTop(got.top[s], ref.steps[s].top, TOP, tolerance(c.type, isa), `step ${s}`));
            t.diagnostic(`max |dp| over ${got.tokens.length} steps: ${maxDiff.toExponential(2)} ` +
                         `(tolerance ${tolerance(c.type, isa)})`);
            assert.ok(typeof got.text === "string" && got.text.length > 0);
            assert.ok(got.timings.gen_tokens_per_s > 0 && got.timings.load_ms >= 0);
        });
    }
}
