// llama_bench.mjs - one timed llama.cpp run (node-llama-cpp): evaluate a prompt of token
// ids as one batch, then generate N tokens greedily one at a time. Prints JSON.
// usage: node llama_bench.mjs MODEL THREADS N_GEN TOKEN_IDS_CSV
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

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

const tp = performance.now();
await sequence.evaluateWithoutGeneratingNewTokens(prompt);
const promptS = (performance.now() - tp) / 1000;

// Generation: each step decodes one token (the previous one) and picks the argmax.
const tg = performance.now();
let n = 0;
const generated = [];
for await (const token of sequence.evaluate([prompt[prompt.length - 1]], {temperature: 0})) {
    generated.push(token);
    if (++n >= nGen)
        break;
}
const genS = (performance.now() - tg) / 1000;

const usage = process.resourceUsage();
console.log(JSON.stringify({
    load_ms: loadMs, prompt_tokens: prompt.length, prompt_tokens_per_s: prompt.length / promptS,
    gen_tokens: n, gen_tokens_per_s: n / genS, peak_rss_bytes: usage.maxRSS * 1024, tokens: generated,
}));
await context.dispose();
await model.dispose();
