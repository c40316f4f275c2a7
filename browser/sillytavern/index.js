/*
 * chatbridge for SillyTavern: a third-party UI extension that makes this
 * SillyTavern tab a `tavern` browser of a chatbridge bridge. OpenAI requests
 * that reach the bridge's nginx come here as protocol v1 `task` frames
 * (browser/protocol/protocol-v1.json); SillyTavern answers them with its own
 * characters, presets and prompt building, and the answer streams back as
 * `delta` frames, then `done` (or a typed `error`).
 *
 * How a request is answered:
 *
 *   1. Requests are queued and run one at a time (hello announces
 *      concurrency 1, so the sidecar sends one at a time as well). A request
 *      waits while SillyTavern is busy with a generation of its own.
 *   2. The character: `sillytavern/<name>` picks that character (an unknown
 *      one is a `not_found` error); any other model name, `sillytavern`
 *      included, takes the character of the chat that was open, or the
 *      Assistant character when no character chat was open.
 *   3. The user's place (character or group, chat file) is remembered, the
 *      character is selected and its bridge chat (the chat file named
 *      `chatbridge`, one per character) is opened with SillyTavern's own
 *      functions, and its messages are replaced by the request's:
 *      user → a user message, assistant → a character message, system → a
 *      narrator message (`extra.type: 'narrator'`), which SillyTavern sends
 *      with the role system. Message text arrives already joined by nginx.
 *   4. `generate('normal')` runs SillyTavern's normal generation, prompt
 *      building and all (the text box's draft is kept aside meanwhile).
 *      For a streaming client each STREAM_TOKEN_RECEIVED event (the text so
 *      far) gives a delta of what is new; the rest, and the whole text for
 *      a non-streaming client or when SillyTavern does not stream, is sent
 *      from the final message in the chat, then `done` (or, when that
 *      message does not begin with what was streamed, blanks that
 *      SillyTavern trims aside, an `internal` error).
 *   5. When no request follows, the character's previous chat is put back,
 *      then the user's character (or group) and chat file are reopened.
 *
 * A `cancel` stops the generation (stopGeneration). Failures become typed
 * error frames: no_api (nothing connected), rate_limited (the LLM answered
 * 429), upstream_error (any other failure of the LLM call), not_found,
 * busy (a temporary chat is open: it has no file to return to),
 * bad_request (a task that is not a chat, or whose messages are not
 * role/text messages: checked before it is queued).
 *
 * Everything is found from this file's URL, so the folder may have any name
 * and sit in public/scripts/extensions/third-party/ or in a user's
 * extensions folder. Settings live in extension_settings.chatbridge.
 *
 * The protocol client is browser/common/cb-protocol.js: imported from there
 * when SillyTavern installs the whole repository (its root manifest.json
 * points here), and from a copy beside this file in the folder that
 * browser/sillytavern/build.sh makes (it rewrites this one line).
 */

import '../common/cb-protocol.js';

const P = globalThis.ChatbridgeProtocol;

const VERSION = '1.0.0';
const SETTINGS_KEY = 'chatbridge';
const DEFAULTS = Object.freeze({
  url: 'ws://127.0.0.1:5102/chatbridge/ws',
  token: '',
  autoConnect: false,
});
const DEFAULT_MODEL = 'sillytavern';
const MODEL_PREFIX = 'sillytavern/';
const BRIDGE_CHAT = 'chatbridge';             // the bridge chat's file name, in each character
const ASSISTANT_AVATAR = 'default_Assistant.png';
const LOG_LINES = 20;
const SETTLE_MS = 250;                        // how long to wait for a next request before going home
const POLL_MS = 100;
const MODELS_EVERY_MS = 2000;
const SWITCH_TRIES = 50;

// what to do about a close code after which the client stops (state 'refused')
const REFUSED = Object.freeze({
  4401: 'the bridge refused the token (close code 4401): fix it, then press Connect',
  4403: 'the bridge does not accept this origin (close code 4403): add it to the sidecar\'s --origin',
});
const ROLES = Object.freeze(['system', 'user', 'assistant']);
const TAIL = 64;                              // characters of the streamed text a token must continue

// reason phrases SillyTavern's server passes on instead of a status (non-streaming errors)
const REASONS = Object.freeze({
  'bad request': 400, unauthorized: 401, 'payment required': 402, forbidden: 403, 'not found': 404,
  'request timeout': 408, 'too many requests': 429, 'internal server error': 500,
  'bad gateway': 502, 'service unavailable': 503, 'gateway timeout': 504,
});

// SillyTavern's root URL: the part of this file's URL before /scripts/extensions/
const HERE = import.meta.url;
const ST_BASE = HERE.includes('/scripts/extensions/')
  ? HERE.slice(0, HERE.lastIndexOf('/scripts/extensions/') + 1)
  : new URL('/', HERE).href;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const getContext = () => globalThis.SillyTavern.getContext();

let st = null;                 // SillyTavern's script.js (is_send_press, isChatSaving ...)
let groupChats = null;         // its scripts/group-chats.js (is_group_generating)
let welcome = null;            // its scripts/welcome-screen.js (the Assistant character)
let settings = null;
let ui = null;
let client = null;
let models = [DEFAULT_MODEL];
let modelsKey = '';
let helloModelsKey = '';
const tracker = P ? new P.TaskTracker() : null;
const logLines = [];

const queue = [];
let working = false;
let current = null;            // the job being answered
let home = null;               // where the user was before the first job: { kind, avatar, chatId, groupId }
let bridge = null;             // the bridge chat open now: { avatar, name, prevChat }

// ───────────────────────────── log and status ─────────────────────────────

function stamp() {
  return new Date().toTimeString().slice(0, 8);
}

function note(level, msg) {
  logLines.push(`${stamp()} ${msg}`);
  if (logLines.length > LOG_LINES) logLines.splice(0, logLines.length - LOG_LINES);
  if (ui) {
    ui.log.textContent = logLines.join('\n');
    ui.log.scrollTop = ui.log.scrollHeight;
  }
  if (level === 'error') console.error(`[chatbridge] ${msg}`);
  else if (level === 'warn') console.warn(`[chatbridge] ${msg}`);
}

let statusState = 'closed';
let statusText = 'disconnected';

function setStatus(state, text) {
  statusState = state;
  statusText = text;
  renderStatus();
}

function renderStatus() {
  if (!ui) return;
  const busy = current || queue.length ? ` · answering ${queue.length + (current ? 1 : 0)}` : '';
  ui.status.textContent = statusText + (statusState === 'ready' ? busy : '');
  ui.status.dataset.state = statusState;
  ui.connect.classList.toggle('disabled', !!client);
  ui.disconnect.classList.toggle('disabled', !client);
}

const short = (id) => String(id).slice(0, 8);

// ───────────────────────────── settings drawer ─────────────────────────────

function loadSettings() {
  const all = getContext().extensionSettings;
  if (!all[SETTINGS_KEY] || typeof all[SETTINGS_KEY] !== 'object') all[SETTINGS_KEY] = {};
  const s = all[SETTINGS_KEY];
  for (const [k, v] of Object.entries(DEFAULTS)) {
    if (typeof s[k] !== typeof v) s[k] = v;
  }
  return s;
}

function save() {
  getContext().saveSettingsDebounced();
}

async function mountSettings() {
  const res = await fetch(new URL('settings.html', HERE));
  if (!res.ok) throw new Error(`settings.html: HTTP ${res.status}`);
  const host = document.getElementById('extensions_settings2') || document.getElementById('extensions_settings');
  if (!host) throw new Error('SillyTavern has no extensions settings panel');
  host.insertAdjacentHTML('beforeend', await res.text());
  const $ = (id) => document.getElementById(id);
  ui = {
    url: $('chatbridge_url'), token: $('chatbridge_token'), auto: $('chatbridge_auto_connect'),
    connect: $('chatbridge_connect'), disconnect: $('chatbridge_disconnect'),
    status: $('chatbridge_status'), log: $('chatbridge_log'),
  };
  ui.url.value = settings.url;
  ui.token.value = settings.token;
  ui.auto.checked = settings.autoConnect;
  ui.url.addEventListener('input', () => { settings.url = ui.url.value.trim(); save(); });
  ui.token.addEventListener('input', () => { settings.token = ui.token.value.trim(); save(); });
  ui.auto.addEventListener('change', () => { settings.autoConnect = ui.auto.checked; save(); });
  ui.connect.addEventListener('click', () => connect());
  ui.disconnect.addEventListener('click', () => disconnect());
  ui.log.textContent = logLines.join('\n');
  renderStatus();
}

// ───────────────────────────── the connection ─────────────────────────────

function connect() {
  stopClient();
  const url = settings.url;
  if (!/^wss?:\/\/./i.test(url)) {
    setStatus('stopped', 'set the bridge URL (ws:// or wss://) first');
    return;
  }
  refreshModels();
  const c = new P.BridgeClient({
    url,
    token: settings.token,
    kind: 'tavern',
    id: P.tabId('tavern-', 'chatbridge-tavern-id', () => globalThis.sessionStorage),
    name: 'SillyTavern',
    agent: `chatbridge-sillytavern/${VERSION}`,
    capabilities: { concurrency: 1, any_model: true, models },
    tracker,
    log: (level, msg) => { if (c === client && level !== 'debug') note(level, msg); },
    onState: (state, info) => { if (c === client) onState(c, state, info); },
    onTask: (frame, tracked) => onTask(c, frame, tracked),
    onCancel: (frame) => onCancel(frame),
    onResume: (frame) => { if (current && current.id === frame.request_id && current.flush) current.flush(); },
    onCommand: (frame) => onCommand(c, frame),
    onError: (frame) => note('warn', `the bridge refused a frame: ${frame.code} ${frame.message}`),
    onProtocolError: (info) => note('warn', `protocol error (${info.direction}): ${info.error} ${info.message || ''}`),
  });
  client = c;
  note('info', `connecting to ${url}`);
  c.start();
  renderStatus();
}

function stopClient() {
  const c = client;
  client = null;
  if (c) c.stop();
}

function disconnect() {
  const was = !!client;
  stopClient();
  setStatus('closed', 'disconnected');
  if (was) note('info', 'disconnected');
}

function onState(c, state, info) {
  switch (state) {
    case 'connecting':
      setStatus('connecting', `connecting to ${settings.url}…`);
      break;
    case 'open':
      helloModelsKey = modelsKey;
      setStatus('connecting', 'saying hello…');
      break;
    case 'ready':
      setStatus('ready', `connected as ${c.browserId}`);
      note('info', `connected as ${c.browserId}, serving ${models.length} models`);
      if (modelsKey !== helloModelsKey) sendModels(c);
      break;
    case 'refused': {
      // the client stopped itself (a close code the protocol marks final): drop it
      const why = (info && REFUSED[info.code])
        || `the bridge refused this tab (close code ${info && info.code}): fix the settings, then press Connect`;
      client = null;
      setStatus('stopped', `stopped: ${why}`);
      note('error', `stopped: ${why}`);
      break;
    }
    case 'closed':
      setStatus('closed', `connection lost${info && info.code ? ` (${info.code})` : ''}; reconnecting…`);
      break;
    default:
      break;
  }
}

function onCommand(c, frame) {
  if (frame.command === 'send_models') {
    refreshModels();
    sendModels(c);
    c.sendResult(frame.command_id, true, { models: models.length });
  } else {
    c.sendResult(frame.command_id, false, undefined, `SillyTavern does not do ${frame.command}`);
  }
}

// ───────────────────────────── models: the characters ─────────────────────────────

function modelList() {
  const ids = new Set([DEFAULT_MODEL]);
  for (const ch of getContext().characters) {
    if (!ch || typeof ch.name !== 'string' || !ch.name) continue;
    const id = MODEL_PREFIX + ch.name;
    if (P.utf8Length(id) <= 256) ids.add(id);
    if (ids.size >= 4096) break;
  }
  return [...ids];
}

function sendModels(c) {
  c.sendModels(models);
}

/** Recompute the model list; tell the bridge when it changed. */
function refreshModels() {
  const list = modelList();
  const key = list.join('\n');
  if (key === modelsKey) return;
  const first = modelsKey === '';
  modelsKey = key;
  models = list;
  if (!client) return;
  client.capabilities.models = list;                 // for the next hello
  if (client.isReady) {
    sendModels(client);
    if (!first) note('info', `characters changed: ${list.length} models`);
  }
}

// ───────────────────────────── requests ─────────────────────────────

/**
 * Why a task cannot be answered (a bad_request message), or null. The client
 * runs without the protocol spec, so nothing else has checked the frame.
 */
function badTask(frame) {
  if (frame.op !== 'chat') return 'SillyTavern answers chat completions only.';
  if (typeof frame.model !== 'string') return 'The task has no model name.';
  const msgs = frame.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) return 'The task has no messages.';
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    if (!P.isPlainObject(m) || !ROLES.includes(m.role) || typeof m.content !== 'string'
        || (m.name !== undefined && typeof m.name !== 'string')) {
      return `messages[${i}] is not a message SillyTavern can take (role ${ROLES.join('/')}, text content).`;
    }
  }
  return null;
}

function onTask(c, frame, tracked) {
  const job = { client: c, frame, tracked, id: frame.request_id, received: Date.now() };
  const bad = badTask(frame);
  if (bad) {
    note('warn', `request ${short(job.id)}: bad_request: ${bad}`);
    c.sendError(job.id, 'bad_request', bad, { status: 400, retryable: false });
    return;
  }
  queue.push(job);
  note('info', `request ${short(job.id)}: ${frame.model}, ${frame.messages.length} messages`
    + `${frame.stream ? ', streamed' : ''}${working ? ', queued' : ''}`);
  renderStatus();
  pump();
}

/** (The tracker has aborted the job's signal already: its listener stops the generation.) */
function onCancel(frame) {
  const id = frame.request_id;
  if (current && current.id === id) {
    note('info', `request ${short(id)} cancelled (${frame.reason || 'cancel'}): stopping the generation`);
  } else if (queue.some((j) => j.id === id)) {
    note('info', `request ${short(id)} cancelled before it started`);
  }
}

/**
 * Stop SillyTavern's generation if it runs for a job that was cancelled.
 * Called when the cancel comes, when the generation starts and at every
 * token: a stop that comes before SillyTavern set up its generation is lost.
 */
function stopIfCancelled(job) {
  if (job.tracked.cancelled && job.generating) getContext().stopGeneration();
}

async function pump() {
  if (working) return;
  working = true;
  try {
    for (;;) {
      while (queue.length) {
        const job = queue.shift();
        current = job;
        renderStatus();
        try {
          if (!job.tracked.cancelled) await answer(job);
        } catch (e) {
          console.error('[chatbridge]', e);
          fail(job, 'internal', `the chatbridge extension failed: ${e && e.message ? e.message : e}`, 500);
        } finally {
          // (done and error end the job's tracker entry, a cancel removed it)
          current = null;
          renderStatus();
        }
      }
      await sleep(SETTLE_MS);
      if (queue.length) continue;
      try {
        await goHome();
      } catch (e) {
        note('error', `could not reopen your chat: ${e && e.message ? e.message : e}`);
      }
      if (!queue.length) break;
    }
  } finally {
    working = false;
    renderStatus();
  }
}

function fail(job, code, message, status, retryable) {
  if (job.tracked.cancelled) return;
  note('warn', `request ${short(job.id)}: ${code}: ${message}`);
  job.client.sendError(job.id, code, message, { status, retryable });
}

/** Wait until SillyTavern is not generating or saving on its own. */
async function waitIdle(job) {
  while (!job.tracked.cancelled
         && (st.is_send_press || st.isChatSaving || (groupChats && groupChats.is_group_generating))) {
    await sleep(POLL_MS);
  }
}

/** The character a model name asks for: { avatar, name } or { error }. */
function resolveCharacter(model, ctx) {
  const chars = ctx.characters;
  if (model.startsWith(MODEL_PREFIX)) {
    const name = model.slice(MODEL_PREFIX.length);
    const lower = name.toLowerCase();
    const ch = chars.find((c) => c && c.name === name)
      || chars.find((c) => c && typeof c.name === 'string' && c.name.toLowerCase() === lower);
    if (!ch) {
      return { error: `SillyTavern has no character named "${name}"; GET /v1/models lists them` };
    }
    return { avatar: ch.avatar, name: ch.name };
  }
  const where = home || whereAmI(ctx);
  if (where.kind === 'character' && chars.some((c) => c && c.avatar === where.avatar)) {
    return { avatar: where.avatar, name: where.name };
  }
  const avatar = welcome ? welcome.getPermanentAssistantAvatar() : ASSISTANT_AVATAR;
  const ch = chars.find((c) => c && c.avatar === avatar);
  return ch ? { avatar: ch.avatar, name: ch.name } : { assistant: true };
}

/** Where the user is: a character chat, a group chat, a temporary chat, or nothing. */
function whereAmI(ctx) {
  const chatId = ctx.getCurrentChatId();
  if (ctx.groupId) return { kind: 'group', groupId: ctx.groupId, chatId };
  const ch = ctx.characterId !== undefined && ctx.characterId !== null ? ctx.characters[ctx.characterId] : null;
  if (ch && chatId) return { kind: 'character', avatar: ch.avatar, name: ch.name, chatId };
  if (!chatId && ctx.chat.some((m) => m && m.is_user)) return { kind: 'temporary' };
  return { kind: 'none' };
}

const indexOf = (avatar) => getContext().characters.findIndex((c) => c && c.avatar === avatar);

/** Select character number idx, waiting out a chat save (selectCharacterById skips during one). */
async function selectCharacter(idx) {
  for (let i = 0; i < SWITCH_TRIES; i++) {
    while (st.isChatSaving) await sleep(POLL_MS);
    await getContext().selectCharacterById(idx, { switchMenu: false });
    const ctx = getContext();
    if (!ctx.groupId && String(ctx.characterId) === String(idx)) return;
    await sleep(POLL_MS);
  }
  throw new Error(`SillyTavern did not switch to character #${idx}`);
}

/** Open group groupId (its current chat), waiting out a chat save. */
async function selectGroup(groupId) {
  for (let i = 0; i < SWITCH_TRIES && groupChats; i++) {
    while (st.isChatSaving) await sleep(POLL_MS);
    await groupChats.openGroupById(groupId);
    if (getContext().groupId === groupId) return;
    await sleep(POLL_MS);
  }
  throw new Error(`SillyTavern did not open the group ${groupId}`);
}

async function openChat(fileName) {
  await getContext().openCharacterChat(fileName);
  if (getContext().getCurrentChatId() !== fileName) {
    throw new Error(`SillyTavern did not open the chat "${fileName}"`);
  }
}

/** Open the bridge chat of `target`, remembering where the user was. */
async function enterBridge(target) {
  if (bridge && bridge.avatar !== target.avatar) await leaveBridge();
  if (bridge && !inBridgeChat(target)) bridge = null;        // someone moved away meanwhile
  if (bridge) return;
  const idx = indexOf(target.avatar);
  if (idx < 0) throw new Error(`the character ${target.name} is gone`);
  let ctx = getContext();
  if (ctx.groupId || String(ctx.characterId) !== String(idx)) await selectCharacter(idx);
  ctx = getContext();
  bridge = { avatar: target.avatar, name: target.name, prevChat: ctx.characters[idx].chat };
  if (ctx.getCurrentChatId() !== BRIDGE_CHAT) await openChat(BRIDGE_CHAT);
}

/** Whether the chat open now is the bridge chat of `target`. */
function inBridgeChat(target) {
  const ctx = getContext();
  const ch = ctx.groupId ? null : ctx.characters[ctx.characterId];
  return !!ch && ch.avatar === target.avatar && ctx.getCurrentChatId() === BRIDGE_CHAT;
}

/** Give the bridge character its previous chat back. */
async function leaveBridge() {
  const b = bridge;
  bridge = null;
  const ctx = getContext();
  const idx = indexOf(b.avatar);
  if (idx < 0 || ctx.groupId || String(ctx.characterId) !== String(idx)) return;   // the user moved on
  if (b.prevChat && b.prevChat !== BRIDGE_CHAT && ctx.getCurrentChatId() !== b.prevChat) {
    await openChat(b.prevChat);
  }
}

/** Reopen the user's character (or group) and chat file. */
async function goHome() {
  if (!home && !bridge) return;
  while (st.is_send_press || st.isChatSaving) await sleep(POLL_MS);
  if (bridge) await leaveBridge();
  const h = home;
  home = null;
  if (!h) return;
  await reopen(h);
  note('info', 'your chat is back');
}

async function reopen(h) {
  const ctx = getContext();
  if (h.kind === 'group') {
    if (ctx.groupId !== h.groupId) await selectGroup(h.groupId);
    if (getContext().getCurrentChatId() !== h.chatId) await getContext().openGroupChat(h.groupId, h.chatId);
  } else if (h.kind === 'character') {
    const idx = indexOf(h.avatar);
    if (idx < 0) return;
    if (ctx.groupId || String(ctx.characterId) !== String(idx)) await selectCharacter(idx);
    if (getContext().getCurrentChatId() !== h.chatId) await openChat(h.chatId);
  } else if (getContext().getCurrentChatId() !== undefined) {
    await st.closeCurrentChat();
  }
}

/** A request message as a SillyTavern chat message. */
function chatMessage(m, ctx, charName) {
  const base = { send_date: new Date().toISOString(), mes: m.content, extra: {} };
  switch (m.role) {
    case 'user':
      return { name: m.name || ctx.name1, is_user: true, is_system: false, ...base };
    case 'assistant':
      return { name: charName, is_user: false, is_system: false, ...base };
    default:              // system: a narrator message, sent with the role system
      return { name: m.name || 'System', is_user: false, is_system: false, force_avatar: st.system_avatar,
        ...base, extra: { type: 'narrator' } };
  }
}

/** The upstream failure behind a SillyTavern generation error. */
function upstreamFailure(err) {
  const msg = String(err && err.message !== undefined ? err.message : err || '');
  const m = /status (\d{3})\b/.exec(msg);
  const status = m ? Number(m[1]) : REASONS[msg.trim().toLowerCase()];
  if (status === 429) {
    return { code: 'rate_limited', status: 429, retryable: true,
      message: 'SillyTavern\'s LLM API answered 429 Too Many Requests' };
  }
  return { code: 'upstream_error', status: 502, retryable: true,
    message: `SillyTavern's LLM API call failed${status ? ` (HTTP ${status})` : ''}`
      + `${msg && !m ? `: ${msg}` : ''}` };
}

/**
 * What of the final `reply` is still to be sent after `sent` was streamed, or
 * null when the reply does not continue it. The tokens carry the model's raw
 * text; the reply is SillyTavern's cleaned-up message (cleanUpMessage drops
 * the blanks at the end of each line and trims the whole): a difference of
 * only that kind is not a mismatch.
 */
function restOfReply(reply, sent) {
  if (reply.startsWith(sent)) return reply.slice(sent.length);
  const nl = sent.lastIndexOf('\n') + 1;                       // the last line may still be growing
  const clean = (sent.slice(0, nl).replace(/[^\S\r\n]+$/gm, '') + sent.slice(nl)).trimStart();
  if (reply.startsWith(clean)) return reply.slice(clean.length);
  const core = clean.trimEnd();
  if (reply.startsWith(core) && clean.startsWith(reply)) return '';   // the reply ends in what was sent
  return null;
}

async function answer(job) {
  const { frame, tracked, id } = job;
  await waitIdle(job);
  if (tracked.cancelled) return;

  let ctx = getContext();
  if (ctx.onlineStatus === 'no_connection') {
    fail(job, 'no_api', 'SillyTavern has no API connected: connect one in its API Connections panel', 503, true);
    return;
  }
  if (!home && !bridge && whereAmI(ctx).kind === 'temporary') {
    fail(job, 'busy', 'a temporary chat is open in SillyTavern; chatbridge cannot put it back afterwards', 503, true);
    return;
  }
  if (!home) home = whereAmI(ctx);
  let target = resolveCharacter(frame.model, ctx);
  if (target.assistant && welcome) {
    note('info', 'creating the Assistant character for the default model');
    await welcome.openPermanentAssistantChat();
    target = resolveCharacter(frame.model, getContext());
  }
  if (target.assistant) {
    target = { error: 'no character chat is open in SillyTavern and it has no Assistant character: '
      + 'open a character there, or ask for the model sillytavern/<character>' };
  }
  if (target.error) {
    fail(job, 'not_found', target.error, 404, false);
    return;
  }

  await enterBridge(target);
  if (tracked.cancelled) return;

  // the request's conversation becomes the bridge chat, and only the bridge chat
  if (!inBridgeChat(target)) throw new Error('SillyTavern did not open the bridge chat');
  ctx = getContext();
  const chat = ctx.chat;
  chat.length = 0;                               // (no splice(...spread): a long history overflows it)
  for (const m of frame.messages) chat.push(chatMessage(m, ctx, target.name));
  await ctx.clearChat();
  await ctx.printMessages();
  await ctx.saveChat();
  if (tracked.cancelled) return;
  const firstReply = chat.length;

  // what goes back: `emitted` is all that was given to the client so far
  // (emittedLen characters, the last of them in `tail`)
  let emitted = '';
  let emittedLen = 0;
  let tail = '';
  let outbox = '';
  job.flush = () => {
    if (!outbox || tracked.cancelled || tracked.paused) return;
    job.client.sendDelta(id, outbox);
    outbox = '';
  };
  const emit = (text) => {
    if (!text) return;
    emitted += text;
    emittedLen += text.length;
    tail = (tail.length + text.length > TAIL ? (tail + text).slice(-TAIL) : tail + text);
    outbox += text;
    job.flush();
  };

  const events = ctx.eventTypes;
  // each token event carries the whole text so far: send what is new when it
  // continues what was sent (checked on its last characters, not all of it,
  // so that a long answer costs time in proportion to its length)
  const onToken = (text) => {
    stopIfCancelled(job);
    if (tracked.cancelled || !frame.stream || typeof text !== 'string') return;
    if (text.length > emittedLen && text.startsWith(tail, emittedLen - tail.length)) emit(text.slice(emittedLen));
  };
  const onStarted = () => stopIfCancelled(job);
  const onAbort = () => stopIfCancelled(job);

  const textarea = document.getElementById('send_textarea');
  const draft = textarea ? textarea.value : '';
  if (draft) textarea.value = '';                 // generate('normal') would send it as a message

  ctx.eventSource.on(events.STREAM_TOKEN_RECEIVED, onToken);
  ctx.eventSource.on(events.GENERATION_AFTER_COMMANDS, onStarted);
  tracked.signal.addEventListener('abort', onAbort);
  let result;
  let failure = null;
  job.generating = true;
  try {
    result = await ctx.generate('normal', { automatic_trigger: true });
  } catch (e) {
    failure = e || new Error('generation failed');
  } finally {
    job.generating = false;
    ctx.eventSource.removeListener(events.STREAM_TOKEN_RECEIVED, onToken);
    ctx.eventSource.removeListener(events.GENERATION_AFTER_COMMANDS, onStarted);
    tracked.signal.removeEventListener('abort', onAbort);
    if (draft && textarea && !textarea.value) textarea.value = draft;
  }
  if (tracked.cancelled) {
    note('info', `request ${short(id)}: generation stopped`);
    return;
  }

  ctx = getContext();
  const last = ctx.chat.length > firstReply ? ctx.chat[ctx.chat.length - 1] : null;
  const reply = last && !last.is_user && typeof last.mes === 'string' ? last.mes : null;
  if (failure || result === undefined || result === null || reply === null) {
    if (ctx.onlineStatus === 'no_connection') {
      fail(job, 'no_api', 'SillyTavern has no API connected: connect one in its API Connections panel', 503, true);
      return;
    }
    const f = upstreamFailure(failure || 'SillyTavern produced no reply (see its notifications)');
    fail(job, f.code, f.message, f.status, f.retryable);
    return;
  }

  const rest = restOfReply(reply, emitted);
  if (rest === null) {
    // SillyTavern's clean-up changed more than blanks (a "Name:" prefix
    // dropped, its regex scripts, fixMarkdown): the client has the model's
    // streamed text, which is its answer; the chat shows the cleaned one
    note('warn', `request ${short(id)}: SillyTavern's final reply differs from the ${emittedLen} `
      + 'characters streamed (its clean-up); the client keeps the streamed text');
  } else {
    emit(rest);
  }
  await tracked.waitIfPaused();
  if (tracked.cancelled) return;
  job.flush();
  job.client.sendDone(id, 'stop');
  note('info', `request ${short(id)}: ${reply.length} characters in ${Date.now() - job.received} ms`);
}

// ───────────────────────────── start ─────────────────────────────

async function init() {
  if (!P) throw new Error('cb-protocol.js did not load');
  st = await import(`${ST_BASE}script.js`);
  try {
    groupChats = await import(`${ST_BASE}scripts/group-chats.js`);
  } catch (_) {
    groupChats = null;
  }
  try {
    welcome = await import(`${ST_BASE}scripts/welcome-screen.js`);
  } catch (_) {
    welcome = null;
  }
  settings = loadSettings();
  await mountSettings();
  const ctx = getContext();
  const events = ctx.eventTypes;
  ctx.eventSource.on(events.APP_READY, () => {
    refreshModels();
    if (settings.autoConnect && !client) connect();
  });
  for (const e of ['CHARACTER_EDITED', 'CHARACTER_DELETED', 'CHARACTER_RENAMED', 'CHARACTER_DUPLICATED',
    'CHARACTER_PAGE_LOADED', 'CHAT_CHANGED']) {
    if (events[e]) ctx.eventSource.on(events[e], () => refreshModels());
  }
  setInterval(refreshModels, MODELS_EVERY_MS);     // new characters raise no event
}

if (globalThis.chatbridgeTavern) {
  console.warn(`[chatbridge] a second copy (${HERE}) stays idle: ${globalThis.chatbridgeTavern.url} runs`);
} else {
  globalThis.chatbridgeTavern = {
    version: VERSION,
    url: HERE,
    /** For tests and the curious: the state of the bridge in this tab. */
    state: () => ({
      status: statusState, text: statusText, browserId: client ? client.browserId : undefined,
      queued: queue.length, working, home, bridge, models: [...models], log: [...logLines],
    }),
  };
  init().catch((e) => {
    note('error', `could not start: ${e && e.message ? e.message : e}`);
    console.error(e);
  });
}
