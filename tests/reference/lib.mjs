// lib.mjs - helpers shared by the reference tests: paths, the llorch binary, generated models, llama.cpp.
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
