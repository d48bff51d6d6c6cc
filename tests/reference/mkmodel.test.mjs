// mkmodel.test.mjs - proves llama.cpp loads `llorch mkmodel` output (F32, F16, Q8_0; real and built-in vocabulary) and generates from it.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
const vocabPath = path.join(shared, "vocab/ggml-vocab-llama-spm.gguf");
const bin = path.join(root, "build/bin/llorch");
const outDir = path.join(root, "build/test-models");

let llama;

before(async () => {
    if (!fs.existsSync(bin))
        throw new Error(`${bin} is missing: run make first`);
    if (!fs.existsSync(vocabPath))
        throw new Error(`test data missing: ${vocabPath} (the shared test data lies beside the checkout ` +
                        `as ../shared; set LLORCH_SHARED to its folder)`);
    fs.mkdirSync(outDir, {recursive: true});
    llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                            logLevel: LlamaLogLevel.error});
});

after(async () => {
    await llama?.dispose();
});

function mkmodel(args) {
    return spawnSync(bin, ["mkmodel", "--quiet", ...args], {encoding: "utf8"});
}

// Writes a model with `args` into build/test-models/<name>.gguf and returns its path.
function make(name, args) {
    const out = path.join(outDir, `${name}.gguf`);
    const r = mkmodel(["--out", out, ...args]);
    assert.equal(r.status, 0, `llorch mkmodel ${args.join(" ")} failed: ${r.stderr}`);
    return out;
}

// Loads the model in llama.cpp, checks its config, greedily generates n tokens from
// the prompt twice and returns {model facts, tokens, top probabilities}.
async function generate(modelPath, prompt, n) {
    const model = await llama.loadModel({modelPath});
    try {
        const ctx = await model.createContext({contextSize: 256, threads: 2});
        try {
            const input = Array.from(model.tokenize(prompt));
            if (model.tokens.shouldPrependBosToken)
                input.unshift(model.tokens.bos);
            const runs = [];
            for (let run = 0; run < 2; run++) {
                const seq = ctx.getSequence();
                const tokens = [], top = [];
                for await (const step of seq.evaluateWithMetadata(input, {probabilities: true},
                                                                  {temperature: 0})) {
                    tokens.push(step.token);
                    top.push([...step.probabilities.values()].slice(0, 2));
                    if (tokens.length >= n)
                        break;
                }
                seq.dispose();
                runs.push({tokens, top});
            }
            assert.deepEqual(runs[0].tokens, runs[1].tokens, "greedy generation is repeatable");
            return {info: model.fileInfo.metadata, input, text: model.detokenize(input), ...runs[0]};
        } finally {
            await ctx.dispose();
        }
    } finally {
        await model.dispose();
    }
}

const small = ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "128",
               "--ctx", "256", "--seed", "7"];

for (const type of ["f32", "f16", "q8_0"]) {
    test(`llama.cpp loads a ${type} model with the Llama-2 vocabulary and generates`, async () => {
        const p = make(`mk-${type}-spm`, [...small, "--type", type, "--vocab", vocabPath]);
        const r = await generate(p, "Hello world", 6);
        assert.equal(r.info.general.architecture, "llama");
        assert.equal(r.info.llama.embedding_length, 64);
        assert.equal(r.info.llama.block_count, 2);
        assert.equal(r.info.llama.attention.head_count_kv, 2);
        assert.equal(r.info.general.file_type, {f32: 0, f16: 1, q8_0: 7}[type]);
        // the real vocabulary tokenizes as SentencePiece does (see ../shared/vocab/*.out)
        assert.deepEqual(r.input, [1, 15043, 3186]);
        assert.equal(r.tokens.length, 6);
        for (const t of r.tokens)
            assert.ok(t >= 0 && t < 32000, `token ${t} in range`);
    });

    test(`llama.cpp loads a ${type} model with the built-in vocabulary and generates`, async () => {
        const p = make(`mk-${type}-builtin`, [...small, "--type", type]);
        const text = "Once upon a time, the little dog";
        const r = await generate(p, text, 6);
        assert.equal(r.input[0], 1, "BOS first");
        assert.equal(r.text.trim(), text, "tokenize/detokenize round trip");
        // whole common words are single pieces: far fewer tokens than characters
        assert.ok(r.input.length <= 10, `"${text}" took ${r.input.length} tokens`);
        assert.equal(r.tokens.length, 6);
    });
}

test("the default model (tiny preset) loads in llama.cpp and its next-token choice is sharp", async () => {
    const p = make("mk-tiny", ["--preset", "tiny"]);
    const r = await generate(p, "Once upon a time", 8);
    assert.equal(r.info.llama.embedding_length, 256);
    assert.equal(r.info.general.file_type, 0);
    // out_std 0.5 makes top-1 clearly above top-2, so greedy decoding is stable
    for (const [p1, p2] of r.top)
        assert.ok(Math.log(p1 / p2) > 0.01, `top-1 ${p1} vs top-2 ${p2}`);
    const meanGap = r.top.reduce((s, [p1, p2]) => s + Math.log(p1 / p2), 0) / r.top.length;
    assert.ok(meanGap > 0.3, `mean top-1/top-2 logit gap ${meanGap}`);
});

test("mkmodel is deterministic for a seed and refuses bad values with a clear message", () => {
    const a = make("mk-det-a", [...small, "--type", "q8_0"]);
    const b = make("mk-det-b", [...small, "--type", "q8_0", "--threads", "1"]);
    assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)), "same seed, any thread count: same bytes");

    const out = path.join(outDir, "mk-bad.gguf");
    const cases = [
        [["--dim", "62", "--heads", "4"], /--dim 62 is not divisible by --heads 4/],
        [["--dim", "48", "--heads", "4", "--kv-heads", "4", "--type", "q8_0"], /multiples of 32/],
        [["--type", "q4_0"], /use f32, f16 or q8_0/],
        [["--dim", "abc"], /--dim 'abc' is not a whole number/],
        [["--preset", "huge"], /unknown preset 'huge'/],
        [["--vocab", "/nonexistent.gguf"], /nonexistent\.gguf/],
    ];
    for (const [args, re] of cases) {
        const r = mkmodel(["--out", out, ...args]);
        assert.notEqual(r.status, 0, `${args.join(" ")} should fail`);
        assert.match(r.stderr, re);
    }
    assert.ok(!fs.existsSync(out));
    assert.equal(mkmodel(["--dim", "64"]).status, 2, "--out is required");
    const help = mkmodel(["--help"]);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--preset/);
});
