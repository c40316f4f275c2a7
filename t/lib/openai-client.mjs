// The official openai SDK as a command-line client, for tests written in
// Perl: one chat completion, printed as JSON {text, finish, id, model}.
//
//   node t/lib/openai-client.mjs --base URL --key KEY --model M
//        --prompt TEXT [--stream]
//
// Certificates: NODE_EXTRA_CA_CERTS, as for any Node program.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
const sdk = require('openai');
const OpenAI = sdk.OpenAI || sdk.default || sdk;

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

const client = new OpenAI({ baseURL: opt('--base'), apiKey: opt('--key'), maxRetries: 0, timeout: 30000 });
const request = { model: opt('--model'), messages: [{ role: 'user', content: opt('--prompt') }] };

try {
  if (args.includes('--stream')) {
    let text = '';
    let finish = null;
    let id = null;
    let model = null;
    for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
      id = chunk.id;
      model = chunk.model;
      const c = chunk.choices[0];
      if (c) {
        text += c.delta.content || '';
        finish = c.finish_reason || finish;
      }
    }
    console.log(JSON.stringify({ text, finish, id, model }));
  } else {
    const r = await client.chat.completions.create(request);
    console.log(JSON.stringify({ text: r.choices[0].message.content, finish: r.choices[0].finish_reason,
      id: r.id, model: r.model }));
  }
} catch (e) {
  console.log(JSON.stringify({ error: String(e.message || e), status: e.status || null }));
  process.exitCode = 1;
}
