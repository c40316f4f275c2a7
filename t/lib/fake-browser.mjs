#!/usr/bin/env node
// A scripted browser that speaks protocol v1 through the shared client
// (browser/common/cb-protocol.js), for the tests.  What it answers is driven
// by [[directives]] in the last user message, so a test scripts it with an
// ordinary request:
//
//   [[reply TEXT]]          answer TEXT (default: "echo: " + the prompt)
//   [[chunks N]]            in N deltas (default: one per word)
//   [[delay MS]]            before the first delta
//   [[gap MS]]              between deltas
//   [[big N]]               answer N bytes (a repeating pattern)
//   [[reasoning TEXT]]      reasoning deltas before the answer
//   [[image URL]]           an image instead of text
//   [[usage P C]]           report usage P prompt, C completion tokens
//   [[finish REASON]]       the site's finish reason (default stop)
//   [[error CODE STATUS [RETRY_AFTER]]]   fail instead of answering
//   [[error-after N CODE STATUS]]         fail after N deltas
//   [[ignore-pause]]        keep sending when told to pause (misbehave)
//   [[silent]]              never answer
//   [[hang-after N]]        stop after N deltas (await cancel)
//   [[close-after N]]       drop the connection after N deltas
//   [[state needs_human]]   report the tab as needing a person, then fail
//   [[close-once FILE]]     the first browser to get this task drops the
//                           connection (it creates FILE; others answer)
//   [[fail-once FILE]]      the first task to create FILE fails with an
//                           error frame (site_error 502); others answer (so
//                           one of the n parts of an images request fails)
//   [[busy-once FILE]]      likewise, but the tab answers busy (503)
//   [[send-models LIST]]    first announce LIST as the tab's models: entries
//                           ID[=UUID[=TYPE]] joined by ",", the UUID sent as
//                           it is (":" too); no LIST: an empty list
//   [[answer-command FRAME]] first answer the last command this tab was
//                           sent as if it were a task: FRAME done, delta or
//                           busy (an error frame), with the command's id
//
// Events (task, cancel, pause, resume, protocol errors) go to --log as JSON
// lines, so a test can see that a cancel reached the browser.
//
//   node fake-browser.mjs --url ws://... --token T [--kind test] [--id ID]
//        [--concurrency N] [--models a,b] [--browsers N] [--log FILE]
//        [--no-reconnect] [--capture SESSION:MESSAGE]
//
// With --capture it announces capture and answers a capture command with
// those ids 100 ms later, as if the person had clicked Retry ("none":
// announce it, never answer).  A send_models command makes it announce its
// models again.  --models takes names, or name=uuid[:image].

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const top = path.resolve(here, '..', '..');
const { BridgeClient, TaskTracker } =
    require(path.join(top, 'browser/common/cb-protocol.js'));
const spec = JSON.parse(fs.readFileSync(
    path.join(top, 'browser/protocol/protocol-v1.json'), 'utf8'));
const WebSocket = require(process.env.CB_WS_MODULE || 'ws');

const args = {
  url: null, token: '', kind: 'test', id: 'fake', concurrency: 64,
  models: '', browsers: 1, log: null, reconnect: true, capture: null,
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--no-reconnect') { args.reconnect = false; continue; }
  const v = process.argv[++i];
  switch (a) {
    case '--url': args.url = v; break;
    case '--token': args.token = v; break;
    case '--kind': args.kind = v; break;
    case '--id': args.id = v; break;
    case '--concurrency': args.concurrency = Number(v); break;
    case '--models': args.models = v; break;
    case '--browsers': args.browsers = Number(v); break;
    case '--log': args.log = v; break;
    case '--capture': args.capture = v; break;
    default: console.error(`fake-browser: unknown option ${a}`); process.exit(2);
  }
}

const logFd = args.log ? fs.openSync(args.log, 'a') : null;
function record(ev) {
  ev.t = Date.now();
  if (logFd !== null) fs.writeSync(logFd, JSON.stringify(ev) + '\n');
}

const sleep = (ms, signal) => new Promise((resolve) => {
  if (!ms) { resolve(); return; }
  const h = setTimeout(resolve, ms);
  if (signal) signal.addEventListener('abort', () => { clearTimeout(h); resolve(); });
});

function directives(text) {
  const d = {};
  for (const m of text.matchAll(/\[\[([a-z-]+)(?: ([^\]]*))?\]\]/g)) {
    d[m[1]] = m[2] === undefined ? true : m[2];
  }
  return d;
}

function lastUser(task) {
  for (let i = task.messages.length - 1; i >= 0; i--) {
    const m = task.messages[i];
    if (m.role === 'user' && m.content.trim() !== '') return m.content;
  }
  return '';
}

function splitWords(text, n) {
  if (n) {
    const size = Math.ceil(text.length / n);
    const out = [];
    for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
    return out;
  }
  return text.match(/\S+\s*|\s+/g) || [text];
}

async function work(client, task, tracked) {
  const prompt = lastUser(task);
  const d = directives(prompt);
  const signal = tracked.signal;
  const id = task.request_id;
  const clean = prompt.replace(/\[\[[^\]]*\]\]/g, '').trim();

  record({ event: 'task', browser: client.browserId, request_id: id,
           model: task.model, stream: task.stream, op: task.op,
           messages: task.messages, params: task.params, kind: task.kind,
           arena: task.arena });

  if (d['send-models'] !== undefined) {
    const list = d['send-models'] === true ? []
      : String(d['send-models']).split(',').map((m) => {
        const [mid, uuid, type] = m.split('=');
        return Object.assign({ id: mid }, uuid ? { uuid } : {},
                             type ? { type } : {});
      });
    client.sendModels(list);
  }

  if (d['answer-command']) {
    const cid = lastCommand.get(client);
    const frame = { done: { type: 'done', request_id: cid },
                    delta: { type: 'delta', request_id: cid, text: 'x' },
                    busy: { type: 'error', request_id: cid, code: 'busy',
                            message: 'scripted busy for a command',
                            status: 503, retryable: true } };
    record({ event: 'answer-command', browser: client.browserId,
             command_id: cid, frame: d['answer-command'] });
    client.send(frame[String(d['answer-command'])]);
  }

  if (d.silent) return new Promise(() => {});

  if (d['close-once']) {
    let first = false;
    try { fs.closeSync(fs.openSync(String(d['close-once']), 'wx')); first = true; }
    catch (_) { /* another browser was first */ }
    if (first) {
      record({ event: 'closing', browser: client.browserId, request_id: id });
      client._ws.close(1000, 'scripted close');
      return new Promise(() => {});
    }
  }

  if (d['fail-once']) {
    let first = false;
    try { fs.closeSync(fs.openSync(String(d['fail-once']), 'wx')); first = true; }
    catch (_) { /* another task was first */ }
    if (first) {
      client.sendError(id, 'site_error', 'scripted failure (fail-once)', { status: 502 });
      return;
    }
  }

  if (d['busy-once']) {
    let first = false;
    try { fs.closeSync(fs.openSync(String(d['busy-once']), 'wx')); first = true; }
    catch (_) { /* another task was first */ }
    if (first) {
      client.sendError(id, 'busy', 'scripted busy (busy-once)', { status: 503, retryable: true, retryAfter: 1 });
      return;
    }
  }

  if (d.state) {
    client.sendState(d.state, 'fake verification page');
    client.sendError(id, 'needs_human', 'a verification page is up',
                     { status: 503, retryable: true, retryAfter: 30 });
    return;
  }

  if (d.error) {
    const [code, status, after] = String(d.error).split(' ');
    await sleep(Number(d.delay || 0), signal);
    client.sendError(id, code, `scripted ${code}`,
                     { status: Number(status) || undefined,
                       retryAfter: after ? Number(after) : undefined });
    return;
  }

  await sleep(Number(d.delay || 0), signal);
  if (tracked.cancelled) return;

  if (d.reasoning) {
    for (const piece of splitWords(String(d.reasoning))) {
      client.sendReasoning(id, piece);
    }
  }

  if (d.image) {
    client.sendImage(id, String(d.image), 'image/png');
    client.sendDone(id, 'stop');
    return;
  }

  let reply = d.reply !== undefined ? String(d.reply) : `echo: ${clean}`;
  if (d.big) {
    const n = Number(d.big);
    const unit = 'chatbridge-0123456789-';
    reply = unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
  }

  const pieces = splitWords(reply, d.chunks ? Number(d.chunks) : 0);
  const hangAfter = d['hang-after'] !== undefined ? Number(d['hang-after']) : -1;
  const closeAfter = d['close-after'] !== undefined ? Number(d['close-after']) : -1;
  const errorAfter = d['error-after'] ? String(d['error-after']).split(' ') : null;

  for (let i = 0; i < pieces.length; i++) {
    if (i === hangAfter) return new Promise(() => {});
    if (i === closeAfter) {
      record({ event: 'closing', browser: client.browserId, request_id: id });
      client._ws.close(1000, 'scripted close');
      return new Promise(() => {});
    }
    if (errorAfter && i === Number(errorAfter[0])) {
      client.sendError(id, errorAfter[1], `scripted ${errorAfter[1]} mid-stream`,
                       { status: Number(errorAfter[2]) });
      return;
    }
    // a page reads its fetch stream across event-loop turns; so do we
    await new Promise((resolve) => setImmediate(resolve));
    if (!d['ignore-pause']) await tracked.waitIfPaused();
    if (tracked.cancelled) return;
    client.sendDelta(id, pieces[i]);
    if (d.gap) await sleep(Number(d.gap), signal);
    if (tracked.cancelled) return;
  }

  let usage;
  if (d.usage) {
    const [p, c] = String(d.usage).split(' ').map(Number);
    usage = { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
  }
  client.sendDone(id, d.finish ? String(d.finish) : 'stop', usage);
}

const clients = [];
const lastCommand = new Map();      // client -> the id of its last command

for (let n = 0; n < args.browsers; n++) {
  const tracker = new TaskTracker();
  const models = args.models ? args.models.split(',').map((m) => {
    const [id, rest] = m.split('=');
    if (!rest) return { id };
    const [uuid, type] = rest.split(':');
    return { id, uuid, type: type || 'chat' };
  }) : [];
  const client = new BridgeClient({
    url: args.url,
    token: args.token,
    kind: args.kind,
    id: args.browsers > 1 ? `${args.id}-${n + 1}` : args.id,
    agent: 'chatbridge-fake-browser/1',
    capabilities: { concurrency: args.concurrency,
                    models: models.map((m) => m.id), images: true,
                    capture: Boolean(args.capture) },
    WebSocket,
    spec,
    tracker,
    backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.2 },
    onTask: (task, tracked) => work(client, task, tracked),
    onCancel: (f) => record({ event: 'cancel', browser: client.browserId,
                              request_id: f.request_id, reason: f.reason }),
    onPause: (f) => record({ event: 'pause', request_id: f.request_id }),
    onResume: (f) => record({ event: 'resume', request_id: f.request_id }),
    onError: (f) => record({ event: 'error', browser: client.browserId, frame: f }),
    onCommand: (f) => {
      record({ event: 'command', browser: client.browserId, frame: f });
      lastCommand.set(client, f.command_id);
      if (f.command === 'send_models') {
        client.sendModels(models);
        client.sendResult(f.command_id, true, { count: models.length });
      } else if (f.command === 'capture' && args.capture
                 && args.capture !== 'none') {
        const [session_id, message_id] = args.capture.split(':');
        setTimeout(() => client.sendResult(f.command_id, true,
                                           { session_id, message_id }), 100);
      }
    },
    onState: (state, info) => {
      record({ event: 'state', browser: client.browserId || client.id, state,
               code: info && info.code });
      if (state === 'ready' && models.length) {
        client.sendModels(models);
      }
      if (state === 'closed' && !args.reconnect) client.stop();
    },
    onProtocolError: (info) => record({ event: 'protocol_error', info }),
  });
  clients.push(client);
  client.start();
}

function shutdown() {
  for (const c of clients) c.stop();
  setTimeout(() => process.exit(0), 50);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
