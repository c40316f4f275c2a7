// Tests for cb-protocol.js.  Run:
//   CB_WS_MODULE=/tmp/cbjs/node_modules/ws node --test browser/common/cb-protocol.test.mjs
// (without CB_WS_MODULE, `ws` is resolved normally: node_modules or NODE_PATH).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import net from 'node:net';
import vm from 'node:vm';

const require = createRequire(import.meta.url);
const spec = JSON.parse(readFileSync(new URL('../protocol/protocol-v1.json', import.meta.url), 'utf8'));
const P = require('./cb-protocol.js');
const wsModule = createRequire(import.meta.url)(process.env.CB_WS_MODULE || 'ws');
const WebSocket = wsModule.WebSocket || wsModule;
const { WebSocketServer } = wsModule;

const { createValidator, utf8Length, splitText, truncateUtf8, BridgeClient, TaskTracker } = P;
const validator = createValidator(spec);
const RID = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const T = { timeout: 10000 };

// ───────────────────────────── helpers ─────────────────────────────

/** Resolve/reject `promise` within ms, else reject with `what`. */
function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A FIFO whose next() waits for the next pushed item. */
function queue() {
  const items = [];
  const waiters = [];
  return {
    items,
    all: [],
    push(x) {
      this.all.push(x);
      const w = waiters.shift();
      if (w) w(x); else items.push(x);
    },
    next(ms = 2000, what = 'next item') {
      if (items.length) return Promise.resolve(items.shift());
      return within(ms, new Promise((r) => waiters.push(r)), what);
    },
  };
}

/** A ws server on 127.0.0.1:<ephemeral>; every connection has a frame queue. */
async function startServer() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await within(2000, new Promise((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  }), 'listening');
  const conns = queue();
  let maxClients = 0;
  wss.on('connection', (ws) => {
    maxClients = Math.max(maxClients, wss.clients.size);
    const frames = queue();
    const conn = {
      ws,
      frames,
      raw: [],
      closed: new Promise((r) => ws.once('close', (code) => r(code))),
      send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)),
      next: (ms, what) => frames.next(ms, what || 'frame from the client'),
      /** Next frame that is not a ping. */
      async nextNonPing(ms) {
        for (;;) {
          const f = await conn.next(ms);
          if (f.type !== 'ping') return f;
        }
      },
    };
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '<binary>' : data.toString();
      conn.raw.push(text);
      let f;
      try { f = JSON.parse(text); } catch { f = { type: '<unparseable>', text }; }
      frames.push(f);
    });
    ws.on('error', () => {});
    conns.push(conn);
  });
  return {
    wss,
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    nextConnection: (ms = 3000) => conns.next(ms, 'connection'),
    get connectionCount() { return conns.all.length; },
    get maxClients() { return maxClients; },
    async close() {
      for (const c of wss.clients) c.terminate();
      await within(2000, new Promise((r) => wss.close(() => r())), 'server close');
    },
  };
}

/** A BridgeClient with recorded states, protocol errors and handler calls. */
function makeClient(url, extra = {}) {
  const events = queue();
  const states = [];
  const stateWaiters = [];
  const protocolErrors = [];
  const client = new BridgeClient({
    url,
    token: 's3cret',
    kind: 'test',
    id: 'tab-1',
    agent: 'cb-protocol.test/1',
    capabilities: { concurrency: 2, images: false },
    WebSocket,
    spec,
    onState: (s) => {
      states.push(s);
      for (const w of stateWaiters.splice(0)) w(s);
    },
    onProtocolError: (info) => { protocolErrors.push(info); events.push({ kind: 'protocolError', info }); },
    onTask: (task, t) => events.push({ kind: 'task', task, t }),
    onCancel: (f) => events.push({ kind: 'cancel', f }),
    onPause: (f) => events.push({ kind: 'pause', f }),
    onResume: (f) => events.push({ kind: 'resume', f }),
    onCommand: (f) => events.push({ kind: 'command', f }),
    onError: (f) => events.push({ kind: 'error', f }),
    ...extra,
  });
  return {
    client,
    events,
    states,
    protocolErrors,
    /** Wait until the client's state is `s`. */
    waitState(s, ms = 2000) {
      if (client.readyState === s) return Promise.resolve();
      return within(ms, new Promise((resolve) => {
        const check = (x) => { if (x === s) resolve(); else stateWaiters.push(check); };
        stateWaiters.push(check);
      }), `state ${s}`);
    },
  };
}

const welcome = (extra = {}) => ({
  type: 'welcome', v: 1, browser_id: 'tab-1', heartbeat_ms: 15000, max_frame: 16777216, ...extra,
});

/** Start a server and a client, run fn, always clean both up. */
async function withPair(extra, fn) {
  const server = await startServer();
  const c = makeClient(server.url, extra);
  try {
    c.client.start();
    await fn(server, c);
  } finally {
    c.client.stop();
    await server.close();
  }
}

/** Connect, take the hello, send welcome, wait for ready; returns the connection. */
async function handshake(server, c, welcomeExtra) {
  const conn = await server.nextConnection();
  const hello = await conn.next(2000, 'hello');
  assert.equal(hello.type, 'hello');
  conn.send(welcome(welcomeExtra));
  await c.waitState('ready');
  return conn;
}

// ──────────────────────────── validator ────────────────────────────

test('every spec example validates as its valid flag says', async (t) => {
  assert.ok(spec.examples.length > 10);
  for (const ex of spec.examples) {
    await t.test(ex.name, () => {
      const r = validator.validate(ex.frame);
      if (ex.valid) {
        assert.deepEqual(r, { ok: true }, JSON.stringify(r));
      } else {
        assert.equal(r.ok, false);
        assert.equal(r.error, ex.error, r.message);
        assert.equal(typeof r.path, 'string');
        assert.equal(typeof r.message, 'string');
      }
    });
  }
});

test('example frames also pass with their own direction', () => {
  for (const ex of spec.examples.filter((e) => e.valid)) {
    const from = spec.frames[ex.frame.type].from;
    const dirs = from === 'both' ? ['browser', 'sidecar'] : [from];
    for (const d of dirs) assert.deepEqual(validator.validate(ex.frame, d), { ok: true }, ex.name);
  }
});

test('direction: a frame from the wrong side is unknown_type; from both matches either', () => {
  const w = welcome();
  assert.equal(validator.validate(w, 'browser').error, 'unknown_type');
  assert.equal(validator.validate(w, 'sidecar').ok, true);
  const hello = { type: 'hello', v: 1, token: '', kind: 'test' };
  assert.equal(validator.validate(hello, 'sidecar').error, 'unknown_type');
  assert.equal(validator.validate(hello, 'browser').ok, true);
  for (const d of ['browser', 'sidecar', undefined]) {
    assert.equal(validator.validate({ type: 'ping', t: 1 }, d).ok, true);
    assert.equal(validator.validate({ type: 'error', code: 'x', message: 'y' }, d).ok, true);
  }
});

test('not_object, missing/wrong type, unknown type', () => {
  for (const v of [null, 1, 'x', true, [], [{ type: 'ping' }]]) {
    assert.equal(validator.validate(v).error, 'not_object');
  }
  assert.deepEqual(
    [validator.validate({}).error, validator.validate({}).path], ['missing_field', 'type']);
  assert.equal(validator.validate({ type: 7 }).error, 'wrong_type');
  assert.equal(validator.validate({ type: 'toString' }).error, 'unknown_type');
  assert.equal(validator.validate({ type: '__proto__' }).error, 'unknown_type');
});

test('max_len counts UTF-8 bytes, not UTF-16 units', () => {
  const base = { type: 'hello', v: 1, token: 'x', kind: 'arena' };
  // name: max_len 128. '€' is 1 UTF-16 unit but 3 bytes.
  const ok = '€'.repeat(42);                              // 126 bytes, 42 units
  const long = '€'.repeat(43);                            // 129 bytes, 43 units
  assert.equal(utf8Length(long), 129);
  assert.equal(validator.validate({ ...base, name: ok }).ok, true);
  const r = validator.validate({ ...base, name: long });
  assert.deepEqual([r.error, r.path], ['too_long', 'name']);
  // 4-byte characters: 32 emoji = 64 units = 128 bytes fits; 33 do not.
  assert.equal(validator.validate({ ...base, name: '😀'.repeat(32) }).ok, true);
  assert.equal(validator.validate({ ...base, name: '😀'.repeat(33) }).error, 'too_long');
  // 128 ASCII characters fit, 129 do not.
  assert.equal(validator.validate({ ...base, name: 'a'.repeat(128) }).ok, true);
  assert.equal(validator.validate({ ...base, name: 'a'.repeat(129) }).error, 'too_long');
});

test('utf8Length matches Buffer.byteLength', () => {
  for (const s of ['', 'abc', 'é', '€', '世界', '😀', 'a😀b€c', '\u0000\u007f\u0080\u07ff\u0800\uffff']) {
    assert.equal(utf8Length(s), Buffer.byteLength(s, 'utf8'), JSON.stringify(s));
  }
  assert.equal(utf8Length('\ud800'), 3);                 // lone surrogate → U+FFFD
  assert.equal(utf8Length('\ud800x'), 4);
  assert.equal(truncateUtf8('a😀b', 3), 'a');             // never half a pair
  assert.equal(truncateUtf8('a😀b', 5), 'a😀');
});

test('nested paths are reported', () => {
  const hello = { type: 'hello', v: 1, token: 'x', kind: 'arena', capabilities: { concurrency: 0 } };
  assert.deepEqual(pick(validator.validate(hello)), ['out_of_range', 'capabilities.concurrency']);
  hello.capabilities = { models: ['a', 3] };
  assert.deepEqual(pick(validator.validate(hello)), ['wrong_type', 'capabilities.models[1]']);
  hello.capabilities = { models: new Array(4097).fill('m') };
  assert.deepEqual(pick(validator.validate(hello)), ['too_many_items', 'capabilities.models']);

  const task = structuredClone(spec.examples.find((e) => e.frame.type === 'task').frame);
  task.messages.push({ role: 'user', content: 'a' }, { role: 'tool', content: 'b' });
  assert.deepEqual(pick(validator.validate(task)), ['not_in_enum', 'messages[3].role']);
  task.messages.length = 2;
  delete task.messages[1].attachments[0].url;
  assert.deepEqual(pick(validator.validate(task)), ['missing_field', 'messages[1].attachments[0].url']);

  const models = { type: 'models', models: [{ id: 'a' }, { id: '' }] };
  assert.deepEqual(pick(validator.validate(models)), ['too_short', 'models[1].id']);
  const done = { type: 'done', request_id: RID, usage: { total_tokens: 1.5 } };
  assert.deepEqual(pick(validator.validate(done)), ['wrong_type', 'usage.total_tokens']);
});

test('check order: type first, then fields in spec order; null is a wrong type', () => {
  // Several problems: the first field in spec order wins.
  const r = validator.validate({ type: 'hello', v: 2, kind: 'nope', id: 'a b' });
  assert.deepEqual(pick(r), ['out_of_range', 'v']);
  assert.deepEqual(pick(validator.validate({ type: 'hello', v: 1, kind: 'nope' })), ['missing_field', 'token']);
  assert.deepEqual(pick(validator.validate({ type: 'nope', v: 'x' })), ['unknown_type', 'type']);
  assert.deepEqual(pick(validator.validate({ type: 'ping', t: null })), ['wrong_type', 't']);
  assert.deepEqual(pick(validator.validate({ type: 'ping', t: '1' })), ['wrong_type', 't']);
  assert.equal(validator.validate({ type: 'ping', extra: { anything: [1] } }).ok, true);   // unknown fields allowed
  assert.deepEqual(pick(validator.validate({ type: 'delta', request_id: 'a/b', text: '' })), ['bad_charset', 'request_id']);
  assert.deepEqual(pick(validator.validate({ type: 'result', command_id: 'c', ok: true, data: [] })), ['wrong_type', 'data']);
  assert.equal(validator.validate({ type: 'error', code: 'x', message: 'y', retry_after: 0.5 }).ok, true);
  assert.deepEqual(pick(validator.validate({ type: 'error', code: 'x', message: 'y', retry_after: -1 })),
    ['out_of_range', 'retry_after']);
});

test('createValidator rejects a spec it cannot understand', () => {
  assert.throws(() => createValidator({}));
  assert.throws(() => createValidator({ frames: { x: { from: 'nobody', fields: {} } } }));
  assert.throws(() => createValidator({ frames: { x: { from: 'both', fields: { a: { type: 'date' } } } } }));
});

function pick(r) {
  return [r.error, r.path];
}

// ───────────────────────── splitText / TaskTracker ─────────────────────────

test('splitText never splits a surrogate pair and respects both budgets', () => {
  const text = 'ab😀"\n世界😀😀x\u0001'.repeat(20);
  for (const budget of [6, 7, 8, 13, 50]) {
    const pieces = splitText(text, budget, 10);
    assert.equal(pieces.join(''), text);
    for (const p of pieces) {
      assert.ok(utf8Length(JSON.stringify(p)) - 2 <= budget, `json budget ${budget}`);
      assert.ok(utf8Length(p) <= 10);
      assert.ok(!/^[\udc00-\udfff]/.test(p) && !/[\ud800-\udbff]$/.test(p), 'split pair');
    }
  }
  assert.equal(splitText('😀', 3), null);
});

test('TaskTracker: pause/resume/cancel per task', async () => {
  const tr = new TaskTracker();
  const a = tr.begin('a');
  const b = tr.begin('b');
  assert.equal(tr.size, 2);
  assert.equal(tr.begin('a'), a);                          // idempotent while live
  assert.equal(tr.get('a'), a);
  await within(100, a.waitIfPaused(), 'not paused resolves at once');

  tr.pause('a');
  assert.equal(a.paused, true);
  assert.equal(b.paused, false);
  let resumed = false;
  const wa = a.waitIfPaused().then(() => { resumed = true; });
  await sleep(20);
  assert.equal(resumed, false);
  tr.resume('a');
  await within(100, wa, 'resume wakes');
  assert.equal(a.paused, false);

  tr.pause('b');
  const wb = b.waitIfPaused();
  assert.equal(tr.cancel('b', 'client_closed'), true);
  await within(100, wb, 'cancel wakes');
  assert.equal(b.cancelled, true);
  assert.equal(b.controller.signal.aborted, true);
  assert.equal(b.signal, b.controller.signal);
  assert.equal(a.controller.signal.aborted, false);
  assert.equal(tr.cancel('nope'), false);
  assert.equal(tr.get('b'), undefined, 'a cancelled task is no longer tracked');
  assert.equal(tr.size, 1);
  assert.equal(tr.end('b'), false, 'its runner ending it later is harmless');

  assert.equal(tr.end('a'), true);
  assert.equal(tr.get('a'), undefined);
  assert.equal(tr.size, 0);

  // a lost connection leaves nothing behind
  for (const id of ['x', 'y', 'z']) tr.begin(id);
  tr.cancelAll('connection_lost');
  assert.equal(tr.size, 0);
});

// ──────────────────────────── BridgeClient ──────────────────────────

test('hello is the first frame and carries token and capabilities', T, async () => {
  const extra = {
    onState(s) { if (s === 'open') this.sendState('ready'); },   // a frame sent as soon as open
  };
  await withPair(extra, async (server, c) => {
    const conn = await server.nextConnection();
    const hello = await conn.next(2000, 'hello');
    assert.deepEqual(hello, {
      type: 'hello', v: 1, token: 's3cret', kind: 'test', id: 'tab-1', agent: 'cb-protocol.test/1',
      capabilities: { concurrency: 2, images: false },
    });
    assert.ok(!('name' in hello), 'undefined fields are omitted');
    assert.equal(validator.validate(hello, 'browser').ok, true);
    assert.deepEqual(await conn.next(2000, 'state'), { type: 'state', state: 'ready' });
    assert.equal(c.client.readyState, 'open');
  });
});

test('welcome makes the client ready', T, async () => {
  await withPair({}, async (server, c) => {
    assert.equal(c.client.browserId, undefined);
    await handshake(server, c, { browser_id: 'tab-1-2', heartbeat_ms: 20000, max_frame: 1048576 });
    assert.equal(c.client.readyState, 'ready');
    assert.equal(c.client.isReady, true);
    assert.equal(c.client.browserId, 'tab-1-2');
    assert.equal(c.client.heartbeatMs, 20000);
    assert.equal(c.client.maxFrame, 1048576);
    assert.deepEqual(c.states, ['connecting', 'open', 'ready']);
  });
});

test('ping is answered with a pong carrying the same t; the client pings too', T, async () => {
  await withPair({ deadAfterMs: 5000 }, async (server, c) => {
    // the spec's smallest heartbeat: 1000 ms
    const conn = await handshake(server, c, { heartbeat_ms: 1000 });
    conn.send({ type: 'ping', t: 1732000000123.5 });
    assert.deepEqual(await conn.nextNonPing(), { type: 'pong', t: 1732000000123.5 });
    // The client's own pings, every heartbeat_ms.
    const pings = [];
    while (pings.length < 2) {
      const f = await conn.next(1500, 'client ping');
      if (f.type === 'ping') pings.push(f);
    }
    for (const p of pings) assert.equal(typeof p.t, 'number');
  });
});

test('task, cancel, pause and resume reach the handlers and the tracker', T, async () => {
  const tracker = new TaskTracker();
  await withPair({ tracker }, async (server, c) => {
    const conn = await handshake(server, c);
    const task = { ...spec.examples.find((e) => e.frame.type === 'task').frame };
    conn.send(task);
    const ev = await c.events.next(2000, 'task');
    assert.equal(ev.kind, 'task');
    assert.deepEqual(ev.task, task);
    const t = tracker.get(RID);
    assert.ok(t, 'tracker has the task');
    assert.equal(ev.t, t, 'the tracked task is passed to onTask');

    conn.send({ type: 'pause', request_id: RID });
    assert.equal((await c.events.next(2000, 'pause')).kind, 'pause');
    assert.equal(t.paused, true);
    let resumed = false;
    const w = t.waitIfPaused().then(() => { resumed = true; });
    await sleep(20);
    assert.equal(resumed, false);

    conn.send({ type: 'resume', request_id: RID });
    assert.equal((await c.events.next(2000, 'resume')).kind, 'resume');
    await within(500, w, 'waitIfPaused after resume');
    assert.equal(t.paused, false);

    let abortReason;
    t.signal.addEventListener('abort', () => { abortReason = t.signal.reason; });
    conn.send({ type: 'cancel', request_id: RID, reason: 'client_closed' });
    const cancel = await c.events.next(2000, 'cancel');
    assert.deepEqual(cancel, { kind: 'cancel', f: { type: 'cancel', request_id: RID, reason: 'client_closed' } });
    assert.equal(t.controller.signal.aborted, true);
    assert.equal(t.cancelled, true);
    assert.equal(abortReason, 'client_closed');

    conn.send({ type: 'command', command_id: 'c1', command: 'send_models' });
    assert.equal((await c.events.next(2000, 'command')).f.command, 'send_models');
    conn.send({ type: 'error', code: 'bad_frame', message: 'nope' });
    assert.equal((await c.events.next(2000, 'error')).f.code, 'bad_frame');
  });
});

test('sendDone/sendError end the tracked task; a throwing onTask yields an internal error', T, async () => {
  const tracker = new TaskTracker();
  const onTask = (task) => {
    if (task.request_id === 'boom') throw new Error('kaput');
    if (task.request_id === 'reject') return Promise.reject(new Error('async kaput'));
    return undefined;
  };
  await withPair({ tracker, onTask }, async (server, c) => {
    const conn = await handshake(server, c);
    const base = { type: 'task', kind: 'test', op: 'chat', model: 'm', stream: true, messages: [] };
    conn.send({ ...base, request_id: 'r1' });
    conn.send({ ...base, request_id: 'boom' });
    conn.send({ ...base, request_id: 'reject' });
    const e1 = await conn.nextNonPing();
    assert.deepEqual([e1.type, e1.request_id, e1.code], ['error', 'boom', 'internal']);
    assert.match(e1.message, /kaput/);
    const e2 = await conn.nextNonPing();
    assert.deepEqual([e2.type, e2.request_id, e2.code], ['error', 'reject', 'internal']);
    assert.equal(tracker.size, 1);
    assert.ok(tracker.get('r1'));
    assert.equal(c.client.sendDone('r1', 'stop', { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }), true);
    assert.deepEqual(await conn.nextNonPing(), {
      type: 'done', request_id: 'r1', finish_reason: 'stop',
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
    });
    assert.equal(tracker.size, 0);
  });
});

test('send helpers build valid frames, skip empty deltas and refuse when closed', T, async () => {
  const c0 = makeClient('ws://127.0.0.1:9/never');
  assert.equal(c0.client.sendDelta(RID, 'x'), false, 'not started');
  assert.equal(c0.client.sendState('ready'), false);
  assert.equal(c0.client.readyState, 'closed');

  await withPair({}, async (server, c) => {
    const conn = await handshake(server, c);
    const cl = c.client;
    assert.equal(cl.sendDelta(RID, ''), true);             // nothing is sent for it
    assert.equal(cl.sendDelta(RID, 'Hello, 世界'), true);
    assert.equal(cl.sendReasoning(RID, 'hmm'), true);
    assert.equal(cl.sendImage(RID, 'https://example.test/a.png', 'image/png'), true);
    assert.equal(cl.sendError(RID, 'rate_limited', 'slow down', { status: 429, retryable: true, retryAfter: 30 }), true);
    assert.equal(cl.sendError(undefined, 'internal', 'x'.repeat(9000)), true);
    assert.equal(cl.sendModels(['gpt-4o', { id: 'dall-e-3', type: 'image' }]), true);
    assert.equal(cl.sendState('needs_human', 'Cloudflare'), true);
    assert.equal(cl.sendResult('c1', true, { session_id: 's' }), true);
    const expected = [
      { type: 'delta', request_id: RID, text: 'Hello, 世界' },
      { type: 'reasoning', request_id: RID, text: 'hmm' },
      { type: 'image', request_id: RID, url: 'https://example.test/a.png', mime: 'image/png' },
      { type: 'error', request_id: RID, code: 'rate_limited', message: 'slow down', status: 429, retryable: true, retry_after: 30 },
      { type: 'error', code: 'internal', message: 'x'.repeat(8192) },
      { type: 'models', models: [{ id: 'gpt-4o' }, { id: 'dall-e-3', type: 'image' }] },
      { type: 'state', state: 'needs_human', message: 'Cloudflare' },
      { type: 'result', command_id: 'c1', ok: true, data: { session_id: 's' } },
    ];
    for (const e of expected) {
      const f = await conn.nextNonPing();
      assert.deepEqual(f, e);
      assert.equal(validator.validate(f, 'browser').ok, true, e.type);
    }
    // An invalid outgoing frame is refused locally and reported.
    assert.equal(cl.sendState('sleeping'), false);
    assert.equal(c.protocolErrors.at(-1).error, 'not_in_enum');
    assert.equal(c.protocolErrors.at(-1).direction, 'out');
  });
});

test('a delta larger than max_frame is split; other oversized frames are refused', T, async () => {
  await withPair({}, async (server, c) => {
    // the spec's smallest max_frame: 64 KiB
    const conn = await handshake(server, c, { max_frame: 65536 });
    const text = 'Hello "world"\n😀 世界 — ünïcödé \u0001 '.repeat(6000);
    assert.ok(utf8Length(text) > 3 * 65536);
    assert.equal(c.client.sendDelta(RID, text), true);
    let got = '';
    let frames = 0;
    while (got.length < text.length) {
      const f = await conn.nextNonPing();
      assert.equal(f.type, 'delta');
      assert.equal(f.request_id, RID);
      assert.ok(f.text.length > 0);
      assert.ok(!/^[\udc00-\udfff]/.test(f.text) && !/[\ud800-\udbff]$/.test(f.text), 'surrogate pair split');
      got += f.text;
      frames++;
    }
    assert.equal(got, text);
    assert.ok(frames > 3, `split into ${frames} frames`);
    for (const raw of conn.raw) assert.ok(Buffer.byteLength(raw) <= 65536, `frame of ${Buffer.byteLength(raw)} bytes`);

    // An image over the limit is not sent but reported.
    assert.equal(c.client.sendImage(RID, 'data:image/png;base64,' + 'A'.repeat(70000)), false);
    assert.equal(c.protocolErrors.at(-1).error, 'too_large');
    assert.equal(c.client.sendDone(RID, 'stop'), true);
    assert.deepEqual(await conn.nextNonPing(), { type: 'done', request_id: RID, finish_reason: 'stop' });
  });
});

test('a done or error frame refused here fails its request with an internal error instead', T, async () => {
  const tracker = new TaskTracker();
  await withPair({ tracker }, async (server, c) => {
    const conn = await handshake(server, c);
    // finish_reason over its 64 bytes (too_long): the done frame is refused here
    tracker.begin(RID);
    assert.equal(c.client.sendDone(RID, 'é'.repeat(40)), false, 'the done frame itself was not sent');
    c.client.sendState('ready');                                  // a marker: what came before it
    const e = await conn.nextNonPing();
    assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'request_id', 'type']);
    assert.deepEqual([e.type, e.request_id, e.code], ['error', RID, 'internal']);
    assert.match(e.message, /done frame was refused before sending \(too_long at finish_reason: /);
    assert.equal(validator.validate(e, 'browser').ok, true);
    assert.deepEqual(await conn.nextNonPing(), { type: 'state', state: 'ready' });
    assert.equal(tracker.size, 0, 'the request is over');

    // an error frame with a status the spec does not allow
    assert.equal(c.client.sendError('r2', 'site_error', 'boom', { status: 200 }), false);
    const e2 = await conn.nextNonPing();
    assert.deepEqual([e2.type, e2.request_id, e2.code], ['error', 'r2', 'internal']);
    assert.match(e2.message, /error frame was refused before sending \(out_of_range at status: /);
    assert.equal(c.protocolErrors.at(-1).error, 'out_of_range', 'the refusal is still reported');

    // a valid done goes out as it is, and nothing else with it
    assert.equal(c.client.sendDone('r3', 'stop'), true);
    c.client.sendState('ready');
    assert.deepEqual(await conn.nextNonPing(), { type: 'done', request_id: 'r3', finish_reason: 'stop' });
    assert.deepEqual(await conn.nextNonPing(), { type: 'state', state: 'ready' });
  });
  // without a spec (as the browser scripts run): a done that cannot be serialised
  await withPair({ spec: undefined }, async (server, c) => {
    const conn = await handshake(server, c);
    assert.equal(c.client.sendDone('r4', 'stop', { prompt_tokens: 1n }), false);
    const e = await conn.nextNonPing();
    assert.deepEqual([e.type, e.request_id, e.code], ['error', 'r4', 'internal']);
    assert.match(e.message, /done frame was refused before sending \(not_object: TypeError/);
  });
  // an onProtocolError handler that sends a frame of its own does not make
  // the client forget why the done frame was refused
  let client;
  await withPair({ onProtocolError: () => client.sendState('needs_human', 'noted') }, async (server, c) => {
    client = c.client;
    const conn = await handshake(server, c);
    assert.equal(c.client.sendDone('r5', 'é'.repeat(40)), false);
    assert.deepEqual(await conn.nextNonPing(), { type: 'state', state: 'needs_human', message: 'noted' });
    const e = await conn.nextNonPing();
    assert.deepEqual([e.type, e.request_id, e.code], ['error', 'r5', 'internal']);
  });
  // not connected: nothing to send, nothing thrown
  const c0 = makeClient('ws://127.0.0.1:9/never');
  assert.equal(c0.client.sendDone(RID, 'é'.repeat(40)), false);
});

test('without a spec, a welcome\'s heartbeat_ms and max_frame are clamped to the spec\'s bounds', T, async () => {
  const hb = spec.frames.welcome.fields.heartbeat_ms;
  const mf = spec.frames.welcome.fields.max_frame;
  for (const [w, want] of [
    [{ heartbeat_ms: 1, max_frame: 1 }, [hb.min, mf.min]],
    [{ heartbeat_ms: 0, max_frame: -5 }, [hb.min, mf.min]],
    [{ heartbeat_ms: 1e12, max_frame: 1048576.5 }, [hb.max, 1048576]],
    [{ heartbeat_ms: 20000.4, max_frame: 70000 }, [20000, 70000]],
    [{ heartbeat_ms: 'fast', max_frame: null }, [15000, 16777216]],          // not numbers: the defaults
  ]) {
    await withPair({ spec: undefined, deadAfterMs: 5000 }, async (server, c) => {
      const conn = await handshake(server, c, w);
      assert.deepEqual([c.client.heartbeatMs, c.client.maxFrame], want, JSON.stringify(w));
      // and it works: frames go out, and no ping storm
      assert.equal(c.client.sendDelta(RID, 'x'.repeat(1000)), true);
      assert.deepEqual(await conn.nextNonPing(), { type: 'delta', request_id: RID, text: 'x'.repeat(1000) });
      await sleep(100);
      assert.equal(conn.frames.all.filter((f) => f.type === 'ping').length, 0, 'no ping within 100 ms');
    });
  }
});

test('FIELD_LIMITS are the spec\'s bounds, and fieldLimit reads them from a spec', () => {
  const keys = Object.keys(P.FIELD_LIMITS);
  assert.ok(keys.length >= 16);
  for (const k of keys) {
    const parts = k.split('.');
    const prop = parts.pop();
    let rule = spec.frames[parts[0]];
    for (const p of parts.slice(1)) {
      rule = rule.fields[p.replace(/\[\]$/, '')];
      if (p.endsWith('[]')) rule = rule.items;
    }
    assert.equal(P.FIELD_LIMITS[k], rule[prop], k);
    assert.equal(P.fieldLimit(spec, k), rule[prop], k);
    assert.equal(P.fieldLimit(undefined, k), rule[prop], k);
  }
  const other = JSON.parse(JSON.stringify(spec));
  other.frames.done.fields.finish_reason.max_len = 32;
  other.frames.models.fields.models.items.fields.id.max_len = 100;
  assert.equal(P.fieldLimit(other, 'done.finish_reason.max_len'), 32);
  assert.equal(P.fieldLimit(other, 'models.models[].id.max_len'), 100);
  delete other.frames.welcome;
  assert.equal(P.fieldLimit(other, 'welcome.max_frame.min'), 65536, 'missing in the spec: the built-in value');
});

test('tabId: kept in the storage, replaced when invalid, fresh when the storage fails', () => {
  const store = new Map();
  const storage = { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)) };
  const a = P.tabId('arena-', 'k', storage);
  assert.match(a, /^arena-[a-z0-9]{1,8}$/);
  assert.equal(store.get('k'), a);
  assert.equal(P.tabId('arena-', 'k', () => storage), a, 'the same id again (a storage getter works too)');
  assert.equal(P.tabId('tavern-', 'other', storage).startsWith('tavern-'), true);
  for (const bad of ['', 'has space', 'x'.repeat(65), 'ünïcode']) {
    store.set('k', bad);
    const id = P.tabId('arena-', 'k', storage);
    assert.match(id, /^arena-[a-z0-9]{1,8}$/, JSON.stringify(bad));
    assert.equal(store.get('k'), id);
  }
  store.set('k', 'x'.repeat(64));
  assert.equal(P.tabId('arena-', 'k', storage), 'x'.repeat(64));
  const broken = () => { throw new Error('SecurityError'); };
  const f1 = P.tabId('arena-', 'k', broken);
  assert.match(f1, /^arena-[a-z0-9]{1,8}$/);
  assert.match(P.tabId('arena-', 'k', { getItem: broken }), /^arena-/);
  assert.match(P.tabId('arena-', 'k', undefined), /^arena-/, 'no storage at all');
});

test('invalid incoming frames go to onProtocolError, not the handlers', T, async () => {
  await withPair({}, async (server, c) => {
    const conn = await handshake(server, c);
    const task = spec.examples.find((e) => e.frame.type === 'task').frame;
    conn.send({ ...task, request_id: 'bad id' });                      // bad_charset
    conn.send({ type: 'hello', v: 1, token: 'x', kind: 'arena' });     // browser frame from the sidecar
    conn.send({ type: 'cancel' });                                     // missing request_id
    conn.send({ type: 'pause', request_id: 42 });                      // wrong_type
    conn.send('this is not json');
    conn.send('[{"type":"ping"}]');
    conn.send({ type: 'command', command_id: 'c1', command: 'reboot' });
    conn.send({ type: 'resume', request_id: 'marker' });               // valid: proves order
    const seen = [];
    for (;;) {
      const ev = await c.events.next(2000, 'event');
      if (ev.kind !== 'protocolError') {
        assert.deepEqual(ev, { kind: 'resume', f: { type: 'resume', request_id: 'marker' } });
        break;
      }
      assert.equal(ev.info.direction, 'in');
      seen.push([ev.info.error, ev.info.path]);
    }
    assert.deepEqual(seen, [
      ['bad_charset', 'request_id'],
      ['unknown_type', 'type'],
      ['missing_field', 'request_id'],
      ['wrong_type', 'request_id'],
      ['not_object', ''],
      ['not_object', ''],
      ['not_in_enum', 'command'],
    ]);
    assert.equal(c.client.readyState, 'ready', 'bad frames do not drop the connection');
  });
});

test('reconnects with exponential backoff and jitter; a welcomed connection that lasts resets the attempts', T, async () => {
  const delays = [];
  const allDelays = [];
  const randoms = [0, 1, 0.5, 0.25];
  let ri = 0;
  const extra = {
    backoff: { initialMs: 100, maxMs: 350, factor: 2, jitter: 0.5, stableMs: 60 },
    random: () => randoms[ri++ % randoms.length],
    // Record every delay; run the short (reconnect) ones 10× faster for real.
    setTimeout: (fn, ms) => {
      allDelays.push(ms);
      if (ms < 10000) delays.push(ms);
      return setTimeout(fn, ms < 10000 ? Math.ceil(ms / 10) : ms);
    },
    clearTimeout: (h) => clearTimeout(h),
  };
  await withPair(extra, async (server, c) => {
    // Three connections closed by the server right after the hello.
    for (let i = 0; i < 3; i++) {
      const conn = await server.nextConnection();
      assert.equal((await conn.next(2000, 'hello')).type, 'hello');
      conn.ws.close(1011, 'go away');
      await conn.closed;
    }
    // The fourth one gets a welcome, then is closed at once: still backed off.
    let conn = await server.nextConnection();
    assert.equal((await conn.next(2000, 'hello')).type, 'hello');
    conn.send(welcome());
    await c.waitState('ready');
    conn.ws.close(1001, 'restart');
    // The fifth one is welcomed and lasts stableMs (60 ms, run in 6): the
    // attempts start again.
    conn = await server.nextConnection();
    assert.equal((await conn.next(2000, 'hello')).type, 'hello');
    conn.send(welcome());
    await c.waitState('ready');
    await sleep(50);
    conn.ws.close(1001, 'restart');
    await server.nextConnection();
    // Base delays 100, 200, 400→350 (maxMs), 350; then 100 again. Jitter
    // factor 1 + 0.5 × (2r − 1) with r = 0, 1, 0.5, 0.25, 0, ...
    assert.deepEqual(delays.filter((d) => d !== 60), [50, 300, 350, 263, 50]);
    assert.ok(allDelays.includes(45000), 'dead timeout is 3 × 15000 ms until welcome');
    assert.ok(allDelays.includes(15000), 'pings every heartbeat_ms after welcome');
    assert.equal(server.maxClients, 1, 'never two sockets at once');
    assert.deepEqual(c.states.slice(0, 4), ['connecting', 'open', 'closed', 'connecting']);
  });
});

test('backoffDelay follows min(maxMs, initial × factor^n) × (1 ± jitter)', () => {
  const cl = new BridgeClient({ url: 'ws://x', kind: 'test', random: () => 0.5 });
  assert.deepEqual([0, 1, 2, 5, 6, 20].map((n) => cl.backoffDelay(n)), [500, 1000, 2000, 16000, 30000, 30000]);
  const lo = new BridgeClient({ url: 'ws://x', kind: 'test', random: () => 0 });
  const hi = new BridgeClient({ url: 'ws://x', kind: 'test', random: () => 0.999999 });
  assert.equal(lo.backoffDelay(0), 350);
  assert.equal(hi.backoffDelay(0), 650);
});

test('a refused connection schedules exactly one retry per attempt', T, async () => {
  // A port with nobody listening.
  const tmp = await startServer();
  const url = tmp.url;
  await tmp.close();
  const delays = [];
  let constructed = 0;
  let done;
  const threeDelays = new Promise((r) => { done = r; });
  class CountingWS extends WebSocket {
    constructor(...args) { super(...args); constructed++; }
  }
  const c = makeClient(url, {
    WebSocket: CountingWS,
    backoff: { initialMs: 10, maxMs: 40, factor: 2, jitter: 0 },
    setTimeout: (fn, ms) => {
      if (ms < 10000) {
        delays.push(ms);
        if (delays.length === 3) done(constructed);
      }
      return setTimeout(fn, ms);
    },
  });
  try {
    c.client.start();
    const atThird = await within(3000, threeDelays, 'three retries');
    assert.equal(atThird, 3, 'one retry per failed connection');
    assert.deepEqual(delays, [10, 20, 40]);
  } finally {
    c.client.stop();
  }
  await sleep(100);
  assert.equal(constructed, 3, 'no reconnect after stop()');
  assert.equal(c.client.readyState, 'closed');
});

for (const code of [4401, 4403]) {
  test(`close ${code} (retry: false in the spec): no reconnect, state refused`, T, async () => {
    const tracker = new TaskTracker();
    await withPair({ tracker, backoff: { initialMs: 10, maxMs: 10, factor: 2, jitter: 0 } }, async (server, c) => {
      const conn = await server.nextConnection();
      assert.equal((await conn.next(2000, 'hello')).type, 'hello');
      tracker.begin('t1');
      conn.ws.close(code, 'no');
      await c.waitState('refused');
      await sleep(150);                                     // 15 backoff periods
      assert.equal(server.connectionCount, 1, 'never reconnected');
      assert.equal(tracker.size, 0, 'its work was cancelled');
      c.client.start();                                     // after a fix: again
      const again = await server.nextConnection(2000);
      assert.equal((await again.next(2000, 'hello')).type, 'hello');
    });
  });
}

test('timers are called plainly: a setTimeout that rejects a foreign `this` works', T, async () => {
  // a browser's setTimeout throws "Illegal invocation" unless `this` is the
  // Window or undefined; a userscript's private global is neither
  const strict = (fn, ms) => {
    'use strict';
    return setTimeout(fn, ms);
  };
  let bad = 0;
  const picky = function (fn, ms) {
    if (this !== undefined) bad++;
    return strict(fn, ms);
  };
  await withPair({ setTimeout: picky, clearTimeout: (h) => clearTimeout(h) }, async (server, c) => {
    await handshake(server, c);
    assert.equal(bad, 0, 'setTimeout never got a `this`');
  });
});

test('a silent server is dropped after the dead timeout and the client reconnects', T, async () => {
  const extra = { deadAfterMs: 150, backoff: { initialMs: 10, maxMs: 10, factor: 2, jitter: 0 } };
  await withPair(extra, async (server, c) => {
    const first = await server.nextConnection();
    const t0 = Date.now();
    assert.equal((await first.next(2000, 'hello')).type, 'hello');   // then: silence
    await within(2000, first.closed, 'client closes the silent socket');
    const waited = Date.now() - t0;
    assert.ok(waited >= 120, `closed after ${waited} ms`);
    const second = await server.nextConnection(2000);
    assert.equal((await second.next(2000, 'hello')).type, 'hello');
    assert.ok(c.states.includes('closed'));
  });
});

test('traffic keeps the connection alive past the dead timeout', T, async () => {
  await withPair({ deadAfterMs: 250 }, async (server, c) => {
    const conn = await handshake(server, c, { heartbeat_ms: 60000 });
    const timer = setInterval(() => conn.send({ type: 'ping', t: Date.now() }), 40);
    try {
      await sleep(700);
    } finally {
      clearInterval(timer);
    }
    assert.equal(server.connectionCount, 1);
    assert.equal(c.client.readyState, 'ready');
  });
});

test('stop() closes the socket and cancels tracked work; no reconnect follows', T, async () => {
  const tracker = new TaskTracker();
  await withPair({ tracker, backoff: { initialMs: 10, maxMs: 10, factor: 2, jitter: 0 } }, async (server, c) => {
    const conn = await handshake(server, c);
    conn.send({ type: 'task', request_id: 'r9', kind: 'any', op: 'chat', model: 'm', stream: false, messages: [] });
    await c.events.next(2000, 'task');
    const t = tracker.get('r9');
    c.client.stop();
    assert.equal(c.client.readyState, 'closed');
    assert.equal(t.signal.aborted, true, 'work is cancelled with the connection');
    assert.equal(await within(2000, conn.closed, 'server sees the close'), 1000, 'a normal close');
    await sleep(80);
    assert.equal(server.connectionCount, 1);
    assert.equal(c.client.sendDelta('r9', 'late'), false);
  });
});

test('the library is also reachable as globalThis.ChatbridgeProtocol', () => {
  assert.equal(globalThis.ChatbridgeProtocol, P);
  assert.equal(typeof P.createValidator, 'function');
});

test('a server that never completes the WebSocket handshake is dropped too', T, async () => {
  const sockets = new Set();
  let accepted = 0;
  let maxOpen = 0;
  const srv = net.createServer((sock) => {
    accepted++;
    sockets.add(sock);
    maxOpen = Math.max(maxOpen, sockets.size);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.resume();                      // read the upgrade request (and see the FIN), never answer
  });
  await within(2000, new Promise((r) => srv.listen(0, '127.0.0.1', r)), 'tcp listen');
  const states = [];
  const c = makeClient(`ws://127.0.0.1:${srv.address().port}/ws`, {
    deadAfterMs: 100,
    backoff: { initialMs: 50, maxMs: 50, factor: 2, jitter: 0 },
    onState: (s) => states.push(s),
  });
  try {
    c.client.start();
    const t0 = Date.now();
    while (accepted < 3 && Date.now() - t0 < 3000) await sleep(20);
    assert.ok(accepted >= 3, `reconnected ${accepted} times`);
    assert.equal(maxOpen, 1, 'never two sockets at once');
    assert.ok(!states.includes('open'));
    assert.deepEqual(states.slice(0, 4), ['connecting', 'closed', 'connecting', 'closed']);
  } finally {
    c.client.stop();
    for (const s of sockets) s.destroy();
    await within(2000, new Promise((r) => srv.close(() => r())), 'tcp close');
  }
});

test('loads as an ES module and as a pasted userscript', async () => {
  const src = readFileSync(new URL('./cb-protocol.js', import.meta.url), 'utf8');
  assert.ok(!/^\s*(export|import)\s/m.test(src), 'no module syntax');
  // (c) Node require already worked above. (a) A page script: plain eval in a fresh realm.
  const ctx = vm.createContext({});
  const api = vm.runInContext(src + '\n;globalThis.ChatbridgeProtocol', ctx);
  assert.equal(typeof api.BridgeClient, 'function');
  assert.equal(api.createValidator(spec).validate({ type: 'ping', t: 1 }).ok, true);
  // (b) An ES module import, as a SillyTavern extension does.
  const dir = mkdtempSync(join(tmpdir(), 'cbp-'));
  try {
    const file = join(dir, 'cb-protocol.mjs');
    writeFileSync(file, src);
    const before = globalThis.ChatbridgeProtocol;
    await import(pathToFileURL(file).href);
    assert.notEqual(globalThis.ChatbridgeProtocol, before, 'module import sets the global');
    assert.equal(typeof globalThis.ChatbridgeProtocol.TaskTracker, 'function');
    globalThis.ChatbridgeProtocol = before;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
