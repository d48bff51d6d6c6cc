// bench.mjs - `make bench`: llorch against llama.cpp on the same machine, models,
// threads, prompt and KV type (F32), runs alternated, medians reported as a table and
// as build/bench.json. The instrument, not a test: it asserts nothing.
//
// env: BENCH_RUNS (3), BENCH_THREADS (2), BENCH_MODELS (llama2-7b,tinyllama-1.1b; an
//      entry may name the weight type: tinyllama-1.1b:f16), BENCH_GEN (32),
//      BENCH_PROMPT_TOKENS (64)
import {execFileSync, spawnSync} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const llorch = path.join(root, "build/bin/llorch");
const runs = Number(process.env.BENCH_RUNS ?? 3);
const threads = Number(process.env.BENCH_THREADS ?? 2);
const nGen = Number(process.env.BENCH_GEN ?? 32);
const nPrompt = Number(process.env.BENCH_PROMPT_TOKENS ?? 64);
const presets = (process.env.BENCH_MODELS ?? "llama2-7b,tinyllama-1.1b").split(",").map(parseEntry);
const refNodeModules = path.join(root, "tests/reference/node_modules");

function log(msg) { process.stderr.write(`bench: ${msg}\n`); }
function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

// A BENCH_MODELS entry is a mkmodel preset, optionally with a weight type:
// "tinyllama-1.1b:f16" (the default type is q8_0).
function parseEntry(entry) {
    const [preset, type = "q8_0"] = entry.split(":");
    if (!["q8_0", "f16", "f32"].includes(type))
        throw new Error(`BENCH_MODELS entry ${entry}: the type is q8_0, f16 or f32`);
    return {preset, type};
}

function ensureModel({preset, type}) {
    const file = path.join(root, `build/models/bench-${preset}-${type}.gguf`);
    if (!fs.existsSync(file)) {
        log(`making ${file} (random weights, ${type}; written once, kept for later runs)`);
        fs.mkdirSync(path.dirname(file), {recursive: true});
        execFileSync(llorch, ["mkmodel", "--preset", preset, "--type", type, "--out", file],
                     {stdio: ["ignore", "inherit", "inherit"]});
    }
    return file;
}

// A prompt of exactly nPrompt tokens (BOS included) under the model's own vocabulary.
function promptFor(model) {
    const words = "the quick brown fox jumps over the lazy dog while a small cat watches from " +
                  "the old wooden fence and the sun goes down behind the quiet green hills";
    let text = "";
    for (let i = 0; ; i++) {
        const next = text + (text ? " " : "") + words.split(" ")[i % 27];
        const ids = JSON.parse(execFileSync(llorch, ["tokenize", "--json", "-m", model, next],
                                            {encoding: "utf8"})).tokens;
        if (ids.length > nPrompt)
            break;
        text = next;
        if (ids.length === nPrompt)
            return {text, ids};
    }
    throw new Error(`could not build a ${nPrompt}-token prompt`);
}

function timed(cmd, args, opts = {}) {
    // GNU time reports the peak RSS of the child (%M, KiB) on stderr's last line.
    const r = spawnSync("/usr/bin/time", ["-f", "MAXRSS %M", cmd, ...args],
                        {encoding: "utf8", maxBuffer: 64 << 20, ...opts});
    if (r.status !== 0)
        throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr.slice(-2000)}`);
    const rss = Number(/MAXRSS (\d+)/.exec(r.stderr)?.[1] ?? 0) * 1024;
    const line = r.stdout.trim().split("\n").filter(l => l.startsWith("{")).pop();
    return {...JSON.parse(line), peak_rss_bytes: rss};
}

function runLlorch(model, text) {
    const j = timed(llorch, ["generate", "-m", model, "-p", text, "-n", String(nGen), "--temp", "0",
                             "--threads", String(threads), "--json", "--in-process", "--ignore-eos"]);
    return {prompt_tokens: j.prompt_tokens.length ?? j.prompt_tokens, pp: j.timings.prompt_tokens_per_s,
            tg: j.timings.gen_tokens_per_s, rss: j.peak_rss_bytes, gen: j.tokens.length};
}

function runLlama(model, ids) {
    const j = timed(process.execPath, [path.join(root, "tests/bench/llama_bench.mjs"), model,
                                       String(threads), String(nGen), ids.join(",")],
                    {cwd: path.join(root, "tests/reference"),
                     env: {...process.env, NODE_PATH: refNodeModules}});
    return {prompt_tokens: j.prompt_tokens, pp: j.prompt_tokens_per_s, tg: j.gen_tokens_per_s,
            rss: j.peak_rss_bytes, gen: j.gen_tokens};
}

// Read bandwidth, measured before and after the runs: on a shared machine it moves
// with the neighbours' load, and the generation limit uses the higher (stricter) one.
function measureBandwidth() {
    const j = JSON.parse(execFileSync(path.join(root, "build/bench/membw"), [String(threads), "1024"],
                                      {encoding: "utf8"}));
    log(`memory read bandwidth (${threads} threads): ${j.read_gb_per_s} GB/s`);
    return j.read_gb_per_s;
}
const bwBefore = measureBandwidth();

const rows = [];
for (const entry of presets) {
    const model = ensureModel(entry);
    const preset = `${entry.preset} ${entry.type.toUpperCase()}`;
    const bytes = fs.statSync(model).size;
    const {text, ids} = promptFor(model);
    log(`${preset}: warm-up runs (page cache)`);
    runLlorch(model, text);
    runLlama(model, ids);
    const l = [], r = [];
    for (let i = 0; i < runs; i++) {
        log(`${preset}: run ${i + 1}/${runs}`);
        l.push(runLlorch(model, text));
        r.push(runLlama(model, ids));
    }
    rows.push({preset, bytes, ids, l, r});
}
const bwAfter = measureBandwidth();
const membw = {read_gb_per_s: Math.max(bwBefore, bwAfter)};
for (let i = 0; i < rows.length; i++) {
    const {preset, bytes, ids, l, r} = rows[i];
    const limit = membw.read_gb_per_s * 1e9 / bytes;
    const row = {
        model: preset, model_bytes: bytes, threads, prompt_tokens: ids.length, gen_tokens: nGen,
        llorch: {prompt_tok_s: median(l.map(x => x.pp)), gen_tok_s: median(l.map(x => x.tg)),
                 peak_rss_bytes: Math.max(...l.map(x => x.rss))},
        llama_cpp: {prompt_tok_s: median(r.map(x => x.pp)), gen_tok_s: median(r.map(x => x.tg)),
                    peak_rss_bytes: Math.max(...r.map(x => x.rss))},
        gen_limit_tok_s: limit,
    };
    row.prompt_ratio = row.llorch.prompt_tok_s / row.llama_cpp.prompt_tok_s;
    row.gen_ratio = row.llorch.gen_tok_s / row.llama_cpp.gen_tok_s;
    row.llorch_gen_pct_of_limit = 100 * row.llorch.gen_tok_s / limit;
    row.llama_cpp_gen_pct_of_limit = 100 * row.llama_cpp.gen_tok_s / limit;
    rows[i] = row;
}

const cpu = (os.cpus()[0]?.model ?? "unknown").trim();
const out = {date: new Date().toISOString(), machine: {cpu, cores: os.cpus().length,
             memory_gib: Math.round(os.totalmem() / 2 ** 30)}, membw_gb_s: membw.read_gb_per_s,
             membw_before_gb_s: bwBefore, membw_after_gb_s: bwAfter,
             runs, rows};
fs.mkdirSync(path.join(root, "build"), {recursive: true});
fs.writeFileSync(path.join(root, "build/bench.json"), JSON.stringify(out, null, 2) + "\n");

const f = (x, d = 2) => x.toFixed(d);
const gb = x => (x / 2 ** 30).toFixed(2);
console.log(`\nllorch vs llama.cpp v0.4.0 — ${cpu}, ${threads} threads, ${nPrompt}-token prompt, ` +
            `${nGen} generated, F32 KV, median of ${runs}; read bandwidth ${bwBefore} GB/s before, ` +
            `${bwAfter} GB/s after the runs\n`);
console.log("| model | prompt tok/s llorch | llama.cpp | ratio | gen tok/s llorch | llama.cpp | ratio | " +
            "gen % of bw limit llorch | llama.cpp | peak RSS llorch GiB | llama.cpp GiB | model GiB |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows)
    console.log(`| ${r.model} | ${f(r.llorch.prompt_tok_s)} | ${f(r.llama_cpp.prompt_tok_s)} | ` +
                `${f(r.prompt_ratio)}× | ${f(r.llorch.gen_tok_s)} | ${f(r.llama_cpp.gen_tok_s)} | ` +
                `${f(r.gen_ratio)}× | ${f(r.llorch_gen_pct_of_limit, 0)}% | ` +
                `${f(r.llama_cpp_gen_pct_of_limit, 0)}% | ${gb(r.llorch.peak_rss_bytes)} | ` +
                `${gb(r.llama_cpp.peak_rss_bytes)} | ${gb(r.model_bytes)} |`);
console.log(`\nwritten: build/bench.json`);
