// The SillyTavern extension without SillyTavern: the folder build.sh makes
// is complete on its own (the shared protocol client beside index.js, the
// one import rewritten), the repository's root manifest.json points into
// browser/sillytavern/ for SillyTavern's git installer, and index.js finds
// its files from its own URL.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';

import { EXTENSION, TOP } from './st.mjs';

const read = (f) => fs.readFileSync(`${EXTENSION}/${f}`, 'utf8');

test('the built folder holds the shared protocol client and imports it from beside index.js', () => {
  assert.equal(read('cb-protocol.js'), fs.readFileSync(`${TOP}/browser/common/cb-protocol.js`, 'utf8'));
  const built = read('index.js');
  const source = fs.readFileSync(`${TOP}/browser/sillytavern/index.js`, 'utf8');
  assert.match(source, /^import '\.\.\/common\/cb-protocol\.js';$/m, 'the repository imports the shared file');
  assert.match(built, /^import '\.\/cb-protocol\.js';$/m, 'the folder imports its copy');
  assert.equal(built.replace("import './cb-protocol.js';", "import '../common/cb-protocol.js';"), source,
    'and nothing else differs');
  assert.ok(!fs.existsSync(`${TOP}/browser/sillytavern/cb-protocol.js`), 'no second copy in the repository');
});

test('manifest.json names files that exist, and needs nothing else', () => {
  const m = JSON.parse(read('manifest.json'));
  assert.equal(typeof m.display_name, 'string');
  assert.ok(Number.isInteger(m.loading_order));
  for (const k of ['js', 'css']) assert.ok(fs.existsSync(`${EXTENSION}/${m[k]}`), `${k}: ${m[k]}`);
  assert.deepEqual(m.requires, []);
  assert.equal(m.auto_update, false);

  // SillyTavern's installer clones the repository: its root manifest
  const root = JSON.parse(fs.readFileSync(`${TOP}/manifest.json`, 'utf8'));
  assert.deepEqual({ ...root, js: undefined, css: undefined }, { ...m, js: undefined, css: undefined });
  for (const k of ['js', 'css']) {
    assert.equal(root[k], `browser/sillytavern/${m[k]}`);
    assert.ok(fs.existsSync(`${TOP}/${root[k]}`), `${k}: ${root[k]}`);
  }
});

test('index.js finds its files from its own URL, and settings.html has every element it uses', () => {
  const js = read('index.js');
  assert.ok(!/['"`/]third-party\/[^'"`]/.test(js.replace(/^\s*(\/\*|\*|\/\/).*$/gm, '')),
    'no folder name in index.js');
  assert.match(js, /import\.meta\.url/);
  const html = read('settings.html');
  const ids = [...js.matchAll(/\$\('(chatbridge_[a-z_]+)'\)/g)].map((x) => x[1]);
  assert.ok(ids.length >= 7, ids.join());
  for (const id of ids) assert.ok(html.includes(`id="${id}"`), `settings.html has #${id}`);
});
