// inspect.test.mjs - proves `llorch inspect --json` reads the shared GGUF files as llama.cpp and node-llama-cpp's GGUF reader do.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync, spawnSync} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel, readGgufFileInfo} from "node-llama-cpp";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
const llorch = process.env.LLORCH_BIN ?? path.join(root, "build/bin/llorch");
const v3File = path.join(shared, "models/stories260K.gguf");
const v1File = path.join(shared, "models/tinyllamas-stories-260k-f32.gguf");
const vocabFile = path.join(shared, "vocab/ggml-vocab-llama-spm.gguf");
const ggmlTypeNames = {0: "F32", 1: "F16", 8: "Q8_0", 30: "BF16"};

let llama;

function inspect(file) {
    return JSON.parse(execFileSync(llorch, ["inspect", "--json", file], {encoding: "utf8"}));
}

// node-llama-cpp nests dotted keys ({attention: {head_count: 8}}); llorch keeps them flat.
function flatten(obj, prefix = "", out = {}) {
    for (const [k, v] of Object.entries(obj)) {
        if (v !== null && typeof v === "object" && !Array.isArray(v))
            flatten(v, `${prefix}${k}.`, out);
        else
            out[prefix + k] = v;
    }
    return out;
}

before(async () => {
    for (const f of [v3File, v1File, vocabFile])
        if (!fs.existsSync(f))
            throw new Error(`test data missing: ${f} (the shared test data lies beside the checkout ` +
                            `as ../shared; set LLORCH_SHARED to its folder)`);
    if (!fs.existsSync(llorch))
        throw new Error(`${llorch} is missing: run make first`);
    llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                            logLevel: LlamaLogLevel.error});
});

after(async () => {
    await llama?.dispose();
});

test("stories260K v3: header, config and tensor table match node-llama-cpp's GGUF reader", async () => {
    const ours = inspect(v3File);
    const theirs = await readGgufFileInfo(v3File, {readTensorInfo: true});
    assert.equal(ours.version, theirs.version);
    assert.equal(ours.architecture, theirs.metadata.general.architecture);
    const config = flatten(theirs.metadata.llama);
    assert.deepEqual(Object.keys(ours.config).sort(), Object.keys(config).sort());
    for (const [k, v] of Object.entries(config)) {
        if (typeof v === "number" && !Number.isInteger(v))
            assert.equal(Math.fround(ours.config[k]), Math.fround(v), k); // float32 in the file
        else
            assert.equal(ours.config[k], v, k);
    }
    assert.equal(ours.vocab_size, theirs.metadata.tokenizer.ggml.tokens.length);
    assert.equal(ours.tokenizer.model, theirs.metadata.tokenizer.ggml.model);
    assert.equal(ours.tokenizer.bos_token_id, theirs.metadata.tokenizer.ggml.bos_token_id);
    assert.equal(ours.tokenizer.eos_token_id, theirs.metadata.tokenizer.ggml.eos_token_id);
    assert.equal(ours.tensors.length, theirs.tensorInfo.length);
    for (const [i, t] of theirs.tensorInfo.entries()) {
        const o = ours.tensors[i];
        assert.equal(o.name, t.name);
        assert.deepEqual(o.shape, t.dimensions.map(Number), t.name);
        assert.equal(o.type, ggmlTypeNames[t.ggmlType], t.name);
        assert.equal(o.offset, Number(t.offset), t.name);
        assert.equal(ours.data_offset + o.offset, Number(t.fileOffset), t.name);
    }
});

test("stories260K v3: llama.cpp loads the same hyperparameters and tensor bytes", async () => {
    const ours = inspect(v3File);
    const model = await llama.loadModel({modelPath: v3File});
    try {
        assert.equal(ours.config.context_length, model.trainContextSize);
        assert.equal(ours.config.embedding_length, model.embeddingVectorSize);
        assert.equal(ours.tokenizer.bos_token_id, model.tokens.bos);
        assert.equal(ours.tokenizer.eos_token_id, model.tokens.eos);
        assert.equal(ours.tensor_bytes, model.size); // llama_model_size: the sum of tensor bytes
        assert.equal(ours.tensor_bytes, ours.tensors.reduce((s, t) => s + t.bytes, 0));
    } finally {
        await model.dispose();
    }
});

test("stories260K v1 (which llama.cpp no longer reads) describes the same tensors as v3", () => {
    const v1 = inspect(v1File), v3 = inspect(v3File);
    assert.equal(v1.version, 1);
    const byName = new Map(v3.tensors.map((t) => [t.name, t]));
    assert.equal(v1.tensors.length, v3.tensors.length);
    for (const t of v1.tensors) {
        assert.ok(byName.has(t.name), t.name);
        assert.deepEqual(t.shape, byName.get(t.name).shape, t.name);
        assert.equal(t.bytes, byName.get(t.name).bytes, t.name);
    }
    for (const k of ["block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                     "attention.head_count_kv", "rope.dimension_count"])
        assert.equal(v1.config[k], v3.config[k], k);
    assert.equal(v1.vocab_size, v3.vocab_size);
});

test("Llama-2 vocabulary file: 32000 tokens, no tensors, llama.cpp's special ids", async () => {
    const ours = inspect(vocabFile);
    assert.equal(ours.vocab_size, 32000);
    assert.equal(ours.tensors.length, 0);
    assert.equal(ours.tokenizer.add_bos_token, true);
    const model = await llama.loadModel({modelPath: vocabFile, vocabOnly: true});
    try {
        assert.equal(ours.tokenizer.bos_token_id, model.tokens.bos);
        assert.equal(ours.tokenizer.eos_token_id, model.tokens.eos);
    } finally {
        await model.dispose();
    }
});

test("a damaged file is refused with the reader's message and exit status 1", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llorch-inspect-"));
    try {
        const bad = path.join(dir, "cut.gguf");
        fs.writeFileSync(bad, fs.readFileSync(v3File).subarray(0, 600000));
        const r = spawnSync(llorch, ["inspect", bad], {encoding: "utf8"});
        assert.equal(r.status, 1);
        assert.match(r.stderr, /cut\.gguf: truncated: tensor '[^']+' needs \d+ bytes/);
    } finally {
        fs.rmSync(dir, {recursive: true, force: true});
    }
});
