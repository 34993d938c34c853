// Calls a running server's /v1/completions through the official `openai` npm SDK and prints what the
// SDK made of the answers, one JSON line per call (OpenAiSdkTests.cs asserts on them).
//
//   node openai-completions.mjs --npm DIR --base-url URL --model NAME [--api-key KEY]
//
// DIR is the folder install-openai.sh printed (it holds node_modules/openai); URL ends in /v1.
// Output lines: {"call": "create", ...}, {"call": "stream", ...}, {"call": "stream_usage", ...},
// {"call": "unknown_model", ...}. Exit status 0 when every call ran (an expected API error included).

import { createRequire } from 'node:module';
import { join } from 'node:path';

function parseArgs(argv) {
  const args = { npm: null, baseURL: null, model: null, apiKey: 'unused' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--npm') args.npm = argv[++i];
    else if (a === '--base-url') args.baseURL = argv[++i];
    else if (a === '--model') args.model = argv[++i];
    else if (a === '--api-key') args.apiKey = argv[++i];
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!args.npm || !args.baseURL || !args.model) throw new Error('usage: --npm DIR --base-url URL --model NAME [--api-key KEY]');
  return args;
}

const args = parseArgs(process.argv.slice(2));
// The SDK lives in install-openai.sh's cache folder, not next to this file, so plain `import` cannot find it.
const require = createRequire(join(args.npm, 'package.json'));
const sdk = require('openai');
const OpenAI = sdk.OpenAI ?? sdk.default;
const client = new OpenAI({ baseURL: args.baseURL, apiKey: args.apiKey, maxRetries: 0, timeout: 60_000 });

const print = (value) => process.stdout.write(JSON.stringify(value) + '\n');

// Greedy, bounded, past the end-of-text token (ignore_eos is this server's extension; the SDK passes it on).
const params = { model: args.model, prompt: 'def fib(n):', max_tokens: 10, temperature: 0, seed: 7, ignore_eos: true };

const whole = await client.completions.create(params);
print({
  call: 'create',
  id: whole.id,
  object: whole.object,
  model: whole.model,
  text: whole.choices[0].text,
  finish_reason: whole.choices[0].finish_reason,
  choices: whole.choices.length,
  usage: whole.usage,
});

const stream = await client.completions.create({ ...params, stream: true });
let text = '';
let finish = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  for (const choice of chunk.choices) {
    text += choice.text;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
}
print({ call: 'stream', text, finish_reason: finish, chunks });

const withUsage = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
let usage = null;
for await (const chunk of withUsage) {
  if (chunk.usage) usage = chunk.usage;
}
print({ call: 'stream_usage', usage });

try {
  await client.completions.create({ ...params, model: 'no-such-model' });
  print({ call: 'unknown_model', status: null });
} catch (e) {
  print({ call: 'unknown_model', status: e.status ?? null, code: e.code ?? null, type: e.type ?? null, param: e.param ?? null, name: e.constructor?.name ?? null });
}
