/*
 * main.js — the chatbridge userscript's glue: the config block (nginx fills
 * in the two placeholders when it serves the script), the bridge connection
 * (BridgeClient from cb-protocol.js, with a TaskTracker), one runner per task
 * (driver-lmarena.js does the site work), id capture, the model list, the
 * needs-human state, and the title markers:
 *
 *   ✅  connected and ready        🎯  capture armed
 *   ⚠️  a verification page is up  ⛔  stopped: the bridge refused this script
 *
 * build.sh puts the config section (between the ChatbridgeConfig markers)
 * right after the userscript header, and the rest after the driver, all in
 * one function whose `globalThis` is private to the script: nothing is added
 * to the page's globals. The script replaces window.fetch with a pass-through
 * wrapper (it is how the page's own retry request is seen for capture); the
 * bridge's own requests use the fetch the page had, so they never reach it.
 */
// ==ChatbridgeConfig==
const CHATBRIDGE_CONFIG = Object.freeze({
  wsUrl: '__CHATBRIDGE_WS_URL__',    // the bridge's WebSocket (nginx's /chatbridge/ws)
  token: '__CHATBRIDGE_TOKEN__',     // the browser token (the sidecar's --token)
  debug: false,                      // true: log to the console
  concurrency: 6,                    // tasks this tab runs at once
  probeIntervalMs: 3000,             // while a verification page is up: how often to look again
  captureTimeoutMs: 600000,          // an armed capture gives up after this long (unless told sooner)
});
// ==/ChatbridgeConfig==

(function main(config, P, D) {
  'use strict';

  const VERSION = '1.0.0';                                       // = @version (build.sh checks)
  const MARKERS = Object.freeze({ stopped: '⛔ ', human: '⚠️ ', capture: '🎯 ', ready: '✅ ' });
  const ALL_MARKERS = Object.values(MARKERS);
  // what to do about a close code after which the client stops (state 'refused')
  const REFUSED = Object.freeze({
    4401: 'the bridge refused this script\'s token (close code 4401). Install the userscript again from '
      + 'the bridge (…/chatbridge/chatbridge.user.js): the token has probably changed. Then reload this tab.',
    4403: 'the bridge does not accept connections from this site (close code 4403): add this origin to the '
      + 'sidecar\'s --origin list, then reload this tab.',
  });

  if (window.top !== window.self) return;                       // @noframes, for managers that ignore it
  if (!P || !D) {
    const missing = [!P && 'the protocol client (cb-protocol.js)', !D && 'the LMArena driver (driver-lmarena.js)']
      .filter(Boolean).join(' and ');
    alertConsole(`this copy of the userscript is broken: ${missing} did not load, so it does nothing. `
      + 'Install it again from the bridge (http(s)://<nginx>/chatbridge/chatbridge.user.js).');
    document.title = MARKERS.stopped + document.title;
    return;
  }

  // ── logging: silent unless config.debug; problems a person must fix always show ──

  function log(level, msg) {
    if (!config.debug) return;
    const fn = level === 'error' ? 'error' : level === 'warn' ? 'warn' : level === 'debug' ? 'debug' : 'info';
    console[fn](`[chatbridge] ${msg}`);
  }

  function alertConsole(msg) {
    console.error(`[chatbridge] ${msg}`);
  }

  if (String(config.wsUrl).startsWith('__CHATBRIDGE') || String(config.token).startsWith('__CHATBRIDGE')) {
    alertConsole('this copy of the userscript was not configured: install it from the bridge '
      + '(http(s)://<nginx>/chatbridge/chatbridge.user.js), which fills in its address and token.');
    document.title = MARKERS.stopped + document.title;
    return;
  }

  const pageFetch = window.fetch;
  if (typeof pageFetch !== 'function') return;
  if (pageFetch.name === 'chatbridgeCaptureFetch') {            // a second copy in the same page
    log('warn', 'the userscript is already running in this page');
    return;
  }
  /** The bridge's own site requests: the page's fetch, never our capture wrapper. */
  const siteFetch = (input, init) => pageFetch.call(window, input, init);

  // ── state ──

  const tab = {
    ready: false,
    stopped: null,            // message when the bridge refused us for good
    human: null,              // { message, timer } while a verification page is up
    probing: false,
    capture: null,            // { commandId, args, timer } while armed
    models: [],
    site: { prefix: null },   // the retry endpoint prefix that worked
  };

  // ── title markers ──

  function stripMarkers(title) {
    let t = title;
    for (let again = true; again;) {
      again = false;
      for (const m of ALL_MARKERS) {
        if (t.startsWith(m)) { t = t.slice(m.length); again = true; }
      }
    }
    return t;
  }

  function markerPrefix() {
    return (tab.stopped ? MARKERS.stopped : '') + (tab.human ? MARKERS.human : '')
      + (tab.capture ? MARKERS.capture : '') + (tab.ready && !tab.human ? MARKERS.ready : '');
  }

  function applyTitle() {
    const want = markerPrefix() + stripMarkers(document.title);
    if (document.title !== want) document.title = want;
  }

  /** Keep the markers first when the page changes its title. */
  function watchTitle() {
    const target = document.head || document.documentElement;
    if (typeof MutationObserver === 'function' && target) {
      new MutationObserver(applyTitle).observe(target, { subtree: true, childList: true, characterData: true });
    }
    setInterval(applyTitle, 2000);                               // a title set outside <head>
  }

  // ── the model list ──

  function readModels() {
    try {
      return D.extractModels(D.collectFlightPayloads(window, document));
    } catch (e) {
      log('warn', `model list: ${e && e.message}`);
      return [];
    }
  }

  function setModels(models) {
    tab.models = models;
    client.capabilities = Object.assign({}, client.capabilities, { models: models.map((m) => m.id) });
  }

  // ── needs human ──

  function enterNeedsHuman(message) {
    if (tab.human) return;
    const msg = `${message} (tab: ${location.href})`;
    tab.human = { message: msg, timer: setInterval(probe, config.probeIntervalMs) };
    alertConsole(`needs a person: ${msg}`);
    client.sendState('needs_human', msg);
    applyTitle();
  }

  function leaveNeedsHuman() {
    if (!tab.human) return;
    clearInterval(tab.human.timer);
    tab.human = null;
    log('info', 'the verification page is gone; ready again');
    client.sendState('ready');
    applyTitle();
  }

  async function probe() {
    if (tab.probing || !tab.human) return;
    tab.probing = true;
    try {
      if (await D.probeSite(siteFetch, '/') === 'ok') leaveNeedsHuman();
    } finally {
      tab.probing = false;
    }
  }

  // ── capture ──

  function disarmCapture(reason) {
    const c = tab.capture;
    if (!c) return;
    tab.capture = null;
    clearTimeout(c.timer);
    if (reason) client.sendResult(c.commandId, false, undefined, reason);
    applyTitle();
  }

  function armCapture(frame) {
    disarmCapture('replaced by a newer capture command');
    const a = frame.args || {};
    const args = {};
    if (typeof a.model === 'string' && a.model) args.model = a.model;
    if (a.mode === 'direct_chat' || a.mode === 'battle') args.mode = a.mode;
    if (typeof a.target === 'string' && /^[ab]$/i.test(a.target)) args.target = a.target.toUpperCase();
    // the bridge cancels the command when its timeout (seconds) ends; this
    // timer, a little later, only covers a cancel that never arrives
    const secs = Number.isInteger(a.timeout) && a.timeout > 0 ? a.timeout : 0;
    const ms = secs ? Math.min(secs * 1000 + 5000, config.captureTimeoutMs) : config.captureTimeoutMs;
    tab.capture = {
      commandId: frame.command_id,
      args,
      timer: setTimeout(() => disarmCapture('nothing was captured in time'), ms),
    };
    log('info', 'capture armed: click Retry on the answer whose ids you want');
    applyTitle();
  }

  function onPageFetch(input) {
    const m = D.matchCaptureUrl(input, location.href);
    if (!m) return;
    const c = tab.capture;
    tab.capture = null;
    clearTimeout(c.timer);
    client.sendResult(c.commandId, true, Object.assign({ session_id: m.sessionId, message_id: m.messageId }, c.args));
    log('info', `captured session ${m.sessionId}, message ${m.messageId}`);
    applyTitle();
  }

  /** The page's fetch, seen on its way through (only while capture is armed). */
  function chatbridgeCaptureFetch(input, init) {
    if (tab.capture) {
      try { onPageFetch(input); } catch (e) { log('warn', `capture: ${e && e.message}`); }
    }
    return Reflect.apply(pageFetch, this, arguments);
  }

  // ── commands ──

  function onCommand(frame) {
    const id = frame.command_id;
    switch (frame.command) {
      case 'capture':
        armCapture(frame);
        return;
      case 'send_models': {
        setModels(readModels());
        if (tab.models.length) client.sendModels(tab.models);
        client.sendResult(id, true, { count: tab.models.length },
          tab.models.length ? undefined : 'no model list found in this page (self.__next_f)');
        return;
      }
      case 'refresh':
        client.sendResult(id, true, {});
        setTimeout(() => location.reload(), 250);               // let the result leave first
        return;
      default:
        client.sendResult(id, false, undefined, `unknown command ${frame.command}`);
    }
  }

  // ── tasks ──

  function taskIo(requestId) {
    return {
      fetch: siteFetch,
      state: tab.site,
      onChallenge: enterNeedsHuman,
      send: {
        delta: (t) => client.sendDelta(requestId, t),
        reasoning: (t) => client.sendReasoning(requestId, t),
        image: (url, mime) => client.sendImage(requestId, url, mime),
        done: (reason, usage) => client.sendDone(requestId, reason, usage),
        error: (code, message, o) => client.sendError(requestId, code, message, o),
      },
    };
  }

  async function onTask(task, tracked) {
    const id = task.request_id;
    if (tab.human) {
      client.sendError(id, 'needs_human', tab.human.message, { status: 503, retryable: true, retryAfter: 30 });
      return;
    }
    // runTask ends the task with done or error, which end its tracker entry;
    // a cancel removed the entry already
    const outcome = await D.runTask(task, tracked, taskIo(id));
    log('debug', `task ${id}: ${outcome}`);
  }

  // ── the connection ──

  function onState(state, info) {
    tab.ready = state === 'ready';
    if (state === 'ready') {
      if (tab.models.length) client.sendModels(tab.models);
      if (tab.human) client.sendState('needs_human', tab.human.message);
    }
    if (state === 'closed' || state === 'refused') disarmCapture(null);   // the command died with the connection
    if (state === 'refused' && !tab.stopped) {
      // the client stopped itself: a close code the protocol marks final
      const code = info && info.code;
      tab.stopped = REFUSED[code] || `the bridge refused this script (close code ${code}`
        + `${info && info.reason ? ': ' + info.reason : ''}); fix that, then reload this tab.`;
      alertConsole(`stopped: ${tab.stopped}`);
    }
    applyTitle();
  }

  const tracker = new P.TaskTracker();
  const client = new P.BridgeClient({
    url: config.wsUrl,
    token: config.token,
    kind: 'arena',
    id: P.tabId('arena-', 'chatbridge-tab-id', () => window.sessionStorage),
    name: location.host.slice(0, 128),
    agent: `chatbridge-userscript/${VERSION}`,
    capabilities: { concurrency: config.concurrency, images: true, capture: true, any_model: true, models: [] },
    tracker,
    log,
    onTask,
    onCommand,
    // the bridge gave up a capture (its timeout): a cancel names the command
    onCancel: (f) => {
      if (tab.capture && tab.capture.commandId === f.request_id) disarmCapture(null);
    },
    onState,
    onError: (f) => log('warn', `the bridge refused a frame: ${f.code} ${f.message}`),
    onProtocolError: (info) => log('warn', `protocol error: ${info.error} ${info.message || ''}`),
  });

  window.fetch = chatbridgeCaptureFetch;
  setModels(readModels());
  if (!tab.models.length) {
    setTimeout(() => {                                           // a page still streaming its payload
      if (tab.models.length) return;
      setModels(readModels());
      if (tab.models.length && tab.ready) client.sendModels(tab.models);
    }, 3000);
  }
  watchTitle();
  client.start();
})(CHATBRIDGE_CONFIG, globalThis.ChatbridgeProtocol, globalThis.ChatbridgeArenaDriver);
