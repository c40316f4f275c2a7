// Helpers for the sillytavern tier (t/sillytavern/*.test.mjs): the real
// SillyTavern 1.19.0 server (installed by t/sillytavern/setup.sh into a cache
// outside the repository), started headless on 127.0.0.1 with a fresh data
// directory and the extension copied in; the mock LLM (t/lib/mock-llm.mjs);
// Debian's Chromium through playwright-core. Every process started here is
// loopback-only, on a port chosen at run time, and is killed by pid when the
// test ends, or when this process exits, whatever the reason.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { launchChromium as launchBrowser } from '../browser/helpers.mjs';
import { freePort, sleep, waitFor } from '../node/harness.mjs';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
export const TOP = path.resolve(here, '..', '..');
// The extension as a folder of its own, as browser/sillytavern/build.sh makes
// it (and `make` into build/sillytavern/); CB_ST_EXTENSION: test another
// copy (a work in progress, a mutant)
export const EXTENSION = process.env.CB_ST_EXTENSION || buildExtension();

function buildExtension() {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-st-extension-'));
  execFileSync('sh', [`${TOP}/browser/sillytavern/build.sh`, `${out}/chatbridge`],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  process.on('exit', () => fs.rmSync(out, { recursive: true, force: true }));
  return `${out}/chatbridge`;
}
export const OUTPUT = `${TOP}/build/test-output/sillytavern`;
export const P = require(`${TOP}/browser/common/cb-protocol.js`);
export const spec = JSON.parse(fs.readFileSync(`${TOP}/browser/protocol/protocol-v1.json`, 'utf8'));
export const validator = P.createValidator(spec);

// ───────────────────────────── processes ─────────────────────────────

const children = new Set();
const exitHooks = new Set();
const tempDirs = new Set();

/** Run fn (synchronously) if this process exits before the test cleaned up; returns a remover. */
export function atExit(fn) {
  exitHooks.add(fn);
  return () => exitHooks.delete(fn);
}

function killAll() {
  for (const p of children) {
    try { p.kill('SIGKILL'); } catch (_) { /* already gone */ }
  }
  children.clear();
  for (const fn of exitHooks) {
    try { fn(); } catch (_) { /* best effort */ }
  }
  exitHooks.clear();
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAll(); process.exit(128 + os.constants.signals[sig]); });
}

function track(p) {
  children.add(p);
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => {
    children.delete(p);
    resolve({ code, signal });
  }));
  return p;
}

async function stop(p, signal = 'SIGTERM', ms = 5000) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  p.kill(signal);
  const t = await Promise.race([p.exited, sleep(ms).then(() => null)]);
  if (!t) {
    p.kill('SIGKILL');
    await p.exited;
  }
}

// ───────────────────────────── the mock LLM ─────────────────────────────

export class MockLLM {
  static async start({ chunkDelay = 10, log } = {}) {
    const m = new MockLLM();
    const out = log ? fs.openSync(log, 'a') : 'ignore';
    m.p = track(spawn(process.execPath, [`${TOP}/t/lib/mock-llm.mjs`, '--port', '0',
      '--chunk-delay', String(chunkDelay)], { stdio: ['ignore', 'pipe', out] }));
    if (typeof out === 'number') fs.closeSync(out);
    const first = await Promise.race([
      new Promise((resolve) => readline.createInterface({ input: m.p.stdout }).once('line', resolve)),
      m.p.exited.then(() => null),
      sleep(10000).then(() => null),
    ]);
    const match = /^listening (\d+)$/.exec(first || '');
    if (!match) {
      await stop(m.p);
      throw new Error(`mock-llm did not start (${first})`);
    }
    m.port = Number(match[1]);
    m.url = `http://127.0.0.1:${m.port}`;
    m.p.stdout.resume();
    return m;
  }

  async calls() {
    return (await fetch(`${this.url}/__mock/calls`)).json();
  }

  async behave(b) {
    const r = await fetch(`${this.url}/__mock/behaviour`, { method: 'POST', body: JSON.stringify(b) });
    if (!r.ok) throw new Error(`mock behaviour: HTTP ${r.status}`);
  }

  async reset() {
    await fetch(`${this.url}/__mock/reset`, { method: 'POST' });
  }

  stop() { return stop(this.p); }
}

// ───────────────────────────── a git server ─────────────────────────────

const git = (cwd, ...args) => execFileSync('git', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'],
  env: { ...process.env, GIT_AUTHOR_NAME: 'test', GIT_AUTHOR_EMAIL: 'test@invalid',
    GIT_COMMITTER_NAME: 'test', GIT_COMMITTER_EMAIL: 'test@invalid', GIT_CONFIG_NOSYSTEM: '1',
    HOME: cwd } }).toString();

/**
 * A repository laid out as chatbridge's own: files is {path in the
 * repository: file or folder here}, committed on `main`. Served over git's
 * smart HTTP protocol (git http-backend as a CGI program) on 127.0.0.1, as
 * http://127.0.0.1:PORT/<name>.git.
 */
export class GitServer {
  static async start({ dir, name, files }) {
    const g = new GitServer();
    const work = `${dir}/work`;
    fs.mkdirSync(work, { recursive: true });
    git(work, 'init', '-q', '-b', 'main');
    for (const [to, from] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(`${work}/${to}`), { recursive: true });
      fs.cpSync(from, `${work}/${to}`, { recursive: true, dereference: true });
    }
    git(work, 'add', '.');
    git(work, 'commit', '-q', '-m', 'chatbridge');
    git(dir, 'clone', '-q', '--bare', work, `${name}.git`);

    const http = await import('node:http');
    g.server = http.createServer((req, res) => g.serve(dir, req, res));
    await new Promise((resolve) => g.server.listen(0, '127.0.0.1', resolve));
    g.url = `http://127.0.0.1:${g.server.address().port}/${name}.git`;
    g.requests = 0;
    return g;
  }

  serve(root, req, res) {
    this.requests++;
    const u = new URL(req.url, 'http://git');
    const cgi = spawn('git', ['http-backend'], { env: { ...process.env, GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1', PATH_INFO: decodeURIComponent(u.pathname), QUERY_STRING: u.search.slice(1),
      REQUEST_METHOD: req.method, CONTENT_TYPE: req.headers['content-type'] || '',
      HTTP_CONTENT_ENCODING: req.headers['content-encoding'] || '',
      GIT_PROTOCOL: req.headers['git-protocol'] || '', REMOTE_ADDR: '127.0.0.1' } });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let started = false;
    cgi.stdout.on('data', (chunk) => {
      if (started) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      started = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString().split('\r\n')) {
        const i = line.indexOf(':');
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === 'status') status = parseInt(v, 10);
        else res.setHeader(k, v);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.stdout.on('end', () => res.end());
    cgi.on('error', () => { res.statusCode = 500; res.end(); });
  }

  close() {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ───────────────────────────── SillyTavern ─────────────────────────────

/** SillyTavern's directory: $CB_ST_DIR, else what setup.sh installs (and prints). */
export function stDir() {
  if (process.env.CB_ST_DIR) return process.env.CB_ST_DIR;
  return execFileSync(`${TOP}/t/sillytavern/setup.sh`, { encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
}

/** The value at a dotted path of obj, created on the way. */
function setPath(obj, dotted, value) {
  const keys = dotted.split('.');
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (!o[k] || typeof o[k] !== 'object') o[k] = {};
    o = o[k];
  }
  o[keys[keys.length - 1]] = value;
}

export class SillyTavern {
  /**
   * Start SillyTavern in a fresh data directory.
   *   settings: { 'dotted.path': value } applied to its default settings.json
   *   secrets:  { api_key_custom: ... } seeded before the first start
   *   extensions: { folderName: sourceDir } copied into the user's extensions
   */
  static async start({ dir, settings = {}, secrets = {}, extensions = {}, log } = {}) {
    const s = new SillyTavern();
    s.root = stDir();
    s.dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'cb-st-'));
    if (!process.env.CB_KEEP) tempDirs.add(s.dir);
    s.data = `${s.dir}/data`;
    s.user = `${s.data}/default-user`;
    s.port = await freePort();
    s.url = `http://127.0.0.1:${s.port}`;
    s.log = log || `${s.dir}/st.log`;

    fs.mkdirSync(`${s.user}/extensions`, { recursive: true });
    const base = JSON.parse(fs.readFileSync(`${s.root}/default/content/settings.json`, 'utf8'));
    for (const [k, v] of Object.entries(settings)) setPath(base, k, v);
    fs.writeFileSync(`${s.user}/settings.json`, JSON.stringify(base, null, 4));
    if (Object.keys(secrets).length) fs.writeFileSync(`${s.user}/secrets.json`, JSON.stringify(secrets));
    for (const [name, src] of Object.entries(extensions)) {
      fs.cpSync(src, `${s.user}/extensions/${name}`, { recursive: true, dereference: true });
    }
    // webpack's cache of public/lib.js: in dist/ inside the install under
    // Docker, else in <dataRoot>/_webpack; keep the latter in the cache too
    const webpack = `${path.dirname(s.root)}/sillytavern-webpack`;
    fs.mkdirSync(webpack, { recursive: true });
    fs.symlinkSync(webpack, `${s.data}/_webpack`);

    fs.writeFileSync(`${s.dir}/config.yaml`, [
      `dataRoot: ${JSON.stringify(s.data)}`,
      'listen: false',
      `port: ${s.port}`,
      'protocol: { ipv4: true, ipv6: false }',
      'browserLaunch: { enabled: false }',
      'whitelistMode: false',
      'basicAuthMode: false',
      'enableUserAccounts: false',
      'securityOverride: false',
      'extensions: { enabled: true, autoUpdate: false, models: { autoDownload: false } }',
      'enableDownloadableTokenizers: false',
      'logging: { enableAccessLog: false, minLogLevel: 0 }',
      '',
    ].join('\n'));

    const out = fs.openSync(s.log, 'a');
    s.p = track(spawn(process.execPath, [`${s.root}/server.js`,
      '--configPath', `${s.dir}/config.yaml`, '--dataRoot', s.data, '--port', String(s.port),
      '--listen', 'false', '--whitelist', 'false', '--browserLaunchEnabled', 'false'],
    { cwd: s.root, stdio: ['ignore', out, out] }));
    fs.closeSync(out);
    try {
      await waitFor(async () => {
        if (s.p.exitCode !== null) throw new Error(`SillyTavern exited: ${s.tail()}`);
        try {
          return (await fetch(s.url)).ok;
        } catch (_) {
          return false;
        }
      }, 180000, 'SillyTavern to answer');
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  tail(n = 30) {
    try {
      return fs.readFileSync(this.log, 'utf8').split('\n').slice(-n).join('\n');
    } catch (_) {
      return '';
    }
  }

  /** A chat file of the default user, as its lines (header first). */
  chatFile(character, chatId) {
    const f = `${this.user}/chats/${character}/${chatId}.jsonl`;
    if (!fs.existsSync(f)) return null;
    return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  }

  /** Stop the server; remove its directory unless CB_KEEP is set. */
  async stop() {
    await stop(this.p);
    if (!process.env.CB_KEEP) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      tempDirs.delete(this.dir);
    }
  }
}

// ───────────────────────────── Chromium ─────────────────────────────

/** Chromium as the browser tier starts it, its profile removed even if this process dies. */
export async function launchChromium() {
  const chrome = await launchBrowser({ viewport: { width: 1280, height: 900 } });
  tempDirs.add(chrome.profile);
  return {
    context: chrome.context,
    async close() {
      try {
        await chrome.close();
      } finally {
        tempDirs.delete(chrome.profile);
      }
    },
  };
}

/**
 * A SillyTavern tab: waits for APP_READY. Collects console lines and page
 * errors, and every WebSocket frame the page sends and receives.
 */
export async function openTavern(context, url) {
  const page = context.pages()[0] || await context.newPage();
  const tab = { page, console: [], errors: [], ws: [] };
  let seq = 0;
  page.on('console', (m) => tab.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => tab.errors.push(String(e && e.stack ? e.stack : e)));
  page.on('websocket', (ws) => {
    const url = ws.url();
    ws.on('framesent', (f) => tab.ws.push({ seq: seq++, dir: 'out', url, payload: String(f.payload) }));
    ws.on('framereceived', (f) => tab.ws.push({ seq: seq++, dir: 'in', url, payload: String(f.payload) }));
  });
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => globalThis.SillyTavern
    && SillyTavern.getContext().eventSource.autoFireLastArgs.has('app_ready'), null, { timeout: 120000 });
  return tab;
}

/**
 * The frames of a tab's sockets whose URL contains `part`, in the order they
 * went, parsed, each with its direction: { dir: 'out' | 'in', frame }.
 * `from` skips the tab's first frames (a count from an earlier call).
 */
export function frames(tab, part, from = 0) {
  return tab.ws.slice(from).filter((f) => f.url.includes(part))
    .map((f) => ({ dir: f.dir, frame: JSON.parse(f.payload) }));
}

/** Only the frames the page sent. */
export function sentFrames(tab, part, from = 0) {
  return frames(tab, part, from).filter((f) => f.dir === 'out').map((f) => f.frame);
}

export { freePort, sleep, waitFor };
