// pipeline.mjs - `make bench`, second table: generation through llorch's pipeline (loader,
// workers, router as processes) against the in-process engine on the same model and total
// threads, the cost of one hop, and the aggregate rate of concurrent sessions (counted while
// every session generates; beside it, the in-process rate of the same batch, which bounds
// it). Medians as a
// table and as build/bench-pipeline.json (merged into build/bench.json under "pipeline" when
// that file exists). The instrument, not a test: it asserts nothing.
//
// env: BENCH_PIPELINE_MODEL (build/models/bench-tinyllama-1.1b-q8_0.gguf, made if missing),
//      BENCH_RUNS (3), BENCH_THREADS (2: total threads of every configuration),
//      BENCH_GEN (32), BENCH_SESSIONS (8), BENCH_HOP_GEN (256: tokens of the hop runs),
//      BENCH_ONE_GEN (32: tokens of each single-session run), BENCH_ONE_PAIRS (40: pairs of
//      single-session runs, in-process and pipeline back to back; the memory bandwidth of
//      this kind of VM moves by ±10% from one second to the next, so a ratio needs many
//      short pairs, not a few long runs)
import {execFileSync, spawn} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const llorch = path.join(root, "build/bin/llorch");
const driver = path.join(root, "build/bench/pipeline_client");
const pairDriver = path.join(root, "build/bench/pipeline_pair");
const runs = Number(process.env.BENCH_RUNS ?? 3);
const threads = Number(process.env.BENCH_THREADS ?? 2);
const nGen = Number(process.env.BENCH_GEN ?? 32);
const nOneGen = Number(process.env.BENCH_ONE_GEN ?? 32);
const nSessions = Number(process.env.BENCH_SESSIONS ?? 8);
const nHopGen = Number(process.env.BENCH_HOP_GEN ?? 256);
const onePairs = Number(process.env.BENCH_ONE_PAIRS ?? 40);
const defaultModel = path.join(root, "build/models/bench-tinyllama-1.1b-q8_0.gguf");
const modelPath = process.env.BENCH_PIPELINE_MODEL ?? defaultModel;

const f = (x, d = 2) => x.toFixed(d);
function log(msg) { process.stderr.write(`bench-pipeline: ${msg}\n`); }
function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

function ensureModel(file, mkArgs) {
    if (!fs.existsSync(file)) {
        log(`making ${file} (random weights; written once, kept for later runs)`);
        fs.mkdirSync(path.dirname(file), {recursive: true});
        execFileSync(llorch, ["mkmodel", ...mkArgs, "--out", file, "--quiet"],
                     {stdio: ["ignore", "ignore", "inherit"]});
    }
    return file;
}

// Prompts of a few dozen tokens, each a different rotation of the same words (the sessions
// of the concurrent runs then have different prompts of about the same length).
const words = ("the quick brown fox jumps over the lazy dog while a small cat watches from " +
               "the old wooden fence and the sun goes down behind the quiet green hills").split(" ");
const promptAt = i => [...words.slice(i % words.length), ...words.slice(0, i % words.length)].join(" ");

function inProcess(model, prompt, n, nThreads) {
    const out = execFileSync(llorch, ["generate", "-m", model, "-p", prompt, "-n", String(n), "--temp", "0",
                                      "--threads", String(nThreads), "--json", "--in-process",
                                      "--ignore-eos"], {encoding: "utf8", maxBuffer: 64 << 20});
    const j = JSON.parse(out.trim().split("\n").filter(l => l.startsWith("{")).pop());
    return {tok_s: j.timings.gen_tokens_per_s, gen: j.tokens.length};
}

// Running `llorch up` children: stopped when this script ends or is killed (they would
// otherwise keep the model's shared-memory segment).
const running = new Set();
process.on("exit", () => { for (const c of running) c.kill("SIGTERM"); });
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"])
    process.on(sig, () => process.exit(128 + os.constants.signals[sig]));

// `llorch up` in the background; resolves with {ep, stop()} once it prints the endpoint.
function up(model, workers, perWorker) {
    return new Promise((resolve, reject) => {
        const child = spawn(llorch, ["up", "-m", model, "--workers", String(workers),
                                     "--threads-per-worker", String(perWorker)],
                            {stdio: ["ignore", "pipe", "pipe"]});
        running.add(child);
        let stdout = "", stderr = "";
        const timer = setTimeout(() => { child.kill("SIGTERM"); reject(new Error(`llorch up: no endpoint after 600 s:\n${stderr.slice(-2000)}`)); }, 600e3);
        const exited = new Promise(r => child.on("exit", (code, sig) => { running.delete(child); r(code ?? sig); }));
        child.stderr.on("data", d => { stderr += d; });
        child.stdout.on("data", d => {
            stdout += d;
            const nl = stdout.indexOf("\n");
            if (nl < 0)
                return;
            clearTimeout(timer);
            resolve({ep: stdout.slice(0, nl).trim(), stop: async () => {
                child.kill("SIGTERM");
                const code = await exited;
                if (code !== 0)
                    log(`llorch up exited with ${code}: ${stderr.slice(-1000)}`);
            }});
        });
        child.on("exit", code => { clearTimeout(timer); reject(new Error(`llorch up exited (${code}):\n${stderr.slice(-2000)}`)); });
        child.on("error", reject);
    });
}

// nSess sessions at once through the router at ep; see pipeline_client.c for the fields.
function sessions(ep, nSess, n, prompts) {
    const out = execFileSync(driver, [ep, String(nSess), String(n), ...prompts],
                             {encoding: "utf8", maxBuffer: 64 << 20});
    const j = JSON.parse(out);
    for (const s of j.sessions)
        if (s.generated !== n)
            log(`a session made ${s.generated} of ${n} tokens (${s.stop_reason})`);
    return j;
}

// Least-squares line y = a + b x.
function fit(xs, ys) {
    const n = xs.length, mx = xs.reduce((a, b) => a + b) / n, my = ys.reduce((a, b) => a + b) / n;
    const b = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0) /
              xs.reduce((a, x) => a + (x - mx) ** 2, 0);
    return {intercept: my - b * mx, slope: b};
}

const model = modelPath === defaultModel
    ? ensureModel(modelPath, ["--preset", "tinyllama-1.1b", "--type", "q8_0"]) : modelPath;
if (!fs.existsSync(model))
    throw new Error(`${model} does not exist (BENCH_PIPELINE_MODEL)`);
const prompt = promptAt(0);
const prompts = Array.from({length: nSessions}, (_, i) => promptAt(3 * i));

// 1. One session: pipelines of K = 1 and K = 2 workers vs in-process with `threads` in all.
// In-process runs alternate with the pipeline's (its processes idle meanwhile; pipeline_pair
// warms both sides up first), so that both see the same machine. K=2 x threads/2 has one stage, so threads/2, at work at a time:
// it shows what the stages taking turns on all the cores (`llorch up`'s default) gains.
const inproc = [];
// K=2 x threads/2 is the same thread count as in-process; K=2 x threads runs each stage on
// every core in turn (one session keeps only one stage busy at a time; the idle one sleeps).
const configs = [{workers: 1, perWorker: threads}];
if (threads % 2 === 0)
    configs.push({workers: 2, perWorker: threads / 2});
configs.push({workers: 2, perWorker: threads});
const pipes = [];
const concurrent = [];
for (const c of configs) {
    log(`${path.basename(model)}: llorch up --workers ${c.workers} --threads-per-worker ${c.perWorker}`);
    const u = await up(model, c.workers, c.perWorker);
    try {
        // One session: pairs of runs, in-process and through this pipeline back to back (in
        // turn first) from one driver process (pipeline_pair.c); each pair's ratio is taken
        // on the machine of that moment, and their median is the ratio.
        // K=2 x threads/2 has no target: a quarter of the pairs tell its ratio well enough.
        const nPairs = c.perWorker === threads ? onePairs : Math.max(4, Math.round(onePairs / 4));
        const pr = JSON.parse(execFileSync(pairDriver, [model, String(threads), u.ep, String(nOneGen),
                                                        String(nPairs), prompt],
                                           {encoding: "utf8", maxBuffer: 16 << 20}));
        inproc.push(...pr.pairs.map(x => x.in_process));
        const ratios = pr.pairs.map(x => x.ratio);
        const p = {workers: c.workers, threads_per_worker: c.perWorker, gen_tok_s: pr.pipeline,
                   in_process_gen_tok_s: pr.in_process, ratio: pr.median_ratio,
                   pair_ratios: ratios};
        pipes.push(p);
        log(`  ${f(p.gen_tok_s)} tok/s, in-process ${f(p.in_process_gen_tok_s)}: ${f(p.ratio, 3)}× ` +
            `(pairs: ${ratios.map(x => f(x, 3)).join(", ")})`);
        // 2. nSessions at once vs one alone, on every pipeline (the target is K=2's; K=1's
        // tells the batch's cost apart from the stages'; K=2 x threads is `llorch up`'s
        // default, where it keeps one batch in flight so that the stages take turns).
        log(`${path.basename(model)}: ${nSessions} concurrent sessions`);
        sessions(u.ep, nSessions, 4, prompts);
        const many = [];
        for (let i = 0; i < runs; i++)
            many.push(sessions(u.ep, nSessions, nGen, prompts));
        const stats = JSON.parse(execFileSync(llorch, ["stats", "--router", u.ep], {encoding: "utf8"}));
        const m = {workers: c.workers, threads_per_worker: c.perWorker, sessions: nSessions,
                   one_gen_tok_s: p.gen_tok_s,
                   aggregate_gen_tok_s: median(many.map(j => j.all_generating_tok_s)),
                   first_last_sum_tok_s: median(many.map(j => j.gen_tok_s_sum)),
                   end_to_end_tok_s: median(many.map(j => j.end_to_end_tok_s)),
                   max_rows_in_batch: stats.max_rows_in_batch,
                   max_batches_in_flight: stats.max_batches_in_flight};
        m.ratio = m.aggregate_gen_tok_s / m.one_gen_tok_s;
        m.first_last_ratio = m.first_last_sum_tok_s / m.one_gen_tok_s;
        concurrent.push(m);
        log(`  ${f(m.aggregate_gen_tok_s)} tok/s in all (${f(m.ratio)}×)`);
    } finally {
        await u.stop();
    }
}
const inprocTokS = median(inproc);

// The ceiling of the sessions row: the same model in-process, nSessions decoding together in
// one batch on `threads` threads (batch_bench stage), against one alone. A pipeline's batch
// does the same arithmetic over its stages, so its rate cannot exceed this one's.
let ceiling = null;
const batchBench = path.join(root, "build/bench/batch_bench");
if (fs.existsSync(batchBench)) {
    log(`${path.basename(model)}: in-process batches of 1 and ${nSessions} (batch_bench stage)`);
    const out = execFileSync(batchBench, ["stage", model, String(threads), "1", String(nSessions)],
                             {encoding: "utf8", maxBuffer: 16 << 20});
    const rate = n => Number(out.match(new RegExp(`sessions +${n}: .*? ([0-9.]+) tok/s`))?.[1]);
    ceiling = {sessions: nSessions, threads, one_tok_s: rate(1), batch_tok_s: rate(nSessions)};
    log(`  ${f(ceiling.batch_tok_s)} tok/s in all, ${f(ceiling.one_tok_s)} alone`);
}

// 3. Per hop: a tiny model (compute negligible), K = 1..4 one-thread workers; the slope of
// the time per token over K is the cost of one more FORWARD hop (send, wake, receive).
const tiny = ensureModel(path.join(root, "build/models/bench-hop-tiny.gguf"),
                         ["--dim", "64", "--layers", "4", "--heads", "4", "--kv-heads", "2",
                          "--ffn", "172", "--vocab-size", "1690", "--ctx", "1024"]);
log(`hops: ${path.basename(tiny)}, K = 1..4`);
inProcess(tiny, prompt, 4, 1);
const hopRuns = Math.max(runs, 5);
const tinyInproc = median(Array.from({length: hopRuns}, () => inProcess(tiny, prompt, nHopGen, 1).tok_s));
const hops = [];
for (let k = 1; k <= 4; k++) {
    const u = await up(tiny, k, 1);
    try {
        sessions(u.ep, 1, 8, [prompt]);
        const r = Array.from({length: hopRuns}, () => sessions(u.ep, 1, nHopGen, [prompt]).gen_tok_s_sum);
        hops.push({workers: k, ms_per_token: 1e3 / median(r)});
    } finally {
        await u.stop();
    }
}
const line = fit(hops.map(h => h.workers), hops.map(h => h.ms_per_token));
const hop = {model: path.basename(tiny), in_process_ms_per_token: 1e3 / tinyInproc, points: hops,
             per_hop_ms: line.slope, intercept_ms: line.intercept};

const cpu = (os.cpus()[0]?.model ?? "unknown").trim();
const result = {date: new Date().toISOString(), machine: {cpu, cores: os.cpus().length},
                model: path.basename(model), model_bytes: fs.statSync(model).size, threads, runs,
                gen_tokens: nGen, one_session_gen_tokens: nOneGen, in_process_gen_tok_s: inprocTokS, pipelines: pipes, concurrent,
                in_process_batch: ceiling, hop};
fs.mkdirSync(path.join(root, "build"), {recursive: true});
fs.writeFileSync(path.join(root, "build/bench-pipeline.json"), JSON.stringify(result, null, 2) + "\n");
const benchJson = path.join(root, "build/bench.json");
if (fs.existsSync(benchJson)) {
    const all = JSON.parse(fs.readFileSync(benchJson, "utf8"));
    all.pipeline = result;
    fs.writeFileSync(benchJson, JSON.stringify(all, null, 2) + "\n");
}

const ms = x => (x * 1e3).toFixed(0);
console.log(`\nllorch pipeline — ${result.model}, ${threads} threads in total, ${nOneGen} generated ` +
            `by one session, ${nGen} by each of ${nSessions} (greedy, EOS ignored); one session: ` +
            `the median of ${onePairs} in-process/pipeline pairs' ratios (a quarter of them for K=2 × ` +
            `${threads / 2}); sessions: median of ${runs}\n`);
console.log("| measure | value | reference | ratio | target |");
console.log("| --- | --- | --- | --- | --- |");
for (const p of pipes) {
    const t = p.threads_per_worker;
    const extra = p.workers * t > threads ? " (stages take turns)"
                : p.workers > 1 ? ` (one stage, ${t} thread${t > 1 ? "s" : ""}, at work at a time)` : "";
    console.log(`| gen tok/s, pipeline K=${p.workers} × ${t} thread${t > 1 ? "s" : ""}${extra} ` +
                `| ${f(p.gen_tok_s)} | in-process ${f(p.in_process_gen_tok_s)} | ${f(p.ratio, 3)}× | ` +
                `${t === threads ? "≥ 0.97×" : ""} |`);
}
for (const m of concurrent) {
    const t = m.threads_per_worker, b = m.max_batches_in_flight;
    const k = `K=${m.workers} × ${t} thread${t > 1 ? "s" : ""}, ${b} batch${b > 1 ? "es" : ""} in flight`;
    console.log(`| aggregate gen tok/s, ${m.sessions} sessions all generating, ${k} ` +
                `| ${f(m.aggregate_gen_tok_s)} | 1 session ${f(m.one_gen_tok_s)} | ` +
                `${f(m.ratio)}× | ${m.workers === 2 ? "≥ 4×" : ""} |`);
    console.log(`| the same, each session's first..last token rate summed, ${k} ` +
                `| ${f(m.first_last_sum_tok_s)} | 1 session ${f(m.one_gen_tok_s)} | ` +
                `${f(m.first_last_ratio)}× | |`);
}
if (ceiling) {
    const two = concurrent.find(m => m.workers === 2);
    console.log(`| in-process batch of ${ceiling.sessions} (this CPU's ceiling for the rows above) ` +
                `| ${f(ceiling.batch_tok_s)} | in-process alone ${f(ceiling.one_tok_s)}` +
                `${two ? `; K=2 1 session ${f(two.one_gen_tok_s)}` : ""} | ` +
                `${f(ceiling.batch_tok_s / ceiling.one_tok_s)}×` +
                `${two ? `; ${f(ceiling.batch_tok_s / two.one_gen_tok_s)}× K=2's one` : ""} | |`);
}
console.log(`| per-hop latency (${hop.model}, K=1..4, slope) | ${ms(hop.per_hop_ms)} µs | ` +
            `${hops.map(h => `K=${h.workers} ${ms(h.ms_per_token)}`).join(", ")} µs/token; ` +
            `in-process ${ms(hop.in_process_ms_per_token)} | | |`);
console.log(`\nwritten: build/bench-pipeline.json${fs.existsSync(benchJson) ? " (and build/bench.json .pipeline)" : ""}`);
