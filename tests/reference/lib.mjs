// lib.mjs - helpers shared by the reference tests: paths, the llorch binary, generated models, llama.cpp.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "../..");
export const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
export const llorchBin = process.env.LLORCH_BIN ?? path.join(root, "build/bin/llorch");
export const modelDir = path.join(root, "build/ref/models");

// The path of a file in the shared test data, or an error naming what is missing.
export function sharedFile(rel) {
    const file = path.join(shared, rel);
    if (!fs.existsSync(file))
        throw new Error(`test data missing: ${file} (the shared test data lies beside the checkout ` +
                        `as ../shared; set LLORCH_SHARED to its folder)`);
    return file;
}

// The kernel variants this CPU runs besides the best one (which a run without LLORCH_ISA
// uses): scalar always, avx2 too when avx512 is the best. Read from /proc/cpuinfo as
// kernel_isa_available reads cpuid.
export function cpuFlags() {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    return new Set((/^flags\s*:(.*)$/m.exec(info)?.[1] ?? "").trim().split(/\s+/));
}

export function bestIsa() {
    const f = cpuFlags();
    if (["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"].every((x) => f.has(x)))
        return "avx512";
    return ["avx2", "fma", "f16c"].every((x) => f.has(x)) ? "avx2" : "scalar";
}

export function otherIsas() {
    return bestIsa() === "avx512" ? ["avx2", "scalar"] : bestIsa() === "avx2" ? ["scalar"] : [];
}

export function requireLlorch() {
    if (!fs.existsSync(llorchBin))
        throw new Error(`${llorchBin} is missing: run make first`);
}

// Runs `llorch ARGS...` and returns stdout; env entries are added to the environment.
export function llorch(args, env = {}) {
    return execFileSync(llorchBin, args, {encoding: "utf8", env: {...process.env, ...env},
                                          stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20});
}

// A random-weight model made by `llorch mkmodel` under build/ref/models (made once;
// the same options give the same bytes). opts: mkmodel flags without dashes.
export function mkmodel(name, opts) {
    const file = path.join(modelDir, `${name}.gguf`);
    if (!fs.existsSync(file)) {
        fs.mkdirSync(modelDir, {recursive: true});
        const args = ["mkmodel", "--out", file, "--quiet"];
        for (const [k, v] of Object.entries(opts))
            args.push(`--${k}`, String(v));
        llorch(args);
    }
    return file;
}

let llamaPromise;

// The llama.cpp of node-llama-cpp (CPU, prebuilt, nothing downloaded), loaded once.
export function llamaCpp() {
    llamaPromise ??= getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                               logLevel: LlamaLogLevel.error});
    return llamaPromise;
}

const greedyCache = new Map();

// llama.cpp's greedy run of file on prompt (no flash attention, a 256-token context, K and
// V caches of kvType: "F32" or "F16"): the prompt tokens, then per step the chosen token
// and the top + 1 most probable (softmax of the raw logits), until EOS or nPredict tokens.
// Cached per arguments for the test file's run.
export async function llamaGreedy(llama, file, prompt, {nPredict, top, kvType}) {
    const key = JSON.stringify([file, prompt, nPredict, top, kvType]);
    if (greedyCache.has(key))
        return greedyCache.get(key);
    const model = await llama.loadModel({modelPath: file});
    const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2,
                                               flashAttention: false,
                                               experimentalKvCacheKeyType: kvType,
                                               experimentalKvCacheValueType: kvType});
    const prompt_tokens = Array.from(model.tokenize(prompt));
    if (model.tokens.shouldPrependBosToken)
        prompt_tokens.unshift(model.tokens.bos);
    const steps = [];
    let eos = false;
    const seq = context.getSequence();
    for await (const out of seq.evaluateWithMetadata(prompt_tokens, {probabilities: true}, {temperature: 0})) {
        const best = Array.from(out.probabilities.entries()).slice(0, top + 1).map(([id, p]) => ({id, p}));
        steps.push({token: out.token, top: best});
        if (out.token === model.tokens.eos) {
            eos = true;
            break;
        }
        if (steps.length >= nPredict)
            break;
    }
    await context.dispose();
    await model.dispose();
    const ref = {prompt_tokens, steps, eos};
    greedyCache.set(key, ref);
    return ref;
}

// Ranks 0..top-1 of two top lists (each top + 1 long, so that rank top - 1 has a
// neighbour below): every probability within tol, and the same id unless its
// probability is within 2 tol of a neighbour's (a near tie may order either way).
// Returns the largest difference.
export function compareTop(mine, ref, top, tol, where) {
    let maxDiff = 0;
    for (let k = 0; k < top; k++) {
        const diff = Math.abs(mine[k].p - ref[k].p);
        maxDiff = Math.max(maxDiff, diff);
        assert.ok(diff <= tol, `${where} rank ${k}: p ${mine[k].p} vs llama.cpp ${ref[k].p} (tol ${tol})`);
        if (mine[k].id !== ref[k].id) {
            const near = [k - 1, k + 1].some((j) => j >= 0 && j <= top && Math.abs(ref[j].p - ref[k].p) <= 2 * tol);
            assert.ok(near, `${where} rank ${k}: id ${mine[k].id} vs llama.cpp ${ref[k].id}`);
        }
    }
    return maxDiff;
}
