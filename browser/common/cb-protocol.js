/*
 * cb-protocol.js — chatbridge browser protocol v1, shared by the arena
 * userscript, the SillyTavern extension and the Node test tools.
 *
 * Plain ES2020, no imports, no exports, no dependencies: paste it into a
 * userscript, `import './cb-protocol.js'` it from an extension (then use
 * globalThis.ChatbridgeProtocol), or `require()` it from Node.
 *
 * Protocol flow (see browser/protocol/protocol-v1.json, the source of truth):
 *
 *   browser                                   sidecar
 *   ── connect ws(s)://… ──────────────────────▶
 *   ── hello {v, token, kind, id?, capabilities} ▶   (must be the first frame)
 *   ◀─ welcome {browser_id, heartbeat_ms, max_frame}  → client is "ready"
 *   ◀─ task {request_id, …}                        work to do, several at once
 *   ── delta / reasoning / image {request_id, …} ▶  the answer, in order
 *   ── done {request_id} or error {request_id} ──▶  end of that request
 *   ◀─ cancel / pause / resume {request_id}        per-request control
 *   ◀─ command {command_id} ── result {command_id} ▶ operator commands
 *   ── models / state ─────────────────────────▶   whenever they change
 *   ◀─ ping {t} ▶ pong {t}   (both ways)           heartbeat every heartbeat_ms
 *
 * Heartbeat: BridgeClient answers every ping with a pong carrying the same t,
 * sends its own ping every heartbeat_ms once ready, and treats the socket as
 * dead when nothing at all arrived for 3 × heartbeat_ms (15000 ms until the
 * welcome tells otherwise): it then drops the socket and reconnects.
 *
 * Reconnect: exponential backoff with jitter,
 *   delay = min(maxMs, initialMs × factor^attempt) × (1 + jitter × (2·random − 1))
 * i.e. uniformly within ±jitter of the base delay. The attempt count is reset
 * once a connection got its welcome. Only one socket exists at a time and one
 * close schedules exactly one retry.
 *
 * Tasks: with opts.tracker (a TaskTracker), every task is begun in the tracker
 * and handed to onTask(task, trackedTask); cancel/pause/resume drive it;
 * sendDone/sendError end it; a lost connection cancels all of it. If onTask
 * throws or rejects before done/error was sent, an `internal` error is sent;
 * so is one when the done or error frame itself is refused before sending
 * (invalid, too large): a request never waits for an end that was dropped.
 *
 * The browser scripts do not ship protocol-v1.json and so pass no spec: the
 * few bounds they need without it are FIELD_LIMITS (checked against the file
 * by cb-protocol.test.mjs). A welcome's heartbeat_ms and max_frame are
 * clamped to the spec's bounds whether or not a spec was given.
 *
 * Exports: createValidator, utf8Length, truncateUtf8, splitText, isPlainObject,
 * fieldLimit, tabId, BridgeClient, TaskTracker, VALIDATION_ERRORS,
 * DEFAULT_LIMITS, FIELD_LIMITS.
 */
(function () {
  'use strict';

  // ───────────────────────────── helpers ─────────────────────────────

  /** Length in bytes of `str` encoded as UTF-8 (lone surrogates count 3, like U+FFFD). */
  function utf8Length(str) {
    let n = 0;
    const len = str.length;
    for (let i = 0; i < len; i++) {
      const c = str.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
        const d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) { n += 4; i++; } else n += 3;
      } else n += 3;
    }
    return n;
  }

  /** Number of UTF-16 units of the character starting at str[i] (2 for a surrogate pair). */
  function charUnits(str, i) {
    const c = str.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < str.length) {
      const d = str.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) return 2;
    }
    return 1;
  }

  /** [raw UTF-8 bytes, bytes once JSON-encoded inside a string] of the character at str[i]. */
  function charCost(str, i, units) {
    if (units === 2) return [4, 4];
    const c = str.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) return [1, 2];                      // \" \\
    if (c < 0x20) return [1, (c >= 8 && c <= 10) || c === 12 || c === 13 ? 2 : 6];
    if (c < 0x80) return [1, 1];
    if (c < 0x800) return [2, 2];
    if (c >= 0xd800 && c <= 0xdfff) return [3, 6];                     // lone surrogate → \udXXX
    return [3, 3];
  }

  /** Cut `str` to at most maxBytes UTF-8 bytes, at a character boundary. */
  function truncateUtf8(str, maxBytes) {
    if (str.length <= maxBytes / 3 || utf8Length(str) <= maxBytes) return str;
    let bytes = 0;
    let i = 0;
    while (i < str.length) {
      const u = charUnits(str, i);
      const b = charCost(str, i, u)[0];
      if (bytes + b > maxBytes) break;
      bytes += b;
      i += u;
    }
    return str.slice(0, i);
  }

  /**
   * Split `text` into pieces, never inside a surrogate pair, such that each
   * piece is at most maxRawBytes in UTF-8 and at most maxJsonBytes once
   * JSON-encoded (without the quotes). Returns null if even one character
   * does not fit.
   */
  function splitText(text, maxJsonBytes, maxRawBytes) {
    if (maxRawBytes === undefined) maxRawBytes = Infinity;
    const out = [];
    let start = 0;
    let raw = 0;
    let json = 0;
    let i = 0;
    while (i < text.length) {
      const u = charUnits(text, i);
      const cost = charCost(text, i, u);
      if (raw + cost[0] > maxRawBytes || json + cost[1] > maxJsonBytes) {
        if (i === start) return null;
        out.push(text.slice(start, i));
        start = i;
        raw = 0;
        json = 0;
        continue;
      }
      raw += cost[0];
      json += cost[1];
      i += u;
    }
    if (i > start) out.push(text.slice(start, i));
    return out;
  }

  function isPlainObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  /** Copy of `obj` without the keys whose value is undefined. */
  function compact(obj) {
    const out = {};
    for (const k of Object.keys(obj)) if (obj[k] !== undefined) out[k] = obj[k];
    return out;
  }

  /**
   * A stable hello id for this tab: kept in `storage` (a Storage, or a
   * function returning one, e.g. () => window.sessionStorage: it survives a
   * reload, not a new tab) under `key`; made as prefix + random when missing
   * or not a valid id. When the storage cannot be used, a fresh id each call.
   */
  function tabId(prefix, key, storage) {
    const make = () => prefix + Math.random().toString(36).slice(2, 10);
    const valid = (id) => typeof id === 'string' && id.length >= 1
      && id.length <= FIELD_LIMITS['hello.id.max_len'] && CHARSETS.id.test(id);
    try {
      const s = typeof storage === 'function' ? storage() : storage;
      let id = s.getItem(key);
      if (!valid(id)) {
        id = make();
        s.setItem(key, id);
      }
      return id;
    } catch (_) {
      return make();
    }
  }

  function describe(v) {
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'array';
    if (typeof v === 'number' && Number.isInteger(v)) return 'integer';
    return typeof v;
  }

  // ──────────────────────────── validator ────────────────────────────

  const VALIDATION_ERRORS = Object.freeze([
    'not_object', 'missing_field', 'unknown_type', 'wrong_type', 'too_long', 'too_short',
    'out_of_range', 'not_in_enum', 'bad_charset', 'too_many_items', 'too_large',
  ]);

  const DEFAULT_LIMITS = Object.freeze({
    max_frame_bytes: 16777216,
    hello_timeout_ms: 5000,
    heartbeat_interval_ms: 15000,
    dead_after_ms: 45000,
  });

  /**
   * Bounds of protocol-v1.json that the clients need without loading it, as
   * `frame.field[.field…].rule` (`name[]`: the items of array `name`).
   * cb-protocol.test.mjs checks every one against the file.
   */
  const FIELD_LIMITS = Object.freeze({
    'welcome.heartbeat_ms.min': 1000,
    'welcome.heartbeat_ms.max': 600000,
    'welcome.max_frame.min': 65536,
    'delta.text.max_len': 4194304,
    'image.url.max_len': 12582912,
    'image.mime.max_len': 128,
    'done.finish_reason.max_len': 64,
    'done.usage.prompt_tokens.max': 100000000,
    'done.usage.total_tokens.max': 200000000,
    'error.message.max_len': 8192,
    'error.retry_after.max': 86400,
    'state.message.max_len': 1024,
    'result.message.max_len': 4096,
    'hello.id.max_len': 64,
    'models.models.max_items': 4096,
    'models.models[].id.max_len': 256,
    'models.models[].organization.max_len': 128,
  });

  /** A FIELD_LIMITS key looked up in a parsed spec; undefined when the spec has no such rule. */
  function specLimit(spec, key) {
    const parts = key.split('.');
    const prop = parts.pop();
    let rule = spec && isPlainObject(spec.frames) ? spec.frames[parts[0]] : undefined;
    for (let i = 1; rule && i < parts.length; i++) {
      const items = parts[i].endsWith('[]');
      rule = rule.fields && rule.fields[items ? parts[i].slice(0, -2) : parts[i]];
      if (rule && items) rule = rule.items;
    }
    return rule ? rule[prop] : undefined;
  }

  /** Bound `key` (a FIELD_LIMITS key) from `spec` when given and it has it, else the built-in value. */
  function fieldLimit(spec, key) {
    const v = spec ? specLimit(spec, key) : undefined;
    return v !== undefined ? v : FIELD_LIMITS[key];
  }

  const FIELD_TYPES = ['string', 'integer', 'number', 'boolean', 'object', 'array'];
  const CHARSETS = { id: /^[A-Za-z0-9_.:-]*$/ };
  const DIRECTIONS = ['browser', 'sidecar', 'both'];

  function fail(error, path, message) {
    return { ok: false, error, path, message };
  }

  function typeMatches(type, v) {
    switch (type) {
      case 'string': return typeof v === 'string';
      case 'integer': return typeof v === 'number' && Number.isInteger(v);
      case 'number': return typeof v === 'number' && Number.isFinite(v);
      case 'boolean': return typeof v === 'boolean';
      case 'object': return isPlainObject(v);
      case 'array': return Array.isArray(v);
      default: return false;
    }
  }

  /** Check one value against one field rule; returns null when fine. */
  function checkValue(v, rule, path) {
    if (!typeMatches(rule.type, v)) {
      return fail('wrong_type', path, `${path}: expected ${rule.type}, got ${describe(v)}`);
    }
    if (rule.type === 'string') {
      if (rule.max_len !== undefined && v.length > rule.max_len / 3) {
        const n = utf8Length(v);
        if (n > rule.max_len) return fail('too_long', path, `${path}: ${n} bytes, at most ${rule.max_len} allowed`);
      }
      if (rule.min_len !== undefined && utf8Length(v) < rule.min_len) {
        return fail('too_short', path, `${path}: at least ${rule.min_len} bytes required`);
      }
    }
    if (rule.type === 'integer' || rule.type === 'number') {
      if ((rule.min !== undefined && v < rule.min) || (rule.max !== undefined && v > rule.max)) {
        return fail('out_of_range', path, `${path}: ${v} is outside [${rule.min ?? '-∞'}, ${rule.max ?? '∞'}]`);
      }
    }
    if (rule.enum && !rule.enum.includes(v)) {
      return fail('not_in_enum', path, `${path}: ${JSON.stringify(v)} is not one of ${rule.enum.join(', ')}`);
    }
    if (rule.charset && !CHARSETS[rule.charset].test(v)) {
      return fail('bad_charset', path, `${path}: only ${CHARSETS[rule.charset].source.slice(1, -2)} allowed`);
    }
    if (rule.type === 'object' && rule.fields) return checkFields(v, rule.fields, path + '.');
    if (rule.type === 'array') {
      if (rule.max_items !== undefined && v.length > rule.max_items) {
        return fail('too_many_items', path, `${path}: ${v.length} items, at most ${rule.max_items} allowed`);
      }
      if (rule.items) {
        for (let i = 0; i < v.length; i++) {
          const r = checkValue(v[i], rule.items, `${path}[${i}]`);
          if (r) return r;
        }
      }
    }
    return null;
  }

  /** Check the fields of object `obj` in spec order; `prefix` is '' or 'parent.'. */
  function checkFields(obj, fields, prefix) {
    for (const name of Object.keys(fields)) {
      const rule = fields[name];
      const path = prefix + name;
      const v = obj[name];
      if (v === undefined) {
        if (rule.required) return fail('missing_field', path, `${path} is required`);
        continue;
      }
      const r = checkValue(v, rule, path);
      if (r) return r;
    }
    return null;
  }

  /** Throw if the spec itself uses a rule this validator does not understand. */
  function checkSpec(spec) {
    if (!isPlainObject(spec) || !isPlainObject(spec.frames)) throw new TypeError('spec.frames missing');
    const walk = (rule, where) => {
      if (!FIELD_TYPES.includes(rule.type)) throw new TypeError(`${where}: unknown type ${rule.type}`);
      if (rule.charset !== undefined && !CHARSETS[rule.charset]) {
        throw new TypeError(`${where}: unknown charset ${rule.charset}`);
      }
      if (rule.fields) for (const k of Object.keys(rule.fields)) walk(rule.fields[k], `${where}.${k}`);
      if (rule.items) walk(rule.items, `${where}[]`);
    };
    for (const type of Object.keys(spec.frames)) {
      const f = spec.frames[type];
      if (!DIRECTIONS.includes(f.from)) throw new TypeError(`frame ${type}: bad from ${f.from}`);
      for (const k of Object.keys(f.fields || {})) walk(f.fields[k], `${type}.${k}`);
    }
  }

  /**
   * createValidator(spec) → { validate(frame, direction) }
   * direction: 'browser' (frames a browser sends), 'sidecar' (frames the
   * sidecar sends) or undefined (either).
   */
  function createValidator(spec) {
    checkSpec(spec);
    const frames = spec.frames;
    function validate(frame, direction) {
      if (!isPlainObject(frame)) return fail('not_object', '', 'a frame must be a JSON object');
      const type = frame.type;
      if (type === undefined) return fail('missing_field', 'type', 'type is required');
      if (typeof type !== 'string') return fail('wrong_type', 'type', `type: expected string, got ${describe(type)}`);
      const def = Object.prototype.hasOwnProperty.call(frames, type) ? frames[type] : null;
      if (!def) return fail('unknown_type', 'type', `unknown frame type ${JSON.stringify(type)}`);
      if (direction && def.from !== 'both' && def.from !== direction) {
        return fail('unknown_type', 'type', `a ${type} frame is not sent by the ${direction}`);
      }
      return checkFields(frame, def.fields || {}, '') || { ok: true };
    }
    return { validate };
  }

  // ──────────────────────────── TaskTracker ───────────────────────────

  /**
   * Per-request state so several tasks run at once without global flags.
   * The code that runs a task calls end(requestId) when it is finished
   * (BridgeClient does so itself on sendDone / sendError).
   */
  class TaskTracker {
    constructor() {
      this._tasks = new Map();
    }

    /** Start tracking requestId; returns the live task if it is already tracked and not cancelled. */
    begin(requestId) {
      const existing = this._tasks.get(requestId);
      if (existing && !existing.cancelled) return existing;
      const controller = new AbortController();
      let waiters = [];
      const wake = () => { const w = waiters; waiters = []; for (const f of w) f(); };
      const task = {
        requestId,
        controller,
        signal: controller.signal,
        paused: false,
        cancelled: false,
        /** Resolves at once when not paused, else when resumed, cancelled or ended. */
        waitIfPaused() {
          if (!task.paused || task.cancelled) return Promise.resolve();
          return new Promise((resolve) => waiters.push(resolve));
        },
        _wake: wake,
      };
      this._tasks.set(requestId, task);
      return task;
    }

    get(requestId) {
      return this._tasks.get(requestId);
    }

    /**
     * Abort the task's controller, mark it cancelled and stop tracking it
     * (its runner may still call end(): that is harmless); false if unknown.
     */
    cancel(requestId, reason) {
      const task = this._tasks.get(requestId);
      if (!task) return false;
      this._tasks.delete(requestId);
      if (!task.cancelled) {
        task.cancelled = true;
        try { task.controller.abort(reason); } catch (_) { /* listeners' errors are not ours */ }
        task._wake();
      }
      return true;
    }

    /** Cancel every tracked task (e.g. when the connection is lost). */
    cancelAll(reason) {
      for (const id of Array.from(this._tasks.keys())) this.cancel(id, reason);
    }

    pause(requestId) {
      const task = this._tasks.get(requestId);
      if (!task) return false;
      task.paused = true;
      return true;
    }

    resume(requestId) {
      const task = this._tasks.get(requestId);
      if (!task) return false;
      task.paused = false;
      task._wake();
      return true;
    }

    /** Stop tracking requestId (wakes anything still waiting on it). */
    end(requestId) {
      const task = this._tasks.get(requestId);
      if (!task) return false;
      this._tasks.delete(requestId);
      task.paused = false;
      task._wake();
      return true;
    }

    get size() {
      return this._tasks.size;
    }
  }

  // ──────────────────────────── BridgeClient ──────────────────────────

  const WS_OPEN = 1;
  const noop = () => {};
  // stableMs: how long a welcomed connection must last before the next
  // reconnect starts from initialMs again
  const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30000, factor: 2, jitter: 0.3, stableMs: 10000 };

  /**
   * The connection manager used by the browser scripts.
   *
   * opts: url, token, kind ('arena'|'tavern'|'test'), id, name, agent,
   *   capabilities, WebSocket (constructor, default globalThis.WebSocket),
   *   spec (parsed protocol-v1.json: validates incoming and outgoing frames),
   *   tracker (TaskTracker fed by task/cancel/pause/resume), backoff
   *   ({initialMs, maxMs, factor, jitter, stableMs}), random, setTimeout,
   *   clearTimeout, log(level, msg), heartbeatMs (default until welcome,
   *   15000),
   *   deadAfterMs (fixed dead timeout instead of 3 × heartbeat, for tests),
   *   maxFrame (default until welcome), cancelOnClose (default true: cancel
   *   the tracker's tasks when the connection is lost), and the handlers
   *   onTask, onCancel, onPause, onResume, onCommand, onError, onState,
   *   onProtocolError (may also be assigned later as properties).
   */
  class BridgeClient {
    constructor(opts) {
      opts = opts || {};
      this.url = opts.url;
      this.token = opts.token === undefined ? '' : opts.token;
      this.kind = opts.kind;
      this.id = opts.id;
      this.name = opts.name;
      this.agent = opts.agent;
      this.capabilities = opts.capabilities;
      this.tracker = opts.tracker || null;
      this.cancelOnClose = opts.cancelOnClose !== false;
      this._WebSocket = opts.WebSocket || globalThis.WebSocket;
      this._validator = opts.spec ? createValidator(opts.spec) : null;
      const limits = Object.assign({}, DEFAULT_LIMITS, (opts.spec && opts.spec.limits) || {});
      // Byte limits of the strings the send helpers split (text) or truncate (messages).
      const limit = (key) => fieldLimit(opts.spec, key);
      this._textMaxLen = limit('delta.text.max_len');
      this._msgMaxLen = {
        error: limit('error.message.max_len'),
        state: limit('state.message.max_len'),
        result: limit('result.message.max_len'),
      };
      // what a welcome may set (a welcome outside them is clamped, spec or not)
      this._welcomeBounds = {
        heartbeatMin: limit('welcome.heartbeat_ms.min'),
        heartbeatMax: limit('welcome.heartbeat_ms.max'),
        maxFrameMin: limit('welcome.max_frame.min'),
      };
      this._backoff = Object.assign({}, DEFAULT_BACKOFF, opts.backoff || {});
      this._random = opts.random || Math.random;
      // called plainly: a browser's setTimeout throws "Illegal invocation"
      // when its `this` is not the Window (a userscript's private global)
      const st = opts.setTimeout;
      const ct = opts.clearTimeout;
      this._setTimeout = st ? (fn, ms) => st(fn, ms) : (fn, ms) => setTimeout(fn, ms);
      this._clearTimeout = ct ? (h) => ct(h) : (h) => clearTimeout(h);
      // close codes after which reconnecting cannot help (a wrong token)
      const codes = (opts.spec && opts.spec.close_codes) || { 4401: { retry: false }, 4403: { retry: false } };
      this._noRetry = new Set(Object.keys(codes).filter((c) => codes[c].retry === false).map(Number));
      this._log = opts.log || noop;
      this._defaultHeartbeatMs = opts.heartbeatMs || limits.heartbeat_interval_ms;
      this._deadAfterMs = opts.deadAfterMs;
      this._defaultMaxFrame = opts.maxFrame || limits.max_frame_bytes;

      for (const h of ['onTask', 'onCancel', 'onPause', 'onResume', 'onCommand', 'onError',
        'onState', 'onProtocolError']) {
        this[h] = typeof opts[h] === 'function' ? opts[h] : null;
      }

      this._running = false;
      this._ws = null;
      this._state = 'closed';
      this._attempt = 0;
      this._reconnectTimer = null;
      this._deadTimer = null;
      this._pingTimer = null;
      this._stableTimer = null;
      this._openRequests = new Set();
      this._lastRefusal = null;                                 // why the last send was refused here
      this._resetSession();
    }

    /**
     * 'connecting' | 'open' (hello sent) | 'ready' (welcome received) |
     * 'closed' | 'refused' (a close code the spec marks retry: false; start()
     * again after fixing the token or origin).
     */
    get readyState() { return this._state; }
    get browserId() { return this._browserId; }
    get heartbeatMs() { return this._heartbeatMs; }
    get maxFrame() { return this._maxFrame; }
    get isReady() { return this._state === 'ready'; }

    /** Connect, and keep reconnecting until stop(). */
    start() {
      if (this._running) return;
      this._running = true;
      this._attempt = 0;
      this._connect();
    }

    /** Close the connection and stop reconnecting. */
    stop() {
      this._running = false;
      if (this._reconnectTimer !== null) {
        this._clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
      }
      if (this._ws) this._drop(this._ws, 1000, 'client stopped');
      else this._setState('closed');
    }

    /** The delay before reconnect attempt number `attempt` (0-based). */
    backoffDelay(attempt) {
      const b = this._backoff;
      const base = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, attempt));
      return Math.max(0, Math.round(base * (1 + b.jitter * (2 * this._random() - 1))));
    }

    // ── sending ──

    /** Send any frame (validated when a spec was given). False when not sent. */
    send(frame) {
      this._lastRefusal = null;
      if (!this._isOpen()) return false;
      return this._write(frame);
    }

    /** Validate, size-check and write one frame to the current socket. */
    _write(frame) {
      if (this._validator) {
        const r = this._validator.validate(frame, 'browser');
        if (!r.ok) {
          this._protocolError(Object.assign({ direction: 'out', type: frame && frame.type }, r));
          return false;
        }
      }
      let text;
      try {
        text = JSON.stringify(frame);
      } catch (e) {
        this._protocolError({ direction: 'out', error: 'not_object', path: '', message: String(e) });
        return false;
      }
      const size = text.length * 3 <= this._maxFrame ? 0 : utf8Length(text);
      if (size > this._maxFrame) {
        this._protocolError({ direction: 'out', type: frame.type, error: 'too_large', path: '',
          message: `${frame.type} frame of ${size} bytes exceeds max_frame ${this._maxFrame}` });
        return false;
      }
      try {
        this._ws.send(text);
        return true;
      } catch (e) {
        this._log('warn', `send failed: ${e && e.message}`);
        return false;
      }
    }

    sendDelta(requestId, text) { return this._sendText('delta', requestId, text); }
    sendReasoning(requestId, text) { return this._sendText('reasoning', requestId, text); }

    sendImage(requestId, url, mime) {
      return this.send(compact({ type: 'image', request_id: requestId, url, mime }));
    }

    /**
     * The answer is complete. A done frame refused here (invalid, too large,
     * not serialisable) fails the request with an `internal` error instead,
     * so that it does not hang; false then, as the done frame was not sent.
     */
    sendDone(requestId, finishReason, usage) {
      this._finish(requestId);
      return this.send(compact({ type: 'done', request_id: requestId, finish_reason: finishReason, usage }))
        || this._failRefused(requestId, 'done');
    }

    /**
     * opts: { status, retryable, retryAfter } — retryAfter goes out as
     * retry_after (seconds). An error frame about a request that is refused
     * here is replaced by a plain `internal` one, as for sendDone.
     */
    sendError(requestId, code, message, opts) {
      opts = opts || {};
      const about = requestId !== undefined && requestId !== null;
      if (about) this._finish(requestId);
      return this.send(compact({
        type: 'error',
        request_id: about ? requestId : undefined,
        code,
        message: truncateUtf8(String(message === undefined ? code : message), this._msgMaxLen.error),
        status: opts.status,
        retryable: opts.retryable,
        retry_after: opts.retryAfter,
      })) || (about && this._failRefused(requestId, 'error'));
    }

    /** models: array of { id, uuid?, type?, organization? } or of plain id strings. */
    sendModels(models) {
      const list = (models || []).map((m) => (typeof m === 'string' ? { id: m } : m));
      return this.send({ type: 'models', models: list });
    }

    sendState(state, message) {
      return this.send(compact({ type: 'state', state,
        message: message === undefined ? undefined : truncateUtf8(String(message), this._msgMaxLen.state) }));
    }

    sendResult(commandId, ok, data, message) {
      return this.send(compact({ type: 'result', command_id: commandId, ok: !!ok, data,
        message: message === undefined ? undefined : truncateUtf8(String(message), this._msgMaxLen.result) }));
    }

    _sendText(type, requestId, text) {
      if (!this._isOpen()) return false;
      if (typeof text !== 'string') text = text === undefined || text === null ? '' : String(text);
      if (text === '') return true;                            // empty text is allowed and ignored
      const frame = { type, request_id: requestId, text };
      if (text.length * 6 + 256 < this._maxFrame && text.length * 3 <= this._textMaxLen) {
        return this.send(frame);                               // certainly fits: the common case
      }
      let overhead;
      try {
        overhead = utf8Length(JSON.stringify({ type, request_id: requestId, text: '' }));
      } catch (e) {
        return this.send(frame);                               // let send() report it
      }
      const pieces = splitText(text, this._maxFrame - overhead, this._textMaxLen);
      if (!pieces) {
        this._protocolError({ direction: 'out', type, error: 'too_large', path: 'text',
          message: `max_frame ${this._maxFrame} is too small for a ${type} frame` });
        return false;
      }
      for (const piece of pieces) {
        if (!this.send({ type, request_id: requestId, text: piece })) return false;
      }
      return true;
    }

    /**
     * The done or error frame ending requestId was refused here: the sidecar
     * would wait for an end that never comes, so send the smallest valid end
     * there is, an `internal` error naming the reason. Nothing is sent when
     * the frame was not refused but could not go out (no connection). False.
     */
    _failRefused(requestId, type) {
      const why = this._lastRefusal;
      this._lastRefusal = null;
      if (!why || !this._isOpen()) return false;
      const message = `browser script error: its ${type} frame was refused before sending `
        + `(${why.error}${why.path ? ' at ' + why.path : ''}${why.message ? ': ' + why.message : ''})`;
      this.send({ type: 'error', request_id: requestId, code: 'internal',
        message: truncateUtf8(message, this._msgMaxLen.error) });
      return false;
    }

    _finish(requestId) {
      this._openRequests.delete(requestId);
      if (this.tracker) this.tracker.end(requestId);
    }

    // ── connection ──

    _resetSession() {
      this._browserId = undefined;
      this._heartbeatMs = this._defaultHeartbeatMs;
      this._maxFrame = this._defaultMaxFrame;
    }

    _isOpen() {
      return !!this._ws && this._ws.readyState === WS_OPEN && (this._state === 'open' || this._state === 'ready');
    }

    _setState(state, info) {
      if (state === this._state) return;
      this._state = state;
      this._call('onState', state, info);
    }

    _connect() {
      this._reconnectTimer = null;
      if (!this._running || this._ws) return;                  // at most one socket
      this._resetSession();
      this._setState('connecting');
      let ws;
      try {
        ws = new this._WebSocket(this.url);
      } catch (e) {
        this._log('error', `cannot connect to ${this.url}: ${e && e.message}`);
        this._setState('closed');
        this._scheduleReconnect();
        return;
      }
      this._ws = ws;
      ws.onopen = () => this._guard(() => this._onOpen(ws));
      ws.onmessage = (ev) => this._guard(() => this._onMessage(ws, ev && ev.data));
      ws.onerror = (ev) => this._guard(() => {
        this._log('warn', `socket error${ev && ev.message ? ': ' + ev.message : ''}`);
      });
      ws.onclose = (ev) => this._guard(() => {
        if (ws !== this._ws) return;
        this._gone(ws, { code: ev && ev.code, reason: ev && ev.reason });
      });
      this._armDeadTimer(ws);
    }

    _onOpen(ws) {
      if (ws !== this._ws) return;
      const hello = compact({
        type: 'hello', v: 1, token: this.token, kind: this.kind, id: this.id,
        name: this.name, agent: this.agent, capabilities: this.capabilities,
      });
      if (!this._write(hello)) {                              // hello goes first, before 'open' is announced
        this._log('error', 'hello could not be sent; dropping the connection');
        this._drop(ws, 4000, 'bad hello');
        return;
      }
      this._setState('open');
    }

    _onMessage(ws, data) {
      if (ws !== this._ws) return;
      this._armDeadTimer(ws);
      if (typeof data !== 'string') {
        this._protocolError({ direction: 'in', error: 'not_object', path: '', message: 'binary frame' });
        return;
      }
      if (data.length * 3 > this._maxFrame && utf8Length(data) > this._maxFrame) {
        this._protocolError({ direction: 'in', error: 'too_large', path: '',
          message: `incoming frame exceeds max_frame ${this._maxFrame}` });
        return;
      }
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (e) {
        this._protocolError({ direction: 'in', error: 'not_object', path: '', message: 'invalid JSON' });
        return;
      }
      const r = this._validator ? this._validator.validate(frame, 'sidecar')
        : isPlainObject(frame) && typeof frame.type === 'string' ? { ok: true }
          : fail('not_object', '', 'a frame must be a JSON object with a string type');
      if (!r.ok) {
        this._protocolError(Object.assign({ direction: 'in', type: isPlainObject(frame) ? frame.type : undefined, frame }, r));
        return;
      }
      this._dispatch(ws, frame);
    }

    _dispatch(ws, frame) {
      const tracker = this.tracker;
      switch (frame.type) {
        case 'welcome':
          this._browserId = frame.browser_id;
          this._applyWelcome(frame);
          this._armStableTimer(ws);
          this._armDeadTimer(ws);
          this._schedulePing(ws);
          this._setState('ready');
          break;
        case 'ping':
          this.send(compact({ type: 'pong', t: frame.t }));
          break;
        case 'pong':
          break;                                              // receiving it was the point
        case 'task':
          this._onTask(frame);
          break;
        case 'cancel':
          this._openRequests.delete(frame.request_id);
          if (tracker) tracker.cancel(frame.request_id, frame.reason || 'cancelled');
          this._call('onCancel', frame);
          break;
        case 'pause':
          if (tracker) tracker.pause(frame.request_id);
          this._call('onPause', frame);
          break;
        case 'resume':
          if (tracker) tracker.resume(frame.request_id);
          this._call('onResume', frame);
          break;
        case 'command':
          this._call('onCommand', frame);
          break;
        case 'error':
          this._call('onError', frame);
          break;
        default:
          this._log('debug', `ignoring ${frame.type} frame`);
      }
    }

    /**
     * heartbeat_ms and max_frame from a welcome, clamped to the spec's bounds
     * (without a spec nothing else checks them: a heartbeat of 1 ms would be a
     * ping storm, a max_frame of 1 byte would refuse every frame).
     */
    _applyWelcome(frame) {
      const b = this._welcomeBounds;
      const num = (v) => typeof v === 'number' && Number.isFinite(v);
      if (num(frame.heartbeat_ms)) {
        const hb = Math.min(b.heartbeatMax, Math.max(b.heartbeatMin, Math.round(frame.heartbeat_ms)));
        if (hb !== frame.heartbeat_ms) this._log('warn', `welcome heartbeat_ms ${frame.heartbeat_ms} clamped to ${hb}`);
        this._heartbeatMs = hb;
      }
      if (num(frame.max_frame)) {
        const mf = Math.max(b.maxFrameMin, Math.floor(frame.max_frame));
        if (mf !== frame.max_frame) this._log('warn', `welcome max_frame ${frame.max_frame} raised to ${mf}`);
        this._maxFrame = mf;
      }
    }

    _onTask(frame) {
      const id = frame.request_id;
      const task = this.tracker ? this.tracker.begin(id) : undefined;
      this._openRequests.add(id);
      if (!this.onTask) {
        this.sendError(id, 'internal', 'this browser has no task handler');
        return;
      }
      const failTask = (e) => {
        this._log('error', `task ${id} failed: ${e && e.stack ? e.stack : e}`);
        if (this._openRequests.has(id)) {
          this.sendError(id, 'internal', `browser script error: ${e && e.message ? e.message : e}`);
        }
      };
      let ret;
      try {
        ret = this.onTask(frame, task);
      } catch (e) {
        failTask(e);
        return;
      }
      if (ret && typeof ret.then === 'function') ret.then(null, failTask);
    }

    /** Call a user handler; never let it throw into a socket event. */
    _call(name, ...args) {
      const fn = this[name];
      if (typeof fn !== 'function') return;
      try {
        const ret = fn.apply(this, args);
        if (ret && typeof ret.then === 'function') {
          ret.then(null, (e) => this._log('error', `${name} rejected: ${e && e.stack ? e.stack : e}`));
        }
      } catch (e) {
        this._log('error', `${name} threw: ${e && e.stack ? e.stack : e}`);
      }
    }

    _guard(fn) {
      try { fn(); } catch (e) { this._log('error', `internal error: ${e && e.stack ? e.stack : e}`); }
    }

    _protocolError(info) {
      this._log('warn', `protocol error (${info.direction}): ${info.error} ${info.path || ''} ${info.message || ''}`);
      this._call('onProtocolError', info);
      // after the callback: a frame it sends must not make us forget why
      // this one was refused (sendDone and sendError act on it)
      if (info.direction === 'out') this._lastRefusal = info;
    }

    /**
     * The attempts count from zero again once this connection has lasted
     * backoff.stableMs: a bridge that welcomes and then drops the client at
     * once is still backed off, not retried every initialMs for ever.
     */
    _armStableTimer(ws) {
      if (this._stableTimer !== null) this._clearTimeout(this._stableTimer);
      this._stableTimer = this._setTimeout(() => this._guard(() => {
        this._stableTimer = null;
        if (ws === this._ws) this._attempt = 0;
      }), this._backoff.stableMs);
    }

    _armDeadTimer(ws) {
      if (this._deadTimer !== null) this._clearTimeout(this._deadTimer);
      const ms = this._deadAfterMs || 3 * this._heartbeatMs;
      this._deadTimer = this._setTimeout(() => this._guard(() => {
        this._deadTimer = null;
        if (ws !== this._ws) return;
        this._log('warn', `nothing received for ${ms} ms; reconnecting`);
        this._drop(ws, 4000, 'heartbeat timeout');
      }), ms);
    }

    _schedulePing(ws) {
      if (this._pingTimer !== null) this._clearTimeout(this._pingTimer);
      this._pingTimer = this._setTimeout(() => this._guard(() => {
        this._pingTimer = null;
        if (ws !== this._ws) return;
        this.send({ type: 'ping', t: Date.now() });
        this._schedulePing(ws);
      }), this._heartbeatMs);
    }

    /**
     * Close `ws` ourselves without waiting for its close event, then clean up
     * (and reconnect unless stopped). A normal close (1000) of an open socket
     * is a polite closing handshake; otherwise the socket is just dropped.
     */
    _drop(ws, code, reason) {
      ws.onopen = noop;
      ws.onmessage = noop;
      ws.onclose = noop;
      ws.onerror = noop;                                      // ws emits 'error' on abort: keep a listener
      try {
        const polite = code === 1000 && ws.readyState === WS_OPEN;
        if (!polite && typeof ws.terminate === 'function') ws.terminate();   // Node's ws package
        else ws.close(code, reason);
      } catch (e) {
        this._log('debug', `close failed: ${e && e.message}`);
      }
      this._gone(ws, { code, reason });
    }

    /** The socket is finished: clear its timers, cancel work, maybe reconnect. */
    _gone(ws, info) {
      if (ws !== this._ws) return;
      this._ws = null;
      for (const t of ['_deadTimer', '_pingTimer', '_stableTimer']) {
        if (this[t] !== null) { this._clearTimeout(this[t]); this[t] = null; }
      }
      this._openRequests.clear();
      if (this.tracker && this.cancelOnClose) this.tracker.cancelAll('connection_lost');
      this._log('info', `connection closed${info && info.code ? ' (' + info.code + ')' : ''}`);
      if (info && this._noRetry.has(info.code)) {
        // the bridge refused this client: retrying would be refused again
        this._running = false;
        this._log('error', `the bridge refused this client (${info.code}${info.reason ? ': ' + info.reason : ''}); not reconnecting`);
        this._setState('refused', info);
        return;
      }
      this._setState('closed', info);
      this._scheduleReconnect();
    }

    _scheduleReconnect() {
      if (!this._running || this._reconnectTimer !== null || this._ws) return;
      const delay = this.backoffDelay(this._attempt);
      this._attempt++;
      this._log('info', `reconnecting in ${delay} ms`);
      this._reconnectTimer = this._setTimeout(() => this._guard(() => this._connect()), delay);
    }
  }

  const api = {
    createValidator,
    utf8Length,
    truncateUtf8,
    splitText,
    isPlainObject,
    fieldLimit,
    tabId,
    BridgeClient,
    TaskTracker,
    VALIDATION_ERRORS,
    DEFAULT_LIMITS,
    FIELD_LIMITS,
  };

  if (typeof module === 'object' && module && module.exports) module.exports = api;
  globalThis.ChatbridgeProtocol = api;
})();
