/*
 * driver-lmarena.js — everything about the LMArena site (lmarena.ai, and its
 * new home arena.ai) that the chatbridge userscript needs, and nothing about
 * the bridge connection:
 *
 *   - buildSiteBody(task)         the forged history the site's "retry" endpoint
 *                                 regenerates from (fresh ids, parent chain,
 *                                 positions, statuses, attachments, modelId)
 *   - siteRetryPath / openSiteStream
 *                                 PUT /nextjs-api/stream/retry-evaluation-session-
 *                                 message/<session>/messages/<message>, falling
 *                                 back to /api/stream/... when it answers 404
 *   - createStreamParser          the site's AI-SDK line stream: a0/b0 text, ag/bg
 *                                 reasoning, a2 images, a3 errors, ad/bd finish,
 *                                 incremental, UTF-8 safe, bounded
 *   - classifyHttpError / classifyStreamError / isChallengePage
 *                                 site failures → protocol error codes, and the
 *                                 Cloudflare / human-verification page
 *   - matchCaptureUrl             the page's own retry request, for id capture
 *   - collectFlightPayloads / extractModels
 *                                 the model list from the page's self.__next_f
 *   - runTask / probeSite         one task from site request to typed frames
 *                                 (through an injected `io`), and the cheap probe
 *                                 that tells when a verification page is gone
 *
 * Plain ES2020, no I/O of its own (fetch and the frame senders are passed
 * in), so it runs unchanged in the page and in Node's tests. It uses the
 * shared protocol client (cb-protocol.js) for UTF-8 lengths and the
 * protocol's bounds. Loading: in the userscript it is concatenated after
 * cb-protocol.js and sets globalThis.ChatbridgeArenaDriver (the build's
 * private globalThis; without cb-protocol.js it sets nothing, and main.js
 * says so); in Node, require() it.
 */
(function () {
  'use strict';

  const P = globalThis.ChatbridgeProtocol
    || (typeof require === 'function' ? require('../common/cb-protocol.js') : undefined);
  if (!P || typeof P.fieldLimit !== 'function') return;

  // ───────────────────────────── limits ─────────────────────────────

  const FL = P.FIELD_LIMITS;
  const LIMITS = Object.freeze({
    maxLineChars: 16 * 1024 * 1024,      // one stream record (an a2 data-URL image is the big one)
    maxErrorBodyBytes: 64 * 1024,        // what is read of an error or probe response
    maxErrorTextChars: 600,              // site text quoted in an error message
    maxLineQuoteChars: 200,              // an unparseable line quoted in protocol_error
    probeTimeoutMs: 10000,               // the needs-human probe gives up after this long
    maxFlightChars: 64 * 1024 * 1024,    // page payload scanned for models
    maxModelObjectChars: 20000,          // one model object in the page payload
    // the protocol's bounds (protocol-v1.json, through cb-protocol.js)
    maxImageUrlBytes: FL['image.url.max_len'],
    maxMimeBytes: FL['image.mime.max_len'],
    maxFinishReasonBytes: FL['done.finish_reason.max_len'],
    maxUsage: FL['done.usage.prompt_tokens.max'],
    maxTotalUsage: FL['done.usage.total_tokens.max'],
    maxModelIdBytes: FL['models.models[].id.max_len'],
    maxOrganizationBytes: FL['models.models[].organization.max_len'],
    maxModels: FL['models.models.max_items'],
    maxRetryAfter: FL['error.retry_after.max'],
  });

  const PREFIXES = Object.freeze(['nextjs-api', 'api']);
  const SITE_HOSTS = /(^|\.)(lmarena\.ai|arena\.ai)$/i;
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const SAFE_ID_RE = /^[A-Za-z0-9-]{1,64}$/;
  const CAPTURE_PATH_RE = /^\/(nextjs-api|api)\/stream\/retry-evaluation-session-message\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/messages\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/?$/i;

  // ───────────────────────────── helpers ─────────────────────────────

  const isObject = P.isPlainObject;
  const utf8Length = P.utf8Length;

  /** At most n UTF-16 units of s, with an ellipsis when cut. */
  function clip(s, n) {
    s = String(s);
    if (s.length <= n) return s;
    let cut = n;
    const c = s.charCodeAt(cut - 1);
    if (c >= 0xd800 && c <= 0xdbff) cut--;                     // never split a surrogate pair
    return s.slice(0, cut) + '…';
  }

  /** Visible text of an HTML page (scripts and styles dropped, whitespace collapsed). */
  function stripHtml(text) {
    return String(text)
      .replace(/<(script|style|noscript)\b[\s\S]*?<\/\1\s*>/gi, ' ')
      .replace(/<!--[\s\S]*?-->/g, ' ')
      .replace(/<[^>]*>/g, ' ')
      .replace(/&nbsp;/gi, ' ')
      .replace(/&lt;/gi, '<').replace(/&gt;/gi, '>').replace(/&quot;/gi, '"')
      .replace(/&#39;|&apos;/gi, "'").replace(/&amp;/gi, '&')
      .replace(/\s+/g, ' ')
      .trim();
  }

  function looksLikeHtml(text) {
    return /^\s*(<!doctype html|<html[\s>]|<head[\s>]|<body[\s>])/i.test(text)
      || /<\/(html|body|head|title)>/i.test(text);
  }

  /**
   * What a site response body says, briefly: the "error"/"message" of a JSON
   * body, the visible text of an HTML page, or the text itself; bounded.
   */
  function bodySummary(text) {
    const t = String(text || '').trim();
    if (!t) return '';
    if (t[0] === '{') {
      try {
        const j = JSON.parse(t);
        const m = errorText(j);
        if (m) return clip(m, LIMITS.maxErrorTextChars);
      } catch (_) { /* not JSON after all */ }
    }
    if (looksLikeHtml(t)) return clip(stripHtml(t), LIMITS.maxErrorTextChars);
    return clip(t.replace(/\s+/g, ' '), LIMITS.maxErrorTextChars);
  }

  /** The message inside an error value: a string, {error}, {message}, {error:{message}}. */
  function errorText(v) {
    if (typeof v === 'string') return v;
    if (!isObject(v)) return v === undefined || v === null ? '' : JSON.stringify(v);
    if (typeof v.message === 'string' && v.message) return v.message;
    if (typeof v.error === 'string' && v.error) return v.error;
    if (isObject(v.error)) return errorText(v.error);
    if (typeof v.detail === 'string') return v.detail;
    try { return JSON.stringify(v); } catch (_) { return String(v); }
  }

  /** A headers-like (Headers, Map, plain object, or undefined) → get(name) or null. */
  function headerGetter(headers) {
    if (!headers) return () => null;
    if (typeof headers.get === 'function') return (n) => headers.get(n);
    const lower = {};
    for (const k of Object.keys(headers)) lower[k.toLowerCase()] = headers[k];
    return (n) => (lower[n.toLowerCase()] === undefined ? null : String(lower[n.toLowerCase()]));
  }

  /**
   * Retry-After (delta-seconds or an HTTP date) → whole seconds within the
   * protocol's range, or undefined.
   */
  function parseRetryAfter(value, nowMs) {
    if (value === null || value === undefined) return undefined;
    const s = String(value).trim();
    if (!s) return undefined;
    let secs;
    if (/^\d+(\.\d+)?$/.test(s)) secs = Number(s);
    else {
      const t = Date.parse(s);
      if (Number.isNaN(t)) return undefined;
      secs = (t - (nowMs === undefined ? Date.now() : nowMs)) / 1000;
    }
    if (!Number.isFinite(secs)) return undefined;
    return Math.min(LIMITS.maxRetryAfter, Math.max(0, Math.ceil(secs)));
  }

  // ─────────────────── Cloudflare / human verification ──────────────────

  const CHALLENGE_PATTERNS = [
    /<title>\s*Just a moment\.\.\.\s*<\/title>/i,
    /Enable JavaScript and cookies to continue/i,
    // not any /cdn-cgi/challenge-platform/ path: Cloudflare's JavaScript
    // Detections put /cdn-cgi/challenge-platform/scripts/jsd/main.js into
    // ordinary pages; a challenge page loads its .../orchestrate/... script
    /\bcf-chl-|\bcf_chl_|__cf_chl_|\/cdn-cgi\/challenge-platform\/(?:h\/[a-z]\/)?orchestrate\//i,
    /id=["']challenge-(form|running|stage|body-text)["']/i,
    /<title>\s*Attention Required! \| Cloudflare\s*<\/title>/i,
    /\bcf-turnstile\b|challenges\.cloudflare\.com\/turnstile/i,
    /Verify you are human/i,
  ];

  /**
   * True when a response is a Cloudflare (or similar) human-verification page
   * rather than the site's answer. `headers` is optional.
   */
  function isChallengePage(text, headers) {
    const get = headerGetter(headers);
    const mitigated = get('cf-mitigated');
    if (mitigated && /challenge/i.test(mitigated)) return true;
    if (!text) return false;
    const t = String(text);
    return CHALLENGE_PATTERNS.some((re) => re.test(t));
  }

  // ──────────────────────────── site errors ───────────────────────────

  /** An error description: what goes into an `error` frame. */
  function err(code, message, extra) {
    return Object.assign({ code, message }, extra || {});
  }

  function needsHumanError(where) {
    return err('needs_human',
      `LMArena answered with a human-verification (Cloudflare) page${where ? ' ' + where : ''}. `
      + 'Open the LMArena tab, complete the check there, then retry; the tab reports itself ready '
      + 'again on its own (or reload it).',
      { status: 503, retryable: true, retryAfter: 30 });
  }

  /**
   * A non-2xx site response → { code, message, status?, retryable, retryAfter? }.
   * `headers` is a Headers object or a plain map; `bodyText` what was read of
   * the body (bounded by the caller).
   */
  function classifyHttpError(status, headers, bodyText, nowMs) {
    const get = headerGetter(headers);
    if (isChallengePage(bodyText, headers)) return needsHumanError(`(HTTP ${status})`);
    const summary = bodySummary(bodyText);
    const said = summary ? `: ${summary}` : '';
    const retryAfter = parseRetryAfter(get('retry-after'), nowMs);
    const withRetry = (o) => (retryAfter === undefined ? o : Object.assign(o, { retryAfter }));
    if (status === 401) {
      return err('unauthorized', `LMArena rejected the session (HTTP 401)${said}. `
        + 'Log in to LMArena in this browser, and make sure the configured session belongs to this account.',
        { status: 401, retryable: false });
    }
    if (status === 403) {
      const captcha = /captcha/i.test(summary);
      return err('forbidden', `LMArena refused the request (HTTP 403)${said}.`
        + (captcha ? ' The site wants a reCAPTCHA check: use the page by hand once, then retry.' : ''),
        { status: 403, retryable: false });
    }
    if (status === 404) {
      return err('not_found', `LMArena does not know this session or message (HTTP 404)${said}. `
        + 'Capture fresh ids (chatbridgectl capture).', { status: 404, retryable: false });
    }
    if (status === 405) {
      return err('site_error', `LMArena refused the method (HTTP 405)${said}. `
        + 'The site may have moved (lmarena.ai → arena.ai): open the bridge tab on the current domain.',
        { status: 502, retryable: false });
    }
    if (status === 413) {
      return err('bad_request', `LMArena refused the request as too large (HTTP 413)${said}. `
        + 'Send smaller attachments.', { status: 413, retryable: false });
    }
    if (status === 429) {
      return withRetry(err('rate_limited', `LMArena is rate limiting this session (HTTP 429)${said}.`,
        { status: 429, retryable: true }));
    }
    if (status >= 500) {
      return withRetry(err('site_error', `LMArena failed (HTTP ${status})${said}.`,
        { retryable: true }));
    }
    if (status === 400 || status === 422) {
      return err('bad_request', `LMArena refused the request (HTTP ${status})${said}.`,
        { status: 400, retryable: false });
    }
    return err('site_error', `LMArena answered HTTP ${status}${said}.`, { retryable: false });
  }

  /**
   * An error the site reported inside its stream (an a3 record) → an error
   * description with the most specific code the text allows.
   */
  function classifyStreamError(value) {
    const text = clip(errorText(value) || 'unknown error', LIMITS.maxErrorTextChars);
    const said = `LMArena reported an error in its stream: ${text}`;
    if (isChallengePage(text)) return needsHumanError('(in the stream)');
    if (/rate.?limit|too many requests/i.test(text)) {
      return err('rate_limited', said, { status: 429, retryable: true });
    }
    if (/captcha/i.test(text)) return err('forbidden', said, { status: 403, retryable: false });
    if (/does not have access|unauthori[sz]ed|not logged in|sign in|log in/i.test(text)) {
      return err('unauthorized', said, { status: 401, retryable: false });
    }
    if (/content.?filter|moderat|policy|flagged|inappropriate|safety/i.test(text)) {
      return err('content_filter', said, { status: 400, retryable: false });
    }
    if (/too (large|long)|context length|maximum context|token limit/i.test(text)) {
      return err('bad_request', said, { status: 400, retryable: false });
    }
    return err('site_error', said, { retryable: true });
  }

  // ─────────────────────────── the site request ─────────────────────────

  function siteRetryPath(prefix, sessionId, messageId) {
    return `/${prefix}/stream/retry-evaluation-session-message/${encodeURIComponent(sessionId)}`
      + `/messages/${encodeURIComponent(messageId)}`;
  }

  /** The answering side: battle_target in battle mode, else a. */
  function answerSide(arena) {
    if (arena && arena.mode === 'battle') {
      return String(arena.battle_target || 'a').toLowerCase() === 'b' ? 'b' : 'a';
    }
    return 'a';
  }

  /** The position of a message the module did not place (it normally does). */
  function defaultPosition(role, arena) {
    if (arena && arena.mode === 'battle') return answerSide(arena);
    return role === 'system' ? 'b' : 'a';
  }

  /** null when the task can be done; else a bad_request error description. */
  function checkTask(task) {
    const arena = task && task.arena;
    if (!isObject(arena)) {
      return err('bad_request', 'This nginx location has no LMArena session configured: add '
        + '"chatbridge_arena DIR;" (a directory with LMArena Bridge\'s config.jsonc, models.json and '
        + 'model_endpoint_map.json) to the location, then reload nginx.', { status: 400, retryable: false });
    }
    for (const k of ['session_id', 'message_id']) {
      if (typeof arena[k] !== 'string' || !SAFE_ID_RE.test(arena[k])) {
        return err('bad_request', `arena.${k} is missing or not an id (${clip(JSON.stringify(arena[k]) || 'undefined', 80)}); `
          + 'capture a session with chatbridgectl capture.', { status: 400, retryable: false });
      }
    }
    if (arena.model_uuid !== undefined && arena.model_uuid !== null && typeof arena.model_uuid !== 'string') {
      return err('bad_request', 'arena.model_uuid must be a string or null.', { status: 400, retryable: false });
    }
    if (!Array.isArray(task.messages) || task.messages.length === 0) {
      return err('bad_request', 'The task has no messages.', { status: 400, retryable: false });
    }
    if (task.op !== 'chat' && task.op !== 'image') {
      return err('bad_request', `Unknown task op ${clip(JSON.stringify(task.op), 40)}.`, { status: 400, retryable: false });
    }
    return null;
  }

  function isImageTask(task) {
    return task.op === 'image' || (task.arena && task.arena.model_type === 'image');
  }

  /**
   * The site's request body for a task: the whole conversation as a fresh
   * linear chain (new ids, each message's parent the one before), the last
   * message pending (image tasks: every message success), and the model.
   * The site takes no sampling parameters: task.params is not used.
   * opts: { uuid() , now() } for tests.
   */
  function buildSiteBody(task, opts) {
    opts = opts || {};
    const uuid = opts.uuid || (() => crypto.randomUUID());
    const nowMs = (opts.now || Date.now)();
    const arena = task.arena;
    const image = isImageTask(task);
    const last = task.messages.length - 1;
    let parent = null;
    const messages = task.messages.map((m, i) => {
      const id = uuid();
      const at = new Date(nowMs + i).toISOString();         // strictly ordered
      const msg = {
        id,
        role: m.role,
        content: typeof m.content === 'string' ? m.content : '',
        evaluationId: null,
        evaluationSessionId: arena.session_id,
        parentMessageIds: parent ? [parent] : [],
        experimental_attachments: Array.isArray(m.attachments)
          ? m.attachments.map((a) => ({ name: a.name, contentType: a.contentType, url: a.url }))
          : [],
        failureReason: null,
        metadata: null,
        participantPosition: m.position === 'a' || m.position === 'b' ? m.position : defaultPosition(m.role, arena),
        createdAt: at,
        updatedAt: at,
        status: !image && i === last ? 'pending' : 'success',
      };
      parent = id;
      return msg;
    });
    return { messages, modelId: typeof arena.model_uuid === 'string' && arena.model_uuid ? arena.model_uuid : null };
  }

  /**
   * PUT the body to the retry endpoint; on 404 try the other prefix.
   * io.fetch: the page's fetch. state.prefix remembers the prefix that worked.
   * Resolves { response, prefix } (the last response when every prefix 404s).
   */
  async function openSiteStream(io, task, body, signal, state) {
    const arena = task.arena;
    const first = state && state.prefix && PREFIXES.includes(state.prefix) ? state.prefix : PREFIXES[0];
    const order = [first].concat(PREFIXES.filter((p) => p !== first));
    const text = JSON.stringify(body);
    let response = null;
    let prefix = null;
    for (let i = 0; i < order.length; i++) {
      prefix = order[i];
      response = await io.fetch(siteRetryPath(prefix, arena.session_id, arena.message_id), {
        method: 'PUT',
        headers: { 'Content-Type': 'text/plain;charset=UTF-8', Accept: '*/*' },
        body: text,
        credentials: 'include',
        cache: 'no-store',
        signal,
      });
      if (response.status !== 404 || i === order.length - 1) break;
      await discard(response);
    }
    if (state && response && response.status !== 404) state.prefix = prefix;
    return { response, prefix };
  }

  async function discard(response) {
    try {
      if (response.body && typeof response.body.cancel === 'function') await response.body.cancel();
    } catch (_) { /* nothing to do */ }
  }

  /** promise, or a rejection with the signal's reason as soon as `signal` (optional) aborts. */
  function untilAborted(promise, signal) {
    if (!signal) return promise;
    if (signal.aborted) return Promise.reject(signal.reason);
    let onAbort;
    const aborted = new Promise((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
    });
    return Promise.race([promise, aborted]).finally(() => signal.removeEventListener('abort', onAbort));
  }

  /**
   * Up to maxBytes of a response body as text (the rest is cancelled). With
   * `signal`, rejects when it aborts, even if the body never ends.
   */
  async function readBounded(response, maxBytes, signal) {
    if (!response.body || typeof response.body.getReader !== 'function') {
      const t = await untilAborted(response.text(), signal);
      return t.length > maxBytes ? t.slice(0, maxBytes) : t;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder('utf-8');
    let out = '';
    let bytes = 0;
    try {
      for (;;) {
        const r = await untilAborted(reader.read(), signal);
        if (r.done) break;
        const room = maxBytes - bytes;
        const chunk = r.value.byteLength > room ? r.value.subarray(0, room) : r.value;
        bytes += chunk.byteLength;
        out += decoder.decode(chunk, { stream: true });
        if (bytes >= maxBytes) break;
      }
    } finally {
      const cancelled = reader.cancel().catch(() => { /* already finished */ });
      if (!(signal && signal.aborted)) await cancelled;        // a stuck body: do not wait for it
    }
    return out + decoder.decode();
  }

  // ─────────────────────────── the stream parser ─────────────────────────

  const RECORD_RE = /^([ab])([0-9a-z]):/;

  /** Protocol usage from the site's usage object (camelCase or snake_case), or undefined. */
  function mapUsage(u) {
    if (!isObject(u)) return undefined;
    const pick = (...names) => {
      for (const n of names) {
        const v = u[n];
        if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= LIMITS.maxUsage) return v;
      }
      return undefined;
    };
    const out = {};
    const p = pick('promptTokens', 'prompt_tokens', 'inputTokens', 'input_tokens');
    const c = pick('completionTokens', 'completion_tokens', 'outputTokens', 'output_tokens');
    const r = pick('reasoningTokens', 'reasoning_tokens');
    let t = pick('totalTokens', 'total_tokens');
    if (t === undefined && p !== undefined && c !== undefined) t = p + c;
    if (p !== undefined) out.prompt_tokens = p;
    if (c !== undefined) out.completion_tokens = c;
    if (r !== undefined) out.reasoning_tokens = r;
    if (t !== undefined && t <= LIMITS.maxTotalUsage) out.total_tokens = t;
    return Object.keys(out).length ? out : undefined;
  }

  function guessMime(url) {
    const m = /^data:([a-z0-9.+-]+\/[a-z0-9.+-]+)[;,]/i.exec(url);
    if (m) return m[1].toLowerCase();
    const ext = /\.(png|jpe?g|gif|webp|avif|svg)(?:[?#]|$)/i.exec(url);
    if (!ext) return undefined;
    const e = ext[1].toLowerCase();
    return e === 'jpg' || e === 'jpeg' ? 'image/jpeg' : e === 'svg' ? 'image/svg+xml' : `image/${e}`;
  }

  /**
   * An incremental parser for the site's stream.
   *
   *   const p = createStreamParser({ side: 'a' });
   *   events = p.push(uint8ArrayOrString)   … repeatedly
   *   events = p.end()
   *
   * Events: {type:'delta',text} {type:'reasoning',text} {type:'image',url,mime?}
   *         {type:'finish',reason,usage?} {type:'error', code, message, ...}
   * After an error or the finish record of our side the parser is closed and
   * returns nothing more. Records of the other side are checked for syntax
   * and otherwise ignored.
   */
  function createStreamParser(opts) {
    opts = opts || {};
    const side = opts.side === 'b' ? 'b' : 'a';
    const maxLine = opts.maxLineChars || LIMITS.maxLineChars;
    const decoder = new TextDecoder('utf-8');
    let pending = [];                                            // pieces of the incomplete line
    let pendingLen = 0;
    let lineNo = 0;
    let closed = false;
    const seen = { text: 0, reasoning: 0, images: 0, records: 0 };

    function fail(events, code, message) {
      events.push({ type: 'error', code, message, retryable: code !== 'protocol_error' });
      closed = true;
    }

    function protocolError(events, line, why) {
      fail(events, 'protocol_error',
        `LMArena's stream could not be parsed (${why}) at line ${lineNo}: ${JSON.stringify(clip(line, LIMITS.maxLineQuoteChars))}`);
    }

    function parseJson(line, text, events) {
      try {
        return { ok: true, value: JSON.parse(text) };
      } catch (_) {
        protocolError(events, line, 'invalid JSON');
        return { ok: false };
      }
    }

    /** One complete line → events. */
    function onLine(raw, events) {
      lineNo++;
      let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() === '') return;
      if (line.startsWith('data:')) {                           // an SSE framing of the same records
        line = line.slice(line[5] === ' ' ? 6 : 5);
        if (line.trim() === '[DONE]' || line.trim() === '') return;
      } else if (line[0] === ':') {
        return;                                                  // an SSE comment
      }
      const m = RECORD_RE.exec(line);
      if (!m) {
        protocolError(events, line, 'not a record');
        return;
      }
      const recSide = m[1];
      const code = m[2];
      const parsed = parseJson(line, line.slice(3), events);
      if (!parsed.ok) return;
      seen.records++;
      if (recSide !== side) return;                              // the other model's answer
      onRecord(code, parsed.value, line, events);
    }

    function onRecord(code, v, line, events) {
      switch (code) {
        case '0':
          if (typeof v !== 'string') { protocolError(events, line, 'text is not a string'); return; }
          if (v) { seen.text += v.length; events.push({ type: 'delta', text: v }); }
          return;
        case 'g':
          if (typeof v !== 'string') { protocolError(events, line, 'reasoning is not a string'); return; }
          if (v) { seen.reasoning += v.length; events.push({ type: 'reasoning', text: v }); }
          return;
        case '2':
          if (!Array.isArray(v)) { protocolError(events, line, 'data is not an array'); return; }
          for (const el of v) {
            if (!isObject(el) || el.type !== 'image') continue;
            const url = typeof el.image === 'string' ? el.image : typeof el.url === 'string' ? el.url : '';
            if (!url) { protocolError(events, line, 'image without a url'); return; }
            if (utf8Length(url) > LIMITS.maxImageUrlBytes) {
              fail(events, 'site_error', `LMArena sent an image URL of ${utf8Length(url)} bytes; at most `
                + `${LIMITS.maxImageUrlBytes} fit the protocol.`);
              return;
            }
            let mime = typeof el.mimeType === 'string' ? el.mimeType
              : typeof el.contentType === 'string' ? el.contentType : guessMime(url);
            if (mime && utf8Length(mime) > LIMITS.maxMimeBytes) mime = undefined;
            seen.images++;
            events.push(mime ? { type: 'image', url, mime } : { type: 'image', url });
          }
          return;
        case '3': {
          const e = classifyStreamError(v);
          events.push(Object.assign({ type: 'error' }, e));
          closed = true;
          return;
        }
        case 'd': {
          if (!isObject(v)) { protocolError(events, line, 'finish record is not an object'); return; }
          const reason = typeof v.finishReason === 'string' ? v.finishReason
            : typeof v.finish_reason === 'string' ? v.finish_reason : 'stop';
          const usage = mapUsage(v.usage);
          if (reason === 'error') {
            fail(events, 'site_error', 'LMArena finished the answer with finishReason "error".');
            return;
          }
          // bounded in UTF-8 bytes, as the protocol counts (a character count lets
          // a non-ASCII reason make the done frame too_long)
          const ev = { type: 'finish', reason: P.truncateUtf8(reason, LIMITS.maxFinishReasonBytes) };
          if (usage) ev.usage = usage;
          events.push(ev);
          closed = true;
          return;
        }
        default:
          // other AI-SDK records (e/f step markers, c tool-call deltas, 8 annotations, …):
          // well-formed and not ours to forward
      }
    }

    /** The first n characters of the incomplete line (for a quote), without joining it all. */
    function pendingHead(n) {
      let head = '';
      for (let i = 0; i < pending.length && head.length < n; i++) head += pending[i].slice(0, n - head.length);
      return head;
    }

    function dropPending() {
      pending = [];
      pendingLen = 0;
    }

    function tooLong(events, head) {
      lineNo++;
      protocolError(events, head, `a line longer than ${maxLine} characters`);
      dropPending();
    }

    /**
     * Take in one decoded piece of the stream: handle every line it completes.
     * An incomplete line is kept as a list of pieces, joined once when its
     * newline arrives, so a big record (a data-URL image) that comes in many
     * chunks costs time in proportion to its size, not to its size squared.
     */
    function feed(str, events) {
      let start = 0;
      while (!closed) {
        const nl = str.indexOf('\n', start);
        if (nl < 0) break;
        if (pendingLen + (nl - start) > maxLine) {
          tooLong(events, pendingLen ? pendingHead(LIMITS.maxLineQuoteChars + 1) : str.slice(start, nl));
          return;
        }
        let line = str.slice(start, nl);
        if (pendingLen) {
          pending.push(line);
          line = pending.join('');
          dropPending();
        }
        onLine(line, events);
        start = nl + 1;
      }
      if (closed) { dropPending(); return; }
      if (start < str.length) {
        pending.push(start ? str.slice(start) : str);
        pendingLen += str.length - start;
        if (pendingLen > maxLine) tooLong(events, pendingHead(LIMITS.maxLineQuoteChars + 1));
      }
    }

    return {
      get closed() { return closed; },
      get seen() { return Object.assign({}, seen); },
      push(chunk) {
        const events = [];
        if (closed) return events;
        feed(typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }), events);
        return events;
      },
      end() {
        const events = [];
        if (closed) return events;
        const rest = decoder.decode();
        if (rest || pendingLen) feed(rest + '\n', events);     // a last line without its newline
        if (closed) return events;
        closed = true;
        const got = seen.text + seen.reasoning + seen.images;
        if (got === 0) {
          events.push({ type: 'error', code: 'site_error', retryable: true,
            message: 'LMArena ended its stream without any content and without a finish record '
              + `(${seen.records} records${seen.records ? ', none for side ' + side : ''}).` });
        } else {
          events.push({ type: 'error', code: 'site_error', retryable: true,
            message: `LMArena's stream ended without a finish record after ${seen.text} characters`
              + `${seen.images ? ' and ' + seen.images + ' images' : ''}: the answer may be incomplete.` });
        }
        return events;
      },
    };
  }

  // ─────────────────────────────── capture ───────────────────────────────

  /** The URL of a fetch() input: a string, a URL, or a Request. */
  function urlOf(input) {
    if (typeof input === 'string') return input;
    if (input && typeof input.href === 'string') return input.href;
    if (input && typeof input.url === 'string') return input.url;
    return '';
  }

  /**
   * The page's own retry request → { sessionId, messageId, prefix } or null.
   * `base` is the page's URL (relative URLs resolve against it); only the
   * page's origin and the site's hosts count.
   */
  function matchCaptureUrl(input, base) {
    const raw = urlOf(input);
    if (!raw) return null;
    let u;
    try { u = new URL(raw, base); } catch (_) { return null; }
    let sameOrigin = false;
    try { sameOrigin = !!base && new URL(base).origin === u.origin; } catch (_) { /* no base */ }
    if (!sameOrigin && !(u.protocol === 'https:' && SITE_HOSTS.test(u.hostname))) return null;
    const m = CAPTURE_PATH_RE.exec(u.pathname);
    if (!m) return null;
    return { prefix: m[1].toLowerCase(), sessionId: m[2].toLowerCase(), messageId: m[3].toLowerCase() };
  }

  // ─────────────────────────────── models ───────────────────────────────

  const PUSH_RE = /self\.__next_f\.push\(\[\s*1\s*,\s*("(?:[^"\\]|\\.)*")\s*\]\)/g;

  /**
   * The React-flight payloads of a Next.js page, as strings: the pushed
   * `[1, "…"]` chunks of win.__next_f (joined), and, parsed from the page's
   * inline scripts, the same chunks (Next.js stops recording pushes once it
   * hydrated, but the scripts stay in the DOM). Bounded in total.
   */
  function collectFlightPayloads(win, doc) {
    const out = [];
    let total = 0;
    const add = (s) => {
      if (!s || total + s.length > LIMITS.maxFlightChars) return;
      total += s.length;
      out.push(s);
    };
    try {
      const f = win && win.__next_f;
      if (Array.isArray(f)) {
        add(f.filter((e) => Array.isArray(e) && e[0] === 1 && typeof e[1] === 'string').map((e) => e[1]).join(''));
      }
    } catch (_) { /* a page that made __next_f something else */ }
    if (doc && typeof doc.querySelectorAll === 'function') {
      const parts = [];
      for (const s of doc.querySelectorAll('script:not([src])')) {
        const text = s.textContent || '';
        if (text.indexOf('__next_f') < 0) continue;
        PUSH_RE.lastIndex = 0;
        let m;
        while ((m = PUSH_RE.exec(text)) !== null) {
          try { parts.push(JSON.parse(m[1])); } catch (_) { /* not a plain string literal */ }
        }
      }
      add(parts.join(''));
    }
    return out;
  }

  function modelType(m) {
    const caps = isObject(m.capabilities) && isObject(m.capabilities.outputCapabilities)
      ? m.capabilities.outputCapabilities : {};
    if (caps.image) return 'image';
    if (caps.video) return 'video';
    if (caps.search || caps.web) return 'search';
    return 'chat';
  }

  /** A page object → a protocol model entry, or null if it is not a model. */
  function toModel(m) {
    if (!isObject(m) || typeof m.publicName !== 'string' || typeof m.id !== 'string') return null;
    const name = m.publicName.trim();
    if (!name || utf8Length(name) > LIMITS.maxModelIdBytes || !UUID_RE.test(m.id)) return null;
    const out = { id: name, uuid: m.id.toLowerCase(), type: modelType(m) };
    const org = typeof m.organization === 'string' && m.organization ? m.organization
      : typeof m.provider === 'string' ? m.provider : '';
    if (org && utf8Length(org) <= LIMITS.maxOrganizationBytes) out.organization = org;
    return out;
  }

  /** Every model object (publicName + uuid id) reachable in a parsed JSON value. */
  function walkModels(value, found) {
    const stack = [value];
    let visited = 0;
    while (stack.length && visited < 2000000) {
      const v = stack.pop();
      visited++;
      if (Array.isArray(v)) { for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]); continue; }
      if (!isObject(v)) continue;
      const m = toModel(v);
      if (m) { found.push(m); continue; }
      for (const k of Object.keys(v)) stack.push(v[k]);
    }
  }

  /** The end (exclusive) of the JSON object starting at text[start] === '{', or -1. */
  function matchObject(text, start, maxLen) {
    let depth = 0;
    let inStr = false;
    const end = Math.min(text.length, start + maxLen);
    for (let i = start; i < end; i++) {
      const c = text[i];
      if (inStr) {
        if (c === '\\') i++;
        else if (c === '"') inStr = false;
        continue;
      }
      if (c === '"') inStr = true;
      else if (c === '{') depth++;
      else if (c === '}' && --depth === 0) return i + 1;
    }
    return -1;
  }

  /**
   * The models in the page's flight payloads: every object with a uuid `id`
   * and a `publicName` (the site's model records), deduplicated by publicName
   * (first wins). Each row is parsed as JSON and walked; objects in rows that
   * do not parse (text rows, cut rows) are found by their `{"id":"<uuid>"`
   * start and matched brace by brace.
   */
  function extractModels(payloads) {
    const found = [];
    for (const payload of payloads || []) {
      if (typeof payload !== 'string' || payload.indexOf('publicName') < 0) continue;
      for (const row of payload.split('\n')) {
        if (row.indexOf('publicName') < 0) continue;
        const colon = row.indexOf(':');
        if (colon < 0) continue;
        const json = row.slice(colon + 1).replace(/^[A-Z]{1,2}(?=[[{])/, '');
        try { walkModels(JSON.parse(json), found); } catch (_) { /* scanned below */ }
      }
      const start = /\{"id":"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"/gi;
      let m;
      while ((m = start.exec(payload)) !== null) {
        const end = matchObject(payload, m.index, LIMITS.maxModelObjectChars);
        if (end < 0) continue;
        try { walkModels(JSON.parse(payload.slice(m.index, end)), found); } catch (_) { /* not JSON */ }
      }
    }
    const seen = new Set();
    const out = [];
    for (const m of found) {
      if (seen.has(m.id) || out.length >= LIMITS.maxModels) continue;
      seen.add(m.id);
      out.push(m);
    }
    return out;
  }

  // ──────────────────────────── running a task ───────────────────────────

  /**
   * Do one task: site request, stream, typed frames.
   *
   * io: {
   *   fetch(url, init)         the page's own fetch (not one that captures)
   *   send: { delta(text), reasoning(text), image(url, mime), done(reason, usage),
   *           error(code, message, {status, retryable, retryAfter}) }
   *   onChallenge(message)     a verification page is up (the tab goes needs_human)
   *   state                    { prefix } shared by the tab's tasks
   *   uuid(), now()            optional, for tests
   * }
   * tracked: the TaskTracker entry (signal, cancelled, waitIfPaused()).
   * Resolves to 'done' | 'error' | 'cancelled'; never rejects. Unless the
   * task was cancelled, exactly one of send.done and send.error was called.
   */
  async function runTask(task, tracked, io) {
    const send = io.send;
    const fail = (e) => {
      if (tracked.cancelled) return 'cancelled';
      if (e.code === 'needs_human' && io.onChallenge) io.onChallenge(e.message);
      send.error(e.code, e.message, { status: e.status, retryable: e.retryable, retryAfter: e.retryAfter });
      return 'error';
    };
    const bad = checkTask(task);
    if (bad) return fail(bad);

    let body;
    try {
      body = buildSiteBody(task, io);
    } catch (e) {
      // a message or attachment of a shape the site body cannot hold
      return fail(err('bad_request', `The task cannot be sent to LMArena: ${clip(e && e.message ? e.message : String(e), 300)}`,
        { status: 400, retryable: false }));
    }
    let reader = null;
    try {
      const { response } = await openSiteStream(io, task, body, tracked.signal, io.state);
      if (tracked.cancelled) { await discard(response); return 'cancelled'; }
      const early = await checkResponse(response, io);
      if (early) return fail(early);
      reader = response.body.getReader();
      return await pump(reader, task, tracked, io, fail);
    } catch (e) {
      // only our own cancel ends a task without a frame: an abort from
      // anywhere else (the browser, the page) is a failure the client must hear of
      if (tracked.cancelled) return 'cancelled';
      return fail(err('site_error', `Could not reach LMArena: ${clip(e && e.message ? e.message : String(e), 300)}`,
        { retryable: true }));
    } finally {
      if (reader) { try { reader.cancel().catch(() => {}); } catch (_) { /* released */ } }
    }
  }

  /** An error description when the response is not a stream we can read, else null. */
  async function checkResponse(response, io) {
    const headers = response.headers;
    const type = (headers && headers.get && headers.get('content-type')) || '';
    if (!response.ok) {
      const text = await readBounded(response, LIMITS.maxErrorBodyBytes);
      return classifyHttpError(response.status, headers, text, io.now ? io.now() : undefined);
    }
    if (isChallengePage('', headers)) return needsHumanError('(HTTP ' + response.status + ')');
    if (response.redirected && /\/(log-?in|sign-?in|auth)\b/i.test(String(response.url || ''))) {
      await discard(response);
      return err('unauthorized', `LMArena sent the request to its login page (${clip(response.url, 200)}): `
        + 'log in to LMArena in this browser.', { status: 401, retryable: false });
    }
    if (/text\/html|application\/json/i.test(type)) {
      const text = await readBounded(response, LIMITS.maxErrorBodyBytes);
      if (isChallengePage(text, headers)) return needsHumanError(`(HTTP ${response.status})`);
      return err(/json/i.test(type) ? 'site_error' : 'protocol_error',
        `LMArena answered ${type.split(';')[0]} instead of a stream: ${bodySummary(text) || '(empty)'}`,
        { retryable: /json/i.test(type) });
    }
    if (!response.body || typeof response.body.getReader !== 'function') {
      return err('internal', 'This browser cannot stream fetch responses.', { retryable: false });
    }
    return null;
  }

  /** Read the stream (honouring pause and cancel) and send frames. */
  async function pump(reader, task, tracked, io, fail) {
    const send = io.send;
    const image = task.op === 'image';
    const parser = createStreamParser({ side: answerSide(task.arena) });
    let images = 0;
    const deliver = (events) => {
      let text = '';
      let reasoning = '';
      const flush = () => {
        if (text) { send.delta(text); text = ''; }
        if (reasoning) { send.reasoning(reasoning); reasoning = ''; }
      };
      for (const ev of events) {
        if (tracked.cancelled) return 'cancelled';
        if (ev.type === 'delta') {
          if (image) continue;                                   // an image answer is its images
          if (reasoning) flush();
          text += ev.text;
        } else if (ev.type === 'reasoning') {
          if (image) continue;
          if (text) flush();
          reasoning += ev.text;
        } else if (ev.type === 'image') {
          flush();
          images++;
          send.image(ev.url, ev.mime);
        } else if (ev.type === 'finish') {
          flush();
          if (image && images === 0) {
            return fail(err('site_error', `LMArena finished (${ev.reason}) without producing an image.`,
              { retryable: true }));
          }
          send.done(ev.reason, ev.usage);
          return 'done';
        } else if (ev.type === 'error') {
          flush();
          return fail(ev);
        }
      }
      flush();
      return null;
    };
    for (;;) {
      await tracked.waitIfPaused();
      if (tracked.cancelled) return 'cancelled';
      const r = await reader.read();
      if (tracked.cancelled) return 'cancelled';
      const outcome = deliver(r.done ? parser.end() : parser.push(r.value));
      if (outcome) return outcome;
      if (r.done) return fail(err('internal', 'the stream parser ended without a result', { retryable: false }));
    }
  }

  // ───────────────────────────── the probe ─────────────────────────────

  /** An AbortSignal that aborts after ms (AbortSignal.timeout where the browser has it). */
  function timeoutSignal(ms) {
    if (typeof AbortSignal.timeout === 'function') return AbortSignal.timeout(ms);
    const c = new AbortController();
    setTimeout(() => c.abort(new DOMException('The probe timed out', 'TimeoutError')), ms);
    return c.signal;
  }

  /**
   * One cheap same-origin request to see whether a verification page is
   * still up: 'ok' (the site answers normally), 'challenge', or 'error'
   * (network trouble, or no answer within opts.timeoutMs, 10 s by default:
   * try again later). The caller probes one at a time, so a request that
   * never ends must not stop the probing.
   */
  async function probeSite(fetchFn, url, opts) {
    const ms = (opts && opts.timeoutMs) || LIMITS.probeTimeoutMs;
    try {
      const signal = timeoutSignal(ms);
      const r = await untilAborted(fetchFn(url || '/', { method: 'GET', credentials: 'include',
        cache: 'no-store', redirect: 'follow', headers: { Accept: 'text/html' }, signal }), signal);
      const text = await readBounded(r, LIMITS.maxErrorBodyBytes, signal);
      if (isChallengePage(text, r.headers)) return 'challenge';
      if (r.status === 403 || r.status === 503) return looksLikeHtml(text) && /cloudflare/i.test(text) ? 'challenge' : 'error';
      return r.ok ? 'ok' : 'error';
    } catch (_) {
      return 'error';
    }
  }

  const api = {
    LIMITS,
    PREFIXES,
    siteRetryPath,
    answerSide,
    checkTask,
    buildSiteBody,
    openSiteStream,
    readBounded,
    createStreamParser,
    mapUsage,
    parseRetryAfter,
    isChallengePage,
    classifyHttpError,
    classifyStreamError,
    stripHtml,
    matchCaptureUrl,
    collectFlightPayloads,
    extractModels,
    runTask,
    probeSite,
  };

  if (typeof module === 'object' && module && module.exports) module.exports = api;
  globalThis.ChatbridgeArenaDriver = api;
})();
