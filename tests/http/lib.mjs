// lib.mjs - helpers of the HTTP API tests: a loader, workers and a router with --http as child processes, SSE reading, metrics.
import {execFileSync, spawn} from "node:child_process";
import fs from "node:fs";
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "../..");
export const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
const binDir = path.join(root, "build/bin");

export const MODEL_NAME = "stories260K";

// stories260K in the shared test data, or an error naming what is missing.
export function modelPath() {
    const file = path.join(shared, "models/stories260K.gguf");
    if (!fs.existsSync(file))
        throw new Error(`test data missing: ${file} (the shared test data lies beside the checkout ` +
                        `as ../shared; set LLORCH_SHARED to its folder)`);
    return file;
}

// The official openai npm client, installed with the reference harness (tests/reference).
export async function openaiClass() {
    const require = createRequire(path.join(root, "tests/reference/package.json"));
    let entry;
    try {
        entry = require.resolve("openai");
    } catch {
        throw new Error("the openai npm package is missing: run make deps (it installs " +
                        "tests/reference/package.json)");
    }
    const mod = await import(entry);
    return mod.OpenAI ?? mod.default?.OpenAI ?? mod.default;
}

// The in-process greedy text of `llorch generate` for prompt: the reference for the HTTP API.
export function inProcessText(prompt, nTokens) {
    const out = execFileSync(path.join(binDir, "llorch"),
                             ["generate", "-m", modelPath(), "-p", prompt, "--temp", "0", "-n",
                              String(nTokens), "--json"],
                             {encoding: "utf8", stdio: ["ignore", "pipe", "pipe"]});
    return JSON.parse(out).text;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A pipeline on this host: loader, router (with --http on a free port) and workers, each
// started on demand so that tests can watch the router before the others exist.
export class Pipeline {
    constructor({routerArgs = [], splits = ["0:5"]} = {}) {
        this.dir = fs.mkdtempSync("/tmp/llorch-http-test-");
        this.routerArgs = routerArgs;
        this.splits = splits;
        this.children = {};
        this.logs = {};
        this.port = 0;
    }

    ep(name) {
        return `ipc://${this.dir}/${name}`;
    }

    _spawn(name, exe, args) {
        const child = spawn(path.join(binDir, exe), args, {stdio: ["ignore", "ignore", "pipe"]});
        this.logs[name] = "";
        child.stderr.on("data", (d) => { this.logs[name] += d.toString(); });
        this.children[name] = child;
        return child;
    }

    startLoader() {
        this._spawn("loader", "llorch-loader", ["-m", modelPath(), "--endpoint", this.ep("loader")]);
    }

    async startRouter() {
        this._spawn("router", "llorch-router",
                    ["--loader", this.ep("loader"), "--control", this.ep("control"), "--results",
                     this.ep("results"), "--clients", this.ep("clients"), "--http",
                     "127.0.0.1:0", "--http-model-name", MODEL_NAME, ...this.routerArgs]);
        for (let i = 0; i < 200 && !this.port; i++) {
            const m = /http: serving .* \(port (\d+)\)/.exec(this.logs.router);
            if (m)
                this.port = Number(m[1]);
            else if (this.children.router.exitCode !== null)
                break;
            else
                await sleep(25);
        }
        if (!this.port)
            throw new Error(`the router did not start its HTTP server:\n${this.logs.router}`);
    }

    startWorker(i) {
        this._spawn(`worker${i}`, "llorch-worker",
                    ["--loader", this.ep("loader"), "--router", this.ep("control"), "--layers",
                     this.splits[i], "--bind", this.ep(`w${i}-${Date.now()}`), "--threads", "1"]);
    }

    // Everything, then waits until /health says ready.
    async start() {
        this.startLoader();
        await this.startRouter();
        this.splits.forEach((_, i) => this.startWorker(i));
        await this.waitHealth(200);
        return this;
    }

    url(p) {
        return `http://127.0.0.1:${this.port}${p}`;
    }

    async waitHealth(status, ms = 15000) {
        let last;
        for (const until = Date.now() + ms; Date.now() < until; await sleep(50)) {
            try {
                last = await fetch(this.url("/health"));
                const body = await last.json();
                if (last.status === status)
                    return body;
            } catch { /* not up yet */ }
        }
        throw new Error(`/health did not become ${status} (last ${last?.status}):\n` +
                        Object.entries(this.logs).map(([k, v]) => `--- ${k}\n${v.slice(-2000)}`).join("\n"));
    }

    pid(name) {
        return this.children[name].pid;
    }

    // The router's resident memory in KiB.
    routerRssKiB() {
        const status = fs.readFileSync(`/proc/${this.pid("router")}/status`, "utf8");
        return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
    }

    async kill(name, signal = "SIGTERM") {
        const c = this.children[name];
        if (!c || c.exitCode !== null || c.signalCode !== null)
            return;
        const exited = new Promise((r) => c.once("exit", r));
        c.kill(signal);
        let timer;
        await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 5000); })]);
        clearTimeout(timer);
        if (c.exitCode === null && c.signalCode === null) {
            c.kill("SIGKILL");
            await exited;
        }
    }

    async stop() {
        for (const name of Object.keys(this.children).filter((n) => n.startsWith("worker")))
            await this.kill(name);
        await this.kill("router");
        await this.kill("loader");
        fs.rmSync(this.dir, {recursive: true, force: true});
    }
}

// A free TCP port on 127.0.0.1 (free when asked; another process could take it after).
export async function freePort() {
    const net = await import("node:net");
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const {port} = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

// `llorch up -m MODEL --http 127.0.0.1:PORT ARGS...` in the background, ready when /health
// says ok. Returns {port, stop()}.
export async function startUp(args) {
    const port = await freePort();
    const child = spawn(path.join(binDir, "llorch"),
                        ["up", "-m", modelPath(), "--http", `127.0.0.1:${port}`, ...args],
                        {stdio: ["ignore", "pipe", "pipe"]});
    let log = "";
    child.stderr.on("data", (d) => { log += d.toString(); });
    const exited = new Promise((r) => child.once("exit", r));
    const stop = async () => {
        if (child.exitCode === null && child.signalCode === null) {
            child.kill("SIGTERM");
            await exited;
        }
    };
    for (const until = Date.now() + 20000; Date.now() < until; await sleep(100)) {
        if (child.exitCode !== null)
            break;
        try {
            if ((await fetch(`http://127.0.0.1:${port}/health`)).status === 200)
                return {port, stop};
        } catch { /* not up yet */ }
    }
    await stop();
    throw new Error(`llorch up --http did not become healthy:\n${log}`);
}

export async function postJSON(p, route, body, headers = {}) {
    const res = await fetch(p.url(route), {method: "POST", body: typeof body === "string" ? body : JSON.stringify(body),
                                           headers: {"Content-Type": "application/json", ...headers}});
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return {res, status: res.status, text, json};
}

// Splits an SSE body into events; checks the framing as it goes (every event is
// "data: ..." lines or ": comment" lines, events end with a blank line).
export function sseEvents(text) {
    if (!text.endsWith("\n\n"))
        throw new Error(`the stream does not end with a blank line: ${JSON.stringify(text.slice(-80))}`);
    const events = [];
    for (const block of text.slice(0, -2).split("\n\n")) {
        const lines = block.split("\n");
        if (lines.every((l) => l.startsWith(":"))) {
            events.push({comment: lines.join("\n")});
            continue;
        }
        if (!lines.every((l) => l.startsWith("data: ")))
            throw new Error(`not an SSE data event: ${JSON.stringify(block)}`);
        const data = lines.map((l) => l.slice(6)).join("\n");
        events.push(data === "[DONE]" ? {done: true} : {data: JSON.parse(data)});
    }
    return events;
}

// The text of a streamed completion or chat completion, and its finish_reason.
export function streamText(events) {
    let text = "", finish = null;
    for (const e of events) {
        const c = e.data?.choices?.[0];
        if (!c)
            continue;
        text += c.text ?? c.delta?.content ?? "";
        finish = c.finish_reason ?? finish;
    }
    return {text, finish};
}

// /metrics as {"name{labels}": value}.
export async function metrics(p, headers = {}) {
    const res = await fetch(p.url("/metrics"), {headers});
    const text = await res.text();
    const out = {};
    for (const line of text.split("\n")) {
        if (!line || line.startsWith("#"))
            continue;
        const i = line.lastIndexOf(" ");
        out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return {status: res.status, text, values: out};
}

export async function waitFor(what, fn, ms = 10000) {
    for (const until = Date.now() + ms; Date.now() < until; await sleep(50))
        if (await fn())
            return;
    throw new Error(`timed out waiting for ${what}`);
}

export {sleep};
