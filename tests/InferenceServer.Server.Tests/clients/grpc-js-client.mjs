// Calls a running server through Node's @grpc/grpc-js, with the .proto loaded at run time by
// @grpc/proto-loader, and prints what the client saw, one JSON line per call
// (GrpcJsClientTests.cs asserts on them).
//
//   node grpc-js-client.mjs --npm DIR --proto-dir DIR --target HOST:PORT --call stream|cancel [--prompt TEXT] [--max-tokens N]
//
// DIR is the folder `install-npm-client.sh grpc-js` printed. "stream" reads a whole GenerateStream;
// "cancel" cancels the call once three messages have arrived and reports the status that followed.

import { createRequire } from 'node:module';
import { join } from 'node:path';

function parseArgs(argv) {
  const args = { npm: null, protoDir: null, target: null, call: null, prompt: 'def', maxTokens: 8 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--npm') args.npm = argv[++i];
    else if (a === '--proto-dir') args.protoDir = argv[++i];
    else if (a === '--target') args.target = argv[++i];
    else if (a === '--call') args.call = argv[++i];
    else if (a === '--prompt') args.prompt = argv[++i];
    else if (a === '--max-tokens') args.maxTokens = Number(argv[++i]);
    else throw new Error(`unexpected argument ${a}`);
  }
  if (!args.npm || !args.protoDir || !args.target || !['stream', 'cancel'].includes(args.call)) {
    throw new Error('usage: --npm DIR --proto-dir DIR --target HOST:PORT --call stream|cancel');
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
// The packages live in the install script's cache folder, not next to this file.
const require = createRequire(join(args.npm, 'package.json'));
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// arrays: a message may carry no tokens (the last one can hold only the finish reason): [] rather than undefined.
const definition = protoLoader.loadSync('inference.proto', { includeDirs: [args.protoDir], keepCase: true, longs: Number, enums: String, arrays: true });
const { Inference } = grpc.loadPackageDefinition(definition).inference.v1;
const client = new Inference(args.target, grpc.credentials.createInsecure());
const request = { prompt: args.prompt, max_tokens: args.maxTokens, temperature: 0 };

function print(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function stream() {
  return new Promise((resolve) => {
    const messages = [];
    const call = client.GenerateStream(request);
    call.on('data', (m) => messages.push(m));
    call.on('error', (e) => resolve({ call: 'stream', code: e.code, details: e.details, messages: messages.length }));
    call.on('end', () => {
      const last = messages[messages.length - 1] ?? {};
      resolve({
        call: 'stream',
        code: 0,
        messages: messages.length,
        text: messages.map((m) => m.text).join(''),
        token_ids: messages.flatMap((m) => m.token_ids),
        finish_reason: last.finish_reason,
        usage: last.usage,
      });
    });
  });
}

function cancelMidStream() {
  return new Promise((resolve) => {
    let received = 0;
    const call = client.GenerateStream(request);
    call.on('data', () => {
      received++;
      if (received === 3) call.cancel();
    });
    call.on('error', (e) => resolve({ call: 'cancel', code: e.code, received }));
    call.on('end', () => resolve({ call: 'cancel', code: 0, received }));
  });
}

try {
  print(args.call === 'stream' ? await stream() : await cancelMidStream());
} finally {
  client.close();
}
