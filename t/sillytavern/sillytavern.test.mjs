// The SillyTavern extension (browser/sillytavern/) inside the real
// SillyTavern 1.19.0, end to end:
//
//   openai SDK ──▶ nginx /v1 (module) ──▶ sidecar ──▶ extension in Chromium
//                                                          │ generate()
//   mock LLM ◀── nginx key-rotation server ◀── SillyTavern server
//   (nginx-conf/upstream-keys.conf, its addresses rewritten for the test)
//
// SillyTavern's Custom (OpenAI-compatible) source points at the key-rotation
// server, which spends three keys round robin on t/lib/mock-llm.mjs; the
// mock records every call with its key and answers
// "mock reply #<n>: <last user text>", so each answer can be traced to the
// request that asked it. Everything runs on 127.0.0.1, on ports chosen at
// run time; a screenshot and the logs go to build/test-output/sillytavern/.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import OpenAI from 'openai';

import { Bridge, freePort, rejection } from '../node/harness.mjs';
import {
  EXTENSION, GitServer, MockLLM, OUTPUT, SillyTavern, TOP, atExit, frames, launchChromium, openTavern,
  sentFrames, sleep, validator, waitFor,
} from './st.mjs';

const FOLDER = 'an odd folder name';            // the extension works from any folder name
const KEYS = { alpha: 'sk-test-alpha-0001', beta: 'sk-test-beta-0002', gamma: 'sk-test-gamma-0003' };
const ST_OWN_KEY = 'sk-sillytavern-own-key';
const COOLDOWN_S = 10;
const WS = '/chatbridge/ws';

// SillyTavern's installer runs git; the test serves a repository with git http-backend
const gitExec = spawnSync('git', ['--exec-path'], { encoding: 'utf8' });
const NO_GIT = gitExec.status === 0 && fs.existsSync(`${gitExec.stdout.trim()}/git-http-backend`)
  ? false : 'git (with git-http-backend) is not installed: apt-get install git';

const user = (content) => [{ role: 'user', content }];
const label = (key) => Object.keys(KEYS).find((k) => KEYS[k] === key) || key;

function lastUserText(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role === 'user') return messages[i].content;
  }
  return '';
}

/**
 * nginx-conf/upstream-keys.conf as shipped, with the test's key file, cooldown,
 * log and port, and the mock in place of the real API.
 */
function upstreamKeysConf(dir, port, mockPort) {
  let conf = fs.readFileSync(`${TOP}/nginx-conf/upstream-keys.conf`, 'utf8');
  const swap = (re, to, what) => {
    const n = (conf.match(new RegExp(re.source, 'gm')) || []).length;
    assert.ok(n >= 1, `nginx-conf/upstream-keys.conf: no ${what} (${re}) to point at the test`);
    conf = conf.replace(new RegExp(re.source, 'gm'), to);
  };
  swap(/^(\s*chatbridge_key_pool\s+\S+\s+)\S+(\s+cooldown=)\S+;/, `$1${dir}/llm.keys$2${COOLDOWN_S}s;`, 'key pool');
  swap(/^(\s*listen\s+)127\.0\.0\.1:\d+;/, `$1127.0.0.1:${port};`, 'loopback listen');
  swap(/^(\s*access_log\s+)\S+(\s+chatbridge_upstream;)/, `$1${dir}/upstream.log$2`, 'access log');
  swap(/^(\s*proxy_pass\s+)https:\/\/api\.openai\.com/, `$1http://127.0.0.1:${mockPort}`, 'proxy_pass');
  fs.writeFileSync(`${dir}/llm.keys`,
    `# the test's keys\n${Object.entries(KEYS).map(([l, k]) => `${l} ${k}`).join('\n')}\n`);
  return conf;
}

test('SillyTavern 1.19 with the chatbridge extension, end to end', { timeout: 300000 }, async (t) => {
  fs.mkdirSync(OUTPUT, { recursive: true });
  const b = new Bridge();
  // nginx and the sidecar too, if this process dies before `finally`
  const forget = atExit(() => {
    for (const { p } of b.procs.values()) p.kill('SIGKILL');
    if (!process.env.CB_KEEP) fs.rmSync(b.dir, { recursive: true, force: true });
  });
  let mock;
  let st;
  let chrome;
  let tab;
  try {
    mock = await MockLLM.start({ chunkDelay: 10, log: `${b.dir}/mock.log` });
    const upPort = await freePort();
    await b.startSidecar();
    await b.startNginx({ http: upstreamKeysConf(b.dir, upPort, mock.port) });

    st = await SillyTavern.start({
      settings: {
        firstRun: false,
        main_api: 'openai',
        'power_user.auto_connect': true,
        'oai_settings.chat_completion_source': 'custom',
        'oai_settings.custom_url': `http://127.0.0.1:${upPort}/v1`,
        'oai_settings.custom_model': 'mock-model',
        'oai_settings.stream_openai': true,
      },
      secrets: { api_key_custom: ST_OWN_KEY },
      extensions: { [FOLDER]: EXTENSION },
    });
    chrome = await launchChromium();
    tab = await openTavern(chrome.context, st.url);
    const { page } = tab;
    const ai = new OpenAI({ baseURL: `${b.url}/v1`, apiKey: 'sk-anything', maxRetries: 0, timeout: 30000 });

    // ── helpers that read the page ──

    const state = () => page.evaluate(() => globalThis.chatbridgeTavern.state());
    const settled = () => waitFor(async () => {
      const s = await state();
      return !s.working && s.queued === 0 && !s.home && !s.bridge;
    }, 15000, 'the extension to finish and reopen the user\'s chat');
    const where = () => page.evaluate(() => {
      const c = SillyTavern.getContext();
      const ch = c.characters[c.characterId];
      return { character: ch ? ch.name : null, chatId: c.getCurrentChatId() ?? null,
        mes: c.chat.map((m) => m.mes), sending: document.getElementById('mes_stop').offsetParent !== null };
    });
    const setStStreaming = (on) => page.evaluate((v) => {
      SillyTavern.getContext().chatCompletionSettings.stream_openai = v;
    }, on);

    // every character message SillyTavern renders: in which chat, what it shows
    const recordRendering = () => page.evaluate(() => {
      const c = SillyTavern.getContext();
      globalThis.renderedForTest = [];
      c.eventSource.on(c.eventTypes.CHARACTER_MESSAGE_RENDERED, (id) => {
        const x = SillyTavern.getContext();
        const el = document.querySelector(`#chat .mes[mesid="${id}"] .mes_text`);
        globalThis.renderedForTest.push({ chatId: x.getCurrentChatId() ?? null,
          character: x.characters[x.characterId]?.name ?? null, mes: x.chat[id]?.mes,
          shown: el ? el.textContent.trim() : null });
      });
    });
    await recordRendering();
    const rendered = () => page.evaluate(() => globalThis.renderedForTest);

    /** One chat completion through the SDK: { content, id } (streamed or not). */
    async function ask(messages, { model = 'sillytavern', stream = false, signal } = {}) {
      if (!stream) {
        const r = await ai.chat.completions.create({ model, messages }, { signal });
        return { content: r.choices[0].message.content, id: r.id };
      }
      const s = await ai.chat.completions.create({ model, messages, stream: true }, { signal });
      let content = '';
      let id;
      for await (const c of s) {
        id = c.id;
        content += (c.choices[0] && c.choices[0].delta.content) || '';
      }
      return { content, id };
    }


    /** The mock's call that answered `prompt` (the last user text it saw). */
    async function callFor(prompt) {
      const calls = (await mock.calls()).filter((c) => c.status === 200 && lastUserText(c.messages) === prompt);
      assert.equal(calls.length, 1, `exactly one successful upstream call for ${JSON.stringify(prompt)}`);
      return calls[0];
    }

    let home = null;        // the user's chat: { character, chatId, mes, file }

    async function assertHomeBack() {
      await settled();
      const w = await where();
      assert.equal(w.character, home.character, 'the user\'s character is open again');
      assert.equal(w.chatId, home.chatId, 'the user\'s chat file is open again');
      assert.deepEqual(w.mes, home.mes, 'the user\'s chat shows the same messages');
      if (home.file) {
        assert.deepEqual((await chatFile(home.character, home.chatId)).slice(1).map((m) => m.mes), home.file,
          'the user\'s chat file holds the same messages');
      }
    }

    /** A chat file of a character (its folder is named after its avatar). */
    async function chatFile(character, chatId) {
      const avatar = await page.evaluate((n) => SillyTavern.getContext().characters
        .find((c) => c.name === n)?.avatar, character);
      assert.ok(avatar, `a character named ${character}`);
      return st.chatFile(avatar.replace(/\.png$/, ''), chatId);
    }

    async function assertInBridgeChat(character, answer) {
      const r = (await rendered()).filter((x) => x.mes === answer);
      assert.ok(r.length >= 1, `SillyTavern rendered the reply ${JSON.stringify(answer)}`);
      assert.equal(r[0].chatId, 'chatbridge', 'in the bridge chat');
      assert.equal(r[0].character, character);
      assert.equal(r[0].shown, answer, 'the chat shows the reply');
      const file = await chatFile(character, 'chatbridge');
      assert.ok(file, `chats/${character}/chatbridge.jsonl exists`);
      assert.equal(file[file.length - 1].mes, answer, 'the bridge chat file ends with the reply');
    }

    /** Open the user's chat again (after a reload, or after a test moved elsewhere). */
    const openHome = () => waitFor(() => page.evaluate(async (h) => {
      const c = SillyTavern.getContext();
      const i = c.characters.findIndex((x) => x.name === h.character);
      if (c.groupId || String(c.characterId) !== String(i)) await c.selectCharacterById(i);
      if (SillyTavern.getContext().getCurrentChatId() !== h.chatId) await c.openCharacterChat(h.chatId);
      const now = SillyTavern.getContext();
      return !now.groupId && String(now.characterId) === String(i) && now.getCurrentChatId() === h.chatId;
    }, home), 10000, 'the user\'s chat to open');

    // ──────────────────────────────────────────────────────────────────

    await t.test('the extension loads from any folder and connects from its settings drawer', async () => {
      const src = await page.evaluate(() => globalThis.chatbridgeTavern && globalThis.chatbridgeTavern.url);
      assert.equal(src, `${st.url}/scripts/extensions/third-party/${encodeURIComponent(FOLDER)}/index.js`);
      assert.deepEqual(await page.evaluate(() => SillyTavern.getContext().extensionSettings.chatbridge),
        { url: 'ws://127.0.0.1:5102/chatbridge/ws', token: '', autoConnect: false }, 'defaults, not connected');
      assert.equal((await b.status()).browsers.length, 0);

      // SillyTavern's Extensions panel, then the chatbridge drawer in it
      await waitFor(async () => {
        if (await page.isVisible('#chatbridge_url')) return true;
        const panel = await page.isVisible('#rm_extensions_block');
        await page.click(panel ? '.chatbridge-settings .inline-drawer-toggle' : '#extensions-settings-button .drawer-toggle');
        await sleep(500);                                          // the drawers slide open
        return page.isVisible('#chatbridge_url');
      }, 15000, 'the chatbridge settings drawer to open');
      await page.fill('#chatbridge_url', b.wsUrl);
      // a wrong token: refused, and no retrying until it is fixed
      await page.fill('#chatbridge_token', 'not-the-token');
      await page.click('#chatbridge_connect');
      await waitFor(async () => /^stopped: .*4401/.test(await page.textContent('#chatbridge_status')),
        10000, 'the status line to say the token was refused');
      await sleep(1500);
      assert.equal((await b.status()).browsers.length, 0);
      assert.equal(sentFrames(tab, WS).filter((f) => f.type === 'hello').length, 1, 'one hello, no retrying');

      await page.fill('#chatbridge_token', b.token);
      await page.check('#chatbridge_auto_connect');
      await page.click('#chatbridge_connect');
      await waitFor(async () => /^connected as tavern-/.test(await page.textContent('#chatbridge_status')),
        10000, 'the status line to say connected');
      await b.waitBrowsers(1);
      await page.screenshot({ path: `${OUTPUT}/sillytavern-settings.png` });
      const [br] = (await b.status()).browsers;
      assert.equal(br.kind, 'tavern');

      const hello = sentFrames(tab, WS).filter((f) => f.type === 'hello')[1];
      assert.equal(hello.kind, 'tavern');
      assert.equal(hello.token, b.token);
      assert.equal(hello.capabilities.concurrency, 1);
      assert.deepEqual(hello.capabilities.models, ['sillytavern', 'sillytavern/Seraphina']);
      const models = (await ai.models.list()).data.map((m) => m.id);
      assert.ok(models.includes('sillytavern') && models.includes('sillytavern/Seraphina'), models.join());

      // persisted in SillyTavern's settings.json: a reload connects by itself
      await waitFor(() => {
        const s = JSON.parse(fs.readFileSync(`${st.user}/settings.json`, 'utf8'));
        const e = s.extension_settings.chatbridge;
        return e && e.url === b.wsUrl && e.token === b.token && e.autoConnect === true;
      }, 10000, 'the settings to be saved');
      await page.reload({ waitUntil: 'domcontentloaded' });
      await page.waitForFunction(() => globalThis.SillyTavern
        && SillyTavern.getContext().eventSource.autoFireLastArgs.has('app_ready'), null, { timeout: 120000 });
      await waitFor(async () => (await b.status()).browsers.filter((x) => x.state === 'ready').length === 1
        && (await state()).status === 'ready', 20000, 'the extension to connect again after a reload');
      await recordRendering();
    });

    await t.test('no chat open: the default model is the Assistant; the welcome screen comes back', async () => {
      const before = await where();
      assert.equal(before.chatId, null, 'the welcome screen, no chat');
      const prompt = 'Hello from the welcome screen';
      const r = await ask(user(prompt), { model: 'gpt-4o-mini' });
      assert.equal(r.content, (await callFor(prompt)).answer);
      await assertInBridgeChat('Assistant', r.content);
      await settled();
      assert.equal((await where()).chatId, null, 'the welcome screen again');
    });

    await t.test('the user\'s own chat: Seraphina, one exchange typed into SillyTavern', async () => {
      await waitFor(() => page.evaluate(async () => {
        const c = SillyTavern.getContext();
        const i = c.characters.findIndex((x) => x.name === 'Seraphina');
        if (String(c.characterId) !== String(i)) await c.selectCharacterById(i);
        const now = SillyTavern.getContext();
        return String(now.characterId) === String(i) && now.getCurrentChatId() !== undefined;
      }), 10000, 'Seraphina\'s chat to open');
      await page.fill('#send_textarea', 'Hi Seraphina, it is me, the user');
      await page.click('#send_but');
      await waitFor(async () => {
        const w = await where();
        return w.mes.length === 3 && !w.sending && w.mes[2].startsWith('mock reply');
      }, 15000, 'the user\'s exchange');
      await sleep(500);                                             // SillyTavern saves the chat
      const w = await where();
      home = { character: 'Seraphina', chatId: w.chatId, mes: w.mes,
        file: (await chatFile('Seraphina', w.chatId)).slice(1).map((m) => m.mes) };
      assert.deepEqual(home.file, home.mes);
      // a draft in the text box stays there
      await page.fill('#send_textarea', 'a draft the user is typing');
    });

    for (const stStream of [true, false]) {
      for (const clientStream of [false, true]) {
        await t.test(`SillyTavern streaming ${stStream ? 'on' : 'off'}, client stream ${clientStream}: `
          + 'the mock\'s answer, shown in the bridge chat, the user\'s chat untouched', async () => {
          await setStStreaming(stStream);
          const prompt = `Tell me something, combination ${stStream}/${clientStream}`;
          const r = await ask(user(prompt), { stream: clientStream });
          const call = await callFor(prompt);
          assert.equal(r.content, call.answer, 'the client got exactly what the LLM answered');
          assert.equal(call.stream, stStream, 'SillyTavern called the LLM with its own stream setting');
          await assertInBridgeChat('Seraphina', r.content);
          await assertHomeBack();
          assert.equal(await page.inputValue('#send_textarea'), 'a draft the user is typing');
        });
      }
    }
    await setStStreaming(true);

    await t.test('system messages are kept and multimodal text parts joined', async () => {
      const r = await ask([
        { role: 'system', content: 'SYSTEM-RULE: answer in one line.' },
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: 'first answer' },
        { role: 'user', content: [{ type: 'text', text: 'part one' }, { type: 'text', text: 'part two' }] },
      ], { stream: true });
      const call = (await mock.calls()).at(-1);
      assert.equal(r.content, call.answer);
      const sys = call.messages.filter((m) => m.role === 'system').map((m) => m.content);
      assert.ok(sys.includes('SYSTEM-RULE: answer in one line.'), `the system message reached the LLM: ${sys}`);
      const tail = call.messages.slice(-3).map((m) => [m.role, m.content]);
      assert.deepEqual(tail, [['user', 'first question'], ['assistant', 'first answer'],
        ['user', 'part one\n\npart two']]);
      await assertHomeBack();
    });

    await t.test('5 concurrent requests each get their own answer, one generation at a time', async () => {
      const tag = Math.random().toString(36).slice(2, 8);
      const prompts = [0, 1, 2, 3, 4].map((i) => `concurrent question number ${i} (${tag})`);
      const mark = tab.ws.length;
      const answers = await Promise.all(prompts.map((p, i) => ask(user(p), { stream: i % 2 === 0 })));
      for (let i = 0; i < 5; i++) {
        const call = await callFor(prompts[i]);
        assert.equal(answers[i].content, call.answer, `client ${i} got its own answer`);
        assert.ok(answers[i].content.endsWith(prompts[i]));
      }
      // the tab never worked on two: each task was done before the next one came
      const order = await waitFor(() => {
        const o = frames(tab, WS, mark)
          .filter(({ dir, frame }) => (dir === 'in' && frame.type === 'task')
            || (dir === 'out' && frame.type === 'done'))
          .map(({ frame }) => `${frame.type} ${frame.request_id}`);
        return o.length >= 10 && o;
      }, 5000, 'the frames of the 5 requests');
      assert.equal(order.length, 10, order.join(', '));
      for (let i = 0; i < order.length; i += 2) {
        assert.ok(order[i].startsWith('task ') && order[i + 1] === `done ${order[i].slice(5)}`,
          `one at a time: ${order.join(', ')}`);
      }
      await assertHomeBack();
    });

    await t.test('characters: listed in /v1/models, chosen by sillytavern/<name>, unknown is 404', async () => {
      const mark = tab.ws.length;
      await page.evaluate(async () => {
        const c = SillyTavern.getContext();
        for (const [name, desc] of [['Alice Tester', 'ALICE-CARD: Alice tests bridges.'], ['Bob Tester', 'BOB-CARD']]) {
          const form = new FormData();
          form.append('ch_name', name);
          form.append('description', desc);
          form.append('first_mes', `Hello, I am ${name}.`);
          const r = await fetch('/api/characters/create', { method: 'POST',
            headers: c.getRequestHeaders({ omitContentType: true }), body: form });
          if (!r.ok) throw new Error(`create ${name}: ${r.status}`);
        }
        await c.getCharacters();
      });
      await waitFor(async () => {
        const ids = (await ai.models.list()).data.map((m) => m.id);
        return ids.includes('sillytavern/Alice Tester') && ids.includes('sillytavern/Bob Tester');
      }, 10000, '/v1/models to list the new characters');
      assert.ok(sentFrames(tab, WS, mark).some((f) => f.type === 'models'),
        'the extension sent a models frame');

      const aliceChat = await page.evaluate(() => SillyTavern.getContext().characters
        .find((x) => x.name === 'Alice Tester').chat);
      const prompt = 'Alice, which card are you using?';
      const r = await ask(user(prompt), { model: 'sillytavern/Alice Tester', stream: true });
      const call = await callFor(prompt);
      assert.equal(r.content, call.answer);
      assert.ok(call.messages.some((m) => m.role === 'system' && m.content.includes('ALICE-CARD')),
        'SillyTavern built the prompt from Alice\'s card');
      assert.ok(!call.messages.some((m) => m.content.includes('Seraphina')), 'not from Seraphina\'s');
      await assertInBridgeChat('Alice Tester', r.content);
      await assertHomeBack();
      assert.equal(await page.evaluate(() => SillyTavern.getContext().characters
        .find((x) => x.name === 'Alice Tester').chat), aliceChat, 'Alice\'s current chat is hers again');

      const err = await rejection(ask(user('anyone?'), { model: 'sillytavern/Nobody Here' }));
      assert.ok(err instanceof OpenAI.NotFoundError, String(err));
      assert.equal(err.code, 'not_found');
      assert.match(err.message, /Nobody Here/);

      await page.evaluate(async () => {
        const c = SillyTavern.getContext();
        const bob = c.characters.find((x) => x.name === 'Bob Tester');
        const r = await fetch('/api/characters/delete', { method: 'POST', headers: c.getRequestHeaders(),
          body: JSON.stringify({ avatar_url: bob.avatar, delete_chats: true }) });
        if (!r.ok) throw new Error(`delete: ${r.status}`);
        await c.getCharacters();
      });
      await waitFor(async () => !(await ai.models.list()).data.some((m) => m.id === 'sillytavern/Bob Tester'),
        10000, '/v1/models to drop Bob');
      await assertHomeBack();
    });

    await t.test('the user in a group chat gets it back; a temporary chat makes the tab busy', async () => {
      const groupId = await page.evaluate(async () => {
        const c = SillyTavern.getContext();
        const sera = c.characters.find((x) => x.name === 'Seraphina');
        const r = await fetch('/api/groups/create', { method: 'POST', headers: c.getRequestHeaders(),
          body: JSON.stringify({ name: 'Test Group', members: [sera.avatar] }) });
        const group = await r.json();
        const gc = await import('/scripts/group-chats.js');
        await gc.getGroups();
        await gc.openGroupById(group.id);
        return group.id;
      });
      await waitFor(() => page.evaluate((id) => SillyTavern.getContext().groupId === id
        && SillyTavern.getContext().getCurrentChatId() !== undefined, groupId), 10000, 'the group chat to open');
      const before = await page.evaluate(() => {
        const c = SillyTavern.getContext();
        return { groupId: c.groupId, chatId: c.getCurrentChatId(), mes: c.chat.map((m) => m.mes) };
      });
      const p = 'Alice, while the user is in a group';
      const r = await ask(user(p), { model: 'sillytavern/Alice Tester' });
      assert.equal(r.content, (await callFor(p)).answer);
      await settled();
      assert.deepEqual(await page.evaluate(() => {
        const c = SillyTavern.getContext();
        return { groupId: c.groupId, chatId: c.getCurrentChatId(), mes: c.chat.map((m) => m.mes) };
      }), before, 'the same group chat, the same messages');

      // the welcome screen's "temporary chat": a chat with no file
      await page.evaluate(async () => {
        const script = await import('/script.js');
        await script.closeCurrentChat();
        await script.newAssistantChat({ temporary: true });
      });
      await page.fill('#send_textarea', 'a temporary question');
      await page.click('#send_but');
      await waitFor(async () => {
        const w = await where();
        return w.chatId === null && !w.sending && w.mes.at(-1).startsWith('mock reply');
      }, 15000, 'the temporary exchange');
      const temp = (await where()).mes;
      const err = await rejection(ask(user('now?')));
      assert.equal(err.status, 503);
      assert.equal(err.code, 'busy');
      assert.match(err.message, /temporary chat/);
      assert.deepEqual((await where()).mes, temp, 'the temporary chat is untouched');
      await openHome();
      await assertHomeBack();
    });

    await t.test('a client cancel stops SillyTavern\'s generation; the next request works', async () => {
      // streaming: the mock sees its connection closed mid-answer
      const words = Array.from({ length: 400 }, (_, i) => `w${i}`).join(' ');
      const prompt = `please repeat: ${words}`;
      const ac = new AbortController();
      const s = await ai.chat.completions.create({ model: 'sillytavern', messages: user(prompt), stream: true },
        { signal: ac.signal });
      let got = '';
      try {
        for await (const c of s) {
          got += (c.choices[0] && c.choices[0].delta.content) || '';
          if (got.length > 40 && !ac.signal.aborted) {
            await page.screenshot({ path: `${OUTPUT}/sillytavern-bridge-chat.png` });
            ac.abort();
          }
        }
      } catch (e) {
        assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
      }
      const call = await waitFor(async () => (await mock.calls()).find((c) => lastUserText(c.messages) === prompt
        && c.aborted), 10000, 'the mock to see the upstream call aborted');
      assert.ok(call.answer.length > got.length);
      await waitFor(async () => !(await where()).sending, 5000, 'SillyTavern to stop generating');
      await assertHomeBack();
      const partial = (await chatFile('Seraphina', 'chatbridge')).at(-1).mes;
      assert.ok(partial.length < call.answer.length, 'the bridge chat keeps only the partial reply');

      // not streaming (SillyTavern's call is slow to answer): stopped long before the answer
      await setStStreaming(false);
      await mock.behave({ delay_ms: 4000 });
      try {
        const ac2 = new AbortController();
        const p2 = 'a slow question';
        const pending = ask(user(p2), { signal: ac2.signal });
        await waitFor(async () => (await mock.calls()).some((c) => lastUserText(c.messages) === p2), 10000,
          'the slow call to reach the mock');
        const t0 = Date.now();
        ac2.abort();
        await rejection(pending);
        await waitFor(async () => !(await state()).working && !(await where()).sending, 3000,
          'SillyTavern to stop before the mock answers');
        assert.ok(Date.now() - t0 < 3000);
      } finally {
        await mock.behave({});
        await setStStreaming(true);
      }

      const next = 'and the next request?';
      assert.equal((await ask(user(next), { stream: true })).content, (await callFor(next)).answer);
      await assertHomeBack();
    });

    await t.test('SillyTavern-side failures reach the client as OpenAI errors', async () => {
      await mock.behave({ status: 500 });
      try {
        for (const [stStream, clientStream] of [[true, false], [false, true]]) {
          await setStStreaming(stStream);
          const err = await rejection(ask(user(`failing ${stStream}`), { stream: clientStream }));
          assert.ok(err instanceof OpenAI.InternalServerError, String(err));
          assert.equal(err.status, 502);
          assert.equal(err.code, 'upstream_error');
          assert.equal(err.error.type, 'server_error');
          await assertHomeBack();
        }
      } finally {
        await mock.behave({});
        await setStStreaming(true);
      }

      // no API connected: the API was just switched and nobody pressed Connect
      const online = () => page.evaluate(() => SillyTavern.getContext().onlineStatus);
      await page.evaluate(() => $('#main_api').val('openai').trigger('change'));
      try {
        await waitFor(async () => (await online()) === 'no_connection', 10000, 'SillyTavern to have no API');
        const err = await rejection(ask(user('is anyone there?')));
        assert.ok(err instanceof OpenAI.APIError, String(err));
        assert.equal(err.status, 503);
        assert.equal(err.code, 'no_api');
        assert.match(err.message, /no API connected/);
      } finally {
        await page.evaluate(() => $('#api_button_openai').trigger('click'));
        await waitFor(async () => (await online()) !== 'no_connection', 10000, 'SillyTavern to connect again');
      }
      const p = 'connected again';
      assert.equal((await ask(user(p))).content, (await callFor(p)).answer);
      await assertHomeBack();
    });

    await t.test('upstream keys: round robin, a key answering 429 rests for its cooldown', async () => {
      await mock.reset();
      for (let i = 0; i < 6; i++) await ask(user(`rotation ${i}`));
      const keys = (await mock.calls()).map((c) => label(c.key));
      assert.equal(keys.length, 6);
      assert.deepEqual([...new Set(keys.slice(0, 3))].sort(), ['alpha', 'beta', 'gamma'], keys.join());
      assert.deepEqual(keys.slice(3), keys.slice(0, 3), `round robin: ${keys.join()}`);

      // beta answers 429 once: that call is retried with the next key, beta rests
      await mock.reset();
      await mock.behave({ keys: { [KEYS.beta]: { status: 429, retry_after: 1, times: 1 } } });
      let restedAt = 0;
      for (let i = 0; i < 3 && !restedAt; i++) {
        const p = `until beta ${i}`;
        const r = await ask(user(p));
        assert.equal(r.content, (await callFor(p)).answer, 'the client never sees the refused key');
        if ((await mock.calls()).some((c) => c.status === 429)) restedAt = Date.now();
      }
      assert.ok(restedAt, 'one call went to beta');
      const after = (await mock.calls()).length;
      for (let i = 0; i < 4; i++) await ask(user(`beta rests ${i}`));
      const resting = (await mock.calls()).slice(after).map((c) => label(c.key));
      assert.ok(Date.now() - restedAt < COOLDOWN_S * 1000, 'still within the cooldown');
      assert.ok(!resting.includes('beta'), `beta is skipped while it rests: ${resting}`);
      assert.deepEqual([...new Set(resting)].sort(), ['alpha', 'gamma']);

      await sleep(Math.max(0, restedAt + COOLDOWN_S * 1000 + 500 - Date.now()));
      const back = (await mock.calls()).length;
      for (let i = 0; i < 3; i++) await ask(user(`beta is back ${i}`));
      const again = (await mock.calls()).slice(back).map((c) => label(c.key));
      assert.deepEqual([...again].sort(), ['alpha', 'beta', 'gamma'], `after the cooldown: ${again}`);

      const all = await mock.calls();
      assert.ok(all.every((c) => Object.values(KEYS).includes(c.key)), 'every call carried a pool key');
      assert.ok(!all.some((c) => c.key === ST_OWN_KEY), 'SillyTavern\'s own key never went out');
      await assertHomeBack();
    });

    await t.test('the extension reconnects when the sidecar comes back', async () => {
      await b.killSidecar();
      await waitFor(async () => (await state()).status !== 'ready', 10000, 'the extension to see the loss');
      await b.startSidecar();
      await waitFor(async () => (await b.status()).browsers?.some((x) => x.state === 'ready'), 20000,
        'the extension to reconnect');
      const p = 'after the sidecar came back';
      assert.equal((await ask(user(p), { stream: true })).content, (await callFor(p)).answer);
      await assertHomeBack();
    });

    const installer = 'SillyTavern\'s installer: the repository\'s git URL, whatever folder it picks';
    await t.test(installer, { skip: NO_GIT }, async () => {
      const gitDir = fs.mkdtempSync(path.join(st.dir, 'git-'));
      // the repository as it is: the root manifest.json points into
      // browser/sillytavern/, which imports browser/common/cb-protocol.js
      const g = await GitServer.start({ dir: gitDir, name: 'chatbridge', files: {
        'manifest.json': `${TOP}/manifest.json`,
        'browser/sillytavern': `${TOP}/browser/sillytavern`,
        'browser/common/cb-protocol.js': `${TOP}/browser/common/cb-protocol.js`,
        'README.md': `${TOP}/README.md` } });
      try {
        const ok = await page.evaluate(async ([url, branch]) => {
          SillyTavern.getContext().accountStorage.setItem('extensionInstallationWarningShown', '1');
          const ext = await import('/scripts/extensions.js');
          return ext.installExtension(url, false, branch);
        }, [g.url, undefined]);
        assert.equal(ok, true, 'SillyTavern installed it');
        assert.ok(g.requests > 0, 'from the git server');
        assert.ok(fs.existsSync(`${st.user}/extensions/chatbridge/manifest.json`));
        // two copies now: the second one stays idle
        await waitFor(() => tab.console.some((l) => /a second copy .* stays idle/.test(l)), 10000,
          'the second copy to stand aside');
        assert.equal((await b.status()).browsers.length, 1);
      } finally {
        await g.close();
      }
      await settled();
      await page.evaluate(async (name) => {
        const r = await fetch('/api/extensions/delete', { method: 'POST',
          headers: SillyTavern.getContext().getRequestHeaders(), body: JSON.stringify({ extensionName: name }) });
        if (!r.ok) throw new Error(`delete: ${r.status}`);
      }, FOLDER);
      await page.reload({ waitUntil: 'domcontentloaded' });
      await page.waitForFunction(() => globalThis.SillyTavern
        && SillyTavern.getContext().eventSource.autoFireLastArgs.has('app_ready'), null, { timeout: 120000 });
      assert.equal(await page.evaluate(() => globalThis.chatbridgeTavern.url),
        `${st.url}/scripts/extensions/third-party/chatbridge/browser/sillytavern/index.js`);
      await waitFor(async () => (await state()).status === 'ready'
        && (await b.status()).browsers.filter((x) => x.state === 'ready').length === 1, 20000,
      'the git-installed copy to connect');
      await recordRendering();
      await openHome();                 // SillyTavern starts on its welcome screen
      const p = 'from the copy SillyTavern installed';
      const r = await ask(user(p), { stream: true });
      assert.equal(r.content, (await callFor(p)).answer);
      await assertInBridgeChat('Seraphina', r.content);
      await assertHomeBack();
    });

    await t.test('every key refused: the client gets 429 rate_limited', async () => {
      await mock.behave({ status: 429, retry_after: 1 });
      try {
        const err = await rejection(ask(user('nobody will answer')));
        assert.ok(err instanceof OpenAI.RateLimitError, String(err));
        assert.equal(err.status, 429);
        assert.equal(err.code, 'rate_limited');
      } finally {
        await mock.behave({});
      }
      await assertHomeBack();
    });

    await t.test('every frame the extension sent is valid protocol v1; no key in any log', async () => {
      const sent = sentFrames(tab, WS);
      assert.ok(sent.length > 20);
      for (const f of sent) {
        const v = validator.validate(f, 'browser');
        assert.ok(v.ok, `${JSON.stringify(f).slice(0, 200)}: ${v.message}`);
      }
      const types = new Set(sent.map((f) => f.type));
      for (const ty of ['hello', 'delta', 'done', 'error', 'models']) assert.ok(types.has(ty), `sent ${ty}`);
      const ownErrors = tab.errors.filter((e) => /chatbridge/i.test(e));
      assert.deepEqual(ownErrors, [], 'no page error from the extension');

      const logs = fs.readdirSync(b.dir).filter((f) => f.endsWith('.log'))
        .map((f) => fs.readFileSync(path.join(b.dir, f), 'utf8')).join('\n');
      for (const k of Object.values(KEYS)) assert.ok(!logs.includes(k), 'no key material in nginx\'s logs');
      assert.match(fs.readFileSync(`${b.dir}/upstream.log`, 'utf8'), /key=(alpha|beta|gamma)/);
    });
  } finally {
    if (tab) {
      await tab.page.screenshot({ path: `${OUTPUT}/sillytavern.png` }).catch(() => {});
      fs.writeFileSync(`${OUTPUT}/page-console.log`, [...tab.console, ...tab.errors].join('\n'));
    }
    for (const f of fs.existsSync(b.dir) ? fs.readdirSync(b.dir) : []) {
      if (f.endsWith('.log') || f.endsWith('.out')) fs.copyFileSync(path.join(b.dir, f), `${OUTPUT}/${f}`);
    }
    if (chrome) await chrome.close().catch(() => {});
    if (st) {
      fs.copyFileSync(st.log, `${OUTPUT}/sillytavern.log`);
      await st.stop();
    }
    if (mock) await mock.stop();
    forget();
    await b.stop();
  }
});
