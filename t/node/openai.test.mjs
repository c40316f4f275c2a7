// The official OpenAI SDK (the `openai` npm package) as the client of the
// real nginx + module + sidecar + scripted browser (t/lib/fake-browser.mjs):
// chat completions streaming and not, reasoning, finish reasons, usage,
// images, typed errors (and the SDK's retries), models, and a cancel that
// reaches the browser.  What the browser answers is scripted by [[directives]]
// in the prompt; its default answer is "echo: " + the prompt without them.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import OpenAI from 'openai';

import { Bridge, rejection, waitFor } from './harness.mjs';

const KEY = 'sk-alice-0123456789';

function client(b, opts = {}) {
  return new OpenAI({ baseURL: `${b.url}/v1`, apiKey: KEY, maxRetries: 0, ...opts });
}

const user = (content) => [{ role: 'user', content }];

// what the scripted browser answers to a prompt by default
const echo = (prompt) => `echo: ${prompt.replace(/\[\[[^\]]*\]\]/g, '').trim()}`;

// the pieces the scripted browser sends (one delta per word, like its splitWords)
const words = (text) => text.match(/\S+\s*|\s+/g);

// the module's token estimate (ngx_chatbridge_module/cb_json.c
// cb_estimate_tokens): about 4 ASCII bytes per token, rounded up, plus one
// token per other (non-ASCII) character
function estimate(text) {
  let ascii = 0;
  let other = 0;
  for (const ch of text) {
    if (ch.codePointAt(0) < 0x80) ascii++;
    else other++;
  }
  return Math.ceil(ascii / 4) + other;
}

const isInt = (v) => Number.isInteger(v) && v >= 0;

function assertCreated(created) {
  assert.ok(Number.isInteger(created), `created is an integer (${created})`);
  assert.ok(Math.abs(created - Date.now() / 1000) < 60, `created is close to now (${created})`);
}

function assertUsage(u) {
  assert.ok(u, 'usage is present');
  assert.ok(isInt(u.prompt_tokens), `prompt_tokens ${u.prompt_tokens}`);
  assert.ok(isInt(u.completion_tokens), `completion_tokens ${u.completion_tokens}`);
  assert.ok(isInt(u.total_tokens), `total_tokens ${u.total_tokens}`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

// every chunk of an SDK stream, and the error that ended it, if any
async function drain(stream, onChunk = () => {}) {
  const chunks = [];
  try {
    for await (const c of stream) {
      chunks.push(c);
      onChunk(c, chunks);
    }
  } catch (err) {
    return { chunks, err };
  }
  return { chunks, err: null };
}

const content = (chunks) =>
  chunks.map((c) => (c.choices[0] && c.choices[0].delta.content) || '').join('');


// the error "type" the module gives each status (cb_json.c cb_error_type),
// as OpenAI does: its bad-key 401 says invalid_request_error too. (Its 429s
// say requests, tokens or insufficient_quota; the SDK picks its error class
// by status alone.)
const errorType = (status) => ({
  400: 'invalid_request_error', 401: 'invalid_request_error', 403: 'permission_error',
  404: 'invalid_request_error', 429: 'rate_limit_error',
}[status] || (status >= 500 ? 'server_error' : 'invalid_request_error'));

function assertApiError(err, Class, status, code) {
  assert.ok(err instanceof Class, `${Class.name}, got ${err && err.constructor.name}: ${err}`);
  assert.ok(err instanceof OpenAI.APIError);
  assert.equal(err.status, status);
  assert.equal(err.code, code);
  assert.equal(err.error.code, code);
  assert.equal(err.error.type, errorType(status));
  assert.equal(err.type, err.error.type);
  assert.equal(typeof err.error.message, 'string');
  assert.ok(err.error.message.length > 0);
  assert.ok(err.message.includes(err.error.message), err.message);
  assert.ok('param' in err.error, 'the error object has a param');
  // every answer carries X-Request-Id, errors included
  assert.match(err.requestID || '', /^[0-9a-f]{16,}$/, 'x-request-id');
}

test('chat completions through the SDK: shapes, streams, reasoning, finish reasons, usage, cancel', async (t) => {
  const b = new Bridge();
  try {
    await b.startSidecar();
    await b.startNginx();
    b.startBrowser();
    await b.waitBrowsers(1);
    const ai = client(b);

    await t.test('non-streaming: the ChatCompletion shape, field by field', async () => {
      const prompt = 'Hello there, how are you';
      const { data: r, response } = await ai.chat.completions.create(
        { model: 'gpt-4o-mini', messages: user(prompt) }).withResponse();
      assert.match(r.id, /^chatcmpl-./);
      assert.equal(r.object, 'chat.completion');
      assertCreated(r.created);
      assert.equal(r.model, 'gpt-4o-mini');
      assert.equal(r.choices.length, 1);
      const [c] = r.choices;
      assert.equal(c.index, 0);
      assert.equal(c.message.role, 'assistant');
      assert.equal(c.message.refusal, null, 'refusal: null, as OpenAI sends it');
      assert.equal(c.message.content, echo(prompt));
      assert.equal(c.finish_reason, 'stop');
      assert.equal(c.logprobs, null);
      assertUsage(r.usage);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-request-id'), r.id.slice('chatcmpl-'.length));
      // the browser got that request, under that id
      const task = b.events('task').find((e) => e.request_id === r.id.slice(9));
      assert.ok(task, 'the browser saw the request id');
      assert.equal(task.stream, false);
      assert.equal(task.model, 'gpt-4o-mini');
    });

    for (const includeUsage of [false, true]) {
      await t.test(`streaming${includeUsage ? ' with stream_options.include_usage' : ''}`, async () => {
        const prompt = `stream me some words please ${includeUsage}`;
        const body = { model: 'm-stream', messages: user(prompt), stream: true };
        if (includeUsage) body.stream_options = { include_usage: true };
        const { data: stream, response } = await ai.chat.completions.create(body).withResponse();
        assert.match(response.headers.get('content-type'), /^text\/event-stream/);
        const { chunks, err } = await drain(stream);
        assert.equal(err, null);
        assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
        assert.equal(chunks[0].choices[0].delta.role, 'assistant');
        const id = chunks[0].id;
        assert.match(id, /^chatcmpl-./);
        assert.equal(response.headers.get('x-request-id'), id.slice(9));
        for (const c of chunks) {
          assert.equal(c.object, 'chat.completion.chunk');
          assert.equal(c.id, id);
          assert.equal(c.model, 'm-stream');
          assertCreated(c.created);
        }
        assert.equal(content(chunks), echo(prompt));
        const finished = chunks.filter((c) => c.choices.some((x) => x.finish_reason != null));
        assert.equal(finished.length, 1, 'exactly one chunk has a finish_reason');
        assert.equal(finished[0].choices[0].finish_reason, 'stop');
        assert.equal(finished[0].choices[0].index, 0);
        const last = chunks[chunks.length - 1];
        if (includeUsage) {
          assert.deepEqual(last.choices, []);
          assertUsage(last.usage);
          for (const c of chunks.slice(0, -1)) assert.equal(c.usage ?? null, null);
        } else {
          for (const c of chunks) assert.equal(c.usage, undefined, 'no chunk has usage');
          assert.equal(last.choices.length, 1);
        }
      });
    }

    await t.test('the SDK stream helper assembles the same completion', async () => {
      const prompt = 'assemble this answer for me';
      const plain = await ai.chat.completions.create({ model: 'm', messages: user(prompt) });
      assert.equal(typeof ai.chat.completions.stream, 'function', 'chat.completions.stream exists');
      const s = ai.chat.completions.stream({ model: 'm', messages: user(prompt) });
      const deltas = [];
      s.on('content', (delta) => deltas.push(delta));
      const fin = await s.finalChatCompletion();
      assert.match(fin.id, /^chatcmpl-./);
      assert.notEqual(fin.id, plain.id, 'a request of its own');
      assert.equal(fin.choices[0].message.role, 'assistant');
      assert.equal(fin.choices[0].message.content, plain.choices[0].message.content);
      assert.equal(fin.choices[0].finish_reason, 'stop');
      assert.equal(deltas.join(''), plain.choices[0].message.content);
      assert.ok(deltas.length > 1, 'in several deltas');
      assert.equal(await s.finalContent(), echo(prompt));
    });

    await t.test('reasoning: reasoning_content, kept out of content', async () => {
      const prompt = 'solve it [[reasoning first think, then answer]]';
      const { chunks, err } = await drain(await ai.chat.completions.create(
        { model: 'm', messages: user(prompt), stream: true }));
      assert.equal(err, null);
      const reasoning = chunks.map((c) => (c.choices[0] && c.choices[0].delta.reasoning_content) || '').join('');
      assert.equal(reasoning, 'first think, then answer');
      assert.equal(content(chunks), echo(prompt));
      // reasoning first, then the answer
      const firstR = chunks.findIndex((c) => c.choices[0] && c.choices[0].delta.reasoning_content);
      const firstC = chunks.findIndex((c) => c.choices[0] && c.choices[0].delta.content);
      assert.ok(firstR >= 0 && firstR < firstC, `reasoning (${firstR}) before content (${firstC})`);
      for (const c of chunks) {
        const d = c.choices[0] && c.choices[0].delta;
        assert.ok(!(d && d.content && d.reasoning_content), 'no chunk mixes them');
      }

      const r = await ai.chat.completions.create({ model: 'm', messages: user(prompt) });
      assert.equal(r.choices[0].message.content, echo(prompt));
      assert.equal(r.choices[0].message.reasoning_content, 'first think, then answer');
    });

    await t.test('finish reasons: the site\'s content-filter and length', async () => {
      let r = await ai.chat.completions.create(
        { model: 'm', messages: user('naughty [[finish content-filter]]') });
      assert.equal(r.choices[0].finish_reason, 'content_filter');
      r = await ai.chat.completions.create(
        { model: 'm', messages: user('long one [[finish length]]') });
      assert.equal(r.choices[0].finish_reason, 'length');

      const { chunks } = await drain(await ai.chat.completions.create(
        { model: 'm', messages: user('naughty stream [[finish content-filter]]'), stream: true }));
      const reasons = chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter((x) => x != null);
      assert.deepEqual(reasons, ['content_filter']);
    });

    await t.test('usage: from the site, or estimated and marked so', async () => {
      let r = await ai.chat.completions.create(
        { model: 'm', messages: user('count me [[usage 11 22]]') });
      assert.equal(r.usage.prompt_tokens, 11);
      assert.equal(r.usage.completion_tokens, 22);
      assert.equal(r.usage.total_tokens, 33);
      assert.equal(r.usage.estimated, false);

      const { chunks } = await drain(await ai.chat.completions.create({
        model: 'm', messages: user('count me too [[usage 5 6]]'), stream: true,
        stream_options: { include_usage: true } }));
      const u = chunks[chunks.length - 1].usage;
      assert.deepEqual([u.prompt_tokens, u.completion_tokens, u.total_tokens, u.estimated],
                       [5, 6, 11, false]);

      // no usage from the site: estimated (~4 ASCII bytes per token, one
      // token per other character; cb_estimate_tokens) and marked so
      const prompt = 'estimate these tokens: naïve café 東京 [[reply ünïcode ∑ answer 日本]]';
      r = await ai.chat.completions.create({ model: 'm', messages: user(prompt) });
      assert.equal(r.usage.estimated, true);
      assertUsage(r.usage);
      assert.equal(r.choices[0].message.content, 'ünïcode ∑ answer 日本');
      assert.equal(r.usage.completion_tokens, estimate('ünïcode ∑ answer 日本'));
      // the prompt estimate covers at least the text (plus a per-message overhead)
      assert.ok(r.usage.prompt_tokens >= estimate(prompt),
                `prompt_tokens ${r.usage.prompt_tokens} >= ${estimate(prompt)}`);
    });

    await t.test('an image answer in a chat becomes markdown', async () => {
      const r = await ai.chat.completions.create(
        { model: 'm', messages: user('draw a dog [[image https://example.test/dog.png]]') });
      assert.match(r.choices[0].message.content, /!\[Image\]\(https:\/\/example\.test\/dog\.png\)/);
      assert.equal(r.choices[0].finish_reason, 'stop');
    });

    await t.test('an aborted stream cancels the browser\'s task', async () => {
      const ac = new AbortController();
      const many = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
      const stream = await ai.chat.completions.create(
        { model: 'm', messages: user(`${many} [[gap 200]]`), stream: true },
        { signal: ac.signal });
      let id = null;
      let abortedAt = 0;
      const { chunks, err } = await drain(stream, (c) => {
        id = c.id;
        if (!abortedAt && c.choices[0] && c.choices[0].delta.content) {
          abortedAt = Date.now();
          ac.abort();
        }
      });
      assert.ok(abortedAt, 'a first delta arrived');
      // the SDK ends the iteration quietly on abort, or throws its abort error
      assert.ok(err === null || err instanceof OpenAI.APIUserAbortError, `${err}`);
      assert.ok(content(chunks).length < echo(many).length, 'the answer was cut short');
      const rid = id.slice('chatcmpl-'.length);
      const ev = await waitFor(() => b.events('cancel').find((e) => e.request_id === rid),
                               2000, 'the cancel at the browser');
      assert.ok(ev.t - abortedAt < 2000, `cancel after ${ev.t - abortedAt} ms`);
    });
  } finally {
    await b.stop();
  }
});

test('images through the SDK: n in parallel, a partial failure, a failure', async (t) => {
  const b = new Bridge();
  try {
    await b.startSidecar();
    await b.startNginx();
    b.startBrowser();
    await b.waitBrowsers(1);
    const ai = client(b);

    await t.test('n = 3', async () => {
      const r = await ai.images.generate(
        { model: 'img', prompt: 'a cat [[image https://example.test/cat.png]]', n: 3 });
      assertCreated(r.created);
      assert.equal(r.data.length, 3);
      for (const d of r.data) assert.equal(d.url, 'https://example.test/cat.png');
      const tasks = b.events('task').filter((e) => e.model === 'img');
      assert.equal(tasks.length, 3, 'three tasks reached the browser');
      for (const task of tasks) assert.equal(task.op, 'image');
      assert.equal(new Set(tasks.map((x) => x.request_id)).size, 3, 'three request ids');
    });

    await t.test('n = 2, one part fails: one image, X-Chatbridge-Failed: 1', async () => {
      const flag = `${b.dir}/fail-part`;
      const { data: r, response } = await ai.images.generate({
        model: 'img2', prompt: `two cats [[image https://example.test/cat2.png]] [[fail-once ${flag}]]`, n: 2,
      }).withResponse();
      assert.equal(b.events('task').filter((e) => e.model === 'img2').length, 2);
      assert.equal(response.status, 200);
      assert.equal(r.data.length, 1);
      assert.equal(r.data[0].url, 'https://example.test/cat2.png');
      assert.equal(response.headers.get('x-chatbridge-failed'), '1');
      assert.equal(r.partial_failure.requested, 2);
      assert.equal(r.partial_failure.failed, 1);
    });

    await t.test('n = 1 that fails: the SDK\'s typed error', async () => {
      const flag = `${b.dir}/fail-one`;
      const err = await rejection(ai.images.generate({
        model: 'img3', prompt: `one cat [[image https://example.test/cat3.png]] [[fail-once ${flag}]]`, n: 1,
      }));
      assert.ok(fs.existsSync(flag), 'the browser failed it on purpose');
      assertApiError(err, OpenAI.InternalServerError, 502, 'site_error');
      assert.match(err.message, /fail-once/);
    });
  } finally {
    await b.stop();
  }
});

test('errors as the SDK\'s typed errors, and its retries', async (t) => {
  const b = new Bridge();
  try {
    await b.startSidecar();
    await b.startNginx({
      location: `chatbridge_api_key alice ${KEY};\n            chatbridge_idle_timeout 1s;`,
    });
    const ai = client(b);
    const ask = (prompt, extra = {}, c = ai) =>
      c.chat.completions.create({ model: 'm', messages: user(prompt), ...extra });

    await t.test('no browser connected: 503 no_browser', async () => {
      const err = await rejection(ask('anyone there?'));
      assertApiError(err, OpenAI.APIError, 503, 'no_browser');
      assert.ok(err.headers.get('retry-after'), 'with Retry-After');
    });

    b.startBrowser();
    await b.waitBrowsers(1);

    await t.test('a wrong key: AuthenticationError 401 invalid_api_key', async () => {
      const bad = client(b, { apiKey: 'sk-wrong-0123456789' });
      const err = await rejection(ask('let me in', {}, bad));
      assertApiError(err, OpenAI.AuthenticationError, 401, 'invalid_api_key');
      assert.match(err.headers.get('www-authenticate') || '', /^Bearer/);
      const errM = await rejection(bad.models.list());
      assertApiError(errM, OpenAI.AuthenticationError, 401, 'invalid_api_key');
      // and the right key works
      const ok = await ask('the right key');
      assert.equal(ok.choices[0].message.content, 'echo: the right key');
    });

    await t.test('n: 2 is a BadRequestError naming n', async () => {
      const err = await rejection(ask('two answers', { n: 2 }));
      assertApiError(err, OpenAI.BadRequestError, 400, 'unsupported_value');
      assert.equal(err.param, 'n');
    });

    await t.test('tools are a BadRequestError naming tools', async () => {
      const err = await rejection(ask('call a tool', {
        tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }],
      }));
      assertApiError(err, OpenAI.BadRequestError, 400, 'unsupported_parameter');
      assert.equal(err.param, 'tools');
      assert.match(err.message, /tools/);
    });

    await t.test('an unknown model: NotFoundError 404', async () => {
      const err = await rejection(ai.models.retrieve('nope'));
      assertApiError(err, OpenAI.NotFoundError, 404, 'model_not_found');
      assert.match(err.message, /nope/);
    });

    await t.test('the site\'s 429: RateLimitError with Retry-After', async () => {
      const err = await rejection(ask('too fast [[error rate_limited 429 7]]'));
      assertApiError(err, OpenAI.RateLimitError, 429, 'rate_limited');
      assert.equal(err.headers.get('retry-after'), '7');
    });

    await t.test('with maxRetries: 1 the SDK retries a 429 after Retry-After', async () => {
      const retrying = client(b, { maxRetries: 1 });
      const marker = `retry-${Date.now()}`;
      const t0 = Date.now();
      const err = await rejection(ask(`${marker} [[error rate_limited 429 1]]`, {}, retrying));
      const took = Date.now() - t0;
      assertApiError(err, OpenAI.RateLimitError, 429, 'rate_limited');
      const tasks = b.events('task').filter((e) => e.messages.some((m) => m.content.includes(marker)));
      assert.equal(tasks.length, 2, 'two tasks reached the browser');
      assert.ok(tasks[1].t - tasks[0].t >= 950, `retried ${tasks[1].t - tasks[0].t} ms later`);
      assert.ok(took >= 1000, `took ${took} ms`);
    });

    await t.test('the site failed: InternalServerError 502', async () => {
      const err = await rejection(ask('break [[error site_error 502]]'));
      assertApiError(err, OpenAI.InternalServerError, 502, 'site_error');
    });

    await t.test('a silent browser and chatbridge_idle_timeout 1s: 504 browser_timeout', async () => {
      const t0 = Date.now();
      const err = await rejection(ask('hello? [[silent]]'));
      assertApiError(err, OpenAI.APIError, 504, 'browser_timeout');
      const took = Date.now() - t0;
      assert.ok(took >= 900 && took < 5000, `after ${took} ms`);
      const rid = err.requestID;
      await waitFor(() => b.events('cancel').find((e) => e.request_id === rid), 2000,
                    'the cancel of the timed-out task');
    });

    await t.test('an error mid-stream: the SDK\'s stream throws an APIError', async () => {
      const prompt = 'one two three four five six [[error-after 2 rate_limited 429]]';
      const { chunks, err } = await drain(await ask(prompt, { stream: true }));
      assert.ok(err instanceof OpenAI.APIError, `an APIError, got ${err}`);
      assert.equal(err.status, undefined, 'the stream had started: 200, then the error event');
      assert.equal(err.error.code, 'rate_limited');
      assert.equal(err.error.type, 'rate_limit_error');
      assert.match(err.message, /rate_limited/);
      assert.equal(content(chunks), words(echo(prompt)).slice(0, 2).join(''));
      assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    });
  } finally {
    await b.stop();
  }
});

test('models through the SDK: announced by browsers, and from chatbridge_models_file', async () => {
  const b = new Bridge();
  try {
    fs.writeFileSync(`${b.dir}/models.json`, `{
  // LMArena Bridge's format
  "file-model": "0196a1b2-0000-7000-8000-000000000001",
  "file-image": "0196a1b2-0000-7000-8000-000000000002:image",
}
`);
    await b.startSidecar();
    await b.startNginx({
      location: `chatbridge_models_file ${b.dir}/models.json;`,
      server: 'location /plain/v1/ { chatbridge; }',
    });
    b.startBrowser(['--models', 'a,b']);
    await b.waitBrowsers(1);

    const plain = new OpenAI({ baseURL: `${b.url}/plain/v1`, apiKey: 'x', maxRetries: 0 });
    const withFile = client(b);
    const ids = async (c) => {
      const out = [];
      for await (const m of c.models.list()) out.push(m);
      return out;
    };
    // the browser announces its models just after hello
    await waitFor(async () => (await ids(plain)).length >= 2, 5000, 'the announced models');

    const shape = (m) => {
      assert.equal(m.object, 'model');
      assertCreated(m.created);
      assert.equal(typeof m.owned_by, 'string');
    };
    const announced = await ids(plain);
    assert.deepEqual(announced.map((m) => m.id).sort(), ['a', 'b']);
    announced.forEach(shape);

    const all = await ids(withFile);
    assert.deepEqual(all.map((m) => m.id).sort(), ['a', 'b', 'file-image', 'file-model']);
    all.forEach(shape);

    const page = await withFile.models.list();
    assert.equal(page.data.length, 4);

    for (const id of ['a', 'file-model']) {
      const m = await withFile.models.retrieve(id);
      assert.equal(m.id, id);
      shape(m);
    }
    const err = await rejection(plain.models.retrieve('file-model'));
    assertApiError(err, OpenAI.NotFoundError, 404, 'model_not_found');
  } finally {
    await b.stop();
  }
});
