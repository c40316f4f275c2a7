// Helpers for the browser tier (t/browser/*.test.mjs): Debian's Chromium
// through playwright-core (never a downloaded browser), the userscript built
// and configured the way nginx serves it, a tab with the userscript injected
// the way a userscript manager does (document-end, page context, top frame
// only), and a scripted sidecar: a WebSocket server speaking the sidecar's side
// of protocol v1, validating every frame the browser sends.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { sleep, waitFor } from '../node/harness.mjs';

const require = createRequire(import.meta.url);
const { WebSocketServer } = require('ws');
const here = path.dirname(fileURLToPath(import.meta.url));
export const TOP = path.resolve(here, '..', '..');
const P = require(`${TOP}/browser/common/cb-protocol.js`);
export const spec = JSON.parse(fs.readFileSync(`${TOP}/browser/protocol/protocol-v1.json`, 'utf8'));
export const validator = P.createValidator(spec);

export { sleep, waitFor };

// ───────────────────────────── Chromium ─────────────────────────────

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Chromium with a fresh profile (its directory: .profile); close() also
 * removes the profile. opts: more context options.
 */
export async function launchChromium(opts = {}) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-chrome-profile-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, viewport: { width: 1100, height: 700 }, args: FLAGS,
      ...opts,
    });
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    profile,
    async close() {
      try { await context.close(); } finally { fs.rmSync(profile, { recursive: true, force: true }); }
    },
  };
}

// ───────────────────────────── the userscript ─────────────────────────────

/** Build the userscript with browser/userscript/build.sh into dir; its path. */
export function buildUserscript(dir) {
  const out = path.join(dir, 'chatbridge.user.js');
  execFileSync('sh', [`${TOP}/browser/userscript/build.sh`, out], { stdio: ['ignore', 'inherit', 'inherit'] });
  return out;
}

/** A value for a single-quoted JS string literal. */
function jsString(v) {
  return JSON.stringify(String(v)).slice(1, -1).replace(/'/g, "\\'");
}

/** The built file with the two placeholders filled in, as nginx would. */
export function configureUserscript(source, wsUrl, token, { debug = !!process.env.CB_DEBUG } = {}) {
  for (const p of ['__CHATBRIDGE_WS_URL__', '__CHATBRIDGE_TOKEN__']) {
    assert.equal(source.split(p).length - 1, 1, `${p} must appear exactly once in the userscript`);
  }
  let s = source.replace('__CHATBRIDGE_WS_URL__', jsString(wsUrl)).replace('__CHATBRIDGE_TOKEN__', jsString(token));
  if (debug) s = s.replace(/debug: false,/, 'debug: true,');
  return s;
}

/**
 * The userscript as a browser would install it: GET
 * <nginx>/chatbridge/chatbridge.user.js, served by chatbridge_userscript with
 * this bridge's URL and token baked in.  A failure fails the test.
 */
export async function loadUserscript(nginxUrl) {
  const r = await fetch(`${nginxUrl}/chatbridge/chatbridge.user.js`);
  const text = await r.text();
  assert.equal(r.status, 200, `GET /chatbridge/chatbridge.user.js: ${text.slice(0, 200)}`);
  assert.ok(text.includes('==UserScript=='), 'a userscript');
  assert.ok(!text.includes('__CHATBRIDGE_WS_URL__') && !text.includes('__CHATBRIDGE_TOKEN__'),
    'nginx substituted its placeholders');
  return text;
}

/** The init script a manager's document-end injection amounts to (top frame, page context). */
function documentEnd(source) {
  return `(() => {
  if (window.top !== window) return;
  const run = () => {
${source}
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', run, { once: true });
  else run();
})();`;
}

/**
 * A tab on url with the userscript (if given). Collects console messages and
 * page errors in tab.console / tab.errors.
 */
export async function openTab(context, url, source) {
  const page = await context.newPage();
  const tab = { page, console: [], errors: [] };
  page.on('console', (m) => tab.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => tab.errors.push(String(e && e.stack ? e.stack : e)));
  if (source) await page.addInitScript({ content: documentEnd(source) });
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  return tab;
}

export async function waitTitle(page, re, ms = 10000) {
  return waitFor(async () => {
    try { return re.test(await page.title()); } catch (_) { return false; }
  }, ms, `a page title matching ${re}`);
}

// ───────────────────────────── a scripted sidecar ─────────────────────────────

/**
 * A WebSocket server that plays the sidecar: answers hello with welcome (or
 * 4401 for a wrong token), sends tasks and commands, and records the frames
 * each connection sends, checking each against the protocol spec.
 */
export class ScriptedSidecar {
  static async start({ token }) {
    const s = new ScriptedSidecar(token);
    await new Promise((resolve, reject) => {
      s.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
      s.wss.once('listening', resolve);
      s.wss.once('error', reject);
    });
    s.url = `ws://127.0.0.1:${s.wss.address().port}/chatbridge/ws`;
    s.wss.on('connection', (ws, req) => s.conns.push(new Conn(s, ws, req)));
    return s;
  }

  constructor(token) {
    this.token = token;
    this.conns = [];
    this.n = 0;
  }

  /** The index-th connection (0-based), once it said hello. */
  async connection(index = 0, ms = 10000) {
    const c = await waitFor(() => this.conns[index], ms, `connection #${index + 1}`);
    await waitFor(() => c.hello || c.closed, ms, 'hello');
    return c;
  }

  /** The newest connection that is open and welcomed. */
  async live(ms = 10000) {
    return waitFor(() => [...this.conns].reverse().find((c) => c.welcomed && !c.closed), ms, 'a live connection');
  }

  async close() {
    for (const c of this.conns) c.ws.terminate();
    await new Promise((r) => this.wss.close(() => r()));
  }
}

class Conn {
  constructor(server, ws, req) {
    this.server = server;
    this.ws = ws;
    this.origin = req.headers.origin;
    this.frames = [];
    this.invalid = [];
    this.hello = null;
    this.welcomed = false;
    this.closed = null;
    this.runs = new Map();
    this.id = `tab-${++server.n}`;
    ws.on('message', (data) => this.onFrame(data.toString()));
    ws.on('close', (code) => { this.closed = { code }; });
    ws.on('error', () => {});
  }

  onFrame(text) {
    let f;
    try { f = JSON.parse(text); } catch (_) { this.invalid.push({ text, error: 'not JSON' }); return; }
    const v = validator.validate(f, 'browser');
    if (!v.ok) this.invalid.push({ frame: f, error: `${v.error} ${v.message}` });
    this.frames.push(f);
    if (!this.hello) {
      this.hello = f;
      if (f.type !== 'hello' || f.token !== this.server.token) {
        this.send({ type: 'error', code: 'unauthorized', message: 'wrong token' });
        this.ws.close(4401, 'bad token');
        return;
      }
      this.send({ type: 'welcome', v: 1, browser_id: this.id, heartbeat_ms: 15000, max_frame: 16777216 });
      this.welcomed = true;
      return;
    }
    if (f.type === 'ping') this.send({ type: 'pong', t: f.t });
    const run = f.request_id && this.runs.get(f.request_id);
    if (run) run.add(f);
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  /** Frames of a type (and matching pred), in order. */
  of(type, pred = () => true) {
    return this.frames.filter((f) => f.type === type && pred(f));
  }

  async next(type, pred = () => true, ms = 10000) {
    const seen = this.of(type, pred).length;
    return waitFor(() => this.of(type, pred)[seen], ms, `a ${type} frame`);
  }

  async waitFrame(type, pred = () => true, ms = 10000) {
    return waitFor(() => this.of(type, pred)[0], ms, `a ${type} frame`);
  }

  /** Send a task; returns its run: frames, text, and end (the done or error frame). */
  task(t) {
    const frame = { type: 'task', kind: 'arena', op: 'chat', stream: true, params: {}, ...t };
    assert.ok(validator.validate(frame, 'sidecar').ok, `test task: ${validator.validate(frame, 'sidecar').message}`);
    const run = new Run(frame.request_id);
    this.runs.set(frame.request_id, run);
    this.send(frame);
    return run;
  }

  command(command, args, commandId) {
    const id = commandId || `c${Math.floor(Math.random() * 1e9)}`;
    this.send({ type: 'command', command_id: id, command, args: args || {} });
    return id;
  }
}

class Run {
  constructor(id) {
    this.id = id;
    this.frames = [];
    this.endFrame = null;
    this.waiters = [];
  }

  add(f) {
    if (this.endFrame) { this.late = (this.late || 0) + 1; return; }
    this.frames.push(f);
    if (f.type === 'done' || f.type === 'error') this.endFrame = f;
    for (const w of this.waiters.splice(0)) w();
  }

  get text() { return this.frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''); }
  get reasoning() { return this.frames.filter((f) => f.type === 'reasoning').map((f) => f.text).join(''); }
  get images() { return this.frames.filter((f) => f.type === 'image'); }

  async end(ms = 15000) {
    return waitFor(() => this.endFrame, ms, `the end of task ${this.id}`);
  }

  async first(type, ms = 10000) {
    return waitFor(() => this.frames.find((f) => f.type === type), ms, `a ${type} frame of ${this.id}`);
  }
}
