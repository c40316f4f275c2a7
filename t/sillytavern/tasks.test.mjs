// The SillyTavern extension's request handling without SillyTavern: the
// folder browser/sillytavern/build.sh makes, imported in Node with a small
// scripted stand-in for SillyTavern (its context, events, chats and
// generate()), talking protocol v1 over a real WebSocket to a scripted
// sidecar that validates every frame. Fast, so the corners the end-to-end
// test (sillytavern.test.mjs) cannot reach cheaply are checked here: tasks it
// cannot take, streamed text and the final reply, a very long history, a
// long answer in many tokens, cancel, a refused token.
//
//   NODE_PATH=t/node_modules node --test t/sillytavern/tasks.test.mjs
//   (CB_ST_EXTENSION=DIR: test another built copy)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { sleep, waitFor } from '../node/harness.mjs';

const require = createRequire(import.meta.url);
const { WebSocket, WebSocketServer } = require('ws');
const here = path.dirname(fileURLToPath(import.meta.url));
const TOP = path.resolve(here, '..', '..');
const P = require(`${TOP}/browser/common/cb-protocol.js`);
const spec = JSON.parse(fs.readFileSync(`${TOP}/browser/protocol/protocol-v1.json`, 'utf8'));
const validator = P.createValidator(spec);

// ───────────────────────────── a SillyTavern stand-in ─────────────────────────────

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-st-tasks-'));
const pub = path.join(root, 'public');
const extDir = path.join(pub, 'scripts', 'extensions', 'third-party', 'chatbridge');
fs.mkdirSync(path.dirname(extDir), { recursive: true });
if (process.env.CB_ST_EXTENSION) {
  fs.cpSync(process.env.CB_ST_EXTENSION, extDir, { recursive: true });
} else {
  execFileSync('sh', [`${TOP}/browser/sillytavern/build.sh`, extDir], { stdio: ['ignore', 'inherit', 'inherit'] });
}
fs.writeFileSync(path.join(pub, 'package.json'), '{ "type": "module" }\n');
fs.writeFileSync(path.join(pub, 'script.js'), [
  'export let is_send_press = false;',
  'export let isChatSaving = false;',
  "export const system_avatar = 'img/five.png';",
  'export async function closeCurrentChat() {}',
].join('\n'));

const EVENTS = {
  APP_READY: 'app_ready', STREAM_TOKEN_RECEIVED: 'stream_token_received',
  GENERATION_AFTER_COMMANDS: 'generation_after_commands', CHAT_CHANGED: 'chat_changed',
};
const listeners = new Map();
const eventSource = {
  on(e, f) { if (!listeners.has(e)) listeners.set(e, []); listeners.get(e).push(f); },
  removeListener(e, f) { listeners.set(e, (listeners.get(e) || []).filter((x) => x !== f)); },
  emit(e, ...args) { for (const f of [...(listeners.get(e) || [])]) f(...args); },
};

const characters = [{ name: 'Seraphina', avatar: 'seraphina.png', chat: 'Seraphina - home' }];
const tavern = {
  chatId: 'Seraphina - home',
  chats: new Map([['Seraphina - home', [{ name: 'User', is_user: true, mes: 'hi' }]]]),
  generations: [],            // what each generate() saw: { chat }
  runs: [],                   // each generate()'s run: { stopped, tokens }
  stops: 0,
  running: null,              // the generation running now: { stopped }
  /** What the next generate() does: { tokens: [cumulative texts], final, tokenDelayMs }. */
  script: null,
};
const chatOf = (id) => {
  if (!tavern.chats.has(id)) tavern.chats.set(id, []);
  return tavern.chats.get(id);
};

const ctx = {
  extensionSettings: {},
  saveSettingsDebounced() {},
  characters,
  characterId: 0,
  groupId: undefined,
  get chat() { return chatOf(tavern.chatId); },
  getCurrentChatId: () => tavern.chatId,
  onlineStatus: 'Valid',
  name1: 'User',
  eventSource,
  eventTypes: EVENTS,
  async selectCharacterById(i) { this.characterId = i; tavern.chatId = characters[i].chat; },
  async openCharacterChat(name) { tavern.chatId = name; },
  async clearChat() {},
  async printMessages() {},
  async saveChat() {},
  stopGeneration() {
    tavern.stops++;
    if (tavern.running) tavern.running.stopped = true;
    return true;
  },
  async generate() {
    const s = tavern.script || { tokens: [], final: 'ok' };
    const chat = chatOf(tavern.chatId);
    tavern.generations.push({ chatLength: chat.length, first: chat[0], last: chat.at(-1) });
    const run = { stopped: false, tokens: 0 };
    tavern.running = run;
    tavern.runs.push(run);
    try {
      eventSource.emit(EVENTS.GENERATION_AFTER_COMMANDS);
      let shown = '';
      for (const t of s.tokens) {
        if (run.stopped) break;
        if (s.tokenDelayMs) await sleep(s.tokenDelayMs);
        if (run.stopped) break;
        shown = t;
        run.tokens++;
        eventSource.emit(EVENTS.STREAM_TOKEN_RECEIVED, t);
      }
      chat.push({ name: 'Seraphina', is_user: false, mes: run.stopped ? shown : s.final });
      return run.stopped ? undefined : { ok: true };
    } finally {
      tavern.running = null;
    }
  },
};

/** The few DOM elements the extension uses. */
const elements = new Map();
function element(id) {
  if (!elements.has(id)) {
    const handlers = {};
    elements.set(id, {
      id, value: '', checked: false, textContent: '', scrollTop: 0, scrollHeight: 0, dataset: {},
      classList: { toggle() {} },
      handlers,
      addEventListener(type, fn) { handlers[type] = fn; },
      insertAdjacentHTML() {},
    });
  }
  return elements.get(id);
}
const click = (id) => element(id).handlers.click();

// ───────────────────────────── a scripted sidecar ─────────────────────────────

const sidecar = {
  wss: null,
  ws: null,
  hellos: [],
  frames: [],                 // every frame the extension sent, validated
  refuseNext: false,
};

function framesOf(id) {
  return sidecar.frames.filter((f) => f.request_id === id);
}

let taskNo = 0;
function taskFrame(extra = {}) {
  return {
    type: 'task', request_id: `req${++taskNo}`, kind: 'tavern', op: 'chat', model: 'sillytavern', stream: true,
    messages: [{ role: 'user', content: 'Hello' }], params: {}, ...extra,
  };
}

/** Send a task; resolves with the frames for it once it ended (done or error). */
async function run(task, ms = 10000) {
  sidecar.ws.send(JSON.stringify(task));
  await waitFor(() => framesOf(task.request_id).some((f) => f.type === 'done' || f.type === 'error'), ms,
    `the end of ${task.request_id}`);
  return framesOf(task.request_id);
}

const state = () => globalThis.chatbridgeTavern.state();
const idle = () => waitFor(() => { const s = state(); return !s.working && s.queued === 0 && !s.bridge; }, 5000,
  'the extension to be idle');

const saved = {};
before(async () => {
  sidecar.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => sidecar.wss.once('listening', r));
  sidecar.wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      const v = validator.validate(f, 'browser');
      assert.ok(v.ok, `${JSON.stringify(f).slice(0, 200)}: ${v.message}`);
      if (f.type === 'hello') {
        sidecar.hellos.push(f);
        if (sidecar.refuseNext) { ws.close(4401, 'bad token'); return; }
        sidecar.ws = ws;
        ws.send(JSON.stringify({ type: 'welcome', v: 1, browser_id: 'tavern-1', heartbeat_ms: 15000, max_frame: 16777216 }));
        return;
      }
      sidecar.frames.push(f);
    });
  });
  const url = `ws://127.0.0.1:${sidecar.wss.address().port}/chatbridge/ws`;
  ctx.extensionSettings.chatbridge = { url, token: 'tok', autoConnect: true };

  for (const k of ['SillyTavern', 'document', 'fetch', 'WebSocket', 'setInterval']) saved[k] = globalThis[k];
  globalThis.SillyTavern = { getContext: () => ctx };
  globalThis.document = {
    getElementById: (id) => (id === 'send_textarea' || id.startsWith('chatbridge_') || id === 'extensions_settings2'
      ? element(id) : null),
  };
  globalThis.fetch = async (u) => new Response(fs.readFileSync(fileURLToPath(String(u)), 'utf8'));
  globalThis.WebSocket = WebSocket;
  const intervals = [];
  saved.intervals = intervals;
  globalThis.setInterval = (fn, ms) => { const h = saved.setInterval(fn, ms); intervals.push(h); return h; };

  await import(pathToFileURL(path.join(extDir, 'index.js')).href);
  await waitFor(() => listeners.has(EVENTS.APP_READY), 5000, 'the extension to start');
  eventSource.emit(EVENTS.APP_READY);
  await waitFor(() => state().status === 'ready', 5000, 'the extension to connect');
});

after(async () => {
  if (elements.has('chatbridge_disconnect')) click('chatbridge_disconnect');
  for (const h of saved.intervals || []) clearInterval(h);
  for (const k of ['SillyTavern', 'document', 'fetch', 'WebSocket', 'setInterval']) globalThis[k] = saved[k];
  for (const c of sidecar.wss ? sidecar.wss.clients : []) c.terminate();
  if (sidecar.wss) await new Promise((r) => sidecar.wss.close(() => r()));
  fs.rmSync(root, { recursive: true, force: true });
});

// ──────────────────────────────────────────────────────────────────

test('a streamed answer: deltas of what is new in each token, the rest from the reply, then done', async () => {
  tavern.script = { tokens: ['Hel', 'Hello', 'Hello, wor', 'Hello, wor', 'Hello, world'], final: 'Hello, world!' };
  const frames = await run(taskFrame());
  assert.deepEqual(frames.map((f) => f.type === 'delta' ? f.text : f.type),
    ['Hel', 'lo', ', wor', 'ld', '!', 'done']);
  assert.deepEqual(frames.at(-1), { type: 'done', request_id: frames[0].request_id, finish_reason: 'stop' });
  await idle();
  assert.equal(tavern.chatId, 'Seraphina - home', 'the user\'s chat is back');
});

test('tasks it cannot take are refused as bad_request before they are queued', async () => {
  await idle();
  const generations = tavern.generations.length;
  const bad = [
    [{ messages: undefined }, /no messages/],
    [{ messages: [] }, /no messages/],
    [{ messages: 'Hello' }, /no messages/],
    [{ messages: [{ role: 'tool', content: 'x' }] }, /messages\[0\]/],
    [{ messages: [{ role: 'user', content: 'ok' }, { role: 'user', content: 5 }] }, /messages\[1\]/],
    [{ messages: [{ role: 'user', content: 'ok' }, null] }, /messages\[1\]/],
    [{ messages: [{ role: 'user', content: 'ok', name: 7 }] }, /messages\[0\]/],
    [{ model: undefined }, /no model/],
    [{ op: 'image' }, /chat completions only/],
  ];
  for (const [extra, why] of bad) {
    const task = taskFrame(extra);
    const frames = await run(task, 3000);
    assert.equal(frames.length, 1, JSON.stringify(extra));
    const { message, ...rest } = frames[0];
    assert.deepEqual(rest, { type: 'error', request_id: task.request_id, code: 'bad_request', status: 400,
      retryable: false }, JSON.stringify(extra));
    assert.match(message, why);
    assert.equal(state().queued, 0, 'nothing was queued');
  }
  await sleep(400);                                    // longer than the extension waits for a next request
  assert.equal(tavern.generations.length, generations, 'SillyTavern generated nothing for them');
  // and a good one after them is answered alone
  tavern.script = { tokens: [], final: 'fine' };
  const ok = await run(taskFrame({ stream: false }));
  assert.deepEqual(ok.map((f) => f.type), ['delta', 'done']);
  assert.equal(tavern.generations.length, generations + 1);
});

test('a final reply that SillyTavern changed beyond what was streamed: the streamed text stands, done', async () => {
  await idle();
  tavern.script = { tokens: ['The answer', 'The answer is 4'], final: 'An answer: 42' };
  const frames = await run(taskFrame());
  assert.deepEqual(frames.map((f) => f.type === 'delta' ? f.text : f.type), ['The answer', ' is 4', 'done'],
    'nothing of the changed reply is appended');
  assert.ok(state().log.some((l) => /final reply differs from the 15 characters streamed/.test(l)),
    'the difference is logged');
  // a token that rewrites what was sent is not passed on; the reply then decides
  tavern.script = { tokens: ['Hello', 'Jello there'], final: 'Hello there' };
  const again = await run(taskFrame());
  assert.deepEqual(again.map((f) => f.type === 'delta' ? f.text : f.type), ['Hello', ' there', 'done']);
});

test('blanks SillyTavern trims from the final reply are not a mismatch', async () => {
  // the tokens carry the raw text; the reply is cleaned up: blanks at line ends dropped, the whole trimmed
  const cases = [
    [[' Hi there  ', ' Hi there  \nSecond '], 'Hi there\nSecond line.', [' Hi there  ', '\nSecond ', 'line.']],
    [['Answer.', 'Answer.\n\n'], 'Answer.', ['Answer.', '\n\n']],
    [['Answer.  '], 'Answer.', ['Answer.  ']],
    [['\nA  \nB  \n'], 'A\nB\nC', ['\nA  \nB  \n', 'C']],
  ];
  for (const [tokens, final, want] of cases) {
    await idle();
    tavern.script = { tokens, final };
    const frames = await run(taskFrame());
    assert.deepEqual(frames.map((f) => f.type === 'delta' ? f.text : f.type), [...want, 'done'], JSON.stringify(tokens));
  }
  // other changes (SillyTavern's "Name:" removal, its regex scripts): the
  // streamed text is the answer, nothing is appended to it
  for (const [tokens, final] of [[['A B'], 'AB'], [['Seraphina: Hi'], 'Hi'], [['Hi\n\n'], 'Hi\nThere']]) {
    await idle();
    tavern.script = { tokens, final };
    const frames = await run(taskFrame());
    assert.deepEqual(frames.map((f) => f.type === 'delta' ? f.text : f.type), [...tokens, 'done'],
      JSON.stringify([tokens, final]));
  }
});

test('a history too long for splice(...spread) is taken whole', async () => {
  await idle();
  const n = 200000;
  const messages = Array.from({ length: n }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` }));
  tavern.script = { tokens: [], final: 'read them all' };
  const frames = await run(taskFrame({ stream: false, messages }), 30000);
  assert.deepEqual(frames.map((f) => f.type), ['delta', 'done'], JSON.stringify(frames.at(-1)).slice(0, 300));
  const g = tavern.generations.at(-1);
  assert.equal(g.chatLength, n);
  assert.deepEqual([g.first.mes, g.first.is_user, g.last.mes, g.last.is_user], ['m0', true, `m${n - 1}`, false]);
});

// (each token is compared with the end of what was sent, not all of it:
// 20,000 tokens took about 7 s when every token was compared with the
// whole text, about 0.2 s now; not a timed assertion)
test('a long answer in many tokens arrives whole, each token\'s new text once', async () => {
  await idle();
  const tokens = 20000;
  const full = Array.from({ length: tokens }, (_, i) => `w${String(i).padStart(8, '0')} `).join('');   // 10 per token
  const cumulative = Array.from({ length: tokens }, (_, i) => full.slice(0, (i + 1) * 10));
  tavern.script = { tokens: cumulative, final: `${full}.` };
  const frames = await run(taskFrame(), 60000);
  assert.equal(frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''), `${full}.`);
  assert.equal(frames.at(-1).type, 'done');
});

test('a cancel stops the generation; nothing is sent for the request after it; the next one works', async () => {
  await idle();
  const stops = tavern.stops;
  tavern.script = { tokens: Array.from({ length: 100 }, (_, i) => 'x'.repeat(i + 1)), final: 'never', tokenDelayMs: 20 };
  const task = taskFrame();
  sidecar.ws.send(JSON.stringify(task));
  await waitFor(() => framesOf(task.request_id).length >= 2, 5000, 'a few deltas');
  sidecar.ws.send(JSON.stringify({ type: 'cancel', request_id: task.request_id, reason: 'client_closed' }));
  await waitFor(() => tavern.stops > stops, 2000, 'stopGeneration');
  const n = framesOf(task.request_id).length;
  await idle();
  await sleep(100);
  assert.equal(framesOf(task.request_id).length, n, 'no frame after the cancel');
  assert.ok(framesOf(task.request_id).every((f) => f.type === 'delta'));
  const stopped = tavern.runs.at(-1);
  assert.ok(stopped.stopped && stopped.tokens < 100 && !tavern.running,
    `the generation was stopped after ${stopped.tokens} of its 100 tokens`);
  tavern.script = { tokens: ['ne', 'next'], final: 'next' };
  const next = await run(taskFrame());
  assert.deepEqual(next.map((f) => f.type === 'delta' ? f.text : f.type), ['ne', 'xt', 'done']);
});

test('a refused token stops the client: no retries, the status says why; Connect starts again', async () => {
  await idle();
  sidecar.refuseNext = true;
  const hellos = sidecar.hellos.length;
  sidecar.ws.close(1001, 'going away');                  // the extension reconnects, and is refused
  await waitFor(() => state().status === 'stopped', 5000, 'the extension to stop');
  assert.match(state().text, /^stopped: the bridge refused the token \(close code 4401\)/);
  await sleep(1500);                                      // several backoff periods
  assert.equal(sidecar.hellos.length, hellos + 1, 'one hello, no retrying');
  assert.equal(state().browserId, undefined, 'no client');
  sidecar.refuseNext = false;
  click('chatbridge_connect');
  await waitFor(() => state().status === 'ready', 5000, 'the extension to connect again');
  tavern.script = { tokens: [], final: 'back' };
  assert.equal((await run(taskFrame())).at(-1).type, 'done');
});
