// A mock OpenAI-compatible LLM upstream for tests: what SillyTavern's Custom
// source and chatbridge's key-rotation location call.  It records every call
// with the key it carried, answers deterministically, and can be told to
// fail for a given key, for everyone, or to be slow.
//
//   node t/lib/mock-llm.mjs [--port N] [--chunk-delay MS]
//
// Prints "listening PORT" as its first line.  Loopback only.
//
//   GET  /v1/models             one model, "mock-model"
//   POST /v1/chat/completions   stream and not; the answer is
//                               "mock reply #<n>: <last user text>"
//   GET  /__mock/calls          every call so far (see record below)
//   POST /__mock/behaviour      {"keys": {"<key>": {"status", "retry_after",
//                               "times"}}, "status", "delay_ms"}
//   POST /__mock/reset          forget calls and behaviour

import http from 'node:http';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};

const port = Number(opt('--port', 0));
const chunkDelay = Number(opt('--chunk-delay', 5));
const MAX_BODY = 8 * 1024 * 1024;

let calls = [];
let behaviour = {};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function json(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json',
    'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function oaiError(res, status, message, headers = {}) {
  json(res, status, { error: { message, type: status === 429 ? 'rate_limit_error' : 'api_error',
    code: String(status) } }, headers);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function bearer(req) {
  const h = req.headers.authorization || '';
  const m = /^Bearer\s+(.*)$/i.exec(h);
  return m ? m[1] : (h || null);
}

function lastUserText(messages) {
  for (let i = (messages || []).length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m && m.role === 'user') {
      if (typeof m.content === 'string') return m.content;
      if (Array.isArray(m.content)) {
        return m.content.filter((p) => p && p.type === 'text').map((p) => p.text).join('\n');
      }
    }
  }
  return '';
}

// what this call should get: a status to fail with, or null
function failureFor(key) {
  const k = behaviour.keys && key !== null ? behaviour.keys[key] : undefined;
  if (k && (k.times === undefined || k.times > 0)) {
    if (k.times !== undefined) k.times--;
    return { status: k.status || 429, retryAfter: k.retry_after };
  }
  if (behaviour.status) return { status: behaviour.status, retryAfter: behaviour.retry_after };
  return null;
}

async function completions(req, res) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (e) {
    oaiError(res, 400, `bad JSON: ${e.message}`);
    return;
  }
  const key = bearer(req);
  const n = calls.length + 1;
  const answer = `mock reply #${n}: ${lastUserText(body.messages)}`;
  const record = { n, key, stream: !!body.stream, model: body.model, messages: body.messages,
    answer, status: 200, aborted: false };
  calls.push(record);

  const fail = failureFor(key);
  if (behaviour.delay_ms) await sleep(behaviour.delay_ms);
  if (fail) {
    record.status = fail.status;
    record.answer = null;
    oaiError(res, fail.status, `mock failure ${fail.status} for this key`,
      fail.retryAfter !== undefined ? { 'retry-after': String(fail.retryAfter) } : {});
    return;
  }

  const id = `chatcmpl-mock-${n}`;
  const created = Math.floor(Date.now() / 1000);
  const model = body.model || 'mock-model';
  const usage = { prompt_tokens: 10, completion_tokens: answer.split(' ').length,
    total_tokens: 10 + answer.split(' ').length };

  if (!body.stream) {
    json(res, 200, { id, object: 'chat.completion', created, model,
      choices: [{ index: 0, message: { role: 'assistant', content: answer }, finish_reason: 'stop' }],
      usage });
    return;
  }

  let closed = false;
  res.on('close', () => {
    if (!res.writableFinished) {
      closed = true;
      record.aborted = true;
    }
  });
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const send = (delta, finish = null) => res.write(`data: ${JSON.stringify({ id,
    object: 'chat.completion.chunk', created, model,
    choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`);
  send({ role: 'assistant', content: '' });
  // a word at a time, each with its leading space
  const words = answer.match(/\S+\s*/g) || [];
  for (const w of words) {
    if (closed) return;
    send({ content: w });
    if (chunkDelay) await sleep(chunkDelay);
  }
  if (closed) return;
  send({}, 'stop');
  if (body.stream_options && body.stream_options.include_usage) {
    res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model,
      choices: [], usage })}\n\n`);
  }
  res.end('data: [DONE]\n\n');
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://mock');
    const p = url.pathname.replace(/\/+$/, '');
    if (req.method === 'GET' && p.endsWith('/models')) {
      json(res, 200, { object: 'list', data: [{ id: 'mock-model', object: 'model', created: 0,
        owned_by: 'mock' }] });
    } else if (req.method === 'POST' && p.endsWith('/chat/completions')) {
      await completions(req, res);
    } else if (req.method === 'GET' && p === '/__mock/calls') {
      json(res, 200, calls);
    } else if (req.method === 'POST' && p === '/__mock/behaviour') {
      behaviour = JSON.parse((await readBody(req)) || '{}');
      json(res, 200, behaviour);
    } else if (req.method === 'POST' && p === '/__mock/reset') {
      calls = [];
      behaviour = {};
      json(res, 200, {});
    } else {
      oaiError(res, 404, `no route ${req.method} ${url.pathname}`);
    }
  } catch (e) {
    if (!res.headersSent) oaiError(res, 500, e.message);
    else res.destroy();
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
