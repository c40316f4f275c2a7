// The Node side of the test harness (the Perl side is t/lib/ChatBridgeTest.pm):
// starts the real sidecar, Debian's nginx with the module and scripted
// browsers on run-time ports, and stops them by pid.  stop() fails the test
// if nginx's error log has an [alert], [crit] or [emerg] line.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const TOP = path.resolve(here, '..', '..');
const NGINX = process.env.TEST_NGINX_BINARY || '/usr/sbin/nginx';
// make's build folder (make test passes BUILD), relative to the top
const BUILD = path.resolve(TOP, process.env.BUILD || 'build');
const MODULE = `${BUILD}/nginx/ngx_http_chatbridge_module.so`;
const SIDECAR = `${BUILD}/chatbridge-sidecar`;
const root = process.getuid && process.getuid() === 0;

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(cond, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A call that must fail: the error it threw (the test fails if it did not). */
export async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('the call should have failed');
  return null;
}

export class Bridge {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cbnode-'));
    fs.chmodSync(this.dir, 0o755);
    fs.mkdirSync(`${this.dir}/tmp`, { mode: 0o1777 });
    fs.chmodSync(`${this.dir}/tmp`, 0o1777);
    this.token = `test-token-${Math.floor(Math.random() * 1e9)}`;
    this.procs = new Map();
    this.browsers = [];
    this.expected = [];
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/chatbridge/ws`; }
  get wsUnix() { return `ws+unix://${this.dir}/ws.sock:/chatbridge/ws`; }

  spawn(name, cmd, args) {
    const out = fs.openSync(`${this.dir}/${name}.out`, 'a');
    const p = spawn(cmd, args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const exited = new Promise((resolve) => p.on('exit', resolve));
    this.procs.set(p.pid, { name, p, exited });
    return p;
  }

  async startSidecar(args = []) {
    const group = root ? ['--control-group', 'nogroup'] : [];
    this.sidecar = this.spawn('sidecar', SIDECAR, [
      '--control', `${this.dir}/sidecar.sock`, '--listen', `unix:${this.dir}/ws.sock`,
      '--token', this.token, '--log-level', 'info', ...group, ...args]);
    await waitFor(() => fs.existsSync(`${this.dir}/sidecar.sock`)
                        && fs.existsSync(`${this.dir}/ws.sock`), 5000, 'the sidecar');
  }

  async killSidecar(signal = 'SIGTERM') {
    const p = this.sidecar;
    if (!p) return;
    this.sidecar = null;
    p.kill(signal);
    await this.procs.get(p.pid).exited;
    this.procs.delete(p.pid);
  }

  async startNginx({ http = '', location = '', server = '', workers = 2 } = {}) {
    this.port = await freePort();
    const d = this.dir;
    const conf = `
load_module ${MODULE};
${root ? 'user nobody nogroup;' : ''}
worker_processes ${workers};
daemon off;
master_process on;
pid ${d}/nginx.pid;
lock_file ${d}/nginx.lock;
error_log ${d}/error.log info;
worker_shutdown_timeout 10s;
events { worker_connections 2048; }
http {
    client_body_temp_path ${d}/tmp/body;
    proxy_temp_path ${d}/tmp/proxy;
    fastcgi_temp_path ${d}/tmp/fastcgi;
    uwsgi_temp_path ${d}/tmp/uwsgi;
    scgi_temp_path ${d}/tmp/scgi;
    access_log ${d}/access.log;
    chatbridge_sidecar ${d}/sidecar.sock;
    ${http}
    server {
        listen 127.0.0.1:${this.port};
        location /v1/ {
            chatbridge;
            ${location}
        }
        location = /chatbridge/ws {
            proxy_pass http://unix:${d}/ws.sock:;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_buffering off;
        }
        location = /chatbridge/status {
            chatbridge_status;
        }
        ${server}
    }
}
`;
    fs.writeFileSync(`${d}/nginx.conf`, conf);
    this.nginx = this.spawn('nginx', NGINX, ['-p', d, '-c', `${d}/nginx.conf`, '-e', `${d}/error.log`]);
    await waitFor(() => new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    }), 5000, 'nginx');
    if (this.sidecar) {
      await waitFor(async () => {
        const s = await this.status();
        return s.link === 'ready' && (s.workers || []).length >= workers;
      }, 5000, 'the workers to link');
    }
  }

  async status() {
    try {
      const r = await fetch(`${this.url}/chatbridge/status`);
      return await r.json();
    } catch (_) {
      return {};
    }
  }

  async waitBrowsers(n, ms = 10000) {
    return waitFor(async () => {
      const s = await this.status();
      return (s.browsers || []).filter((b) => b.state === 'ready').length >= n;
    }, ms, `${n} browsers`);
  }

  // a scripted browser (t/lib/fake-browser.mjs), through nginx unless direct
  startBrowser(args = [], { direct = false } = {}) {
    const n = this.browsers.length + 1;
    const log = `${this.dir}/browser${n}.log`;
    const p = this.spawn(`browser${n}`, process.execPath, [
      `${TOP}/t/lib/fake-browser.mjs`, '--url', direct ? this.wsUnix : this.wsUrl,
      '--token', this.token, '--log', log, ...args]);
    this.browsers.push({ p, log });
    return p;
  }

  events(type) {
    const all = [];
    for (const b of this.browsers) {
      if (!fs.existsSync(b.log)) continue;
      for (const line of fs.readFileSync(b.log, 'utf8').split('\n')) {
        if (line) all.push(JSON.parse(line));
      }
    }
    all.sort((a, b) => a.t - b.t);
    return type ? all.filter((e) => e.event === type) : all;
  }

  log(name) {
    const f = `${this.dir}/${name}`;
    return fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '';
  }

  expectAlert(re) { this.expected.push(re); }

  async stop() {
    const kill = async (p, sig) => {
      const e = this.procs.get(p.pid);
      if (!e) return;
      p.kill(sig);
      await Promise.race([e.exited, sleep(5000)]);
      this.procs.delete(p.pid);
    };
    for (const b of this.browsers) await kill(b.p, 'SIGTERM');
    if (this.nginx) await kill(this.nginx, 'SIGQUIT');
    for (const { p } of [...this.procs.values()]) await kill(p, 'SIGTERM');
    for (const { p } of [...this.procs.values()]) p.kill('SIGKILL');

    let bad = this.log('error.log').split('\n').filter((l) => /\[(alert|crit|emerg)\]/.test(l));
    for (const re of this.expected) bad = bad.filter((l) => !re.test(l));
    if (!process.env.CB_KEEP) fs.rmSync(this.dir, { recursive: true, force: true });
    if (bad.length) throw new Error(`nginx error log:\n${bad.join('\n')}`);
  }
}
