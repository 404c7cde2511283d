import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ItemsFormatError, readItemsJson } from '../../src/models/items-json.js';
import { BundleIntegrityError, loadBundle, writeVersion } from '../../src/models/repository.js';
import { CatalogBuilder } from '../../src/data/log.js';
import { countTurns } from './turns.js';

const root = mkdtempSync(join(tmpdir(), 'recserve-items-json-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

const catalog = {
  ids: ['a', 'b', 'c', 'd', 'é"\\'],
  titles: ['Alpha', '', 'Gamma', 'Δέλτα', 'line\nbreak'],
  category_names: ['x', 'y', 'z'],
  categories: [[0], [0, 2], [], [1], [2, 1, 0]],
  creator_ids: ['c1', 'c2', 'c1', '', 'c2'],
};
const file = (name: string, body: unknown) => {
  const p = join(root, name);
  writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body));
  return p;
};
const rows = (t: { offsets: Uint32Array; data: Uint16Array }) =>
  Array.from({ length: t.offsets.length - 1 }, (_, r) =>
    Array.from(t.data.subarray(t.offsets[r]!, t.offsets[r + 1]!)),
  );

test('items.json reads the same on a worker and in place, cut out a chunk a turn', async () => {
  const p = file('items.json', catalog);
  for (const worker of [true, false]) {
    const counter = countTurns();
    const l = await readItemsJson(p, { worker, chunk: 2 });
    const turns = counter.stop();
    assert.deepEqual(l.ids, catalog.ids);
    assert.deepEqual(l.titles, catalog.titles);
    assert.deepEqual(l.categoryNames, catalog.category_names);
    assert.deepEqual(rows(l.categoryTable), catalog.categories);
    assert.ok(l.categoryTable.offsets.buffer instanceof SharedArrayBuffer);
    assert.ok(l.categoryTable.data.buffer instanceof SharedArrayBuffer);
    assert.deepEqual(l.creatorIds, catalog.creator_ids);
    // Five entries two at a time, ids then titles: the loop turned between the chunks.
    assert.ok(turns >= 4, `worker ${worker}: the event loop turned ${turns} times`);
  }
  const empty = await readItemsJson(
    file('empty.json', {
      ids: [],
      titles: [],
      category_names: [],
      categories: [],
      creator_ids: [],
    }),
    { worker: true },
  );
  assert.equal(empty.ids.length, 0);
  assert.equal(empty.categoryTable.offsets.length, 1);
});

test('a catalog file that is not one: ItemsFormatError naming the field, SyntaxError for bad JSON', async () => {
  const bad: [string, unknown, RegExp][] = [
    ['short.json', { ...catalog, categories: [[0]] }, /items.json categories: expected 5 lists/],
    [
      'id.json',
      { ...catalog, ids: ['a', 'b', 3, 'd', 'e'] },
      /items.json ids\[2\]: expected a string, got number/,
    ],
    ['title.json', { ...catalog, titles: null }, /items.json titles: expected a list/],
    [
      'creator.json',
      { ...catalog, creator_ids: ['c', null] },
      /creator_ids\[1\]: expected a string, got null/,
    ],
    [
      'cat.json',
      { ...catalog, categories: [[0], 1, [], [], []] },
      /items.json categories\[1\]: expected a list/,
    ],
    ['array.json', [1, 2], /items.json: expected an object/],
  ];
  for (const worker of [true, false]) {
    for (const [name, body, re] of bad)
      await assert.rejects(
        readItemsJson(file(name, body), { worker }),
        (e: Error) => e instanceof ItemsFormatError && re.test(e.message),
        `${name} (worker ${worker})`,
      );
    await assert.rejects(
      readItemsJson(file('syntax.json', '{"ids": [1,'), { worker }),
      SyntaxError,
    );
  }
});

test("loadBundle: a bad catalog that passes the checksums is the version's BundleIntegrityError; a missing one fails the checksums first", async () => {
  const c = new CatalogBuilder();
  c.add('a', 'Alpha', ['x'], 'c1', Date.UTC(2024, 0, 1), 0.25);
  c.add('b', 'Beta', ['x', 'y'], 'c2', Date.UTC(2024, 1, 1), 0.75);
  const items = c.finish();
  items.popularity = Float32Array.of(3, 2);
  const artifacts = {
    name: 'cat',
    dim: 2,
    items,
    itemEmbeddings: Float32Array.of(1, 0, 0, 1),
    userIds: ['u1'],
    userEmbeddings: Float32Array.of(0.1, 0.2),
    coldUserEmbedding: Float32Array.of(0.2, 0.3),
  };
  const { dir } = await writeVersion(root, artifacts);
  const loaded = await loadBundle(dir);
  assert.deepEqual(loaded.items.ids, ['a', 'b']);
  assert.deepEqual(loaded.items.creatorIds, ['c1', 'c2']);
  assert.equal(loaded.items.index.get('b'), 1);

  // Rewrite items.json with one category list missing and re-sign it in the manifest.
  const path = join(dir, 'items.json');
  const raw = JSON.parse(readFileSync(path, 'utf8'));
  raw.categories = raw.categories.slice(0, 1);
  const text = JSON.stringify(raw);
  writeFileSync(path, text);
  const manifestPath = join(dir, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  manifest.files['items.json'] = {
    sha256: createHash('sha256').update(text).digest('hex'),
    bytes: Buffer.byteLength(text),
  };
  writeFileSync(manifestPath, JSON.stringify(manifest));
  await assert.rejects(
    loadBundle(dir),
    (e: Error) =>
      e instanceof BundleIntegrityError &&
      /items.json categories: expected 2 lists/.test(e.message),
  );

  // Without items.json the checksums' error is the one reported, and the parse's own
  // rejection is not left unhandled (the test runner would fail on it).
  const { dir: d2 } = await writeVersion(root, artifacts);
  rmSync(join(d2, 'items.json'));
  await assert.rejects(loadBundle(d2), /items.json is missing/);
});
