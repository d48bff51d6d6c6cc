// tokenizer.test.mjs - proves `llorch tokenize` gives llama.cpp's ids (and detokenized text) on hard strings, on the Llama-2 and stories260K vocabularies.
import {test, before, after} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shared = process.env.LLORCH_SHARED ?? path.resolve(root, "../shared");
const llorch = process.env.LLORCH_BIN ?? path.join(root, "build/bin/llorch");

const vocabs = [
    {name: "llama-2 (32000)", file: path.join(shared, "vocab/ggml-vocab-llama-spm.gguf"), n: 32000},
    {name: "stories260K (512)", file: path.join(shared, "models/stories260K.gguf"), n: 512},
];

// Strings chosen to hit every rule: the space prefix, runs of whitespace, characters
// with no token (byte fallback), multi-codepoint emoji, control-token text.
const hard = [
    "",
    " ", "  ", "   ", "\t", "\n", "\n\n\n", " \t \n ", "\t\tindented\ttabs", "\r\nwindows\r\n",
    "   leading spaces", "trailing spaces   ", "  both  ", "a  b   c    d",
    "Hello world", " Hello world", "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
    "3", "33", "333", "1234567890", "3.14159e-10 and 1,000,000.00", "0x1F 0b1010 -42 +7",
    "日本語のテキストと中文文本", "안녕하세요 세계", "مرحبا بالعالم", "שלום עולם", "สวัสดีชาวโลก",
    "नमस्ते दुनिया", "Привет, мир! Ёё", "Ελληνικά κείμενα", "Führer ied 4 ½ months",
    "🦙", "🦙🚀😶‍🌫️✅👨‍👩‍👧‍👦🏳️‍🌈", "emoji🦙inside words🚀", "✅ only emoji with a token",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "ꙮ ᚠᛇᚻ ⵣ", "\u{10FFFD} private use", "\u0001\u0002\u001f\u007f controls",
    "e\u0301 vs \u00e9 (combining)", "a\u200bb zero width", "\ufeffBOM first", "a\u00a0b nbsp",
    "\u2581 literal lower block \u2581\u2581x", "<0x0A> byte token text", "<0xZZ>",
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "text <s> more </s> end", "<s><s></s></s>",
    "< s > </ s>", " <s> ", "<|endoftext|> [INST] <<SYS>>", "<s\n>",
    "!!!!!!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "int main() {\n\treturn 0;\n}\n", "{\"json\": [1, 2, 3], \"k\": null}",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
];

let llama;

before(async () => {
    for (const v of vocabs)
        if (!fs.existsSync(v.file))
            throw new Error(`test data missing: ${v.file} (the shared test data lies beside the checkout ` +
                            `as ../shared; set LLORCH_SHARED to its folder)`);
    if (!fs.existsSync(llorch))
        throw new Error(`${llorch} is missing: run make first`);
    llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
                            logLevel: LlamaLogLevel.error});
    for (const v of vocabs)
        v.model = await llama.loadModel({modelPath: v.file, vocabOnly: true});
});

after(async () => {
    for (const v of vocabs)
        await v.model?.dispose();
    await llama?.dispose();
});

function run(args, input) {
    const out = execFileSync(llorch, ["tokenize", ...args], {encoding: "utf8", input,
                                                             stdio: ["pipe", "pipe", "pipe"]});
    return JSON.parse(out);
}

function llorchTokens(v, text, {special = true, bos = true} = {}) {
    const args = ["-m", v.file, "--json"];
    if (!special)
        args.push("--no-special");
    if (!bos)
        args.push("--no-bos");
    return run([...args, "--", text]).tokens;
}

// llama.cpp's llama_tokenize(add_special, parse_special): node-llama-cpp's
// model.tokenize never adds BOS, so it is added the way llama.cpp's add_special does.
function llamaTokens(v, text, {special = true, bos = true} = {}) {
    const ids = Array.from(v.model.tokenize(text, special));
    if (bos && v.model.tokens.shouldPrependBosToken)
        ids.unshift(v.model.tokens.bos);
    return ids;
}

function show(s) {
    return JSON.stringify(s);
}

for (const v of vocabs) {
    test(`${v.name}: the vocabulary llama.cpp loads is the one llorch reads`, () => {
        const ids = Array.from(v.model.iterateAllTokens());
        assert.equal(ids.length, v.n);
        assert.equal(v.model.tokens.bos, 1);
        assert.equal(v.model.tokens.eos, 2);
        assert.equal(v.model.tokens.shouldPrependBosToken, true);
    });

    for (const special of [true, false]) {
        test(`${v.name}: ${hard.length} hard strings tokenize as in llama.cpp ` +
             `(BOS, ${special ? "control-token text parsed" : "control-token text as plain text"})`, () => {
            const bad = [];
            for (const text of hard) {
                const ours = llorchTokens(v, text, {special});
                const theirs = llamaTokens(v, text, {special});
                if (show(ours) !== show(theirs))
                    bad.push(`${show(text)}: llorch ${show(ours)}, llama.cpp ${show(theirs)}`);
            }
            assert.deepEqual(bad, []);
        });
    }

    test(`${v.name}: without BOS, and a long text through stdin`, () => {
        const bad = [];
        for (const text of hard) {
            const ours = llorchTokens(v, text, {bos: false});
            const theirs = llamaTokens(v, text, {bos: false});
            if (show(ours) !== show(theirs))
                bad.push(`${show(text)}: llorch ${show(ours)}, llama.cpp ${show(theirs)}`);
        }
        assert.deepEqual(bad, []);
        const long = hard.join(" | ").repeat(20);
        const ours = run(["-m", v.file, "--json", "-"], long).tokens;
        assert.deepEqual(ours, llamaTokens(v, long));
    });

    test(`${v.name}: detokenizing gives llama.cpp's text, control tokens hidden or shown`, () => {
        const bad = [];
        // both vocabularies put the 256 byte tokens <0x00>..<0xFF> right after <unk> <s> </s>
        const byteId = (b) => 3 + b;
        assert.equal(v.model.detokenize([byteId(0x41)]), "A");
        const lists = hard.map((text) => llamaTokens(v, text));
        // byte tokens that split or break a character
        lists.push([byteId(0xF0), byteId(0x9F)], [byteId(0xC3), byteId(0xA9), byteId(0x41)],
                   [byteId(0xE2), byteId(0x41), byteId(0xBF)], [byteId(0x80)], [2, 1, 0]);
        for (const ids of lists) {
            for (const special of [false, true]) {
                const args = ["-m", v.file, "--json", "--decode"];
                if (special)
                    args.push("--render-special");
                const ours = run([...args, ids.join(",")]).text;
                const theirs = v.model.detokenize(ids, special);
                if (ours !== theirs)
                    bad.push(`${show(ids)} (special ${special}): llorch ${show(ours)}, llama.cpp ${show(theirs)}`);
            }
        }
        assert.deepEqual(bad, []);
    });
}
