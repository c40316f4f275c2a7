// Browsers are untrusted peers: the sidecar bounds, validates and answers
// every frame, refuses bad tokens and origins, drops silent peers, and a
// storm of garbage frames crashes nothing.  Also the bounded wait queue.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { Bridge, sleep, waitFor } from './harness.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

// a hand-driven WebSocket peer that records everything it receives
function peer(url, headers = {}) {
  const ws = new WebSocket(url, { headers });
  const frames = [];
  const waiters = [];
  let closed = null;
  ws.on('message', (data, binary) => {
    frames.push(binary ? data : JSON.parse(data.toString()));
    for (const w of waiters.splice(0)) w();
  });
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
    for (const w of waiters.splice(0)) w();
  });
  ws.on('error', () => {});
  const wait = () => new Promise((r) => waiters.push(r));
  return {
    ws,
    frames,
    get closed() { return closed; },
    open: () => new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    }),
    send: (f) => ws.send(typeof f === 'string' ? f : JSON.stringify(f)),
    async next(type, ms = 3000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const i = frames.findIndex((f) => f.type === type);
        if (i >= 0) return frames.splice(i, 1)[0];
        if (closed || Date.now() > deadline) return null;
        await Promise.race([wait(), sleep(deadline - Date.now())]);
      }
    },
    async closedWith(ms = 3000) {
      await waitFor(() => closed, ms, 'close');
      return closed;
    },
  };
}

const hello = (token, extra = {}) => ({ type: 'hello', v: 1, token, kind: 'test',
                                         capabilities: { concurrency: 4 }, ...extra });

test('bad frames are answered, bad requests failed, nothing crashes', async () => {
  const b = new Bridge();
  try {
    await b.startSidecar(['--max-frame', '65536']);
    await b.startNginx();

    // anything before hello: refused, closed with 4400
    let p = peer(b.wsUrl);
    await p.open();
    p.send({ type: 'ping', t: 1 });
    assert.equal((await p.next('error')).code, 'bad_frame');
    assert.equal((await p.closedWith()).code, 4400);

    // a wrong token: 4401, which a client must not retry blindly
    p = peer(b.wsUrl);
    await p.open();
    p.send(hello('not-the-token'));
    assert.equal((await p.next('error')).code, 'unauthorized');
    assert.equal((await p.closedWith()).code, 4401);

    // a proper browser
    p = peer(b.wsUrl);
    await p.open();
    p.send(hello(b.token, { id: 'manual' }));
    const w = await p.next('welcome');
    assert.equal(w.browser_id, 'manual');
    assert.ok(w.heartbeat_ms >= 1000 && w.max_frame === 65536);

    // each bad frame gets an error frame naming the problem
    const bad = [
      ['not json at all', /not JSON/],
      [{ type: 'delta', request_id: 'x' }, /text: is required/],
      [{ type: 'teleport' }, /not a frame a browser sends/],
      [{ type: 'task', request_id: 'r', kind: 'any', op: 'chat', model: 'm',
         stream: true, messages: [] }, /not a frame a browser sends/],
      [{ type: 'error', request_id: 'r', code: 'x', message: 'm', status: 200 }, /status/],
      [{ type: 'delta', request_id: 'bad id!', text: 't' }, /request_id/],
    ];
    for (const [frame, re] of bad) {
      p.send(frame);
      const e = await p.next('error');
      assert.ok(e, `an answer to ${JSON.stringify(frame)}`);
      assert.equal(e.code, 'bad_frame');
      assert.match(e.message, re);
    }

    // a frame over max_frame closes the connection with 1009
    p.send({ type: 'delta', request_id: 'r', text: 'x'.repeat(70000) });
    assert.equal((await p.closedWith()).code, 1009);

    // a binary frame: 1003
    p = peer(b.wsUrl);
    await p.open();
    p.send(hello(b.token));
    await p.next('welcome');
    p.ws.send(Buffer.from([1, 2, 3]));
    assert.equal((await p.closedWith()).code, 1003);

    // a browser cannot answer for another browser's request, and a bad
    // frame about its own request fails that request cleanly
    const owner = peer(b.wsUrl);
    await owner.open();
    owner.send(hello(b.token, { id: 'owner' }));
    await owner.next('welcome');
    const thief = peer(b.wsUrl);
    await thief.open();
    thief.send(hello(b.token, { id: 'thief', capabilities: { concurrency: 1 } }));
    await thief.next('welcome');
    await b.waitBrowsers(2);

    const reply = fetch(`${b.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    });
    // whichever got the task; the other plays the thief
    const got = await Promise.race([owner.next('task').then((t) => t && [owner, thief, t]),
                                    thief.next('task').then((t) => t && [thief, owner, t])]);
    const [holder, other, task] = got;
    other.send({ type: 'delta', request_id: task.request_id, text: 'stolen' });
    const e = await other.next('error');
    assert.match(e.message, /not yours/);

    holder.send({ type: 'delta', request_id: task.request_id, text: 'ok so far' });
    holder.send({ type: 'done', request_id: task.request_id, usage: { prompt_tokens: -5 } });
    assert.equal((await holder.next('error')).code, 'bad_frame');
    assert.equal((await holder.next('cancel')).request_id, task.request_id);
    const r = await reply;
    assert.equal(r.status, 502);
    assert.equal((await r.json()).error.code, 'bad_frame');

    // a storm of mutated frames: the sidecar answers and stays up
    const seeds = [
      hello(b.token),
      { type: 'delta', request_id: 'r1', text: 'hello' },
      { type: 'done', request_id: 'r1', finish_reason: 'stop', usage: { prompt_tokens: 1 } },
      { type: 'error', request_id: 'r1', code: 'rate_limited', message: 'x', retry_after: 3 },
      { type: 'models', models: [{ id: 'a', type: 'chat' }] },
      { type: 'state', state: 'ready' },
    ];
    const rnd = (n) => Math.floor(Math.random() * n);
    const values = [null, true, 0, -1, 1e308, 1.5, '', 'x'.repeat(300), [], {}, [1, 'a'], { a: { b: [] } }];
    const fuzz = peer(b.wsUrl);
    await fuzz.open();
    fuzz.send(hello(b.token, { id: 'fuzz' }));
    await fuzz.next('welcome');
    let sent = 0;
    for (let i = 0; i < 3000; i++) {
      const f = structuredClone(seeds[rnd(seeds.length)]);
      const keys = Object.keys(f);
      const k = keys[rnd(keys.length)];
      switch (rnd(4)) {
        case 0: f[k] = values[rnd(values.length)]; break;
        case 1: delete f[k]; break;
        case 2: f[`x${rnd(9)}`] = values[rnd(values.length)]; break;
        default: {
          const s = JSON.stringify(f);
          const cut = rnd(s.length);
          fuzz.send(s.slice(0, cut) + String.fromCharCode(rnd(128)) + s.slice(cut + 1));
          sent++;
          continue;
        }
      }
      fuzz.send(f);
      sent++;
    }
    assert.equal(sent, 3000);
    await sleep(500);
    const st = await b.status();
    assert.ok(st.totals.bad_frames > 100, `bad frames counted (${st.totals.bad_frames})`);
    assert.ok(st.sidecar.pid, 'the sidecar is alive');

    // and still serves a real browser
    b.startBrowser(['--id', 'real']);
    await b.waitBrowsers(1);
    for (const x of [owner, thief, fuzz]) x.ws.close();
    await waitFor(async () => (await b.status()).browsers.length === 1, 5000, 'cleanup');
    const ok = await fetch(`${b.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'still here' }] }),
    });
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).choices[0].message.content, 'echo: still here');
  } finally {
    await b.stop();
  }
});

test('the Origin allowlist', async () => {
  const b = new Bridge();
  try {
    await b.startSidecar(['--origin', 'https://*.lmarena.ai', '--origin', 'https://lmarena.ai']);
    await b.startNginx();

    let p = peer(b.wsUrl, { Origin: 'https://evil.example' });
    await p.open();
    assert.equal((await p.closedWith()).code, 4403);

    for (const origin of ['https://lmarena.ai', 'https://beta.lmarena.ai']) {
      p = peer(b.wsUrl, { Origin: origin });
      await p.open();
      p.send(hello(b.token));
      assert.ok(await p.next('welcome'), `${origin} is allowed`);
      p.ws.close();
    }

    // a wildcard stands for host labels, not for a path or a port
    p = peer(b.wsUrl, { Origin: 'https://evil.example/x.lmarena.ai' });
    await p.open();
    assert.equal((await p.closedWith()).code, 4403);
  } finally {
    await b.stop();
  }
});

test('a silent browser is dropped, and its work moves on', async () => {
  const b = new Bridge();
  try {
    await b.startSidecar(['--heartbeat', '1000', '--dead-after', '2500']);
    await b.startNginx();

    // a tab that froze: it takes a task, then says nothing, pongs nothing
    const p = peer(b.wsUrl);
    await p.open();
    p.send(hello(b.token, { id: 'sleepy' }));
    await p.next('welcome');
    const t0 = Date.now();

    const reply = fetch(`${b.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'anyone?' }] }),
    });
    assert.ok(await p.next('task'), 'the frozen tab got the task');
    assert.ok(await p.next('ping', 2000), 'the sidecar pings it');

    // a live browser arrives; it answers pings (the shared client does)
    b.startBrowser(['--id', 'awake']);

    const closed = await p.closedWith(5000);
    assert.equal(closed.code, 4408);
    const took = Date.now() - t0;
    assert.ok(took >= 2000 && took < 4500, `dropped after ${took} ms`);

    // the request had no answer yet: it went to the live browser
    const r = await reply;
    assert.equal(r.status, 200);
    assert.equal((await r.json()).choices[0].message.content, 'echo: anyone?');

    await sleep(3000);
    const st = await b.status();
    assert.deepEqual(st.browsers.map((x) => x.id), ['awake'], 'the live one stays');
  } finally {
    await b.stop();
  }
});

test('the wait queue is bounded in size and in time', async () => {
  const b = new Bridge();
  try {
    await b.startSidecar(['--queue', '2', '--queue-timeout', '1000', '--retry-after', '9']);
    await b.startNginx();
    b.startBrowser(['--concurrency', '1']);
    await b.waitBrowsers(1);

    const ask = (content) => fetch(`${b.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content }] }),
    });

    const busy = ask('hold [[delay 3000]]');
    await waitFor(() => b.events('task').length === 1, 3000, 'the first task');
    const waiting = [ask('w1'), ask('w2')];
    await waitFor(async () => (await b.status()).queue.length === 2, 3000, 'two queued');

    // the queue is full: refused at once
    const t0 = Date.now();
    const full = await ask('w3');
    assert.equal(full.status, 503);
    assert.equal((await full.json()).error.code, 'queue_full');
    assert.equal(full.headers.get('retry-after'), '9');
    assert.ok(Date.now() - t0 < 500, 'at once');

    // the queued ones give up after the queue timeout
    for (const w of waiting) {
      const r = await w;
      assert.equal(r.status, 503);
      assert.equal((await r.json()).error.code, 'no_browser_free');
    }
    assert.equal((await busy).status, 200);
  } finally {
    await b.stop();
  }
});
