// The browser scripts' builds and the built userscript, in Node (no Chromium):
//
//   - browser/userscript/build.sh and browser/sillytavern/build.sh: what they
//     make, what they refuse (markers, versions, missing files), and that a
//     failure leaves nothing behind; run on copies of the sources, mutated
//   - the built userscript, configured as nginx serves it, run in a fresh
//     realm with a stand-in page (window, document, the site's fetch) against
//     a scripted sidecar: hello, a task answered through the driver, a
//     refused token; and a build that lacks the protocol client says so
//
//   NODE_PATH=t/node_modules node --test t/node/userscript.test.mjs

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

import { sleep, waitFor } from './harness.mjs';

const require = createRequire(import.meta.url);
const { WebSocket, WebSocketServer } = require('ws');
const here = path.dirname(fileURLToPath(import.meta.url));
const TOP = path.resolve(here, '..', '..');
const P = require(`${TOP}/browser/common/cb-protocol.js`);
const spec = JSON.parse(fs.readFileSync(`${TOP}/browser/protocol/protocol-v1.json`, 'utf8'));
const validator = P.createValidator(spec);

/** A copy of browser/ (sources only) in a temp dir; returns its top. */
function copyBrowser() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-build-'));
  for (const sub of ['userscript', 'sillytavern', 'common', 'protocol']) {
    fs.cpSync(`${TOP}/browser/${sub}`, `${dir}/browser/${sub}`, { recursive: true,
      filter: (f) => !f.endsWith('.test.mjs') });
  }
  return dir;
}

function edit(file, fn) {
  fs.writeFileSync(file, fn(fs.readFileSync(file, 'utf8')));
}

/** sh SCRIPT ARGS, with env additions; { status, stderr }. */
function sh(script, args, env = {}) {
  const r = spawnSync('sh', [script, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stderr: r.stderr };
}

/** A directory holding an `mv` that always fails (first in PATH: the build fails at its last step). */
function failingMv(dir) {
  const bin = `${dir}/bin`;
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(`${bin}/mv`, '#!/bin/sh\necho "mv: refused by the test" >&2\nexit 1\n', { mode: 0o755 });
  return { PATH: `${bin}:${process.env.PATH}` };
}

// ───────────────────────────── userscript/build.sh ─────────────────────────────

test('userscript build.sh: the script, each placeholder once, nothing else in the output directory', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-us-'));
  try {
    const r = sh(`${TOP}/browser/userscript/build.sh`, [`${dir}/out/chatbridge.user.js`]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(`${dir}/out`), ['chatbridge.user.js']);
    const s = fs.readFileSync(`${dir}/out/chatbridge.user.js`, 'utf8');
    assert.ok(s.startsWith('// ==UserScript=='));
    for (const p of ['__CHATBRIDGE_WS_URL__', '__CHATBRIDGE_TOKEN__']) assert.equal(s.split(p).length - 1, 1, p);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('userscript build.sh refuses a config marker twice, a version that only matches as a regex, '
  + 'and leaves no temporary file when it fails', () => {
  const cases = [
    ['a second config section', (d) => edit(`${d}/browser/userscript/main.js`,
      (s) => `${s}\n// ==ChatbridgeConfig==\nconst EXTRA = 1;\n// ==/ChatbridgeConfig==\n`),
    /has the line '\/\/ ==ChatbridgeConfig==' 2 times/],
    ['a second end marker', (d) => edit(`${d}/browser/userscript/main.js`, (s) => `${s}\n// ==/ChatbridgeConfig==\n`),
      /'\/\/ ==\/ChatbridgeConfig==' 2 times/],
    ['no config section', (d) => edit(`${d}/browser/userscript/main.js`,
      (s) => s.replace(/^\/\/ ==\/?ChatbridgeConfig==$/gm, '// (no marker)')), /0 times/],
    ['the markers swapped', (d) => edit(`${d}/browser/userscript/main.js`,
      (s) => s.replace('// ==ChatbridgeConfig==\n', '// ==SWAP==\n').replace('// ==/ChatbridgeConfig==\n',
        '// ==ChatbridgeConfig==\n').replace('// ==SWAP==\n', '// ==/ChatbridgeConfig==\n')), /comes before/],
    ['VERSION 1a0b0 for @version 1.0.0', (d) => edit(`${d}/browser/userscript/main.js`,
      (s) => s.replace(/const VERSION = '[^']*';/, "const VERSION = '1a0b0';")), /VERSION is not @version 1\.0\.0/],
  ];
  for (const [what, mutate, why] of cases) {
    const d = copyBrowser();
    try {
      mutate(d);
      const r = sh(`${d}/browser/userscript/build.sh`, [`${d}/out/chatbridge.user.js`]);
      assert.notEqual(r.status, 0, `${what}: the build must fail`);
      assert.match(r.stderr, why, what);
      assert.deepEqual(fs.existsSync(`${d}/out`) ? fs.readdirSync(`${d}/out`) : [], [], `${what}: no output`);
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  }
  // the last step fails (set -e, no die): the temporary file goes too
  const d = copyBrowser();
  try {
    const r = sh(`${d}/browser/userscript/build.sh`, [`${d}/out/chatbridge.user.js`], failingMv(d));
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /refused by the test/);
    assert.deepEqual(fs.readdirSync(`${d}/out`), [], 'no chatbridge.user.js.tmp.* left');
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

// ───────────────────────────── sillytavern/build.sh ─────────────────────────────

test('sillytavern build.sh: a folder with every file, or a clear failure that leaves nothing behind', () => {
  const d = copyBrowser();
  try {
    const ok = sh(`${d}/browser/sillytavern/build.sh`, [`${d}/out/chatbridge`]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.deepEqual(fs.readdirSync(`${d}/out/chatbridge`).sort(),
      ['README.md', 'cb-protocol.js', 'index.js', 'manifest.json', 'settings.html', 'style.css']);
    // OUT_DIR with a trailing slash is the same folder, built again in place
    const again = sh(`${d}/browser/sillytavern/build.sh`, [`${d}/out/chatbridge/`]);
    assert.equal(again.status, 0, again.stderr);
    assert.ok(fs.existsSync(`${d}/out/chatbridge/index.js`), 'the folder is there after building into OUT_DIR/');
    assert.deepEqual(fs.readdirSync(`${d}/out`), ['chatbridge'], 'and nothing beside it');

    const cases = [
      ['manifest.json version 1.0.1', () => edit(`${d}/browser/sillytavern/manifest.json`,
        (s) => s.replace(/"version": "[^"]*"/, '"version": "1.0.1"')), /VERSION is not manifest\.json's version 1\.0\.1/],
      ['index.js VERSION 1x0x0', () => edit(`${d}/browser/sillytavern/index.js`,
        (s) => s.replace(/^const VERSION = '[^']*';$/m, "const VERSION = '1x0x0';")), /VERSION is not manifest/],
      ['manifest.json css naming a file that is not there', () => edit(`${d}/browser/sillytavern/manifest.json`,
        (s) => s.replace('"css": "style.css"', '"css": "styles.css"')), /would lack styles\.css/],
      ['manifest.json js naming a file that is not there', () => edit(`${d}/browser/sillytavern/manifest.json`,
        (s) => s.replace('"js": "index.js"', '"js": "main.js"')), /would lack main\.js/],
      ['the import written differently', () => edit(`${d}/browser/sillytavern/index.js`,
        (s) => s.replace("import '../common/cb-protocol.js';", 'import "../common/cb-protocol.js";')),
      /import the protocol client exactly once/],
    ];
    const pristine = new Map(['manifest.json', 'index.js'].map((f) => [f,
      fs.readFileSync(`${d}/browser/sillytavern/${f}`, 'utf8')]));
    for (const [what, mutate, why] of cases) {
      for (const [f, text] of pristine) fs.writeFileSync(`${d}/browser/sillytavern/${f}`, text);
      mutate();
      const r = sh(`${d}/browser/sillytavern/build.sh`, [`${d}/out/chatbridge`]);
      assert.notEqual(r.status, 0, `${what}: the build must fail`);
      assert.match(r.stderr, why, what);
      assert.deepEqual(fs.readdirSync(`${d}/out`), ['chatbridge'], `${what}: no temporary folder left`);
      assert.equal(fs.readFileSync(`${d}/out/chatbridge/manifest.json`, 'utf8'), pristine.get('manifest.json'),
        `${what}: the previous folder is untouched`);
    }
    for (const [f, text] of pristine) fs.writeFileSync(`${d}/browser/sillytavern/${f}`, text);
    const r = sh(`${d}/browser/sillytavern/build.sh`, [`${d}/out/other`], failingMv(d));
    assert.notEqual(r.status, 0);
    assert.deepEqual(fs.readdirSync(`${d}/out`), ['chatbridge'], 'no other.tmp.* left');
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

// ───────────────────────────── the built userscript ─────────────────────────────

/** Build from browser top `top`, configured as nginx serves it. */
function builtScript(top, wsUrl, token) {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cb-us-')), 'chatbridge.user.js');
  const r = sh(`${top}/browser/userscript/build.sh`, [out]);
  assert.equal(r.status, 0, r.stderr);
  const s = fs.readFileSync(out, 'utf8');
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  return s.replace('__CHATBRIDGE_WS_URL__', wsUrl).replace('__CHATBRIDGE_TOKEN__', token);
}

/**
 * Run `source` in a fresh realm with a stand-in LMArena page. fetch(url, init)
 * is the site. Returns { page, stop() }: page.title, page.errors (console.error
 * lines), page.storage. stop() ends every timer the script set.
 */
function runInPage(source, { fetch } = {}) {
  const timers = new Set();
  let stopped = false;
  const track = (set, clear) => [
    (fn, ms) => {
      if (stopped) return 0;
      const h = set(() => { if (set === setTimeout) timers.delete(h); fn(); }, ms);
      timers.add(h);
      return h;
    },
    (h) => { timers.delete(h); clear(h); },
  ];
  const [st, ct] = track(setTimeout, clearTimeout);
  const [si, ci] = track(setInterval, clearInterval);
  const store = new Map();
  const page = {
    title: 'LMArena',
    errors: [],
    storage: store,
  };
  const win = {
    fetch: fetch || (async () => new Response('not here', { status: 404 })),
    WebSocket,
    setTimeout: st,
    clearTimeout: ct,
    sessionStorage: { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)) },
  };
  win.top = win;
  win.self = win;
  const document = {
    get title() { return page.title; },
    set title(t) { page.title = t; },
    head: null,
    documentElement: null,
    querySelectorAll: () => [],
  };
  const console = {
    error: (...a) => page.errors.push(a.join(' ')), warn() {}, info() {}, debug() {}, log() {},
  };
  const context = vm.createContext({
    window: win, document, console, location: { href: 'https://lmarena.ai/c/new', host: 'lmarena.ai', reload() {} },
    setTimeout: st, clearTimeout: ct, setInterval: si, clearInterval: ci,
    TextDecoder, TextEncoder, URL, AbortController, AbortSignal, DOMException, crypto: globalThis.crypto,
  });
  vm.runInContext(source, context, { filename: 'chatbridge.user.js' });
  return {
    page,
    stop() {
      stopped = true;
      for (const h of timers) { clearTimeout(h); clearInterval(h); }
      timers.clear();
    },
  };
}

/** A sidecar: welcome (or 4401 for a wrong token); records the frames. */
async function startSidecar(token) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const s = { wss, hellos: [], frames: [], ws: null, url: `ws://127.0.0.1:${wss.address().port}/chatbridge/ws` };
  wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      const v = validator.validate(f, 'browser');
      assert.ok(v.ok, `${JSON.stringify(f).slice(0, 200)}: ${v.message}`);
      if (f.type !== 'hello') { s.frames.push(f); return; }
      s.hellos.push(f);
      if (f.token !== token) { ws.close(4401, 'bad token'); return; }
      s.ws = ws;
      ws.send(JSON.stringify({ type: 'welcome', v: 1, browser_id: f.id, heartbeat_ms: 15000, max_frame: 16777216 }));
    });
  });
  s.close = async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise((r) => wss.close(() => r()));
  };
  return s;
}

test('the built userscript: hello with a kept tab id, a task answered through the driver, done', async () => {
  const sidecar = await startSidecar('tok');
  const calls = [];
  const site = async (url, init) => {
    calls.push({ url, init });
    return new Response('a0:"Hello from the"\na0:" site"\nad:{"finishReason":"stop"}\n',
      { headers: { 'content-type': 'text/plain' } });
  };
  const tab = runInPage(builtScript(TOP, sidecar.url, 'tok'), { fetch: site });
  try {
    await waitFor(() => tab.page.title.startsWith('✅ '), 5000, 'the ✅ title');
    const [hello] = sidecar.hellos;
    assert.equal(hello.kind, 'arena');
    assert.match(hello.id, /^arena-[a-z0-9]{1,8}$/);
    assert.equal(tab.page.storage.get('chatbridge-tab-id'), hello.id, 'the id is kept for reloads');
    assert.equal(hello.agent, 'chatbridge-userscript/1.0.0');
    const S = '11111111-2222-4333-8444-555555555555';
    const M = '66666666-7777-4888-9999-aaaaaaaaaaaa';
    sidecar.ws.send(JSON.stringify({ type: 'task', request_id: 'r1', kind: 'arena', op: 'chat', model: 'm', stream: true,
      messages: [{ role: 'user', content: 'Hi' }], params: {},
      arena: { session_id: S, message_id: M, mode: 'direct_chat', model_uuid: null } }));
    await waitFor(() => sidecar.frames.some((f) => f.type === 'done'), 5000, 'done');
    assert.deepEqual(sidecar.frames.filter((f) => f.request_id === 'r1'), [
      { type: 'delta', request_id: 'r1', text: 'Hello from the site' },
      { type: 'done', request_id: 'r1', finish_reason: 'stop' },
    ]);
    assert.equal(calls[0].url, `/nextjs-api/stream/retry-evaluation-session-message/${S}/messages/${M}`);
    assert.deepEqual(tab.page.errors, []);
  } finally {
    tab.stop();
    await sidecar.close();
  }
});

test('the built userscript with a wrong token: ⛔, the reason on the console, one hello, no retries', async () => {
  const sidecar = await startSidecar('right');
  const tab = runInPage(builtScript(TOP, sidecar.url, 'wrong'));
  try {
    await waitFor(() => tab.page.title.startsWith('⛔ '), 5000, 'the ⛔ title');
    assert.equal(tab.page.title, '⛔ LMArena');
    assert.equal(tab.page.errors.length, 1, tab.page.errors.join('\n'));
    assert.match(tab.page.errors[0], /^\[chatbridge\] stopped: the bridge refused this script's token \(close code 4401\)/);
    await sleep(1500);                                           // three backoff periods
    assert.equal(sidecar.hellos.length, 1, 'no retries');
    assert.equal(tab.page.errors.length, 1, 'said once');
  } finally {
    tab.stop();
    await sidecar.close();
  }
});

test('a userscript built without the protocol client says so, and does nothing else', async () => {
  const d = copyBrowser();
  try {
    fs.writeFileSync(`${d}/browser/common/cb-protocol.js`, '/* lost */\n');
    const fetches = [];
    const tab = runInPage(builtScript(d, 'ws://127.0.0.1:9/never', 'tok'), { fetch: async (u) => { fetches.push(u); } });
    tab.stop();
    assert.equal(tab.page.title, '⛔ LMArena');
    assert.equal(tab.page.errors.length, 1);
    assert.match(tab.page.errors[0], /^\[chatbridge\] this copy of the userscript is broken: the protocol client \(cb-protocol\.js\) and the LMArena driver \(driver-lmarena\.js\) did not load/);
    assert.match(tab.page.errors[0], /Install it again from the bridge/);
    assert.deepEqual(fetches, []);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});
