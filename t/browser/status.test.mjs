// The status page in a real Chromium while a stream runs: it shows the
// connected browser and the request in flight, updates by itself, and under
// an admin key asks for it (HTTP Basic).  The screenshot stays in
// build/test-output/status-page.png.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Bridge, TOP } from '../node/harness.mjs';
import { launchChromium, waitFor } from './helpers.mjs';

const OUT = path.join(TOP, 'build', 'test-output');
const ADMIN = 'sk-admin-page-0123456789';

describe('the status page in Chromium', () => {
  let b;
  let chrome;

  before(async () => {
    b = new Bridge();
    await b.startSidecar();
    await b.startNginx({ server: `
        location /ops/ { chatbridge_status; chatbridge_admin_key ops ${ADMIN}; }` });
    b.startBrowser(['--id', 'tab-status', '--kind', 'arena', '--concurrency', '4']);
    await b.waitBrowsers(1);
    chrome = await launchChromium();
  });

  after(async () => {
    if (chrome) await chrome.close();
    if (b) await b.stop();
  });

  test('shows the connected browser and the request in flight, then the answer served', async () => {
    const page = await chrome.context.newPage();
    await page.goto(`${b.url}/chatbridge/status`);
    assert.equal(await page.title(), 'chatbridge status');
    await waitFor(async () => (await page.textContent('#browsers tbody')).includes('tab-status'),
      5000, 'the browser in the table');
    assert.match(await page.textContent('#link'), /linked/);

    // a slow stream: visible while it runs
    const ctl = new AbortController();
    const stream = fetch(`${b.url}/v1/chat/completions`, {
      method: 'POST', signal: ctl.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', stream: true,
        messages: [{ role: 'user', content: 'slow [[gap 400]] [[chunks 20]]' }] }),
    }).then(async (r) => r.text());

    const cells = (sel) => page.$$eval(sel, (tds) => tds.map((td) => td.textContent));
    await waitFor(async () => {
      const row = await cells('#browsers tbody tr td');
      return row[3] === 'ready' && row[4] === '1 / 4';
    }, 8000, 'one request in flight on the page');
    assert.deepEqual((await cells('#requests tr td')).slice(0, 2), ['in flight', '1']);

    fs.mkdirSync(OUT, { recursive: true });
    const shot = path.join(OUT, 'status-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 5000, 'a screenshot was kept');
    console.log(`# screenshot: ${path.relative(TOP, shot)}`);

    const text = await stream;
    assert.match(text, /data: \[DONE\]/);
    await waitFor(async () => {
      const row = await cells('#browsers tbody tr td');
      return row[4] === '0 / 4' && row[5] === '1';
    }, 8000, 'the page updating by itself after the answer: none in flight, one served');
    assert.equal((await cells('#browsers tbody tr td'))[0], 'tab-status');
    ctl.abort();
    await page.close();
  });

  test('behind an admin key: the browser asks, and the key as password opens it', async () => {
    // nobody at the prompt: the page is refused
    const page = await chrome.context.newPage();
    await assert.rejects(page.goto(`${b.url}/ops/status`), /AUTH|401/);
    await page.close();

    // the user types any name and the admin key into the browser's prompt
    const keyed = await launchChromium({ httpCredentials: { username: 'me', password: ADMIN } });
    try {
      const p2 = await keyed.context.newPage();
      const ok = await p2.goto(`${b.url}/ops/status`);
      assert.equal(ok.status(), 200);
      await waitFor(async () => (await p2.textContent('#browsers tbody')).includes('tab-status'),
        5000, 'the page filled through the same credentials');
    } finally {
      await keyed.close();
    }
  });
});
