// Unit tests for browser/userscript/driver-lmarena.js, in Node (no Chromium):
// the stream parser, the site body, error classification and Cloudflare
// detection, the capture URL matcher, the model list from a Next.js flight
// payload, and runTask against a scripted fetch (fallback, errors, cancel,
// pause). Every frame runTask produces is validated against protocol-v1.json.
//
//   cd /work/main && NODE_PATH=t/node_modules node --test t/browser/driver.test.mjs

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';

const require = createRequire(import.meta.url);
const D = require('../../browser/userscript/driver-lmarena.js');
const P = require('../../browser/common/cb-protocol.js');
const spec = JSON.parse(readFileSync(new URL('../../browser/protocol/protocol-v1.json', import.meta.url), 'utf8'));
const validator = P.createValidator(spec);

const enc = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** promise, or a rejection after ms (so a hang fails the test instead of stalling it). */
function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const S = '11111111-2222-4333-8444-555555555555';
const M = '66666666-7777-4888-9999-aaaaaaaaaaaa';
const MODEL = '0196a1b2-0000-7000-8000-000000000001';

// ───────────────────────────── helpers ─────────────────────────────

/** Parse `text` (a string or byte chunks) in one parser; all events, end included. */
function parseAll(chunks, opts) {
  const p = D.createStreamParser(opts);
  const events = [];
  for (const c of Array.isArray(chunks) ? chunks : [chunks]) events.push(...p.push(c));
  events.push(...p.end());
  return events;
}

/** Bytes of `text` cut into pieces of `size` bytes (so UTF-8 characters are split). */
function byteChunks(text, size) {
  const b = enc.encode(text);
  const out = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

const texts = (events) => events.filter((e) => e.type === 'delta').map((e) => e.text).join('');
const only = (events, type) => events.filter((e) => e.type === type);

function task(extra = {}) {
  return {
    type: 'task', request_id: 'r1', kind: 'arena', op: 'chat', model: 'sim-chat', stream: true,
    messages: [
      { role: 'system', content: 'Be brief.', position: 'b' },
      { role: 'user', content: 'Hello', position: 'a' },
      { role: 'assistant', content: 'Hi!', position: 'a' },
      { role: 'user', content: 'What is this?', position: 'a',
        attachments: [{ name: 'cat.png', contentType: 'image/png', url: 'data:image/png;base64,iVBORw0KGgo=' }] },
    ],
    params: {},
    arena: { session_id: S, message_id: M, mode: 'direct_chat', model_uuid: MODEL, model_type: 'chat' },
    ...extra,
  };
}

// ─────────────────────────── stream parser ───────────────────────────

describe('stream parser', () => {
  test('text deltas and a finish record with nested usage', () => {
    const ev = parseAll('a0:"Hel"\na0:"lo"\nad:{"finishReason":"stop","usage":{"promptTokens":12,"completionTokens":3}}\n');
    assert.deepEqual(ev, [
      { type: 'delta', text: 'Hel' },
      { type: 'delta', text: 'lo' },
      { type: 'finish', reason: 'stop', usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 } },
    ]);
  });

  test('usage in snake_case, with reasoning tokens; invalid numbers dropped', () => {
    assert.deepEqual(D.mapUsage({ prompt_tokens: 1, completion_tokens: 2, reasoning_tokens: 5, total_tokens: 8 }),
      { prompt_tokens: 1, completion_tokens: 2, reasoning_tokens: 5, total_tokens: 8 });
    assert.deepEqual(D.mapUsage({ promptTokens: -1, completionTokens: 2.5, totalTokens: 'x' }), undefined);
    assert.deepEqual(D.mapUsage({ promptTokens: 4 }), { prompt_tokens: 4 });
    assert.equal(D.mapUsage(null), undefined);
  });

  test('a finish record with deeper nesting and braces inside strings', () => {
    const ev = parseAll('a0:"x"\nad:{"finishReason":"length","usage":{"promptTokens":1,"completionTokens":2,'
      + '"details":{"cache":{"hits":0}}},"note":"}{"}\n');
    assert.deepEqual(ev.at(-1), { type: 'finish', reason: 'length', usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } });
  });

  test('every way of splitting the bytes gives the same events (UTF-8 split across chunks)', () => {
    const stream = 'ag:"想一想 🤔"\na0:"你好，世界 "\na0:"🌍👩‍👩‍👧 é"\na2:[{"type":"image","image":"https://x.test/猫.png"}]\n'
      + 'ad:{"finishReason":"stop","usage":{"promptTokens":1,"completionTokens":2}}\n';
    const whole = parseAll(stream);
    assert.equal(texts(whole), '你好，世界 🌍👩‍👩‍👧 é');
    assert.equal(only(whole, 'reasoning')[0].text, '想一想 🤔');
    for (const size of [1, 2, 3, 5, 7, 13]) {
      const ev = parseAll(byteChunks(stream, size));
      assert.equal(texts(ev), texts(whole), `chunks of ${size} bytes`);
      assert.deepEqual(only(ev, 'reasoning'), only(whole, 'reasoning'));
      assert.deepEqual(only(ev, 'image'), only(whole, 'image'));
      assert.deepEqual(ev.at(-1), whole.at(-1));
      assert.ok(!texts(ev).includes('\uFFFD'), 'no replacement characters');
    }
  });

  test('random splits of a long stream: identical events', () => {
    let stream = '';
    for (let i = 0; i < 300; i++) stream += `a0:${JSON.stringify(`片${i} ✓ `)}\n`;
    stream += 'ad:{"finishReason":"stop"}\n';
    const want = parseAll(stream);
    const bytes = enc.encode(stream);
    for (let round = 0; round < 20; round++) {
      const chunks = [];
      for (let i = 0; i < bytes.length;) {
        const n = 1 + Math.floor(Math.random() * 40);
        chunks.push(bytes.subarray(i, i + n));
        i += n;
      }
      assert.deepEqual(parseAll(chunks), want);
    }
  });

  test('SSE framing: data: prefixes (with or without a space), comments, [DONE], CRLF', () => {
    const ev = parseAll(': hello\r\ndata: a0:"A"\r\n\r\ndata:a0:"B"\r\ndata: ad:{"finishReason":"stop"}\r\ndata: [DONE]\r\n');
    assert.equal(texts(ev), 'AB');
    assert.equal(ev.at(-1).type, 'finish');
  });

  test('a last line without a newline still counts', () => {
    const ev = parseAll('a0:"x"\nad:{"finishReason":"stop"}');
    assert.deepEqual(ev.at(-1), { type: 'finish', reason: 'stop' });
  });

  test('reasoning from ag, and from bg for side b', () => {
    assert.deepEqual(only(parseAll('ag:"think"\na0:"x"\nad:{}\n'), 'reasoning'), [{ type: 'reasoning', text: 'think' }]);
    assert.deepEqual(only(parseAll('bg:"hmm"\nb0:"y"\nbd:{}\n', { side: 'b' }), 'reasoning'), [{ type: 'reasoning', text: 'hmm' }]);
  });

  test('images from a2 records; other data elements ignored; mime given or guessed', () => {
    const ev = parseAll('a2:[{"type":"image","image":"https://x.test/a.png","mimeType":"image/png"},{"type":"other"}]\n'
      + 'a2:[{"type":"image","image":"data:image/webp;base64,AAAA"}]\n'
      + 'a2:[{"type":"image","image":"https://x.test/b.JPG?x=1"},{"type":"image","image":"https://x.test/c"}]\n'
      + 'a2:[{"something":"else"}]\nad:{"finishReason":"stop"}\n');
    assert.deepEqual(only(ev, 'image'), [
      { type: 'image', url: 'https://x.test/a.png', mime: 'image/png' },
      { type: 'image', url: 'data:image/webp;base64,AAAA', mime: 'image/webp' },
      { type: 'image', url: 'https://x.test/b.JPG?x=1', mime: 'image/jpeg' },
      { type: 'image', url: 'https://x.test/c' },
    ]);
  });

  test('battle: only the target side counts', () => {
    const stream = 'a0:"A-text"\nb0:"B-text"\nag:"A-think"\nbg:"B-think"\na2:[{"type":"image","image":"https://a"}]\n'
      + 'a3:"side a failed"\nb0:" more"\nbd:{"finishReason":"stop"}\n';
    const b = parseAll(stream, { side: 'b' });
    assert.equal(texts(b), 'B-text more');
    assert.deepEqual(only(b, 'reasoning'), [{ type: 'reasoning', text: 'B-think' }]);
    assert.equal(only(b, 'image').length, 0);
    assert.equal(only(b, 'error').length, 0, 'the other side\'s error is not ours');
    assert.equal(b.at(-1).type, 'finish');
    const a = parseAll('b0:"B"\nbd:{"finishReason":"stop"}\na0:"A"\nad:{"finishReason":"stop"}\n', { side: 'a' });
    assert.equal(texts(a), 'A');
    assert.equal(a.length, 2);
  });

  test('a3 errors: site_error, or a more specific code', () => {
    const e = (s) => only(parseAll(`a0:"partial"\na3:${s}\n`), 'error')[0];
    assert.equal(e('"An error occurred"').code, 'site_error');
    assert.equal(e('"An error occurred"').retryable, true);
    assert.match(e('"An error occurred"').message, /An error occurred/);
    assert.equal(e('"Rate limit exceeded, try later"').code, 'rate_limited');
    assert.equal(e('{"message":"recaptcha validation failed"}').code, 'forbidden');
    assert.equal(e('{"error":"User x does not have access to evaluation session y"}').code, 'unauthorized');
    assert.equal(e('"Your message was flagged by our content moderation"').code, 'content_filter');
    assert.equal(e('"<title>Just a moment...</title>"').code, 'needs_human');
  });

  test('an a3 record ends the stream: nothing after it counts', () => {
    const ev = parseAll('a3:"boom"\na0:"late"\nad:{"finishReason":"stop"}\n');
    assert.equal(ev.length, 1);
    assert.equal(ev[0].code, 'site_error');
  });

  test('finishReason error is an error, content-filter a finish', () => {
    assert.equal(parseAll('a0:"x"\nad:{"finishReason":"error"}\n').at(-1).code, 'site_error');
    assert.deepEqual(parseAll('ad:{"finishReason":"content-filter"}\n'), [{ type: 'finish', reason: 'content-filter' }]);
  });

  test('other AI-SDK records are accepted and not forwarded', () => {
    const ev = parseAll('af:{"messageId":"x"}\na8:[{"a":1}]\nac:{"toolCallId":"t","argsTextDelta":"{}"}\n'
      + 'a0:"x"\nae:{"finishReason":"stop","isContinued":false}\nad:{"finishReason":"stop"}\n');
    assert.deepEqual(ev, [{ type: 'delta', text: 'x' }, { type: 'finish', reason: 'stop' }]);
  });

  test('anything unparseable is a protocol_error that quotes the line (bounded)', () => {
    const g = parseAll('a0:"ok"\nthis is <b>not</b> a record\na0:"after"\n');
    assert.equal(g.length, 2);
    assert.equal(g[1].code, 'protocol_error');
    assert.equal(g[1].retryable, false);
    assert.match(g[1].message, /line 2/);
    assert.match(g[1].message, /this is <b>not<\/b> a record/);

    const long = parseAll(`a0:"x"\nxx${'y'.repeat(5000)}\n`);
    assert.equal(long.at(-1).code, 'protocol_error');
    assert.ok(long.at(-1).message.length < 400, 'the quote is bounded');

    for (const bad of ['a0:"unterminated\n', 'a0:12\n', 'a0:{"a":1}\n', 'ag:[1]\n', 'a2:{"type":"image"}\n',
      'ad:"stop"\n', 'a2:[{"type":"image"}]\n', '{"error":"json, not a record"}\n', 'a0 "no colon"\n']) {
      const ev = parseAll(bad);
      assert.equal(ev.at(-1).code, 'protocol_error', bad);
      assert.equal(only(ev, 'finish').length, 0);
    }
  });

  test('a line over the limit is a protocol_error, even before its newline', () => {
    const p = D.createStreamParser({ maxLineChars: 100 });
    assert.deepEqual(p.push('a0:"' + 'x'.repeat(50)), []);
    const ev = p.push('x'.repeat(60));
    assert.equal(ev[0].code, 'protocol_error');
    assert.match(ev[0].message, /longer than 100/);
    assert.deepEqual(p.push('"\n'), [], 'closed');
  });

  test('an empty stream, and one that stops without a finish record, are errors', () => {
    const empty = parseAll('');
    assert.equal(empty.length, 1);
    assert.equal(empty[0].code, 'site_error');
    assert.match(empty[0].message, /without any content/);
    const otherSide = parseAll('b0:"not ours"\nbd:{"finishReason":"stop"}\n');
    assert.match(otherSide[0].message, /none for side a/);
    const cut = parseAll('a0:"half an ans"\n');
    assert.equal(cut.at(-1).code, 'site_error');
    assert.match(cut.at(-1).message, /without a finish record after 11 characters/);
  });

  test('a long non-ASCII finishReason is cut to the protocol\'s 64 bytes, not 64 characters', () => {
    for (const reason of ['é'.repeat(100), '停止'.repeat(40), `${'x'.repeat(63)}😀`, 'a'.repeat(200)]) {
      const [ev] = parseAll(`ad:${JSON.stringify({ finishReason: reason })}\n`);
      assert.equal(ev.type, 'finish');
      assert.ok(P.utf8Length(ev.reason) <= 64, `${P.utf8Length(ev.reason)} bytes`);
      assert.ok(ev.reason.length > 0 && reason.startsWith(ev.reason), 'a prefix of the site\'s reason');
      assert.ok(P.utf8Length(reason.slice(0, ev.reason.length + 1)) > 64, 'as long as fits');
      const done = { type: 'done', request_id: 'r1', finish_reason: ev.reason };
      assert.deepEqual(validator.validate(done, 'browser'), { ok: true });
    }
    assert.equal(parseAll('ad:{"finishReason":"content-filter"}\n')[0].reason, 'content-filter', 'short: untouched');
  });

  // (the parser keeps a long line's pieces and joins them once: 4 MiB in
  // 1 KiB chunks took over 4 s when it re-joined the line on every chunk,
  // about 16 ms now; not a timed assertion, see docs/BENCHMARKS.md)
  test('a big record in many small chunks is parsed whole', () => {
    const url = `data:image/png;base64,${'A'.repeat(4 * 1024 * 1024)}`;
    const text = `a0:"x"\na2:[{"type":"image","image":"${url}"}]\nad:{"finishReason":"stop"}\n`;
    const p = D.createStreamParser();
    const events = [];
    for (let i = 0; i < text.length; i += 1024) events.push(...p.push(text.slice(i, i + 1024)));
    assert.deepEqual(events.map((e) => e.type), ['delta', 'image', 'finish']);
    assert.equal(events[1].url, url);
    assert.equal(events[1].mime, 'image/png');
  });

  test('after the finish record the parser is closed', () => {
    const p = D.createStreamParser();
    assert.equal(p.push('ad:{"finishReason":"stop"}\na0:"x"\n').length, 1);
    assert.ok(p.closed);
    assert.deepEqual(p.push('a0:"y"\n'), []);
    assert.deepEqual(p.end(), []);
  });
});

// ─────────────────────────────── the body ───────────────────────────────

describe('site body', () => {
  test('a forged chain with fresh ids, parents, positions, statuses and attachments', () => {
    const t = task();
    const body = D.buildSiteBody(t);
    assert.equal(body.modelId, MODEL);
    assert.equal(body.messages.length, 4);
    const ids = body.messages.map((m) => m.id);
    assert.equal(new Set(ids).size, 4, 'ids are unique');
    for (const id of ids) assert.match(id, UUID);
    body.messages.forEach((m, i) => {
      assert.deepEqual(m.parentMessageIds, i === 0 ? [] : [ids[i - 1]]);
      assert.equal(m.evaluationSessionId, S);
      assert.equal(m.evaluationId, null);
      assert.equal(m.failureReason, null);
      assert.equal(m.metadata, null);
      assert.equal(m.role, t.messages[i].role);
      assert.equal(m.content, t.messages[i].content);
      assert.equal(m.participantPosition, t.messages[i].position);
      assert.equal(m.status, i === 3 ? 'pending' : 'success');
      assert.ok(!Number.isNaN(Date.parse(m.createdAt)) && m.createdAt === m.updatedAt);
      if (i) assert.ok(m.createdAt > body.messages[i - 1].createdAt, 'strictly ordered');
    });
    assert.deepEqual(body.messages[3].experimental_attachments, t.messages[3].attachments);
    assert.deepEqual(body.messages[0].experimental_attachments, []);
    const again = D.buildSiteBody(t);
    assert.ok(again.messages.every((m) => !ids.includes(m.id)), 'fresh ids on every request');
  });

  test('image tasks: every message success; model_uuid null → modelId null', () => {
    const img = D.buildSiteBody(task({ op: 'image', arena: { ...task().arena, model_uuid: null, model_type: 'image' } }));
    assert.ok(img.messages.every((m) => m.status === 'success'));
    assert.equal(img.modelId, null);
    const imageModelViaChat = D.buildSiteBody(task({ arena: { ...task().arena, model_type: 'image' } }));
    assert.ok(imageModelViaChat.messages.every((m) => m.status === 'success'));
  });

  test('positions the module did not set: direct chat system→b others→a; battle → target', () => {
    const msgs = [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }];
    const direct = D.buildSiteBody(task({ messages: msgs }));
    assert.deepEqual(direct.messages.map((m) => m.participantPosition), ['b', 'a']);
    const battle = D.buildSiteBody(task({ messages: msgs,
      arena: { ...task().arena, mode: 'battle', battle_target: 'b' } }));
    assert.deepEqual(battle.messages.map((m) => m.participantPosition), ['b', 'b']);
    assert.equal(D.answerSide({ mode: 'battle', battle_target: 'B' }), 'b');
    assert.equal(D.answerSide({ mode: 'direct_chat', battle_target: 'b' }), 'a');
  });

  test('tasks that cannot be done: bad_request', () => {
    const noArena = D.checkTask(task({ arena: undefined }));
    assert.equal(noArena.code, 'bad_request');
    assert.match(noArena.message, /chatbridge_arena/);
    assert.match(noArena.message, /no LMArena session configured/);
    assert.equal(D.checkTask(task({ arena: { ...task().arena, session_id: '../x' } })).code, 'bad_request');
    assert.equal(D.checkTask(task({ arena: { ...task().arena, message_id: '' } })).code, 'bad_request');
    assert.equal(D.checkTask(task({ messages: [] })).code, 'bad_request');
    assert.equal(D.checkTask(task({ arena: { ...task().arena, model_uuid: 5 } })).code, 'bad_request');
    assert.equal(D.checkTask(task()), null);
  });

  test('retry URLs', () => {
    assert.equal(D.siteRetryPath('nextjs-api', S, M), `/nextjs-api/stream/retry-evaluation-session-message/${S}/messages/${M}`);
    assert.equal(D.siteRetryPath('api', S, M), `/api/stream/retry-evaluation-session-message/${S}/messages/${M}`);
  });
});

// ───────────────────────────── classification ─────────────────────────────

const CF_PAGE = '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
  + '<meta http-equiv="refresh" content="360"></head><body><div class="main-wrapper" role="main">'
  + '<div class="main-content"><h1 class="zone-name-title h1">lmarena.ai</h1>'
  + '<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to continue</span></div></noscript>'
  + '</div></div><script>(function(){window._cf_chl_opt={cvId: "3"};})();</script></body></html>';

describe('errors and verification pages', () => {
  test('Cloudflare challenge pages are recognised, ordinary pages are not', () => {
    assert.ok(D.isChallengePage(CF_PAGE));
    assert.ok(D.isChallengePage('<html><head><title>Just a moment...</title></head></html>'));
    assert.ok(D.isChallengePage('<p>Enable JavaScript and cookies to continue</p>'));
    assert.ok(D.isChallengePage('<script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1"></script>'));
    assert.ok(D.isChallengePage('', { 'CF-Mitigated': 'challenge' }));
    assert.ok(!D.isChallengePage('<html><title>LMArena</title><body>Served by Cloudflare. Just a moment please.</body></html>'));
    assert.ok(!D.isChallengePage('{"error":"rate limited"}'));
    assert.ok(!D.isChallengePage(''));
  });

  test('an ordinary page with Cloudflare\'s JavaScript Detections script is not a challenge', () => {
    // Cloudflare injects this into every HTML page of a zone with bot protection
    const page = '<!DOCTYPE html><html><head><title>LMArena</title></head><body><main>Chat</main>'
      + '<script>(function(){function c(){var b=a.contentDocument||a.contentWindow.document;if(b){'
      + 'var d=b.createElement(\'script\');d.innerHTML="window.__CF$cv$params={r:\'8f1e2d3c4b5a6978\',t:\'MTcz\'};'
      + 'var a=document.createElement(\'script\');a.nonce=\'\';a.src=\'/cdn-cgi/challenge-platform/scripts/jsd/main.js\';'
      + 'document.getElementsByTagName(\'head\')[0].appendChild(a);";b.getElementsByTagName(\'head\')[0].appendChild(d)}}'
      + '})();</script><script src="/cdn-cgi/challenge-platform/h/g/scripts/jsd/0123abcd/main.js"></script></body></html>';
    assert.equal(D.isChallengePage(page), false);
    // the challenge page's own script still counts, with or without the h/<x>/ part
    for (const src of ['/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8f1e',
      '/cdn-cgi/challenge-platform/h/g/orchestrate/managed/v1?ray=8f1e', '/cdn-cgi/challenge-platform/orchestrate/jsch/v1']) {
      assert.equal(D.isChallengePage(`<html><body><script src="${src}"></script></body></html>`), true, src);
    }
  });

  test('HTTP statuses → codes, with retry_after and the site\'s words', () => {
    const c = (status, body, headers) => D.classifyHttpError(status, headers || {}, body || '');
    const u = c(401, '{"error":"User abc does not have access to evaluation session xyz"}');
    assert.deepEqual([u.code, u.status, u.retryable], ['unauthorized', 401, false]);
    assert.match(u.message, /does not have access to evaluation session xyz/);
    assert.deepEqual([c(403, '{"error":"forbidden"}').code, c(403).status], ['forbidden', 403]);
    assert.match(c(403, '{"error":"recaptcha validation failed"}').message, /reCAPTCHA/);
    const r = c(429, '{"error":"Too many requests"}', { 'Retry-After': '7' });
    assert.deepEqual([r.code, r.status, r.retryable, r.retryAfter], ['rate_limited', 429, true, 7]);
    assert.equal(c(429, '').retryAfter, undefined);
    const s = c(500, '{"error":"Internal"}');
    assert.deepEqual([s.code, s.retryable, s.status], ['site_error', true, undefined]);
    assert.equal(c(503, 'down', { 'retry-after': '12' }).retryAfter, 12);
    assert.equal(c(404).code, 'not_found');
    assert.equal(c(413).code, 'bad_request');
    assert.equal(c(400, '{"message":"messages[1].parentMessageIds: bad"}').code, 'bad_request');
    assert.match(c(405).message, /arena\.ai/);
    assert.equal(c(418).code, 'site_error');
  });

  test('a challenge page is needs_human whatever the status', () => {
    for (const status of [403, 503, 429, 200]) {
      const e = D.classifyHttpError(status, {}, CF_PAGE);
      assert.deepEqual([e.code, e.status, e.retryable, e.retryAfter], ['needs_human', 503, true, 30]);
      assert.match(e.message, /complete the check/);
    }
    assert.equal(D.classifyHttpError(403, { 'cf-mitigated': 'challenge' }, '').code, 'needs_human');
  });

  test('HTML bodies are quoted as text, bounded', () => {
    const html = '<html><head><title>Oops</title><style>p{color:red}</style><script>var secret=1</script></head>'
      + `<body><h1>Bad &amp; gateway</h1><p>${'z'.repeat(5000)}</p></body></html>`;
    const e = D.classifyHttpError(502, {}, html);
    assert.match(e.message, /Oops Bad & gateway z+/);
    assert.ok(!/[<>]|secret|color:red/.test(e.message));
    assert.ok(e.message.length < 800);
  });

  test('Retry-After: seconds or an HTTP date, clamped to the protocol\'s range', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    assert.equal(D.parseRetryAfter('30', now), 30);
    assert.equal(D.parseRetryAfter('1.2', now), 2);
    assert.equal(D.parseRetryAfter('Wed, 01 Jan 2025 00:01:00 GMT', now), 60);
    assert.equal(D.parseRetryAfter('Tue, 31 Dec 2024 00:00:00 GMT', now), 0);
    assert.equal(D.parseRetryAfter('9999999', now), 86400);
    assert.equal(D.parseRetryAfter('soon', now), undefined);
    assert.equal(D.parseRetryAfter(null, now), undefined);
  });
});

// ─────────────────────────────── capture ───────────────────────────────

describe('capture URL matcher', () => {
  const page = 'https://lmarena.ai/c/abc';
  const path = `/nextjs-api/stream/retry-evaluation-session-message/${S}/messages/${M}`;

  test('the page\'s own retry requests, in every shape fetch accepts', () => {
    const want = { prefix: 'nextjs-api', sessionId: S, messageId: M };
    assert.deepEqual(D.matchCaptureUrl(path, page), want);
    assert.deepEqual(D.matchCaptureUrl(`https://lmarena.ai${path}`, page), want);
    assert.deepEqual(D.matchCaptureUrl(new URL(`https://lmarena.ai${path}?x=1`), page), want);
    assert.deepEqual(D.matchCaptureUrl({ url: `https://lmarena.ai${path}` }, page), want, 'a Request');
    assert.deepEqual(D.matchCaptureUrl(path.replace('nextjs-api', 'api'), page), { ...want, prefix: 'api' });
    assert.deepEqual(D.matchCaptureUrl(path.toUpperCase().replace('/NEXTJS-API/STREAM/RETRY-EVALUATION-SESSION-MESSAGE/',
      '/nextjs-api/stream/retry-evaluation-session-message/').replace('/MESSAGES/', '/messages/'), page), want, 'ids lower-cased');
    assert.deepEqual(D.matchCaptureUrl(`https://arena.ai${path}`, page), want, 'the site\'s new domain');
    assert.deepEqual(D.matchCaptureUrl(path, 'http://127.0.0.1:4000/'), want, 'a same-origin test page');
  });

  test('anything else is not captured', () => {
    for (const u of [
      `https://evil.test${path}`, `http://lmarena.ai${path}`,
      '/nextjs-api/stream/create-evaluation',
      `/nextjs-api/stream/retry-evaluation-session-message/${S}/messages/not-a-uuid`,
      `/nextjs-api/stream/retry-evaluation-session-message/${S}`,
      `/other/stream/retry-evaluation-session-message/${S}/messages/${M}`,
      `${path}/extra`, '', 'http://[bad', undefined, 42,
    ]) assert.equal(D.matchCaptureUrl(u, page), null, String(u));
  });
});

// ─────────────────────────────── models ───────────────────────────────

/** A Next.js page's inline flight scripts, the way Next.js writes them. */
function flightScripts(rows, cuts) {
  const payload = rows.join('');
  const pieces = [];
  let at = 0;
  for (const c of [...cuts, payload.length]) { pieces.push(payload.slice(at, c)); at = c; }
  const esc = (s) => JSON.stringify(s).replace(/</g, '\\u003c').replace(/>/g, '\\u003e');
  return ['(self.__next_f=self.__next_f||[]).push([0])', 'self.__next_f.push([2,null])',
    ...pieces.map((p) => `self.__next_f.push([1,${esc(p)}])`)];
}

const PAGE_MODELS = [
  { id: '0196a1b2-0000-7000-8000-000000000001', publicName: 'gpt-4o-2024-08-06', organization: 'openai', provider: 'openai',
    capabilities: { inputCapabilities: { text: true, image: true }, outputCapabilities: { text: true } } },
  { publicName: 'claude-3-5-sonnet', id: '0196A1B2-0000-7000-8000-000000000002', provider: 'anthropic',
    capabilities: { outputCapabilities: { text: true } } },
  { id: '0196a1b2-0000-7000-8000-000000000003', publicName: 'dall-e-3', organization: 'openai',
    capabilities: { inputCapabilities: { text: true }, outputCapabilities: { image: { aspectRatios: ['1:1'] } } } },
  { id: '0196a1b2-0000-7000-8000-000000000004', publicName: 'gpt-4o-2024-08-06', organization: 'openai',
    capabilities: { outputCapabilities: { text: true } } },
  { id: '0196a1b2-0000-7000-8000-000000000005', publicName: 'sonar-pro', organization: 'perplexity',
    capabilities: { outputCapabilities: { text: true, search: true } } },
  { id: '0196a1b2-0000-7000-8000-000000000006', publicName: 'veo-3', organization: 'google',
    capabilities: { outputCapabilities: { video: {} } } },
];

const FLIGHT_ROWS = [
  '0:{"P":null,"b":"build-123","p":"","c":["",""],"i":false}\n',
  '1:I[12345,["static/chunks/app.js"],"default"]\n',
  '2:T3a,line one\nline two with "publicName" in it\n',
  '3:["$","div",null,{"children":"<hello> & {not a model}"}]\n',
  `4:["$","$L5",null,{"initialState":${JSON.stringify(PAGE_MODELS.slice(0, 4))},"user":{"id":"0196a1b2-0000-7000-8000-0000000000ff","name":"me"}}]\n`,
  `6:{"more":[${JSON.stringify(PAGE_MODELS[4])},${JSON.stringify(PAGE_MODELS[5])}]}\n`,
];

describe('model list from the page', () => {
  const want = [
    { id: 'gpt-4o-2024-08-06', uuid: '0196a1b2-0000-7000-8000-000000000001', type: 'chat', organization: 'openai' },
    { id: 'claude-3-5-sonnet', uuid: '0196a1b2-0000-7000-8000-000000000002', type: 'chat', organization: 'anthropic' },
    { id: 'dall-e-3', uuid: '0196a1b2-0000-7000-8000-000000000003', type: 'image', organization: 'openai' },
    { id: 'sonar-pro', uuid: '0196a1b2-0000-7000-8000-000000000005', type: 'search', organization: 'perplexity' },
    { id: 'veo-3', uuid: '0196a1b2-0000-7000-8000-000000000006', type: 'video', organization: 'google' },
  ];
  const payload = FLIGHT_ROWS.join('');
  // cut inside the model list and inside a model object, like network chunks
  const cuts = [payload.indexOf('initialState') + 40, payload.indexOf('claude') + 3, payload.indexOf('"more"')];
  const scripts = flightScripts(FLIGHT_ROWS, cuts);
  const fakeDoc = {
    querySelectorAll: () => [...scripts.map((textContent) => ({ textContent })), { textContent: 'var unrelated = 1;' }],
  };

  test('from the inline scripts (escaped, split across pushes), deduplicated by publicName', () => {
    const payloads = D.collectFlightPayloads({}, fakeDoc);
    assert.equal(payloads.length, 1);
    assert.equal(payloads[0], payload);
    const models = D.extractModels(payloads);
    assert.deepEqual(models, want);
    for (const m of models) assert.ok(validator.validate({ type: 'models', models: [m] }, 'browser').ok);
  });

  test('from self.__next_f when the page still records its pushes', () => {
    const win = { __next_f: [[0], [1, payload.slice(0, 500)], [2, null], [1, payload.slice(500)], [3, 'AAAA']] };
    const payloads = D.collectFlightPayloads(win, null);
    assert.deepEqual(D.extractModels(payloads), want);
  });

  test('objects in rows that do not parse are still found', () => {
    const broken = `9:{"x":[${JSON.stringify(PAGE_MODELS[2])},{"unclosed":\n`;
    assert.deepEqual(D.extractModels([broken]).map((m) => m.id), ['dall-e-3']);
  });

  test('nothing that is not a model; bounded names', () => {
    assert.deepEqual(D.extractModels(['0:{"id":"0196a1b2-0000-7000-8000-000000000009","name":"no publicName"}\n']), []);
    assert.deepEqual(D.extractModels([`0:{"id":"not-a-uuid","publicName":"x"}\n`]), []);
    assert.deepEqual(D.extractModels([`0:{"id":"${MODEL}","publicName":"${'n'.repeat(300)}"}\n`]), []);
    assert.deepEqual(D.extractModels([]), []);
    assert.deepEqual(D.collectFlightPayloads({ __next_f: 'weird' }, null), []);
  });
});

// ─────────────────────────────── runTask ───────────────────────────────

/** A Response whose body streams `chunks` (strings or bytes), `gapMs` apart, abortable. */
function streamResponse(chunks, { status = 200, headers = {}, gapMs = 0, signal, reads } = {}) {
  let i = 0;
  const body = new ReadableStream({
    async pull(ctrl) {
      if (reads) reads.n++;
      if (gapMs) await sleep(gapMs);
      if (signal && signal.aborted) { ctrl.error(new DOMException('aborted', 'AbortError')); return; }
      if (i >= chunks.length) { ctrl.close(); return; }
      const c = chunks[i++];
      ctrl.enqueue(typeof c === 'string' ? enc.encode(c) : c);
    },
  }, { highWaterMark: 0 });
  return new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers } });
}

/** A scripted site: routes[i] answers the i-th fetch; records the calls. */
function fakeSite(routes) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init, body: init && init.body ? JSON.parse(init.body) : undefined });
    const route = routes[Math.min(calls.length - 1, routes.length - 1)];
    if (route instanceof Error) throw route;
    return route(url, init);
  };
  return { fetch, calls };
}

/** io for runTask that records frames (validated against the spec) in order. */
function recorder(fetch, extra = {}) {
  const frames = [];
  const challenges = [];
  const push = (f) => {
    const clean = Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined));
    const v = validator.validate(clean, 'browser');
    assert.ok(v.ok, `frame ${JSON.stringify(clean).slice(0, 200)}: ${v.message}`);
    frames.push(clean);
  };
  const id = 'r1';
  const io = {
    fetch,
    state: { prefix: null },
    onChallenge: (m) => challenges.push(m),
    send: {
      delta: (text) => push({ type: 'delta', request_id: id, text }),
      reasoning: (text) => push({ type: 'reasoning', request_id: id, text }),
      image: (url, mime) => push({ type: 'image', request_id: id, url, mime }),
      done: (finish_reason, usage) => push({ type: 'done', request_id: id, finish_reason, usage }),
      error: (code, message, o = {}) => push({ type: 'error', request_id: id, code, message,
        status: o.status, retryable: o.retryable, retry_after: o.retryAfter }),
    },
    ...extra,
  };
  return { io, frames, challenges };
}

const tracker = new P.TaskTracker();
let taskNo = 0;
const tracked = () => tracker.begin(`t${++taskNo}`);

describe('runTask', () => {
  test('a streamed answer: PUT with credentials, deltas, reasoning, done with usage', async () => {
    const site = fakeSite([() => streamResponse(['ag:"hm"\na0:"Hel', 'lo"\na0:" 世', '界"\n',
      'ad:{"finishReason":"stop","usage":{"promptTokens":3,"completionTokens":2}}\n'])]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'done');
    assert.equal(site.calls.length, 1);
    assert.equal(site.calls[0].url, D.siteRetryPath('nextjs-api', S, M));
    assert.equal(site.calls[0].init.method, 'PUT');
    assert.equal(site.calls[0].init.credentials, 'include');
    assert.match(site.calls[0].init.headers['Content-Type'], /^text\/plain/);
    assert.equal(site.calls[0].body.messages.length, 4);
    assert.equal(site.calls[0].body.modelId, MODEL);
    assert.equal(frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''), 'Hello 世界');
    assert.deepEqual(frames[0], { type: 'reasoning', request_id: 'r1', text: 'hm' });
    assert.deepEqual(frames.at(-1), { type: 'done', request_id: 'r1', finish_reason: 'stop',
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } });
  });

  test('a long non-ASCII finish reason still makes a valid done frame', async () => {
    const site = fakeSite([() => streamResponse([`a0:"ok"\nad:${JSON.stringify({ finishReason: '完了'.repeat(30) })}\n`])]);
    const { io, frames } = recorder(site.fetch);                 // every frame is validated
    assert.equal(await D.runTask(task(), tracked(), io), 'done');
    assert.deepEqual(frames.at(-1), { type: 'done', request_id: 'r1', finish_reason: '完了'.repeat(10) + '完' });
  });

  test('deltas of one network chunk go out as one frame', async () => {
    const many = Array.from({ length: 50 }, (_, i) => `a0:"${i},"\n`).join('');
    const site = fakeSite([() => streamResponse([many, 'ad:{"finishReason":"stop"}\n'])]);
    const { io, frames } = recorder(site.fetch);
    await D.runTask(task(), tracked(), io);
    assert.equal(frames.filter((f) => f.type === 'delta').length, 1);
  });

  test('404 on /nextjs-api: /api is tried, and remembered for the next task', async () => {
    const site = fakeSite([
      () => new Response('{"error":"Not Found"}', { status: 404 }),
      () => streamResponse(['a0:"x"\nad:{"finishReason":"stop"}\n']),
      () => streamResponse(['a0:"y"\nad:{"finishReason":"stop"}\n']),
    ]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'done');
    assert.deepEqual(site.calls.map((c) => c.url.split('/')[1]), ['nextjs-api', 'api']);
    assert.equal(io.state.prefix, 'api');
    await D.runTask(task(), tracked(), io);
    assert.equal(site.calls[2].url.split('/')[1], 'api');
    assert.deepEqual(frames.filter((f) => f.type === 'done').length, 2);
  });

  test('404 on both: not_found', async () => {
    const site = fakeSite([() => new Response('nope', { status: 404 })]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'error');
    assert.equal(site.calls.length, 2);
    assert.equal(frames[0].code, 'not_found');
    assert.equal(io.state.prefix, null);
  });

  test('site errors become typed error frames', async () => {
    const cases = [
      [401, '{"error":"no access"}', {}, { code: 'unauthorized', status: 401 }],
      [403, '{"error":"recaptcha validation failed"}', {}, { code: 'forbidden', status: 403 }],
      [429, '{"error":"slow down"}', { 'Retry-After': '7' }, { code: 'rate_limited', status: 429, retry_after: 7, retryable: true }],
      [500, '{"error":"oops"}', {}, { code: 'site_error', retryable: true }],
    ];
    for (const [status, body, headers, want] of cases) {
      const site = fakeSite([() => new Response(body, { status, headers })]);
      const { io, frames } = recorder(site.fetch);
      assert.equal(await D.runTask(task(), tracked(), io), 'error');
      assert.equal(frames.length, 1);
      for (const [k, v] of Object.entries(want)) assert.equal(frames[0][k], v, `${status} ${k}`);
      assert.match(frames[0].message, new RegExp(JSON.parse(body).error.split(' ')[0]));
    }
  });

  test('a challenge page: needs_human, and the tab is told', async () => {
    for (const mk of [
      () => new Response(CF_PAGE, { status: 403, headers: { 'content-type': 'text/html' } }),
      () => new Response(CF_PAGE, { status: 200, headers: { 'content-type': 'text/html; charset=UTF-8' } }),
    ]) {
      const site = fakeSite([mk]);
      const { io, frames, challenges } = recorder(site.fetch);
      assert.equal(await D.runTask(task(), tracked(), io), 'error');
      assert.equal(frames[0].code, 'needs_human');
      assert.equal(frames[0].retry_after, 30);
      assert.equal(challenges.length, 1);
    }
  });

  test('200 with JSON or a non-challenge HTML page instead of a stream', async () => {
    let site = fakeSite([() => new Response('{"error":"session expired"}', { headers: { 'content-type': 'application/json' } })]);
    let r = recorder(site.fetch);
    await D.runTask(task(), tracked(), r.io);
    assert.equal(r.frames[0].code, 'site_error');
    assert.match(r.frames[0].message, /session expired/);
    site = fakeSite([() => new Response('<html><body>Maintenance</body></html>', { headers: { 'content-type': 'text/html' } })]);
    r = recorder(site.fetch);
    await D.runTask(task(), tracked(), r.io);
    assert.equal(r.frames[0].code, 'protocol_error');
    assert.match(r.frames[0].message, /Maintenance/);
  });

  test('redirected to the login page: unauthorized', async () => {
    const login = new Response('<html><title>Sign in</title></html>', { headers: { 'content-type': 'text/html' } });
    Object.defineProperty(login, 'redirected', { value: true });
    Object.defineProperty(login, 'url', { value: 'https://lmarena.ai/login?next=%2F' });
    const { io, frames } = recorder(fakeSite([() => login]).fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'error');
    assert.deepEqual([frames[0].code, frames[0].status], ['unauthorized', 401]);
    assert.match(frames[0].message, /log in/);
  });

  test('a stream error after content: deltas, then the error', async () => {
    const site = fakeSite([() => streamResponse(['a0:"partial"\n', 'garbage!\n', 'a0:"never"\n'])]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'error');
    assert.deepEqual(frames.map((f) => f.type), ['delta', 'error']);
    assert.equal(frames[1].code, 'protocol_error');
    assert.match(frames[1].message, /garbage!/);
  });

  test('a message the site body cannot hold: bad_request, and the site is not asked', async () => {
    for (const bad of [{ messages: [null] }, { messages: [{ role: 'user', content: 'x', attachments: [null] }] }]) {
      const site = fakeSite([() => streamResponse(['a0:"never"\n'])]);
      const { io, frames } = recorder(site.fetch);
      assert.equal(await D.runTask(task(bad), tracked(), io), 'error', JSON.stringify(bad));
      assert.deepEqual([frames.length, frames[0].code, frames[0].status], [1, 'bad_request', 400]);
      assert.equal(site.calls.length, 0, 'no request to the site');
    }
  });

  test('network failure: site_error, retryable', async () => {
    const site = fakeSite([new TypeError('Failed to fetch')]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task(), tracked(), io), 'error');
    assert.deepEqual([frames[0].code, frames[0].retryable], ['site_error', true]);
    assert.match(frames[0].message, /Failed to fetch/);
  });

  test('an abort that is not our cancel is an error frame, never silence', async () => {
    const site = fakeSite([new DOMException('The user aborted a request.', 'AbortError')]);
    const { io, frames } = recorder(site.fetch);
    const t = tracked();
    assert.equal(await D.runTask(task(), t, io), 'error');
    assert.equal(t.cancelled, false);
    assert.equal(frames.length, 1);
    assert.deepEqual([frames[0].type, frames[0].code, frames[0].retryable], ['error', 'site_error', true]);
    assert.match(frames[0].message, /aborted a request/);
  });

  test('no arena section: bad_request, and the site is not called', async () => {
    const site = fakeSite([() => { throw new Error('must not be called'); }]);
    const { io, frames } = recorder(site.fetch);
    assert.equal(await D.runTask(task({ arena: undefined }), tracked(), io), 'error');
    assert.equal(site.calls.length, 0);
    assert.equal(frames[0].code, 'bad_request');
    assert.match(frames[0].message, /chatbridge_arena/);
  });

  test('images: an image frame per a2 image; text is not sent; no image is an error', async () => {
    const img = task({ op: 'image', model: 'sim-image', arena: { ...task().arena, model_type: 'image' } });
    let site = fakeSite([() => streamResponse(['a0:"here you go"\na2:[{"type":"image","image":"https://img.test/1.png"}]\n',
      'ad:{"finishReason":"stop"}\n'])]);
    let r = recorder(site.fetch);
    assert.equal(await D.runTask(img, tracked(), r.io), 'done');
    assert.deepEqual(r.frames.map((f) => f.type), ['image', 'done']);
    assert.deepEqual(r.frames[0], { type: 'image', request_id: 'r1', url: 'https://img.test/1.png', mime: 'image/png' });
    assert.ok(site.calls[0].body.messages.every((m) => m.status === 'success'));
    site = fakeSite([() => streamResponse(['a0:"sorry"\nad:{"finishReason":"stop"}\n'])]);
    r = recorder(site.fetch);
    assert.equal(await D.runTask(img, tracked(), r.io), 'error');
    assert.match(r.frames[0].message, /without producing an image/);
  });

  test('cancel: the fetch is aborted and nothing more is sent', async () => {
    let signal;
    const site = fakeSite([(url, init) => {
      signal = init.signal;
      return streamResponse(Array.from({ length: 100 }, (_, i) => `a0:"${i} "\n`), { gapMs: 20, signal });
    }]);
    const { io, frames } = recorder(site.fetch);
    const t = tracked();
    const run = D.runTask(task(), t, io);
    await sleep(120);
    tracker.cancel(t.requestId, 'client_closed');
    const n = frames.length;
    assert.equal(await run, 'cancelled');
    assert.ok(signal.aborted, 'the site fetch was aborted');
    await sleep(60);
    assert.equal(frames.length, n, 'no frame after the cancel');
    assert.ok(n > 0 && frames.every((f) => f.type === 'delta'));
  });

  test('pause stops reading the site stream until resume', async () => {
    const reads = { n: 0 };
    const site = fakeSite([(url, init) => streamResponse(
      [...Array.from({ length: 30 }, (_, i) => `a0:"${i} "\n`), 'ad:{"finishReason":"stop"}\n'],
      { gapMs: 5, signal: init.signal, reads })]);
    const { io, frames } = recorder(site.fetch);
    const t = tracked();
    const run = D.runTask(task(), t, io);
    await sleep(40);
    tracker.pause(t.requestId);
    await sleep(30);
    const readsAtPause = reads.n;
    const framesAtPause = frames.length;
    await sleep(150);
    assert.ok(reads.n <= readsAtPause + 1, `reads went on while paused: ${readsAtPause} → ${reads.n}`);
    assert.equal(frames.length, framesAtPause);
    tracker.resume(t.requestId);
    assert.equal(await run, 'done');
    assert.equal(frames.filter((f) => f.type === 'delta').map((f) => f.text).join(''),
      Array.from({ length: 30 }, (_, i) => `${i} `).join(''));
  });
});

// ─────────────────────────────── the probe ───────────────────────────────

describe('probe', () => {
  test('ok, challenge, or error', async () => {
    assert.equal(await D.probeSite(async () => new Response('<html><title>LMArena</title></html>')), 'ok');
    assert.equal(await D.probeSite(async () => new Response(CF_PAGE, { status: 403 })), 'challenge');
    assert.equal(await D.probeSite(async () => new Response(CF_PAGE, { status: 200 })), 'challenge');
    assert.equal(await D.probeSite(async () => new Response('x', { status: 502 })), 'error');
    assert.equal(await D.probeSite(async () => { throw new TypeError('offline'); }), 'error');
  });

  test('an ordinary page with Cloudflare\'s detection script is ok: the tab leaves needs_human', async () => {
    const page = '<html><title>LMArena</title><body>Chat<script src="/cdn-cgi/challenge-platform/scripts/jsd/main.js">'
      + '</script></body></html>';
    assert.equal(await D.probeSite(async () => new Response(page, { headers: { 'content-type': 'text/html' } })), 'ok');
  });

  test('a probe that gets no answer gives up: error, after the timeout (10 s by default)', async () => {
    const inits = [];
    const never = (url, init) => { inits.push(init); return new Promise(() => {}); };
    let t0 = Date.now();
    assert.equal(await within(3000, D.probeSite(never, '/', { timeoutMs: 100 }), 'the probe'), 'error');
    assert.ok(Date.now() - t0 >= 90, 'not before the timeout');
    // headers came, the body never ends
    const stuckBody = () => new Response(new ReadableStream({ pull: () => new Promise(() => {}) }),
      { headers: { 'content-type': 'text/html' } });
    t0 = Date.now();
    assert.equal(await within(3000, D.probeSite(async () => stuckBody(), '/', { timeoutMs: 100 }), 'the probe'), 'error');
    assert.ok(Date.now() - t0 >= 90);
    // by default: a signal that aborts after 10 s is passed to fetch
    let seen;
    await D.probeSite(async (url, init) => { seen = init; return new Response('<html>ok</html>'); });
    assert.ok(seen.signal instanceof AbortSignal, 'the fetch has a signal');
    assert.equal(seen.signal.aborted, false);
    assert.equal(D.LIMITS.probeTimeoutMs, 10000);
    assert.ok(inits[0].signal instanceof AbortSignal && inits[0].signal.aborted, 'the hung fetch was aborted');
  });
});
