// check.test.mjs - proves `llorch check` passes its 12 checkpoints against llama.cpp's own tensors and the float64 reference, writes the documented proof bundle, and fails when a value is off.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync, spawnSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {llamaCpp, llorchBin, mkmodel, requireLlorch, root, sharedFile} from "./lib.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outRoot = path.join(root, "build/ref/check-test");

const NAMES = ["rmsnorm", "qkv", "rope", "attention_scores", "attention_output", "ffn_output", "block_output",
               "logits", "selected_logit", "argmax", "softmax", "greedy_10"];
const KEYS = ["checkpoint", "name", "model", "prompt", "tokens", "reference_source", "shape", "max_abs_error",
              "max_rel_error", "tolerance", "pass", "comparisons"];
const LLAMA = "llama.cpp v0.4.0 cb_eval";
const REF64 = "float64 reference";

let dumpBin, llama;

before(async () => {
    requireLlorch();
    sharedFile("models/stories260K.gguf");
    dumpBin = execFileSync(path.join(here, "build_dump.sh"), {encoding: "utf8"}).trim().split("\n").pop();
    llama = await llamaCpp();
    fs.rmSync(outRoot, {recursive: true, force: true});
});

after(async () => {
    await llama?.dispose();
});

// Runs `llorch check` into outRoot/<sub>; returns {status, stdout, stderr, dir}.
function runCheck(sub, model, extraArgs = [], env = {}) {
    const dir = path.join(outRoot, sub);
    const r = spawnSync(llorchBin, ["check", "-m", model, "--out", dir, ...extraArgs],
                        {encoding: "utf8", env: {...process.env, LLORCH_LLAMA_DUMP: dumpBin, ...env}});
    return {...r, dir};
}

function readBundle(dir) {
    const files = NAMES.map((n, i) => `${String(i + 1).padStart(2, "0")}_${n}.json`);
    for (const f of [...files, "summary.json"])
        assert.ok(fs.existsSync(path.join(dir, f)), `${f} is missing from the bundle ${dir}`);
    return {
        points: files.map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"))),
        summary: JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")),
    };
}

// Every checkpoint file has the documented keys and is consistent with its comparisons.
function assertBundleShape(bundle, model, prompt, sources) {
    bundle.points.forEach((p, i) => {
        for (const k of KEYS)
            assert.ok(k in p, `${NAMES[i]}: key ${k} is missing`);
        assert.equal(p.checkpoint, i + 1);
        assert.equal(p.name, NAMES[i]);
        assert.equal(p.model, model);
        assert.equal(p.prompt, prompt);
        assert.deepEqual(p.tokens, bundle.summary.tokens);
        assert.deepEqual(p.comparisons.map((c) => c.reference_source), sources, `${p.name}: references`);
        assert.equal(p.reference_source, sources[0]);
        assert.equal(p.pass, p.comparisons.every((c) => c.pass), `${p.name}: pass is the AND of its comparisons`);
        for (const c of p.comparisons)
            for (const k of ["shape", "max_abs_error", "max_rel_error", "tolerance", "pass"])
                assert.ok(k in c, `${p.name} / ${c.reference_source}: key ${k} is missing`);
    });
    assert.equal(bundle.summary.checkpoints.length, 12);
    assert.deepEqual(bundle.summary.reference_sources, sources);
}

// llama.cpp's own greedy continuation, through node-llama-cpp (F32 KV, no flash attention).
async function llamaGreedy(modelPath, tokens, n) {
    const model = await llama.loadModel({modelPath});
    const context = await model.createContext({contextSize: 256, flashAttention: false,
                                               experimentalKvCacheKeyType: "F32",
                                               experimentalKvCacheValueType: "F32"});
    try {
        const seq = context.getSequence();
        const out = [];
        for await (const t of seq.evaluate(tokens, {temperature: 0})) {
            out.push(t);
            if (out.length === n) break;
        }
        return out;
    } finally {
        await context.dispose();
        await model.dispose();
    }
}

test("stories260K: all 12 checkpoints pass against llama.cpp and the float64 reference", async () => {
    const model = sharedFile("models/stories260K.gguf");
    const r = runCheck("stories", model);
    assert.equal(r.status, 0, `llorch check failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /12 of 12 checkpoints pass/);
    const bundle = readBundle(r.dir);
    assertBundleShape(bundle, model, "Once upon a time", [LLAMA, REF64]);
    assert.equal(bundle.summary.all_pass, true);
    assert.deepEqual(bundle.summary.tokens, [1, 403, 407, 261, 378]);
    for (const p of bundle.points)
        assert.equal(p.pass, true, `${p.name} failed: ${JSON.stringify(p.comparisons)}`);
    // F32: tight agreement, as the issue asks (~1e-4 on activations and logits).
    const byName = Object.fromEntries(bundle.points.map((p) => [p.name, p]));
    assert.equal(byName.rmsnorm.weight_type, "F32");
    assert.deepEqual(byName.rmsnorm.shape, [64, 5]);
    assert.deepEqual(byName.attention_scores.comparisons[0].parts.map((x) => x.shape), [[5, 5, 8], [5, 5, 8]]);
    for (const name of ["rmsnorm", "qkv", "rope", "attention_output", "ffn_output", "block_output", "logits"])
        assert.ok(byName[name].max_abs_error < 1e-4, `${name}: ${byName[name].max_abs_error}`);
    assert.ok(byName.softmax.max_abs_error < 1e-5);
    // The continuation llorch generated is llama.cpp's own greedy continuation.
    const greedy = await llamaGreedy(model, bundle.summary.tokens, 10);
    assert.deepEqual(bundle.summary.generated_tokens, greedy);
    assert.deepEqual(byName.greedy_10.comparisons[0].reference_tokens, greedy);
});

test("a generated Q8_0 model (GQA): all 12 checkpoints pass", () => {
    const model = mkmodel("check-q8", {type: "q8_0", dim: 128, layers: 2, heads: 4, "kv-heads": 2, ffn: 256,
                                       vocab: sharedFile("vocab/ggml-vocab-llama-spm.gguf")});
    const prompt = "The little dog ran to the park";
    const r = runCheck("q8", model, ["-p", prompt, "--json"]);
    assert.equal(r.status, 0, `llorch check failed:\n${r.stdout}\n${r.stderr}`);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.all_pass, true);
    assert.equal(summary.weight_type, "Q8_0");
    const bundle = readBundle(r.dir);
    assert.deepEqual(bundle.summary, summary);
    assertBundleShape(bundle, model, prompt, [LLAMA, REF64]);
    assert.ok(bundle.points.every((p) => p.pass));
});

test("a perturbed RMSNorm output fails checkpoint 1 (and only it), and the exit status says so", () => {
    const model = sharedFile("models/stories260K.gguf");
    const r = runCheck("perturbed", model, [], {LLORCH_CHECK_PERTURB: "1"});
    assert.equal(r.status, 1, `expected failure:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /11 of 12 checkpoints pass/);
    const bundle = readBundle(r.dir);
    assert.equal(bundle.summary.all_pass, false);
    const [first, ...rest] = bundle.points;
    assert.equal(first.pass, false);
    for (const c of first.comparisons) {
        assert.equal(c.pass, false, c.reference_source);
        assert.ok(Math.abs(c.max_abs_error - 1e-2) < 1e-4, `${c.reference_source}: ${c.max_abs_error}`);
    }
    for (const p of rest)
        assert.equal(p.pass, true, p.name);
});

test("without llama-dump the check says so and compares with the float64 reference only", () => {
    const model = sharedFile("models/stories260K.gguf");
    const r = runCheck("no-dump", model, [], {LLORCH_LLAMA_DUMP: path.join(outRoot, "no-such-llama-dump")});
    assert.equal(r.status, 0, `llorch check failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /float64 reference only/);
    const bundle = readBundle(r.dir);
    assertBundleShape(bundle, model, "Once upon a time", [REF64]);
    assert.equal(bundle.summary.llama_dump, null);
    assert.ok(bundle.points.every((p) => p.pass));
});

test("a GGUF v1 file (which llama.cpp v0.4.0 does not load) is checked against the float64 reference", () => {
    const model = sharedFile("models/tinyllamas-stories-260k-f32.gguf");
    const r = runCheck("v1", model);
    assert.equal(r.status, 0, `llorch check failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /does not load GGUF v1/);
    const bundle = readBundle(r.dir);
    assertBundleShape(bundle, model, "Once upon a time", [REF64]);
    assert.ok(bundle.points.every((p) => p.pass));
});

test("usage errors exit 2 with a message", () => {
    const r = spawnSync(llorchBin, ["check"], {encoding: "utf8"});
    assert.equal(r.status, 2);
    assert.match(r.stderr, /-m MODEL is missing/);
    const bad = spawnSync(llorchBin, ["check", "-m", "x.gguf", "--threads", "0"], {encoding: "utf8"});
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--threads/);
});
