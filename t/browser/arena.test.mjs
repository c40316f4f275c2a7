// The LMArena userscript in real Chromium (Debian's /usr/bin/chromium driven
// by playwright-core) against the site simulator (t/arena-sim/server.mjs).
//
// Two tiers in one file:
//   1. "scripted sidecar": the userscript talks to a WebSocket server that
//      plays the sidecar (t/browser/helpers.mjs), so every frame it sends is
//      checked directly: hello, models, tasks, errors, cancel, pause, capture,
//      needs-human, commands, reconnect, a refused token.
//   2. "end to end": the official openai SDK → nginx + module → sidecar →
//      Chromium → simulator and back, with the real harness (t/node/harness.mjs).
//      Tests named "[arena] …" need the module's `chatbridge_arena DIR;`
//      directive; the capture test also needs POST /chatbridge/admin/capture.
//
//   cd /work/main && NODE_PATH=t/node_modules node --test --test-concurrency=1 t/browser/arena.test.mjs
//
// CB_DEBUG=1 turns the userscript's console logging on; CB_KEEP=1 keeps the
// harness directory.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  bigText, MODELS, PAGE_MESSAGE, PAGE_SESSION, SPLIT_UTF8_TEXT, startArenaSim,
} from '../arena-sim/server.mjs';
import { Bridge, rejection } from '../node/harness.mjs';
import {
  buildUserscript, configureUserscript, launchChromium, loadUserscript, openTab, ScriptedSidecar, sleep,
  waitFor, waitTitle,
} from './helpers.mjs';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const S1 = '0199e000-0000-7000-8000-000000000a01';
const M1 = '0199e000-0000-7000-8000-000000000b01';
const CFG_SESSION = '0199e000-0000-7000-8000-000000000c01';
const CFG_MESSAGE = '0199e000-0000-7000-8000-000000000d01';
const BATTLE_SESSION = '0199e000-0000-7000-8000-000000000e01';
const BATTLE_MESSAGE = '0199e000-0000-7000-8000-000000000f01';
// error cases on sessions of their own: a session that answered 401 or 429 rests
// (chatbridge_arena_cooldown), which must not starve the other tests
const ERR_SESSIONS = {
  'err-401': ['0199e000-0000-7000-8000-000000001401', '0199e000-0000-7000-8000-000000002401'],
  'err-429': ['0199e000-0000-7000-8000-000000001429', '0199e000-0000-7000-8000-000000002429'],
  'err-other': ['0199e000-0000-7000-8000-000000001500', '0199e000-0000-7000-8000-000000002500'],
};
const ADMIN_KEY = 'test-admin-key-0123456789';
const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
const PAGE_TITLE = 'LMArena (simulator)';
const WANT_MODELS = [
  { id: 'sim-chat', uuid: MODELS[0].id, type: 'chat', organization: 'simorg' },
  { id: 'sim-image', uuid: MODELS[1].id, type: 'image', organization: 'simorg' },
  { id: 'sim-battle', uuid: MODELS[2].id, type: 'chat', organization: 'otherorg' },
];

let chrome;
let sim;
let workDir;
let builtFile;
let nonce = 0;
const tag = () => `#${process.pid}-${++nonce}`;
/** The userscript's own console lines (Chromium itself logs every failed request). */
const ours = (lines) => lines.filter((l) => l.includes('[chatbridge]'));

before(async () => {
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cb-arena-test-'));
  builtFile = buildUserscript(workDir);
  sim = await startArenaSim();
  chrome = await launchChromium();
});

after(async () => {
  if (chrome) await chrome.close();
  if (sim) await sim.close();
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
});

test('the simulator: its page, its HTTP test hooks', async () => {
  const page = await fetch(`${sim.url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('set-cookie'), /^arena-auth-prod-v1=/);
  assert.match(await page.text(), /self\.__next_f\.push\(\[1,"/);
  const post = (p, body) => fetch(`${sim.url}${p}`, { method: 'POST', body: JSON.stringify(body || {}) }).then((r) => r.json());
  assert.deepEqual(await post('/__cloudflare', { on: true }), { cloudflare: true });
  const cf = await fetch(`${sim.url}/`);
  assert.equal(cf.status, 403);
  assert.match(await cf.text(), /<title>Just a moment\.\.\.<\/title>/);
  assert.deepEqual(await post('/__cloudflare', { on: false }), { cloudflare: false });
  assert.deepEqual(await post('/__options', { noNextjs: true }), { noNextjs: true });
  const put = await fetch(`${sim.url}/nextjs-api/stream/retry-evaluation-session-message/${S1}/messages/${M1}`, { method: 'PUT', body: '{}' });
  assert.equal(put.status, 404);
  assert.deepEqual(await post('/__reset'), { ok: true });
  assert.deepEqual(await (await fetch(`${sim.url}/__requests`)).json(), []);
  const noCookie = await fetch(`${sim.url}/api/stream/retry-evaluation-session-message/${S1}/messages/${M1}`, { method: 'PUT', body: '{}' });
  assert.equal(noCookie.status, 401, 'the site wants its session cookie');
  sim.reset();
});

// ═════════════════════════ tier 1: scripted sidecar ═════════════════════════

describe('userscript in Chromium, against a scripted sidecar', () => {
  const TOKEN = 'scripted-token-1';
  let side;
  let source;
  let main;          // { tab, conn }: the tab most tests use
  let rid = 0;

  const arena = (extra = {}) => ({ session_id: S1, message_id: M1, mode: 'direct_chat', battle_target: 'a',
    model_uuid: MODELS[0].id, model_type: 'chat', ...extra });
  const chat = (content, extra = {}) => ({ request_id: `req-${++rid}`, model: 'sim-chat',
    messages: [{ role: 'user', content, position: 'a' }], arena: arena(), ...extra });

  /** A new tab with the userscript, and its (welcomed) connection. */
  async function newTab(src = source) {
    const before = side.conns.length;
    const tab = await openTab(chrome.context, `${sim.url}/`, src);
    const conn = await side.connection(before);
    return { tab, conn };
  }

  before(async () => {
    side = await ScriptedSidecar.start({ token: TOKEN });
    source = configureUserscript(fs.readFileSync(builtFile, 'utf8'), side.url, TOKEN);
    main = await newTab();
  });

  after(async () => {
    if (side) await side.close();
  });

  test('hello, the page\'s model list, ✅ in the title, nothing added to the page\'s globals, a quiet console', async () => {
    const { tab, conn } = main;
    const h = conn.hello;
    assert.equal(h.type, 'hello');
    assert.equal(h.kind, 'arena');
    assert.equal(h.token, TOKEN);
    assert.match(h.id, /^arena-[a-z0-9]+$/);
    assert.match(h.agent, /^chatbridge-userscript\/\d+\.\d+\.\d+$/);
    assert.deepEqual(h.capabilities, { concurrency: 6, images: true, capture: true, any_model: true,
      models: ['sim-chat', 'sim-image', 'sim-battle'] });
    const models = await conn.waitFrame('models');
    assert.deepEqual(models.models, WANT_MODELS, 'deduplicated by publicName, typed, with uuid and organization');
    await waitTitle(tab.page, new RegExp(`^✅ ${PAGE_TITLE.replace(/[()]/g, '\\$&')}$`));

    const plain = await openTab(chrome.context, `${sim.url}/`, null);
    const names = async (p) => p.evaluate(() => Object.getOwnPropertyNames(window).sort());
    const without = await names(plain.page);
    const withScript = await names(tab.page);
    await plain.page.close();
    assert.deepEqual(withScript.filter((n) => !without.includes(n)), [], 'no new globals');
    assert.equal(await tab.page.evaluate(() => window.fetch.name), 'chatbridgeCaptureFetch');
    assert.deepEqual(conn.invalid, [], 'every frame valid');
    assert.deepEqual(ours(tab.console), [], 'no console output');
    assert.deepEqual(tab.errors, []);
  });

  test('a streamed answer, and the request the site received', async () => {
    const { conn } = main;
    const t = tag();
    const run = conn.task(chat(`hello world ${t}`));
    const end = await run.end();
    assert.equal(end.type, 'done');
    assert.equal(run.text, `echo: hello world ${t}`);
    assert.equal(end.finish_reason, 'stop');
    const words = run.text.match(/\S+\s*/g).length;
    assert.equal(end.usage.completion_tokens, words);
    assert.equal(end.usage.total_tokens, end.usage.prompt_tokens + words);
    const [rec] = sim.requestsFor(t);
    assert.ok(rec, 'the site got the request');
    assert.deepEqual(rec.problems, []);
    assert.equal(rec.method, 'PUT');
    assert.equal(rec.prefix, 'nextjs-api');
    assert.equal(rec.session, S1);
    assert.equal(rec.message, M1);
    assert.equal(rec.headers.cookie, true, 'sent with the page\'s cookies');
    assert.match(rec.headers['content-type'], /^text\/plain/);
    assert.equal(rec.headers['sec-fetch-site'], 'same-origin');
    assert.equal(rec.body.modelId, MODELS[0].id);
    assert.equal(rec.finished, true);
  });

  test('the forged history: fresh ids, parent chain, statuses, positions, attachments', async () => {
    const { conn } = main;
    const t = tag();
    const messages = [
      { role: 'system', content: 'Be brief.', position: 'b' },
      { role: 'user', content: 'first question', position: 'a' },
      { role: 'assistant', content: 'first answer', position: 'a' },
      { role: 'user', content: `what is in the picture? ${t}`, position: 'a',
        attachments: [{ name: 'dot.png', contentType: 'image/png', url: PNG }] },
    ];
    const ends = [];
    for (let i = 0; i < 2; i++) ends.push(await conn.task(chat('', { messages })).end());
    assert.ok(ends.every((e) => e.type === 'done'));
    const recs = sim.requestsFor(t);
    assert.equal(recs.length, 2);
    const ids = [];
    for (const rec of recs) {
      assert.deepEqual(rec.problems, []);
      const ms = rec.body.messages;
      assert.deepEqual(ms.map((m) => [m.role, m.content, m.participantPosition, m.status]), [
        ['system', 'Be brief.', 'b', 'success'], ['user', 'first question', 'a', 'success'],
        ['assistant', 'first answer', 'a', 'success'], ['user', messages[3].content, 'a', 'pending']]);
      ms.forEach((m, i) => {
        assert.match(m.id, UUID);
        assert.deepEqual(m.parentMessageIds, i ? [ms[i - 1].id] : []);
        assert.equal(m.evaluationSessionId, S1);
        ids.push(m.id);
      });
      assert.deepEqual(ms[3].experimental_attachments, messages[3].attachments);
      assert.deepEqual(ms[0].experimental_attachments, []);
    }
    assert.equal(new Set(ids).size, 8, 'every id fresh, also across requests');
  });

  test('several tasks at once in one tab, each with its own answer', async () => {
    const { conn } = main;
    const t = tag();
    const runs = Array.from({ length: 8 }, (_, i) => conn.task(chat(`parallel ${i} of ${t} [[gap 25]]`)));
    const ends = await Promise.all(runs.map((r) => r.end()));
    ends.forEach((e, i) => {
      assert.equal(e.type, 'done', JSON.stringify(e));
      assert.equal(runs[i].text, `echo: parallel ${i} of ${t}`);
    });
    const recs = sim.requestsFor(t);
    assert.equal(recs.length, 8);
    const overlap = Math.max(...recs.map((a) => recs.filter((b) => b.startedAt < a.endedAt && a.startedAt < b.endedAt).length));
    assert.ok(overlap >= 4, `the site requests overlapped (${overlap} at once)`);
  });

  test('UTF-8 split across network writes arrives intact; a 1 MB answer intact', async () => {
    const { conn } = main;
    const utf = conn.task(chat(`[[split-utf8]] ${tag()}`));
    assert.equal((await utf.end()).type, 'done');
    assert.equal(utf.text, SPLIT_UTF8_TEXT);
    const big = conn.task(chat(`[[big 1048576]] ${tag()}`));
    assert.equal((await big.end(30000)).type, 'done');
    assert.equal(big.text.length, bigText(1048576).length);
    assert.ok(big.text === bigText(1048576), 'the 1 MB answer is byte-identical');
  });

  test('reasoning, battle side b, images, the finish reason', async () => {
    const { conn } = main;
    const r = conn.task(chat(`[[reasoning step one, step two]] think ${tag()}`));
    assert.equal((await r.end()).type, 'done');
    assert.equal(r.reasoning, 'step one, step two');
    assert.match(r.text, /^echo: think/);
    assert.ok(r.frames.findIndex((f) => f.type === 'reasoning') < r.frames.findIndex((f) => f.type === 'delta'));

    const t = tag();
    const b = conn.task(chat(`battle on b ${t} [[side b]]`, {
      model: 'sim-battle', arena: arena({ mode: 'battle', battle_target: 'b', model_uuid: MODELS[2].id }),
      messages: [{ role: 'system', content: 'sys', position: 'b' }, { role: 'user', content: `battle on b ${t} [[side b]]`, position: 'b' }],
    }));
    assert.equal((await b.end()).type, 'done');
    assert.equal(b.text, `echo: battle on b ${t}`, 'only side b, no DECOY from side a');
    assert.deepEqual(sim.requestsFor(t)[0].body.messages.map((m) => m.participantPosition), ['b', 'b']);

    const img = conn.task(chat(`a cat [[image https://img.test/cat.png]] ${tag()}`, {
      op: 'image', model: 'sim-image', arena: arena({ model_uuid: MODELS[1].id, model_type: 'image' }) }));
    const end = await img.end();
    assert.equal(end.type, 'done');
    assert.deepEqual(img.images.map((f) => [f.url, f.mime]), [['https://img.test/cat.png', 'image/png']]);
    assert.equal(img.text, '');

    const cf = conn.task(chat(`[[finish content-filter]] ${tag()}`));
    assert.equal((await cf.end()).finish_reason, 'content-filter');
  });

  test('site failures become typed error frames', async () => {
    const { conn } = main;
    const cases = [
      ['[[status 401]]', { code: 'unauthorized', status: 401, retryable: false }],
      ['[[status 403]]', { code: 'forbidden', status: 403, retryable: false }],
      ['[[status 429 7]]', { code: 'rate_limited', status: 429, retryable: true, retry_after: 7 }],
      ['[[status 500]]', { code: 'site_error', retryable: true }],
      ['[[status 503 12]]', { code: 'site_error', retryable: true, retry_after: 12 }],
      ['[[garbage]]', { code: 'protocol_error', retryable: false }],
      ['[[a3 The model is overloaded]]', { code: 'site_error', retryable: true }],
    ];
    for (const [directive, want] of cases) {
      const run = conn.task(chat(`${directive} ${tag()}`));
      const end = await run.end();
      assert.equal(end.type, 'error', directive);
      for (const [k, v] of Object.entries(want)) assert.equal(end[k], v, `${directive}: ${k}`);
      if (directive.includes('status')) assert.match(end.message, /scripted \d+ from the simulated site/);
    }
    const g = conn.task(chat(`[[garbage]] ${tag()}`));
    const ge = await g.end();
    assert.match(ge.message, /this line is <not> an AI-SDK record/, 'the offending line is quoted');
    assert.ok(g.text.startsWith('echo:'), 'what came before the bad line was delivered');
    const a3 = conn.task(chat(`[[a3 The model is overloaded]] ${tag()}`));
    assert.match((await a3.end()).message, /The model is overloaded/);
  });

  test('a task without an arena section: bad_request naming chatbridge_arena, and no site request', async () => {
    const { conn } = main;
    const t = tag();
    const run = conn.task({ request_id: `req-${++rid}`, kind: 'any', model: 'sim-chat',
      messages: [{ role: 'user', content: `no arena ${t}` }] });
    const end = await run.end();
    assert.deepEqual([end.type, end.code, end.status], ['error', 'bad_request', 400]);
    assert.match(end.message, /chatbridge_arena/);
    assert.equal(sim.requestsFor(t).length, 0);
  });

  test('cancel aborts the site fetch; pause stops reading until resume', async () => {
    const { conn } = main;
    let t = tag();
    const run = conn.task(chat(`[[hang]] ${t}`));
    await run.first('delta');
    conn.send({ type: 'cancel', request_id: run.id, reason: 'client_closed' });
    await waitFor(() => sim.requestsFor(t)[0] && sim.requestsFor(t)[0].aborted, 5000, 'the site to see the abort');
    await sleep(200);
    assert.equal(run.endFrame, null, 'nothing after a cancel');
    assert.equal(run.late, undefined);

    t = tag();
    const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
    const p = conn.task(chat(`[[reply ${words}]] [[gap 25]] ${t}`));
    await waitFor(() => p.frames.length >= 3, 5000, 'three deltas');
    conn.send({ type: 'pause', request_id: p.id });
    await sleep(150);
    const atPause = p.frames.length;
    await sleep(600);
    assert.ok(p.frames.length <= atPause + 1, `frames kept coming while paused: ${atPause} → ${p.frames.length}`);
    assert.equal(p.endFrame, null);
    conn.send({ type: 'resume', request_id: p.id });
    assert.equal((await p.end()).type, 'done');
    assert.equal(p.text, words);
  });

  test('/nextjs-api answering 404: the /api route is used, and remembered', async () => {
    const fresh = await newTab();
    try {
      sim.setNoNextjs(true);
      const t = tag();
      const run = fresh.conn.task(chat(`fallback ${t}`));
      assert.equal((await run.end()).type, 'done');
      assert.equal(run.text, `echo: fallback ${t}`);
      assert.deepEqual(sim.requestsFor(t).map((r) => [r.prefix, r.status]), [['nextjs-api', 404], ['api', 200]]);
      const t2 = tag();
      assert.equal((await fresh.conn.task(chat(`again ${t2}`)).end()).type, 'done');
      assert.deepEqual(sim.requestsFor(t2).map((r) => r.prefix), ['api']);
    } finally {
      sim.setNoNextjs(false);
      await fresh.tab.page.close();
    }
  });

  test('a verification page: needs_human and ⚠️, refused tasks, then ready again without a reload', async () => {
    const { tab, conn } = main;
    const statesBefore = conn.of('state').length;
    sim.setCloudflare(true);
    try {
      const t = tag();
      const run = conn.task(chat(`behind cloudflare ${t}`));
      const end = await run.end();
      assert.deepEqual([end.code, end.status, end.retryable, end.retry_after], ['needs_human', 503, true, 30]);
      assert.match(end.message, /complete the check/);
      const st = await waitFor(() => conn.of('state')[statesBefore], 5000, 'a state frame');
      assert.equal(st.state, 'needs_human');
      assert.match(st.message, /Cloudflare/);
      await waitTitle(tab.page, /^⚠️ LMArena/);
      assert.ok(!(await tab.page.title()).includes('✅'));

      const t2 = tag();
      const refused = await conn.task(chat(`while verifying ${t2}`)).end();
      assert.equal(refused.code, 'needs_human');
      assert.equal(sim.requestsFor(t2).length, 0, 'no site request while a person is needed');
      const probes = sim.challenged;
      await waitFor(() => sim.challenged > probes, 8000, 'the tab to probe the site again');
      assert.equal(conn.of('state').length, statesBefore + 1, 'still needs_human while the challenge is up');
    } finally {
      sim.setCloudflare(false);
    }
    const ready = await waitFor(() => conn.of('state')[statesBefore + 1], 10000, 'the state ready frame');
    assert.equal(ready.state, 'ready');
    assert.equal(ready.message, undefined);
    await waitTitle(tab.page, /^✅ LMArena/);
    const t3 = tag();
    const ok = conn.task(chat(`after verification ${t3}`));
    assert.equal((await ok.end()).type, 'done');
    assert.equal(ok.text, `echo: after verification ${t3}`);
  });

  test('capture: 🎯, the page\'s own Retry is captured once, the bridge\'s own requests never', async () => {
    const { tab, conn } = main;
    const cmd = conn.command('capture', { mode: 'battle', target: 'b', model: 'sim-battle' });
    await waitTitle(tab.page, /^🎯 ✅ LMArena/);

    // the bridge's own request to the same URL pattern, while armed
    const t = tag();
    const own = conn.task(chat(`own request while armed ${t} [[slow 200]]`));
    assert.equal((await own.end()).type, 'done');
    await sleep(100);
    assert.equal(conn.of('result').length, 0, 'the bridge\'s own request was not captured');
    assert.match(await tab.page.title(), /^🎯/);

    await tab.page.click('#retry');
    const result = await conn.waitFrame('result', (f) => f.command_id === cmd);
    assert.deepEqual(result, { type: 'result', command_id: cmd, ok: true,
      data: { session_id: PAGE_SESSION, message_id: PAGE_MESSAGE, mode: 'battle', target: 'B', model: 'sim-battle' } });
    await waitTitle(tab.page, /^✅ LMArena/);
    await waitFor(async () => (await tab.page.textContent('#status')) === 'done', 5000, 'the page\'s own retry');
    assert.equal(await tab.page.textContent('#answer'), 'regenerated by the page', 'the page\'s request went through untouched');
    const pageRec = sim.requests.filter((r) => r.session === PAGE_SESSION).at(-1);
    assert.deepEqual([pageRec.message, pageRec.status, pageRec.finished], [PAGE_MESSAGE, 200, true]);

    // once only
    await tab.page.click('#retry');
    await sleep(300);
    assert.equal(conn.of('result').length, 1);

    // a second capture replaces the first
    const c1 = conn.command('capture', {});
    const c2 = conn.command('capture', { mode: 'direct_chat' });
    const replaced = await conn.waitFrame('result', (f) => f.command_id === c1);
    assert.equal(replaced.ok, false);
    assert.match(replaced.message, /replaced/);
    await tab.page.click('#retry');
    const r2 = await conn.waitFrame('result', (f) => f.command_id === c2);
    assert.deepEqual(r2.data, { session_id: PAGE_SESSION, message_id: PAGE_MESSAGE, mode: 'direct_chat' });
    await waitTitle(tab.page, /^✅ LMArena/);
  });

  test('the title markers stay first when the page changes its title', async () => {
    const { tab } = main;
    await tab.page.evaluate(() => { document.title = 'Another chat'; });
    await waitTitle(tab.page, /^✅ Another chat$/, 5000);
    await tab.page.evaluate(() => { document.querySelector('title').textContent = 'Third chat'; });
    await waitTitle(tab.page, /^✅ Third chat$/, 5000);
    await tab.page.evaluate((t) => { document.title = t; }, PAGE_TITLE);
    await waitTitle(tab.page, /^✅ LMArena \(simulator\)$/, 5000);
  });

  test('commands: send_models, unknown, refresh (the reloaded tab says hello again)', async () => {
    const { conn } = main;
    const before = conn.of('models').length;
    const id = conn.command('send_models');
    const res = await conn.waitFrame('result', (f) => f.command_id === id);
    assert.deepEqual(res.data, { count: 3 });
    assert.equal(res.ok, true);
    assert.equal(conn.of('models').length, before + 1);
    assert.deepEqual(conn.of('models').at(-1).models, WANT_MODELS);

    const fresh = await newTab();
    try {
      const n = side.conns.length;
      const rid2 = fresh.conn.command('refresh');
      const r = await fresh.conn.waitFrame('result', (f) => f.command_id === rid2);
      assert.equal(r.ok, true);
      const again = await side.connection(n);
      assert.equal(again.hello.id, fresh.conn.hello.id, 'the same tab id after the reload');
      await waitTitle(fresh.tab.page, /^✅ LMArena/);
    } finally {
      await fresh.tab.page.close();
    }
  });

  test('a dropped connection: reconnect with backoff, and the tab works again', async () => {
    const fresh = await newTab();
    try {
      const n = side.conns.length;
      const dropped = Date.now();
      fresh.conn.ws.terminate();
      await waitTitle(fresh.tab.page, /^LMArena/, 5000);
      const again = await side.connection(n, 10000);
      const took = Date.now() - dropped;
      assert.ok(took >= 250, `reconnected after a backoff (${took} ms)`);
      assert.equal(again.hello.id, fresh.conn.hello.id);
      await waitTitle(fresh.tab.page, /^✅ LMArena/);
      const t = tag();
      const run = again.task(chat(`after reconnect ${t}`));
      assert.equal((await run.end()).type, 'done');
    } finally {
      await fresh.tab.page.close();
    }
  });

  test('a refused token (4401): ⛔, a console error, and no retries', async () => {
    const bad = configureUserscript(fs.readFileSync(builtFile, 'utf8'), side.url, 'not-the-token');
    const fresh = await newTab(bad);
    try {
      await waitFor(() => fresh.conn.closed, 5000, 'the close');
      assert.equal(fresh.conn.closed.code, 4401);
      await waitTitle(fresh.tab.page, /^⛔ LMArena/);
      await sleep(2500);
      assert.equal(side.conns.filter((c) => c.hello && c.hello.token === 'not-the-token').length, 1, 'no reconnect');
      assert.ok(fresh.tab.console.some((l) => /^error: \[chatbridge\] stopped: .*4401/.test(l)), fresh.tab.console.join('\n'));
    } finally {
      await fresh.tab.page.close();
    }
  });

  test('every frame the tabs sent was valid; no page error; the console only spoke when a person was needed', () => {
    for (const c of side.conns) assert.deepEqual(c.invalid, [], `connection ${c.id}`);
    assert.deepEqual(main.tab.errors, []);
    const lines = ours(main.tab.console);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], /^error: \[chatbridge\] needs a person: .*human-verification/);
  });
});

// ═════════════════ tier 2: end to end through nginx and the sidecar ═════════════════

/** LMArena Bridge's three files, as an operator would have them. */
function writeArenaConfig(dir) {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o777);
  const files = {
    'config.jsonc': `// LMArena Bridge configuration (chatbridge test)
{
  "version": "2.5.6",
  "session_id": "${CFG_SESSION}",   // captured with the id updater
  "message_id": "${CFG_MESSAGE}",
  "id_updater_last_mode": "direct_chat",
  "id_updater_battle_target": "A",
  "use_default_ids_if_mapping_not_found": true,
  "bypass_enabled": false,
  "tavern_mode_enabled": false,
  "stream_response_timeout_seconds": 360
}
`,
    'models.json': JSON.stringify({ 'sim-chat': MODELS[0].id, 'sim-image': `${MODELS[1].id}:image`,
      'sim-battle': MODELS[2].id }, null, 2),
    'model_endpoint_map.json': JSON.stringify({
      'sim-battle': { session_id: BATTLE_SESSION, message_id: BATTLE_MESSAGE, mode: 'battle', battle_target: 'B' },
      ...Object.fromEntries(Object.entries(ERR_SESSIONS).map(([m, [sid, mid]]) => [m, { session_id: sid, message_id: mid }])),
    }, null, 2),
  };
  for (const [name, text] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), text);
    fs.chmodSync(path.join(dir, name), 0o666);
  }
  return dir;
}

describe('end to end: OpenAI SDK → nginx → sidecar → Chromium → simulated site', () => {
  let b;
  let arenaDir;
  let source;
  let tabA;
  let client;
  let plain;
  const extraTabs = [];
  const adminKey = ADMIN_KEY;

  const status = async () => b.status();
  const browserState = async () => ((await status()).browsers || []).map((x) => x.state);

  before(async () => {
    b = new Bridge();
    arenaDir = writeArenaConfig(path.join(b.dir, 'arena'));
    await b.startSidecar(['--state-dir', b.dir]);
    await b.startNginx({
      location: `chatbridge_adapter arena;\nchatbridge_arena ${arenaDir};`,
      server: `location /plain/v1/ { chatbridge; chatbridge_adapter arena; }
        location = /chatbridge/chatbridge.user.js {
          chatbridge_userscript ${builtFile}; chatbridge_browser_token ${b.token};
        }
        # the admin block names the arena directory too: captured ids go there
        location /chatbridge/admin/ {
          chatbridge_admin; chatbridge_admin_key test ${ADMIN_KEY}; chatbridge_arena ${arenaDir};
        }`,
    });
    source = await loadUserscript(b.url);
    tabA = await openTab(chrome.context, `${sim.url}/`, source);
    await b.waitBrowsers(1);
    client = new OpenAI({ baseURL: `${b.url}/v1`, apiKey: 'sk-test-key', maxRetries: 0, timeout: 60000 });
    plain = new OpenAI({ baseURL: `${b.url}/plain/v1`, apiKey: 'sk-test-key', maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    for (const t of extraTabs) await t.page.close().catch(() => {});
    if (tabA) await tabA.page.close().catch(() => {});
    if (b) await b.stop();
  });

  async function collect(stream) {
    let text = '';
    let reasoning = '';
    let finish = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.delta.content || '';
      reasoning += c.delta.reasoning_content || '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    return { text, reasoning, finish };
  }

  test('the tab connects through nginx: ✅, /chatbridge/status, and a screenshot', async () => {
    await waitTitle(tabA.page, /^✅ LMArena/);
    const s = await status();
    const me = s.browsers.find((x) => x.kind === 'arena');
    assert.ok(me, JSON.stringify(s.browsers));
    assert.equal(me.state, 'ready');
    assert.match(me.agent, /^chatbridge-userscript\//);
    assert.equal(me.models, 3);
    const shotDir = path.join(os.tmpdir(), 'chatbridge-browser-tier');   // kept, overwritten by each run
    fs.mkdirSync(shotDir, { recursive: true });
    const shot = path.join(shotDir, 'tab-ready.png');
    // a headless page has no tab strip: the test draws the title into the page for the picture
    await tabA.page.evaluate(() => {
      const d = document.createElement('div');
      d.id = 'cb-test-title';
      const cp = document.title.codePointAt(0).toString(16).toUpperCase();
      d.textContent = `document.title (drawn by the test): "${document.title}" — starts with U+${cp}`
        + (cp === '2705' ? ' WHITE HEAVY CHECK MARK (✅)' : '');
      Object.assign(d.style, { position: 'fixed', left: '50%', bottom: '24px', transform: 'translateX(-50%)',
        padding: '10px 16px', background: '#111', color: '#fff', font: '16px system-ui, sans-serif', borderRadius: '8px' });
      document.body.appendChild(d);
    });
    await tabA.page.screenshot({ path: shot });
    await tabA.page.evaluate(() => document.getElementById('cb-test-title').remove());
    console.log(`# screenshot of the ready tab (✅ in its title "${await tabA.page.title()}"): ${shot}`);
    assert.ok(fs.statSync(shot).size > 1000);
  });

  test('/v1/models lists the page\'s models at once', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    for (const m of ['sim-chat', 'sim-image', 'sim-battle']) assert.ok(ids.includes(m), `${m} in ${ids}`);
    const one = await client.models.retrieve('sim-battle');
    assert.equal(one.owned_by, 'otherorg');
  });

  test('a location without chatbridge_arena: 400 naming the directive', async () => {
    const e = await rejection(plain.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `no arena here ${tag()}` }] }));
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.status, 400);
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, /chatbridge_arena/);
  });

  test('a wrong token through nginx: close 4401 reaches the tab, ⛔, no retries', async () => {
    const bad = configureUserscript(fs.readFileSync(builtFile, 'utf8'), b.wsUrl, 'wrong-token');
    const tab = await openTab(chrome.context, `${sim.url}/`, bad);
    try {
      await waitTitle(tab.page, /^⛔ LMArena/);
      const before = b.log('access.log').split('\n').filter((l) => l.includes('/chatbridge/ws')).length;
      await sleep(2000);
      const later = b.log('access.log').split('\n').filter((l) => l.includes('/chatbridge/ws')).length;
      assert.equal(later, before, 'no reconnect attempts');
      assert.equal((await status()).browsers.length, 1);
    } finally {
      await tab.page.close();
    }
  });

  test('[arena] stream and non-stream chat, with the site\'s usage', async () => {
    const t = tag();
    const s = await collect(await client.chat.completions.create({ model: 'sim-chat', stream: true,
      messages: [{ role: 'user', content: `hello stream ${t}` }] }));
    assert.equal(s.text, `echo: hello stream ${t}`);
    assert.equal(s.finish, 'stop');
    const t2 = tag();
    const r = await client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `hello whole ${t2}` }] });
    assert.equal(r.choices[0].message.content, `echo: hello whole ${t2}`);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.completion_tokens, 4, 'the site\'s completionTokens');
    const [rec] = sim.requestsFor(t2);
    assert.deepEqual([rec.session, rec.message, rec.body.modelId], [CFG_SESSION, CFG_MESSAGE, MODELS[0].id]);
  });

  test('[arena] the forged chain the site received: ids, parents, statuses, positions, attachment', async () => {
    const t = tag();
    const r = await client.chat.completions.create({ model: 'sim-chat', messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'first answer' },
      { role: 'user', content: [{ type: 'text', text: `what is this? ${t}` }, { type: 'image_url', image_url: { url: PNG } }] },
    ] });
    assert.equal(r.choices[0].message.content, `echo: what is this? ${t}`);
    const [rec] = sim.requestsFor(t);
    assert.deepEqual(rec.problems, []);
    const ms = rec.body.messages;
    assert.deepEqual(ms.map((m) => [m.role, m.participantPosition, m.status]), [
      ['system', 'b', 'success'], ['user', 'a', 'success'], ['assistant', 'a', 'success'], ['user', 'a', 'pending']]);
    assert.equal(new Set(ms.map((m) => m.id)).size, 4);
    ms.forEach((m, i) => assert.deepEqual(m.parentMessageIds, i ? [ms[i - 1].id] : []));
    assert.equal(ms[3].experimental_attachments.length, 1);
    assert.equal(ms[3].experimental_attachments[0].contentType, 'image/png');
    assert.equal(ms[3].experimental_attachments[0].url, PNG);
    assert.ok(ms[3].experimental_attachments[0].name);
    assert.equal(rec.body.modelId, MODELS[0].id);
    assert.equal(rec.session, CFG_SESSION);
  });

  test('[arena] images: urls from the site\'s a2 records', async () => {
    const t = tag();
    const r = await client.images.generate({ model: 'sim-image', prompt: `a cat ${t} [[image https://img.test/cat.png]]`, n: 2 });
    assert.deepEqual(r.data.map((d) => d.url), ['https://img.test/cat.png', 'https://img.test/cat.png']);
    const recs = sim.requestsFor(t);
    assert.equal(recs.length, 2);
    for (const rec of recs) {
      assert.ok(rec.body.messages.every((m) => m.status === 'success'));
      assert.equal(rec.body.modelId, MODELS[1].id);
    }
  });

  test('[arena] site errors reach the SDK as typed errors', async () => {
    const ask = (model, d) => client.chat.completions.create({ model, messages: [{ role: 'user', content: `${d} ${tag()}` }] });
    const cases = [
      ['err-401', '[[status 401]]', OpenAI.AuthenticationError, 401, 'unauthorized'],
      ['err-other', '[[status 403]]', OpenAI.PermissionDeniedError, 403, 'forbidden'],
      ['err-429', '[[status 429 7]]', OpenAI.RateLimitError, 429, 'rate_limited'],
      ['err-other', '[[status 500]]', OpenAI.InternalServerError, 502, 'site_error'],
      ['err-other', '[[garbage]]', OpenAI.InternalServerError, 502, 'protocol_error'],
      ['err-other', '[[a3 The model is overloaded]]', OpenAI.InternalServerError, 502, 'site_error'],
    ];
    for (const [model, d, cls, st, code] of cases) {
      const e = await rejection(ask(model, d));
      assert.ok(e instanceof cls, `${d}: ${e.constructor.name} ${e.status} ${e.message}`);
      assert.equal(e.status, st, d);
      assert.equal(e.code, code, d);
      if (st === 429) assert.equal(e.headers.get('retry-after'), '7');
      if (d.includes('a3')) assert.match(e.message, /The model is overloaded/);
      if (d.includes('garbage')) assert.match(e.message, /not> an AI-SDK record/);
    }
  });

  test('[arena] a verification page: 503 with Retry-After, ⚠️, needs_human, then ready again without a reload', async () => {
    sim.setCloudflare(true);
    try {
      const e = await rejection(client.chat.completions.create({ model: 'sim-chat',
        messages: [{ role: 'user', content: `behind cloudflare ${tag()}` }] }));
      assert.equal(e.status, 503);
      assert.equal(e.code, 'needs_human');
      assert.ok(Number(e.headers.get('retry-after')) > 0);
      assert.match(e.message, /verification|Cloudflare/i);
      await waitTitle(tabA.page, /^⚠️ LMArena/);
      await waitFor(async () => (await browserState()).includes('needs_human'), 5000, 'status needs_human');
      const e2 = await rejection(client.chat.completions.create({ model: 'sim-chat',
        messages: [{ role: 'user', content: `still ${tag()}` }] }));
      assert.equal(e2.status, 503);
    } finally {
      sim.setCloudflare(false);
    }
    await waitFor(async () => (await browserState()).every((s) => s === 'ready'), 10000, 'the tab to be ready again');
    await waitTitle(tabA.page, /^✅ LMArena/);
    const t = tag();
    const r = await client.chat.completions.create({ model: 'sim-chat', messages: [{ role: 'user', content: `back ${t}` }] });
    assert.equal(r.choices[0].message.content, `echo: back ${t}`);
  });

  test('[arena] slow first token, UTF-8 split across writes, 1 MB, reasoning, battle side b', async () => {
    const slow = await collect(await client.chat.completions.create({ model: 'sim-chat', stream: true,
      messages: [{ role: 'user', content: `slow ${tag()} [[slow 2500]]` }] }));
    assert.match(slow.text, /^echo: slow/);

    const utf = await collect(await client.chat.completions.create({ model: 'sim-chat', stream: true,
      messages: [{ role: 'user', content: `[[split-utf8]] ${tag()}` }] }));
    assert.equal(utf.text, SPLIT_UTF8_TEXT);

    const big = await client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `[[big 1048576]] ${tag()}` }] });
    assert.ok(big.choices[0].message.content === bigText(1048576), 'the 1 MB answer is intact');

    const r = await client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `[[reasoning step one, step two]] think ${tag()}` }] });
    assert.equal(r.choices[0].message.reasoning_content, 'step one, step two');
    assert.match(r.choices[0].message.content, /^echo: think/);

    const t = tag();
    const bt = await client.chat.completions.create({ model: 'sim-battle',
      messages: [{ role: 'system', content: 'sys' }, { role: 'user', content: `battle ${t} [[side b]]` }] });
    assert.equal(bt.choices[0].message.content, `echo: battle ${t}`, 'side b only');
    const [rec] = sim.requestsFor(t);
    assert.deepEqual([rec.session, rec.message], [BATTLE_SESSION, BATTLE_MESSAGE]);
    assert.deepEqual(rec.body.messages.map((m) => m.participantPosition), ['b', 'b']);
    assert.equal(rec.body.modelId, MODELS[2].id);
  });

  test('[arena] cancel: aborting the SDK request aborts the site fetch', async () => {
    const t = tag();
    const ac = new AbortController();
    const stream = await client.chat.completions.create({ model: 'sim-chat', stream: true,
      messages: [{ role: 'user', content: `[[hang]] ${t}` }] }, { signal: ac.signal });
    let got = '';
    try {
      for await (const chunk of stream) {
        got += chunk.choices[0] ? chunk.choices[0].delta.content || '' : '';
        if (got) ac.abort();
      }
    } catch (e) {
      assert.ok(e.name === 'AbortError' || e instanceof OpenAI.APIUserAbortError, String(e));
    }
    assert.ok(got.length > 0);
    await waitFor(() => sim.requestsFor(t)[0] && sim.requestsFor(t)[0].aborted, 5000, 'the site fetch to be aborted');
  });

  test('[arena] capture through POST /chatbridge/admin/capture: the page\'s Retry, not the bridge\'s own request', async () => {
    const pending = fetch(`${b.url}/chatbridge/admin/capture`, { method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
      body: JSON.stringify({ mode: 'battle', target: 'B', model: 'sim-battle' }) });
    const early = await Promise.race([pending, waitTitle(tabA.page, /^🎯 /).then(() => null)]);
    if (early) assert.fail(`capture answered before anything was captured: HTTP ${early.status} ${await early.text()}`);

    // the bridge's own request to the same URL pattern while armed: not captured
    const t = tag();
    const own = await client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `own request while armed ${t}` }] });
    assert.equal(own.choices[0].message.content, `echo: own request while armed ${t}`);
    assert.equal(sim.requestsFor(t)[0].session, CFG_SESSION);
    assert.match(await tabA.page.title(), /^🎯 /, 'still armed');

    await tabA.page.click('#retry');
    const res = await pending;
    const j = await res.json();
    assert.equal(res.status, 200, JSON.stringify(j));
    assert.deepEqual(j.entry, { session_id: PAGE_SESSION, message_id: PAGE_MESSAGE, mode: 'battle', battle_target: 'B' });
    assert.equal(j.model, 'sim-battle', JSON.stringify(j));
    assert.equal(j.applied, true, JSON.stringify(j));
    await waitTitle(tabA.page, /^✅ LMArena/);
    await waitFor(async () => (await tabA.page.textContent('#status')) === 'done', 5000, 'the page\'s own retry');
    assert.equal(await tabA.page.textContent('#answer'), 'regenerated by the page');

    // the captured ids are in force (and saved, the arena directory being in --state-dir)
    const t2 = tag();
    const r = await client.chat.completions.create({ model: 'sim-battle',
      messages: [{ role: 'user', content: `after capture ${t2} [[side b]]` }] });
    assert.equal(r.choices[0].message.content, `echo: after capture ${t2}`);
    const [rec] = sim.requestsFor(t2);
    assert.deepEqual([rec.session, rec.message], [PAGE_SESSION, PAGE_MESSAGE]);
    assert.deepEqual(rec.body.messages.map((m) => m.participantPosition), ['b']);
    const map = JSON.parse(fs.readFileSync(path.join(arenaDir, 'model_endpoint_map.json'), 'utf8'));
    assert.equal(JSON.stringify(map['sim-battle']).includes(PAGE_SESSION), true, JSON.stringify(map));
  });

  test('[arena] a capture nobody completes: 504 after its timeout, and the tab disarms', async () => {
    const pending = fetch(`${b.url}/chatbridge/admin/capture`, { method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` },
      body: JSON.stringify({ timeout: 2 }) });
    await waitTitle(tabA.page, /^🎯 /);
    const res = await pending;
    const j = await res.json();
    assert.equal(res.status, 504, JSON.stringify(j));
    assert.equal(j.error.code, 'capture_timeout');
    // the tab does not stay armed for the next person's click
    await waitTitle(tabA.page, /^✅ LMArena/, 1500);
  });

  test('POST /chatbridge/admin/models: the tab sends its list again', async () => {
    const res = await fetch(`${b.url}/chatbridge/admin/models`, { method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` }, body: '{}' });
    const j = await res.json();
    assert.equal(res.status, 200, JSON.stringify(j));
    assert.equal(j.asked, 1);
    await waitFor(() => /browser .* announced 3 models[\s\S]*browser .* announced 3 models/.test(b.log('sidecar.out')),
      5000, 'a second models frame in the sidecar log');
  });

  test('[arena] two tabs share the load', async () => {
    const tabB = await openTab(chrome.context, `${sim.url}/`, source);
    extraTabs.push(tabB);
    await b.waitBrowsers(2);
    const before = Object.fromEntries((await status()).browsers.map((x) => [x.id, x.served]));
    const asks = Array.from({ length: 12 }, (_, i) => client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `spread ${i} ${tag()} [[gap 40]]` }] }));
    const answers = await Promise.all(asks);
    answers.forEach((a) => assert.match(a.choices[0].message.content, /^echo: spread \d+/));
    // the status is published on the sidecar's tick: wait until it counted all twelve
    const served = (x) => x.served - (before[x.id] || 0);
    const after = await waitFor(async () => {
      const bs = (await status()).browsers || [];
      return bs.reduce((n, x) => n + served(x), 0) >= 12 ? bs : null;
    }, 5000, 'the status to count the twelve answers');
    assert.equal(after.length, 2);
    for (const x of after) assert.ok(served(x) > 0, `${x.id} served ${served(x)} of 12: ${JSON.stringify(after)}`);
  });

  test('[arena] a tab closed mid-stream: an in-stream error; before the first token: the other tab answers', async () => {
    const tabs = [tabA, ...extraTabs.filter((t) => !t.page.isClosed())];
    if (tabs.length < 2) {
      const tabB = await openTab(chrome.context, `${sim.url}/`, source);
      extraTabs.push(tabB);
      tabs.push(tabB);
      await b.waitBrowsers(2);
    }
    const whoAsked = (marker) => tabs.find((t) => t.requests && t.requests.some((u) => u.includes(marker)));
    for (const t of tabs) {
      t.requests = [];
      t.page.on('request', (r) => { if (r.url().includes('retry-evaluation')) t.requests.push(r.postData() || ''); });
    }

    // mid-stream: the client gets an error promptly
    const t1 = tag();
    const stream = await client.chat.completions.create({ model: 'sim-chat', stream: true,
      messages: [{ role: 'user', content: `[[hang]] ${t1}` }] });
    let got = '';
    let failure = null;
    const started = Date.now();
    try {
      for await (const chunk of stream) {
        got += chunk.choices[0] ? chunk.choices[0].delta.content || '' : '';
        if (got && !failure) {
          failure = 'closing';
          // Playwright reports the page's request asynchronously: the first
          // token can reach the SDK before the 'request' event reaches us.
          const owner = await waitFor(() => whoAsked(t1), 5000, 'the tab that made the request');
          await owner.page.close();
        }
      }
      assert.fail('the stream should have ended with an error');
    } catch (e) {
      assert.match(`${e.message} ${e.code || ''}`, /browser_disconnected|disconnected/i);
    }
    assert.ok(Date.now() - started < 10000, 'promptly');

    // before the first token: moved to the other tab
    const live = tabs.filter((t) => !t.page.isClosed());
    if (live.length < 2) {
      const tabC = await openTab(chrome.context, `${sim.url}/`, source);
      tabC.requests = [];
      tabC.page.on('request', (r) => { if (r.url().includes('retry-evaluation')) tabC.requests.push(r.postData() || ''); });
      extraTabs.push(tabC);
      tabs.push(tabC);
    }
    // every live tab is connected (the status may still count the closed one)
    for (const t of tabs.filter((x) => !x.page.isClosed())) await waitTitle(t.page, /✅/);
    await b.waitBrowsers(2);
    const t2 = tag();
    const asking = client.chat.completions.create({ model: 'sim-chat',
      messages: [{ role: 'user', content: `moved ${t2} [[slow 3000]]` }] });
    const owner = await waitFor(() => whoAsked(t2), 5000, 'the first tab to take it');
    await owner.page.close();
    const r = await asking;
    assert.equal(r.choices[0].message.content, `echo: moved ${t2}`);
    const served = tabs.filter((t) => !t.page.isClosed() && t.requests.some((u) => u.includes(t2)));
    assert.equal(served.length, 1, 'the other tab answered');
  });
});
