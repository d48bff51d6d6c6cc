// llama_bench.mjs - one timed llama.cpp run (node-llama-cpp): evaluate a prompt of token
// ids as one batch, then generate N tokens greedily one decode at a time. Prints JSON.
// usage: node llama_bench.mjs MODEL THREADS N_GEN TOKEN_IDS_CSV
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

// node-llama-cpp lives in tests/reference/node_modules; ES modules ignore NODE_PATH, so
// resolve it from there explicitly.
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../reference/package.json"));
const {getLlama, LlamaLogLevel} = await import(pathToFileURL(require.resolve("node-llama-cpp")).href);

const [modelPath, threadsArg, nGenArg, tokensCsv] = process.argv.slice(2);
if (!tokensCsv) {
    console.error("usage: node llama_bench.mjs MODEL THREADS N_GEN TOKEN_IDS_CSV");
    process.exit(2);
}
const threads = Number(threadsArg), nGen = Number(nGenArg);
const prompt = tokensCsv.split(",").map(Number);

const t0 = performance.now();
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                              logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
    contextSize: 512, batchSize: 512, threads, sequences: 1,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const loadMs = performance.now() - t0;
const sequence = context.getSequence();

// The prompt is decoded as one batch (batchSize >= its length); the first token is
// sampled from its last row, as llorch does. Each later token is one decode of one
// token. So prompt time = until the first token, generation rate = the later tokens
// over the time after the first one: the same split llorch's --json timings use.
const tp = performance.now();
let promptS = 0, tFirst = 0, n = 0;
const generated = [];
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
    generated.push(token);
    if (++n === 1) {
        tFirst = performance.now();
        promptS = (tFirst - tp) / 1000;
    }
    if (n >= nGen)
        break;
}
const genS = (performance.now() - tFirst) / 1000;

const usage = process.resourceUsage();
console.log(JSON.stringify({
    load_ms: loadMs, prompt_tokens: prompt.length, prompt_tokens_per_s: prompt.length / promptS,
    gen_tokens: n, gen_tokens_per_s: (n - 1) / genS, peak_rss_bytes: usage.maxRSS * 1024, tokens: generated,
}));
await context.dispose();
await model.dispose();
