#!/usr/bin/env node
// arena-sim: a local stand-in for the LMArena site, for the browser tests.
// Plain node:http, no dependencies. It serves what the chatbridge userscript
// touches:
//
//   GET /            an arena-like page: a chat, a Retry button that makes the
//                    page's own PUT to the retry endpoint with PAGE_SESSION /
//                    PAGE_MESSAGE (for capture tests), and self.__next_f.push
//                    scripts carrying the model list (MODELS, one publicName
//                    twice) the way Next.js escapes and splits it. Sets the
//                    session cookie the site endpoints require.
//   PUT /nextjs-api/stream/retry-evaluation-session-message/:session/messages/:message
//   PUT /api/stream/retry-evaluation-session-message/:session/messages/:message
//                    checks the forged history like the site would (ids unique,
//                    parent chain, statuses, positions, modelId, session), records
//                    the request, and streams an AI-SDK line answer scripted by
//                    [[directives]] in the last non-blank message:
//       (none)                 a0 deltas "echo: <text>", then ad with usage
//       [[side b]]             answer on b0/bg/b2/bd; a-side decoy lines ("DECOY") too
//       [[reasoning T]]        ag (bg) lines first
//       [[image URL]]          an a2 image record
//       [[status N [AFTER]]]   HTTP N with a JSON error body (429: Retry-After AFTER)
//       [[cloudflare]]         403 "Just a moment..." challenge page
//       [[a3 MESSAGE]]         an in-stream error record before any text
//       [[garbage]]            an unparseable line after the first delta
//       [[slow MS]]            wait before the first byte
//       [[gap MS]]             wait between lines
//       [[split-utf8]]         CJK + emoji text, written in 1–3 byte writes that
//                              split characters, 3 ms apart (TCP_NODELAY)
//       [[big N]]              an N-byte answer (ASCII pattern + a little CJK)
//       [[finish REASON]]      the finish reason (e.g. content-filter)
//       [[no-nextjs]]          /nextjs-api/... answers 404 (the /api/... fallback)
//       [[hang]]               one delta, then nothing until the client goes away
//       [[reply TEXT]]         answer TEXT instead of the echo
//
// Test hooks: GET /__requests (every recorded request), POST /__reset,
// POST /__cloudflare {"on":bool} (EVERY request, pages and probes included,
// gets the challenge until turned off), POST /__options {"noNextjs":bool}.
//
//   import { startArenaSim } from './server.mjs'; const sim = await startArenaSim();
//   node t/arena-sim/server.mjs [--port N] [--no-nextjs]     (prints its URL)

import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const PAGE_SESSION = '0199c0de-0000-7000-8000-0000000000a1';
export const PAGE_MESSAGE = '0199c0de-0000-7000-8000-0000000000b2';
export const COOKIE = 'arena-auth-prod-v1';

/** The page's model list (publicName "sim-chat" twice: the first one counts). */
export const MODELS = [
  { id: '0199a000-0000-7000-8000-000000000001', publicName: 'sim-chat', organization: 'simorg', provider: 'simorg',
    capabilities: { inputCapabilities: { text: true, image: true }, outputCapabilities: { text: true } } },
  { id: '0199a000-0000-7000-8000-000000000002', publicName: 'sim-image', organization: 'simorg', provider: 'simorg',
    capabilities: { inputCapabilities: { text: true }, outputCapabilities: { image: { aspectRatios: ['1:1'] } } } },
  { id: '0199a000-0000-7000-8000-000000000003', publicName: 'sim-battle', organization: 'otherorg', provider: 'otherorg',
    capabilities: { inputCapabilities: { text: true }, outputCapabilities: { text: true } } },
  { id: '0199a000-0000-7000-8000-000000000009', publicName: 'sim-chat', organization: 'simorg', provider: 'simorg',
    capabilities: { inputCapabilities: { text: true }, outputCapabilities: { text: true } } },
];

export const SPLIT_UTF8_TEXT = 'UTF-8: 你好，世界！🌍🚀 日本語のテキスト 한국어 👩‍👩‍👧‍👦 ünïcödé ✓ — done';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const RETRY = /^\/(nextjs-api|api)\/stream\/retry-evaluation-session-message\/([^/]+)\/messages\/([^/]+)$/;
const MAX_BODY = 64 * 1024 * 1024;

export const CHALLENGE_HTML = `<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><meta name="robots" content="noindex,nofollow">
</head><body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">lmarena.ai</h1><p id="Truv1" class="h2 spacer-bottom">Verifying you are human. This may take a few seconds.</p>
<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to continue</span></div></noscript>
</div></div><script>(function(){window._cf_chl_opt={cvId:'3',cZone:'lmarena.ai',cType:'managed'};}());</script>
</body></html>`;

/** Wait ms, or less if signal aborts. */
const sleep = (ms, signal) => new Promise((resolve) => {
  if (!ms || (signal && signal.aborted)) { resolve(); return; }
  const onAbort = () => { clearTimeout(t); resolve(); };
  const t = setTimeout(() => {
    if (signal) signal.removeEventListener('abort', onAbort);
    resolve();
  }, ms);
  if (signal) signal.addEventListener('abort', onAbort, { once: true });
});

/** [[name args]] directives of a text (the last one of a name wins). */
export function directives(text) {
  const d = {};
  for (const m of String(text).matchAll(/\[\[([a-z0-9-]+)(?: ([^\]]*))?\]\]/g)) d[m[1]] = m[2] === undefined ? true : m[2];
  return d;
}

// ───────────────────────────── the page ─────────────────────────────

/** The model list as Next.js flight rows, escaped into self.__next_f.push scripts. */
function flightScripts() {
  const rows = [
    '0:{"P":null,"b":"sim-build","p":"","c":["",""],"i":false}\n',
    '1:I[4242,["static/chunks/app/page.js"],"default"]\n',
    '2:T2c,simulated text row\nwith "publicName" inside\n',
    `3:["$","$L1",null,{"initialState":${JSON.stringify(MODELS)},"user":{"id":"0199ffff-0000-7000-8000-000000000000","email":"me@sim.test"}}]\n`,
    '4:["$","main",null,{"children":"<chat> & co"}]\n',
  ];
  const payload = rows.join('');
  const cut1 = payload.indexOf('initialState') + 50;
  const cut2 = payload.indexOf('sim-image') + 4;
  const pieces = [payload.slice(0, cut1), payload.slice(cut1, cut2), payload.slice(cut2)];
  const esc = (s) => JSON.stringify(s).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026');
  return ['<script>(self.__next_f=self.__next_f||[]).push([0])</script>',
    ...pieces.map((p) => `<script>self.__next_f.push([1,${esc(p)}])</script>`)].join('\n');
}

function pageHtml() {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LMArena (simulator)</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f6f6f8; color: #222; }
 header { padding: 12px 20px; background: #20232a; color: #fff; font-weight: 600; }
 main { max-width: 760px; margin: 20px auto; }
 .msg { padding: 10px 14px; margin: 8px 0; border-radius: 10px; background: #fff; box-shadow: 0 1px 2px #0002; white-space: pre-wrap; }
 .user { background: #dbeafe; }
 button { padding: 6px 14px; border-radius: 6px; border: 1px solid #888; background: #fff; cursor: pointer; }
 #status { color: #666; margin-left: 10px; }
</style></head>
<body>
<header>LMArena · simulator</header>
<main>
 <div id="chat">
  <div class="msg user">Hello! Which model are you?</div>
  <div class="msg assistant" id="answer">I am a simulated model. Press Retry to regenerate this answer.</div>
 </div>
 <button id="retry" type="button">Retry</button><span id="status"></span>
</main>
<script>
(function () {
  const session = ${JSON.stringify(PAGE_SESSION)};
  const message = ${JSON.stringify(PAGE_MESSAGE)};
  document.getElementById('retry').addEventListener('click', async () => {
    const status = document.getElementById('status');
    const answer = document.getElementById('answer');
    const now = new Date().toISOString();
    const u = crypto.randomUUID();
    const body = { modelId: null, messages: [
      { id: u, role: 'user', content: 'Hello! Which model are you? [[reply regenerated by the page]]', evaluationId: null,
        evaluationSessionId: session, parentMessageIds: [], experimental_attachments: [], failureReason: null,
        metadata: null, participantPosition: 'a', createdAt: now, updatedAt: now, status: 'pending' } ] };
    status.textContent = 'retrying…';
    try {
      const r = await fetch('/nextjs-api/stream/retry-evaluation-session-message/' + session + '/messages/' + message,
        { method: 'PUT', body: JSON.stringify(body), credentials: 'include',
          headers: { 'Content-Type': 'text/plain;charset=UTF-8' } });
      const text = await r.text();
      let out = '';
      for (const line of text.split('\\n')) if (line.startsWith('a0:')) out += JSON.parse(line.slice(3));
      answer.textContent = out || ('HTTP ' + r.status);
      status.textContent = 'done';
    } catch (e) {
      status.textContent = 'failed: ' + e.message;
    }
  });
})();
</script>
${flightScripts()}
</body></html>`;
}

// ───────────────────────────── the site API ─────────────────────────────

/** What the site would refuse in a retry body; [] when it is fine. */
export function checkBody(body, session) {
  const problems = [];
  if (!body || typeof body !== 'object' || Array.isArray(body)) return ['the body is not a JSON object'];
  if (!(body.modelId === null || (typeof body.modelId === 'string' && UUID.test(body.modelId)))) {
    problems.push('modelId must be a uuid or null');
  }
  const msgs = body.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) return problems.concat('messages must be a non-empty array');
  const ids = new Set();
  const allSuccess = msgs.every((m) => m && m.status === 'success');
  msgs.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (!m || typeof m !== 'object') { problems.push(`${at} is not an object`); return; }
    if (typeof m.id !== 'string' || !UUID.test(m.id)) problems.push(`${at}.id is not a uuid`);
    else if (ids.has(m.id)) problems.push(`${at}.id is not unique`);
    ids.add(m.id);
    if (!['system', 'user', 'assistant'].includes(m.role)) problems.push(`${at}.role`);
    if (typeof m.content !== 'string') problems.push(`${at}.content is not a string`);
    if (m.evaluationSessionId !== session) problems.push(`${at}.evaluationSessionId is not the session`);
    const parent = i === 0 ? [] : [msgs[i - 1] && msgs[i - 1].id];
    if (JSON.stringify(m.parentMessageIds) !== JSON.stringify(parent)) problems.push(`${at}.parentMessageIds do not chain`);
    if (m.participantPosition !== 'a' && m.participantPosition !== 'b') problems.push(`${at}.participantPosition`);
    const want = allSuccess || i < msgs.length - 1 ? 'success' : 'pending';
    if (m.status !== want) problems.push(`${at}.status is ${m.status}, want ${want}`);
    if (!Array.isArray(m.experimental_attachments)) problems.push(`${at}.experimental_attachments is not an array`);
    else {
      for (const a of m.experimental_attachments) {
        if (!a || typeof a.name !== 'string' || typeof a.contentType !== 'string' || typeof a.url !== 'string') {
          problems.push(`${at}.experimental_attachments has a bad entry`);
        }
      }
    }
    for (const k of ['createdAt', 'updatedAt']) {
      if (typeof m[k] !== 'string' || Number.isNaN(Date.parse(m[k]))) problems.push(`${at}.${k}`);
    }
  });
  return problems;
}

/** The text that carries the directives: the last message with non-blank content. */
function scriptText(body) {
  const msgs = (body && Array.isArray(body.messages)) ? body.messages : [];
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i] && typeof msgs[i].content === 'string' && msgs[i].content.trim()) return msgs[i].content;
  }
  return '';
}

function words(text) {
  return text.match(/\S+\s*|\s+/g) || [];
}

/** About n bytes of text (ASCII with some 2- and 3-byte characters), never cut inside a character. */
export function bigText(n) {
  const unit = 'chatbridge-0123456789-abcdefghij-ÄÖÜ-漢字-';
  const b = Buffer.from(unit.repeat(Math.ceil(n / Buffer.byteLength(unit)) + 1)).subarray(0, n);
  return b.toString('utf8').replace(/\uFFFD+$/, '');
}

class Answer {
  constructor(res, signal, d) {
    this.res = res;
    this.signal = signal;
    this.gap = Number(d.gap || 0);
    this.split = !!d['split-utf8'];
  }

  get gone() { return this.signal.aborted; }

  async line(text) {
    if (this.gone) return;
    const bytes = Buffer.from(text + '\n');
    if (this.split) {
      for (let i = 0; i < bytes.length && !this.gone;) {
        const n = 1 + (i % 3);                                   // 1, 2, 3 bytes: splits every character kind
        this.res.write(bytes.subarray(i, i + n));
        i += n;
        await sleep(3, this.signal);
      }
    } else {
      this.res.write(bytes);
    }
    if (this.gap) await sleep(this.gap, this.signal);
  }

  /** Many lines, written in batches when no gap is wanted. */
  async lines(list) {
    if (this.gap || this.split) {
      for (const l of list) await this.line(l);
      return;
    }
    for (let i = 0; i < list.length && !this.gone; i += 64) {
      this.res.write(list.slice(i, i + 64).join('\n') + '\n');
      await new Promise((r) => setImmediate(r));
    }
  }
}

async function answer(rec, res, signal, body) {
  const text = scriptText(body);
  const d = rec.directives;
  const clean = text.replace(/\[\[[^\]]*\]\]/g, '').replace(/\s+/g, ' ').trim();
  const side = d.side === 'b' ? 'b' : 'a';
  const other = side === 'a' ? 'b' : 'a';
  const q = JSON.stringify;

  if (d.slow) await sleep(Number(d.slow), signal);
  if (signal.aborted) return;

  if (d.status) {
    const [code, after] = String(d.status).split(/\s+/).map(Number);
    const headers = { 'content-type': 'application/json' };
    if (after !== undefined && !Number.isNaN(after)) headers['retry-after'] = String(after);
    rec.status = code;
    res.writeHead(code, headers);
    res.end(q({ error: `scripted ${code} from the simulated site` }));
    return;
  }
  if (d.cloudflare) {
    rec.status = 403;
    res.writeHead(403, { 'content-type': 'text/html; charset=UTF-8' });
    res.end(CHALLENGE_HTML);
    return;
  }

  rec.status = 200;
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-cache' });
  res.socket.setNoDelay(true);
  const out = new Answer(res, signal, d);

  if (d.a3 !== undefined) {
    await out.line(`${side}3:${q(d.a3 === true ? 'An error occurred' : d.a3)}`);
    res.end();
    return;
  }
  if (d.reasoning) {
    for (const w of words(String(d.reasoning))) await out.line(`${side}g:${q(w)}`);
  }
  if (d.image) {
    await out.line(`${side}2:${q([{ type: 'image', image: String(d.image), mimeType: 'image/png' }])}`);
  }

  let reply = d.reply !== undefined ? String(d.reply) : `echo: ${clean}`;
  if (d['split-utf8']) reply = SPLIT_UTF8_TEXT;
  let pieces;
  if (d.big) {
    reply = bigText(Number(d.big));
    pieces = reply.match(/[\s\S]{1,1000}/gu) || [];
  } else {
    pieces = words(reply);
  }
  rec.reply = d.big ? { bytes: Buffer.byteLength(reply) } : reply;
  if (d.image && !d.reply) pieces = [];

  const lines = [];
  pieces.forEach((p, i) => {
    if (side === 'b' && i % 2 === 0) lines.push(`${other}0:${q('DECOY ')}`);
    lines.push(`${side}0:${q(p)}`);
  });

  if (d.hang) {
    await out.line(lines[0] || `${side}0:"…"`);
    rec.hung = true;
    await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
    return;
  }
  if (d.garbage) {
    await out.line(lines[0] || `${side}0:"x"`);
    await out.line('this line is <not> an AI-SDK record {{{');
    await out.lines(lines.slice(1));
  } else {
    await out.lines(lines);
  }
  if (side === 'b') await out.line(`${other}d:${q({ finishReason: 'stop' })}`);
  const usage = { promptTokens: Math.ceil(clean.length / 4), completionTokens: pieces.length };
  await out.line(`${side}d:${q({ finishReason: d.finish ? String(d.finish) : 'stop', usage })}`);
  res.end();
}

// ───────────────────────────── the server ─────────────────────────────

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > MAX_BODY) { reject(new Error('body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function hasCookie(req) {
  return (req.headers.cookie || '').split(/;\s*/).some((c) => c.startsWith(`${COOKIE}=`));
}

function json(res, status, obj) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(obj));
}

/**
 * Start the simulator. opts: { port (0: any), host, noNextjs, requireCookie }.
 * Returns { url, port, requests, reset(), setCloudflare(on), close() }.
 */
export async function startArenaSim(opts = {}) {
  const defaults = { noNextjs: !!opts.noNextjs };
  const state = { cloudflare: false, noNextjs: defaults.noNextjs, requests: [], seq: 0 };
  const requireCookie = opts.requireCookie !== false;

  async function onRetry(req, res, m) {
    const [, prefix, session, message] = m;
    const controller = new AbortController();
    const rec = {
      n: ++state.seq, method: req.method, path: req.url.split('?')[0], prefix, session, message,
      headers: { 'content-type': req.headers['content-type'], accept: req.headers.accept,
        cookie: hasCookie(req), origin: req.headers.origin, 'sec-fetch-site': req.headers['sec-fetch-site'] },
      startedAt: Date.now(), aborted: false, finished: false, status: null,
    };
    state.requests.push(rec);
    res.on('close', () => {
      rec.endedAt = Date.now();
      rec.finished = res.writableFinished;
      if (!res.writableFinished) rec.aborted = true;
      controller.abort();
    });
    let raw;
    try { raw = await readBody(req); } catch (e) { rec.status = 413; json(res, 413, { error: e.message }); return; }
    rec.rawLength = raw.length;
    try { rec.body = JSON.parse(raw); } catch (_) { rec.body = null; }
    rec.directives = directives(scriptText(rec.body));
    if (req.method !== 'PUT') { rec.status = 405; json(res, 405, { error: 'method not allowed' }); return; }
    if ((state.noNextjs || rec.directives['no-nextjs']) && prefix === 'nextjs-api') {
      rec.status = 404;
      json(res, 404, { error: 'Not Found' });
      return;
    }
    if (requireCookie && !rec.headers.cookie) {
      rec.status = 401;
      json(res, 401, { error: 'Not logged in: no session cookie' });
      return;
    }
    if (!UUID.test(session) || !UUID.test(message)) {
      rec.status = 400;
      json(res, 400, { error: 'bad session or message id' });
      return;
    }
    rec.problems = checkBody(rec.body, session);
    rec.valid = rec.problems.length === 0;
    if (!rec.valid) {
      rec.status = 400;
      json(res, 400, { error: `invalid body: ${rec.problems.join('; ')}` });
      return;
    }
    await answer(rec, res, controller.signal, rec.body);
  }

  async function onControl(req, res, path) {
    if (path === '/__requests') { json(res, 200, state.requests); return; }
    let body = {};
    try { body = JSON.parse((await readBody(req)) || '{}'); } catch (_) { /* empty */ }
    if (path === '/__reset') {
      state.requests = [];
      state.cloudflare = false;
      state.noNextjs = defaults.noNextjs;
      json(res, 200, { ok: true });
    } else if (path === '/__cloudflare') {
      state.cloudflare = !!body.on;
      json(res, 200, { cloudflare: state.cloudflare });
    } else if (path === '/__options') {
      if (body.noNextjs !== undefined) state.noNextjs = !!body.noNextjs;
      json(res, 200, { noNextjs: state.noNextjs });
    } else {
      json(res, 404, { error: 'unknown control' });
    }
  }

  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    const run = async () => {
      if (path.startsWith('/__')) return onControl(req, res, path);
      if (state.cloudflare) {
        state.challenged = (state.challenged || 0) + 1;
        res.writeHead(403, { 'content-type': 'text/html; charset=UTF-8', 'cache-control': 'no-store' });
        res.end(CHALLENGE_HTML);
        return undefined;
      }
      const m = RETRY.exec(path);
      if (m) return onRetry(req, res, m);
      if (req.method === 'GET' && path === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store',
          'set-cookie': `${COOKIE}=base64-simulated-session; Path=/; SameSite=Lax` });
        res.end(pageHtml());
        return undefined;
      }
      if (path === '/favicon.ico') { res.writeHead(204); res.end(); return undefined; }
      json(res, 404, { error: 'Not Found' });
      return undefined;
    };
    run().catch((e) => {
      if (!res.headersSent) json(res, 500, { error: String(e && e.message) });
      else res.destroy();
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port || 0, opts.host || '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const url = `http://${opts.host || '127.0.0.1'}:${port}`;

  return {
    url,
    port,
    get requests() { return state.requests; },
    /** Retry requests whose directive text contains `marker`. */
    requestsFor(marker) {
      return state.requests.filter((r) => r.body && JSON.stringify(r.body.messages || []).includes(marker));
    },
    get challenged() { return state.challenged || 0; },
    reset() {
      state.requests = [];
      state.cloudflare = false;
      state.noNextjs = defaults.noNextjs;
      state.challenged = 0;
    },
    setCloudflare(on) { state.cloudflare = !!on; },
    setNoNextjs(on) { state.noNextjs = !!on; },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

// ───────────────────────────── command line ─────────────────────────────

if (import.meta.url === pathToFileURL(process.argv[1] || '').href) {
  const args = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') opts.port = Number(args[++i]);
    else if (args[i] === '--host') opts.host = args[++i];
    else if (args[i] === '--no-nextjs') opts.noNextjs = true;
    else { console.error(`arena-sim: unknown option ${args[i]}`); process.exit(2); }
  }
  const sim = await startArenaSim(opts);
  console.log(`arena-sim listening on ${sim.url}`);
  const stop = () => sim.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
