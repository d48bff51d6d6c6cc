// curve.test.mjs - the HTTP API of a router whose client endpoint is tcp:// with CurveZMQ: completions work over HTTP (the HTTP server reaches the router by its private ipc path, no keys), the tcp endpoint still serves only keyed clients, and the private path goes when the router stops.
import assert from "node:assert/strict";
import {execFile, execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {after, before, describe, test} from "node:test";
import {promisify} from "node:util";

import {freePort, inProcessText, MODEL_NAME, openaiClass, Pipeline, root} from "./lib.mjs";

const llorch = path.join(root, "build/bin/llorch");
const execFileP = promisify(execFile);

// The router's private folders for its HTTP server (/tmp/llorch-router-<pid>-*).
function privateDirs(pid) {
    return fs.readdirSync("/tmp").filter((n) => n.startsWith(`llorch-router-${pid}-`))
        .map((n) => path.join("/tmp", n));
}

describe("HTTP on a router whose --clients is tcp:// with CurveZMQ", () => {
    let p, keys, port, client;
    const prompt = "Once upon a time";

    before(async () => {
        keys = fs.mkdtempSync("/tmp/llorch-http-curve-test-");
        for (const name of ["router", "client"])
            execFileSync(llorch, ["keygen", "--out", path.join(keys, name)], {stdio: "ignore"});
        fs.copyFileSync(path.join(keys, "client.pub"), path.join(keys, "allow"));
        port = await freePort();
        p = await new Pipeline({routerArgs: ["--clients", `tcp://127.0.0.1:${port}`,
                                             "--curve-secret", path.join(keys, "router.key"),
                                             "--allow", path.join(keys, "allow")]}).start();
        const OpenAI = await openaiClass();
        client = new OpenAI({baseURL: p.url("/v1"), apiKey: "unused", maxRetries: 0});
    });
    after(async () => {
        if (p)
            await p.stop();
        if (keys)
            fs.rmSync(keys, {recursive: true, force: true});
    });

    test("a greedy completion over HTTP, streamed and not, equals in-process generate", async () => {
        const want = inProcessText(prompt, 32);
        const r = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 32,
                                                   temperature: 0});
        assert.equal(r.choices[0].text, want);
        assert.equal(r.usage.completion_tokens, 32);
        const stream = await client.completions.create({model: MODEL_NAME, prompt, max_tokens: 32,
                                                        temperature: 0, stream: true});
        let text = "";
        for await (const chunk of stream)
            text += chunk.choices[0].text;
        assert.equal(text, want);
        const chat = await client.chat.completions.create({
            model: MODEL_NAME, messages: [{role: "user", content: "Tell me about a cat."}],
            max_tokens: 16, temperature: 0});
        assert.ok(chat.choices[0].message.content.length > 0);
        const health = await (await fetch(p.url("/health"))).json();
        assert.equal(health.status, "ok");
    });

    test("the tcp endpoint still serves a client with a listed key, with the same text", async () => {
        const {stdout} = await execFileP(llorch, ["generate", "--router", `tcp://127.0.0.1:${port}`,
                                                  "--curve-key", path.join(keys, "client.key"),
                                                  "--curve-server-public",
                                                  path.join(keys, "router.pub"), "-p", prompt,
                                                  "--temp", "0", "-n", "32", "--json"],
                                         {timeout: 30000});
        assert.equal(JSON.parse(stdout).text, inProcessText(prompt, 32));
    });

    test("the HTTP server's path is a folder only the router's user can enter, gone at exit", async () => {
        const pid = p.pid("router");
        const dirs = privateDirs(pid);
        assert.equal(dirs.length, 1, `one private folder of router ${pid}: ${dirs}`);
        assert.equal(fs.statSync(dirs[0]).mode & 0o777, 0o700);
        await p.kill("router");
        assert.equal(p.children.router.exitCode, 0, p.logs.router);
        assert.deepEqual(privateDirs(pid), []);
    });
});
