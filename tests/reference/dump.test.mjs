// dump.test.mjs - proves llama-dump writes llama.cpp's own intermediate tensors and logits, with the layouts index.json claims.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync, spawnSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
const modelPath = path.join(shared, "models/stories260K.gguf");
const outRoot = path.join(root, "build/ref/dump-test");

let llama, model, bin, tokens, cfg;

before(async () => {
    if (!fs.existsSync(modelPath))
        throw new Error(`test data missing: ${modelPath} (the shared test data lies beside the checkout ` +
                        `as ../shared; set LLORCH_SHARED to its folder)`);
    bin = execFileSync(path.join(here, "build_dump.sh"), {encoding: "utf8"}).trim().split("\n").pop();
    llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                            logLevel: LlamaLogLevel.error});
    model = await llama.loadModel({modelPath});
    tokens = Array.from(model.tokenize("Once upon a time"));
    if (model.tokens.shouldPrependBosToken)
        tokens.unshift(model.tokens.bos);
    const m = model.fileInfo.metadata.llama;
    cfg = {
        n_embd: m.embedding_length, n_head: m.attention.head_count, n_head_kv: m.attention.head_count_kv,
        n_ff: m.feed_forward_length, n_layer: m.block_count, eps: m.attention.layer_norm_rms_epsilon,
    };
    cfg.head_dim = cfg.n_embd / cfg.n_head;
    fs.rmSync(outRoot, {recursive: true, force: true});
});

after(async () => {
    await model?.dispose();
    await llama?.dispose();
});

// Runs llama-dump into outRoot/<sub> and returns its parsed index.
function runDump(sub, ...extra) {
    const dir = path.join(outRoot, sub);
    execFileSync(bin, ["-m", modelPath, "-t", tokens.join(","), "-o", dir, ...extra], {stdio: ["ignore", "ignore", "pipe"]});
    const index = JSON.parse(fs.readFileSync(path.join(dir, "index.json"), "utf8"));
    index.dir = dir;
    return index;
}

// The tensor named `name` (made by `op`, if given) as {ne, at(i0,i1,i2,i3), data}.
function tensor(index, name, op) {
    const e = index.tensors.find((t) => t.name === name && (!op || t.op === op));
    assert.ok(e, `${name}${op ? ` (${op})` : ""} is not in the dump: ${index.tensors.map((t) => `${t.name}/${t.op}`).join(", ")}`);
    assert.ok(e.file, `${name} has no data file: ${e.skipped}`);
    const buf = fs.readFileSync(path.join(index.dir, e.file));
    const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const [n0, n1, n2, n3] = e.ne;
    assert.equal(data.length, n0 * n1 * n2 * n3, `${e.file} size`);
    return {...e, data, at: (i0, i1 = 0, i2 = 0, i3 = 0) => data[((i3 * n2 + i2) * n1 + i1) * n0 + i0]};
}

function readLogits(index) {
    const buf = fs.readFileSync(path.join(index.dir, "logits.bin"));
    const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    assert.equal(all.length, index.n_tokens * index.n_vocab);
    return (row) => all.subarray(row * index.n_vocab, (row + 1) * index.n_vocab);
}

function softmax(x) {
    let max = -Infinity;
    for (const v of x) max = Math.max(max, v);
    const e = Array.from(x, (v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
}

// node-llama-cpp's probabilities for the token after `tokens` (softmax of the raw logits).
async function referenceProbs(kvType) {
    const context = await model.createContext({
        contextSize: 256, flashAttention: false,
        experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
    });
    try {
        const seq = context.getSequence();
        for await (const out of seq.evaluateWithMetadata(tokens, {probabilities: true}, {temperature: 0}))
            return out.probabilities;
    } finally {
        await context.dispose();
    }
    throw new Error("node-llama-cpp produced no token");
}

function assertTopProbsMatch(logitsRow, probs, tol, what) {
    const mine = softmax(logitsRow);
    const top = [...probs.entries()].slice(0, 5);
    for (const [id, p] of top)
        assert.ok(Math.abs(mine[id] - p) <= tol, `${what}: token ${id}: softmax(logits) ${mine[id]} vs node-llama-cpp ${p} (tol ${tol})`);
    const argmax = mine.indexOf(Math.max(...mine));
    assert.equal(argmax, top[0][0], `${what}: argmax`);
}

function maxAbsDiff(a, b) {
    assert.equal(a.length, b.length);
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
    return d;
}

test("logits.bin (F32 KV) matches node-llama-cpp's probabilities for the last token", async () => {
    const index = runDump("f32");
    assert.equal(index.kv_type, "f32");
    assert.deepEqual(index.tokens, tokens);
    const row = readLogits(index)(tokens.length - 1);
    assertTopProbsMatch(row, await referenceProbs("F32"), 1e-5, "F32 KV");
    // The graph's own output node holds the same numbers, row = position.
    const out = tensor(index, "result_output");
    assert.deepEqual(out.ne, [index.n_vocab, tokens.length, 1, 1]);
    assert.equal(maxAbsDiff(out.data.subarray((tokens.length - 1) * index.n_vocab), row), 0);
});

test("the layer-0 and final tensors exist with the shapes llorch check relies on", () => {
    const index = runDump("f32-shapes");
    const T = tokens.length, {n_embd, n_head, n_head_kv, n_ff, head_dim} = cfg;
    const kvd = n_head_kv * head_dim;
    const expect = [
        ["embd", "GET_ROWS", [n_embd, T, 1, 1]],
        ["norm-0", "RMS_NORM", [n_embd, T, 1, 1]],
        ["attn_norm-0", "MUL", [n_embd, T, 1, 1]],
        ["Qcur-0", "MUL_MAT", [n_embd, T, 1, 1]],
        ["Qcur-0", "ROPE", [head_dim, n_head, T, 1]],
        ["Kcur-0", "MUL_MAT", [kvd, T, 1, 1]],
        ["Kcur-0", "ROPE", [head_dim, n_head_kv, T, 1]],
        ["Vcur-0", "MUL_MAT", [kvd, T, 1, 1]],
        ["Vcur-0", "RESHAPE", [head_dim, n_head_kv, T, 1]],
        ["kqv-0", "MUL_MAT", [head_dim, T, n_head, 1]],
        ["kqv_out-0", "CONT", [n_embd, T, 1, 1]],
        ["attn_out-0", "MUL_MAT", [n_embd, T, 1, 1]],
        ["ffn_inp-0", "ADD", [n_embd, T, 1, 1]],
        ["ffn_norm-0", "MUL", [n_embd, T, 1, 1]],
        ["ffn_gate-0", "MUL_MAT", [n_ff, T, 1, 1]],
        ["ffn_up-0", "MUL_MAT", [n_ff, T, 1, 1]],
        ["ffn_swiglu-0", "SWIGLU", [n_ff, T, 1, 1]],
        ["ffn_out-0", "MUL_MAT", [n_embd, T, 1, 1]],
        ["l_out-0", "ADD", [n_embd, T, 1, 1]],
        ["result_norm", "MUL", [n_embd, T, 1, 1]],
        ["result_output", "MUL_MAT", [index.n_vocab, T, 1, 1]],
    ];
    for (const [name, op, ne] of expect)
        assert.deepEqual(tensor(index, name, op).ne, ne, `${name} (${op}) shape`);
    // Attention scores span the KV cells in use, padded (masked) past the tokens.
    for (const name of ["kq-0", "kq_soft_max-0"]) {
        const t = tensor(index, name);
        assert.ok(t.ne[0] >= T && t.ne[1] === T && t.ne[2] === n_head, `${name} shape ${t.ne}`);
    }
    // The default filter keeps layer 0 and unnumbered nodes only.
    for (const t of index.tensors)
        assert.ok(!/-[1-9][0-9]*$/.test(t.name), `${t.name} should not be in the default dump`);
    for (const t of index.tensors) {
        if (!t.file) continue;
        for (const v of tensor(index, t.name, t.op).data)
            assert.ok(Number.isFinite(v) || t.name.startsWith("kq"), `${t.name} holds ${v}`);
    }
});

test("the dumped tensors are laid out as index.json says (they recompute each other)", () => {
    const index = runDump("f32-layout");
    const T = tokens.length, {n_embd, n_head, n_head_kv, head_dim, eps} = cfg;
    const group = n_head / n_head_kv;
    const close = (a, b, tol, what) => assert.ok(Math.abs(a - b) <= tol * (1 + Math.abs(b)), `${what}: ${a} vs ${b}`);

    const embd = tensor(index, "embd"), norm = tensor(index, "norm-0", "RMS_NORM");
    for (let t = 0; t < T; t++) {
        let ss = 0;
        for (let c = 0; c < n_embd; c++) ss += embd.at(c, t) ** 2;
        const inv = 1 / Math.sqrt(ss / n_embd + eps);
        for (let c = 0; c < n_embd; c++) close(norm.at(c, t), embd.at(c, t) * inv, 1e-5, `norm-0[${c},${t}]`);
    }
    // kq[j, t, h] = q_rope[:, h, t] . k_rope[:, h / group, j], without the 1/sqrt(head_dim) scale.
    const q = tensor(index, "Qcur-0", "ROPE"), k = tensor(index, "Kcur-0", "ROPE"), v = tensor(index, "Vcur-0", "RESHAPE");
    const kq = tensor(index, "kq-0"), sm = tensor(index, "kq_soft_max-0"), kqv = tensor(index, "kqv-0");
    for (let h = 0; h < n_head; h++)
        for (let t = 0; t < T; t++) {
            const scores = [];
            for (let j = 0; j <= t; j++) {
                let dot = 0;
                for (let d = 0; d < head_dim; d++) dot += q.at(d, h, t) * k.at(d, Math.floor(h / group), j);
                close(kq.at(j, t, h), dot, 1e-4, `kq-0[${j},${t},${h}]`);
                scores.push(dot / Math.sqrt(head_dim));
            }
            // kq_soft_max applies the scale and the causal mask: zero past t.
            const p = softmax(scores);
            for (let j = 0; j < sm.ne[0]; j++) close(sm.at(j, t, h), j <= t ? p[j] : 0, 1e-5, `kq_soft_max-0[${j},${t},${h}]`);
            // kqv[d, t, h] = sum_j p[j] v[d, h / group, j]
            for (let d = 0; d < head_dim; d++) {
                let o = 0;
                for (let j = 0; j <= t; j++) o += p[j] * v.at(d, Math.floor(h / group), j);
                close(kqv.at(d, t, h), o, 1e-4, `kqv-0[${d},${t},${h}]`);
            }
        }
    // kqv_out[h*head_dim + d, t] = kqv[d, t, h]: heads concatenated per token.
    const kqvOut = tensor(index, "kqv_out-0");
    for (let t = 0; t < T; t++)
        for (let h = 0; h < n_head; h++)
            for (let d = 0; d < head_dim; d++) close(kqvOut.at(h * head_dim + d, t), kqv.at(d, t, h), 0, "kqv_out-0");
    // Residuals and SwiGLU.
    const attnOut = tensor(index, "attn_out-0"), ffnInp = tensor(index, "ffn_inp-0");
    const ffnOut = tensor(index, "ffn_out-0"), lOut = tensor(index, "l_out-0");
    const gate = tensor(index, "ffn_gate-0"), up = tensor(index, "ffn_up-0"), swiglu = tensor(index, "ffn_swiglu-0");
    for (let i = 0; i < ffnInp.data.length; i++) {
        close(ffnInp.data[i], attnOut.data[i] + embd.data[i], 1e-6, "ffn_inp-0 = attn_out-0 + embd");
        close(lOut.data[i], ffnOut.data[i] + ffnInp.data[i], 1e-6, "l_out-0 = ffn_out-0 + ffn_inp-0");
    }
    for (let i = 0; i < swiglu.data.length; i++) {
        const g = gate.data[i];
        close(swiglu.data[i], (g / (1 + Math.exp(-g))) * up.data[i], 1e-5, "ffn_swiglu-0 = silu(gate) * up");
    }
});

test("an F16 KV cache run gives the same tensors and logits within F16 rounding", async () => {
    const f32 = runDump("f32-for-f16");
    const f16 = runDump("f16", "--kv", "f16");
    assert.equal(f16.kv_type, "f16");
    assert.deepEqual(f16.tensors.map((t) => `${t.name}/${t.op}`), f32.tensors.map((t) => `${t.name}/${t.op}`));
    const last = tokens.length - 1;
    const a = readLogits(f32)(last), b = readLogits(f16)(last);
    const d = maxAbsDiff(a, b);
    assert.ok(d > 0 && d < 0.05, `F16 vs F32 KV logits differ by ${d} (expected a small non-zero difference)`);
    assertTopProbsMatch(b, await referenceProbs("F16"), 1e-5, "F16 KV");
    const lf32 = tensor(f32, "l_out-0"), lf16 = tensor(f16, "l_out-0");
    assert.ok(maxAbsDiff(lf32.data, lf16.data) < 0.05);
});

test("--match and --all choose the dumped tensors; bad usage fails with a message", () => {
    const lout = runDump("match", "--match", "^l_out-[0-9]+$");
    assert.deepEqual(lout.tensors.map((t) => t.name), Array.from({length: cfg.n_layer}, (_, i) => `l_out-${i}`));
    const all = runDump("all", "--all");
    assert.ok(all.tensors.some((t) => t.name === `l_out-${cfg.n_layer - 1}`));
    assert.ok(all.tensors.length > lout.tensors.length * 10);
    const bad = spawnSync(bin, ["-m", modelPath, "-t", "1,x", "-o", path.join(outRoot, "bad")], {encoding: "utf8"});
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /not a comma-separated list/);
    const kv = spawnSync(bin, ["-m", modelPath, "-t", "1", "-o", path.join(outRoot, "bad"), "--kv", "q8"], {encoding: "utf8"});
    assert.equal(kv.status, 1);
    assert.match(kv.stderr, /use f32 or f16/);
});
