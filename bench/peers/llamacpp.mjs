// llama.cpp through node-llama-cpp on a GGUF file: greedy generation from given token ids.
//
//   node llamacpp.mjs --node-modules DIR greedy --model FILE --prompts FILE --tokens N
//       prints one JSON line: the greedy token ids generated for each prompt, one prompt at a time
//   node llamacpp.mjs --node-modules DIR bench --model FILE --prompts FILE --out FILE [--threads 2] [--context-length 512]
//       runs every level of the prompts file (inference-peers prompts writes it) and writes the timings;
//       each sequence gets a context of --context-length tokens, as the other engines do
//
// Tokens are passed as ids, so llama.cpp's own tokenizer plays no part: every engine gets the same
// prompt tokens. Generation takes exactly the requested number of tokens (end-of-generation tokens
// included), as the other engines of the comparison do.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
function option(name, fallback) {
    const i = args.indexOf(name);
    if (i < 0) {
        if (fallback === undefined) fail(`missing ${name}`);
        return fallback;
    }
    return args[i + 1];
}
function fail(message) {
    console.error(`llamacpp.mjs: ${message}`);
    process.exit(2);
}

const nodeModules = option("--node-modules");
const command = args.find(a => a === "greedy" || a === "bench") ?? fail("give a command: greedy or bench");
const modelPath = option("--model");
const promptsFile = JSON.parse(fs.readFileSync(option("--prompts"), "utf8"));
const threads = Number(option("--threads", "2"));

const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(nodeModules, "node-llama-cpp", "dist", "index.js")).href);
// The prebuilt CPU binary only: never build from source or download anything.
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, maxThreads: threads, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });

// Takes `count` tokens from one sequence, calling onToken(index) as each arrives.
async function generate(sequence, prompt, count, onToken) {
    const tokens = [];
    for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
        tokens.push(token);
        onToken?.(tokens.length - 1);
        if (tokens.length === count) break;
    }
    return tokens;
}

if (command === "greedy") {
    const count = Number(option("--tokens"));
    const longest = Math.max(...promptsFile.prompts.map(p => p.length));
    const context = await model.createContext({ contextSize: longest + count + 8, sequences: 1, threads });
    const sequence = context.getSequence();
    const results = [];
    for (const prompt of promptsFile.prompts) {
        await sequence.clearHistory();
        results.push(await generate(sequence, prompt, count));
    }
    console.log(JSON.stringify(results));
    await context.dispose();
} else {
    const outputTokens = promptsFile.outputTokens;
    const contextSize = Number(option("--context-length", "512"));
    const levels = [];
    for (const level of promptsFile.levels) {
        const longest = Math.max(...level.streams.flat().map(p => p.length));
        if (longest + outputTokens > contextSize) fail(`a prompt of ${longest} tokens and ${outputTokens} new ones do not fit a context of ${contextSize}`);
        const context = await model.createContext({ contextSize, sequences: level.streams.length, threads });
        if (levels.length === 0) {
            // Warm-up: one short request before any level is measured (the others get one too).
            const sequence = context.getSequence();
            await generate(sequence, promptsFile.warmup, 4);
            sequence.dispose();
        }
        const requests = [];
        const started = performance.now();
        await Promise.all(level.streams.map(async prompts => {
            const sequence = context.getSequence();
            for (const prompt of prompts) {
                await sequence.clearHistory();
                const sent = performance.now();
                const times = [];
                const tokens = await generate(sequence, prompt, outputTokens, () => times.push(performance.now()));
                requests.push({ promptTokens: prompt.length, outputTokens: tokens.length, sentMs: sent - started, tokenMs: times.map(t => t - sent) });
            }
            sequence.dispose();
        }));
        levels.push({ streams: level.streams.length, wallMs: performance.now() - started, requests });
        await context.dispose();
        console.error(`llama.cpp: ${level.streams.length} streams done`);
    }
    fs.writeFileSync(option("--out"), JSON.stringify({ engine: "llama.cpp", threads, levels }));
}
await model.dispose();
await llama.dispose();
