// A version whose files pass their checksums but hold what a version cannot (values out of
// range, repeated ids, bad category numbers, partial values, files the manifest leaves
// out, a graph over another catalog, fields of the wrong type) is refused at load with an
// error naming the file and the field, never served. Each case writes a good version,
// spoils one thing, and re-signs the manifest as a careless tool would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifacts } from './fixtures.js';
import {
  BundleIntegrityError,
  listVersions,
  loadBundle,
  loadLatest,
  writeVersion,
  type BundleArtifacts,
} from '../../src/models/repository.js';
import { checkHnswAgainstCatalog } from '../../src/models/hnsw-ids.js';
import { HnswIndex } from '../../src/retrieval/hnsw.js';

const root = mkdtempSync(join(tmpdir(), 'recserve-loadcheck-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

let serial = 0;
/** A fresh good version (its own bundle name), spoiled by `spoil`, then re-signed. */
async function spoiled(spoil: (dir: string) => void, a?: BundleArtifacts): Promise<string> {
  const { dir } = await writeVersion(root, a ?? artifacts(`v${serial++}`));
  spoil(dir);
  resign(dir);
  return dir;
}

/** Rewrites the manifest's sha256 and bytes of every file it lists (remanifest.py). */
function resign(dir: string): void {
  const p = join(dir, 'manifest.json');
  const m = JSON.parse(readFileSync(p, 'utf8')) as {
    files: Record<string, { sha256: unknown; bytes: unknown }>;
  };
  for (const [f, e] of Object.entries(m.files)) {
    const b = readFileSync(join(dir, f));
    e.sha256 = createHash('sha256').update(b).digest('hex');
    if (typeof e.bytes === 'number') e.bytes = b.length;
  }
  writeFileSync(p, JSON.stringify(m));
}

function setValue(dir: string, file: string, row: number, v: number): void {
  const p = join(dir, file);
  const b = readFileSync(p);
  if (file.endsWith('.f64')) b.writeDoubleLE(v, row * 8);
  else b.writeFloatLE(v, row * 4);
  writeFileSync(p, b);
}

function editJson(dir: string, file: string, edit: (j: Record<string, unknown>) => unknown): void {
  const p = join(dir, file);
  const j = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
  writeFileSync(p, JSON.stringify(edit(j) ?? j));
}

async function refused(dir: string, re: RegExp): Promise<void> {
  await assert.rejects(
    loadBundle(dir),
    (e: Error) => e instanceof BundleIntegrityError && re.test(e.message),
    re.source,
  );
}

test('per-item values out of their range are refused naming the file, row, item and value', async () => {
  const cases: [string, number, number, RegExp][] = [
    [
      'items_quality.f32',
      1,
      NaN,
      /items_quality\.f32 row 1 \(item "b"\): NaN; quality must be in \[0, 1\]/,
    ],
    ['items_quality.f32', 2, 1e30, /items_quality\.f32 row 2 \(item "c"\): 1\.00\d*e\+30/],
    ['items_quality.f32', 0, -0.5, /items_quality\.f32 row 0 \(item "a"\): -0\.5/],
    ['items_popularity.f32', 0, Infinity, /items_popularity\.f32 row 0 \(item "a"\): Infinity/],
    ['items_popularity.f32', 2, NaN, /items_popularity\.f32 row 2 \(item "c"\): NaN/],
    ['items_created_at.f64', 2, Infinity, /items_created_at\.f64 row 2 \(item "c"\): Infinity/],
    ['items_created_at.f64', 0, -Infinity, /items_created_at\.f64 row 0 \(item "a"\): -Infinity/],
  ];
  for (const [file, row, v, re] of cases)
    await refused(await spoiled((d) => setValue(d, file, row, v)), re);
  // NaN created_at means unknown, and loads (item "b" has one).
  const ok = await loadBundle(await spoiled(() => undefined));
  assert.ok(Number.isNaN(ok.items.createdAt[1]));
});

test('repeated item or user ids, and user ids that are not strings, are refused naming both rows', async () => {
  await refused(
    await spoiled((d) =>
      editJson(d, 'items.json', (j) => {
        j.ids = ['a', 'b', 'a'];
      }),
    ),
    /items\.json ids: item "a" is at rows 0 and 2/,
  );
  await refused(
    await spoiled((d) => writeFileSync(join(d, 'users.json'), '["u1","u1"]')),
    /users\.json: user "u1" is at rows 0 and 1/,
  );
  await refused(
    await spoiled((d) => writeFileSync(join(d, 'users.json'), '["u1",7]')),
    /users\.json\[1\]: expected a string user id, got 7/,
  );
});

test('category numbers that are not rows of category_names are refused naming the item', async () => {
  const bad: [unknown[], RegExp][] = [
    [
      [999],
      /items\.json categories\[0\]\[0\]: 999 is not a category number \(0\.\.1 .*\(item "a"\)/,
    ],
    [[-1], /items\.json categories\[0\]\[0\]: -1 is not/],
    [[0.5], /items\.json categories\[0\]\[0\]: 0\.5 is not/],
    [[0, 'x'], /items\.json categories\[0\]\[1\]: "x" is not/],
  ];
  for (const [cats, re] of bad)
    await refused(
      await spoiled((d) =>
        editJson(d, 'items.json', (j) => {
          (j.categories as unknown[])[0] = cats;
        }),
      ),
      re,
    );
});

test('a value file with a partial trailing value is refused naming it', async () => {
  for (const [file, extra] of [
    ['items_quality.f32', 3],
    ['items_created_at.f64', 7],
    ['item_embeddings.f32', 1],
  ] as const) {
    const dir = await spoiled((d) => appendFileSync(join(d, file), Buffer.alloc(extra)));
    await refused(
      dir,
      new RegExp(`${file.replace('.', '\\.')} has \\d+ bytes, not a whole number`),
    );
  }
});

test('every file the version uses must be in the manifest', async () => {
  for (const file of ['items_quality.f32', 'users.json', 'model.onnx']) {
    const dir = await spoiled((d) =>
      editJson(d, 'manifest.json', (m) => {
        delete (m.files as Record<string, unknown>)[file];
      }),
    );
    await refused(dir, new RegExp(`manifest\\.json does not cover ${file.replace('.', '\\.')}`));
  }
});

test('bad JSON, mistyped config and manifest fields are refused naming the file and field', async () => {
  await refused(
    await spoiled((d) => writeFileSync(join(d, 'items.json'), '{"ids": [')),
    /items\.json is not valid JSON/,
  );
  await refused(
    await spoiled((d) => writeFileSync(join(d, 'users.json'), '["u1",')),
    /users\.json is not valid JSON/,
  );
  await refused(
    await spoiled((d) =>
      editJson(d, 'config.json', (c) => {
        c.dim = '2';
      }),
    ),
    /config\.json dim: expected a positive integer, got "2"/,
  );
  await refused(
    await spoiled((d) =>
      editJson(d, 'config.json', (c) => {
        (c.ranker as Record<string, unknown>).file = 3;
      }),
    ),
    /config\.json ranker\.file: expected a string, got 3/,
  );
  await refused(
    await spoiled((d) =>
      editJson(d, 'manifest.json', (m) => {
        const f = (m.files as Record<string, { bytes: unknown }>)['users.json']!;
        f.bytes = String(f.bytes);
      }),
    ),
    /manifest\.json files\["users\.json"\]\.bytes: expected a non-negative integer, got "\d+"/,
  );
});

test('a version directory that is not its canonical number (007) is not a version', async () => {
  const a = artifacts('zeros');
  await writeVersion(root, a);
  const { dir } = await writeVersion(root, a, { version: 7 });
  renameSync(dir, join(root, 'zeros', '007'));
  await writeVersion(root, a, { version: 3 });
  renameSync(join(root, 'zeros', '3'), join(root, 'zeros', '0'));
  assert.deepEqual(listVersions(root, 'zeros'), [1]);
  assert.equal((await loadLatest(root, 'zeros')).version, 1);
});

async function graph(ids: number[], dim: number, metric: 'ip' | 'cosine' = 'ip') {
  const v = new Float32Array(ids.length * dim);
  for (let i = 0; i < v.length; i++) v[i] = Math.sin(i + 1);
  return HnswIndex.build(Uint32Array.from(ids), v, dim, { metric });
}

async function withRemoved(ids: number[], removed: number[]) {
  const g = await graph(ids, 2);
  await g.remove(Uint32Array.from(removed));
  return g;
}

test('an HNSW graph over another catalog is refused at load, naming the graph file', async () => {
  const { buildServingModel } = await import('../../src/models/registry.js');
  const { DEFAULT_PIPELINE } = await import('../../src/config/index.js');
  const withGraph = async (g: HnswIndex): Promise<string> => {
    const a = artifacts(`g${serial++}`);
    a.writeHnsw = (p) => g.save(p);
    return (await writeVersion(root, a)).dir;
  };
  const serve = async (dir: string) =>
    buildServingModel(await loadBundle(dir), { pipeline: DEFAULT_PIPELINE });
  const cases: [HnswIndex, RegExp][] = [
    [await graph([0, 1, 2, 3, 4], 2), /hnsw\.index holds 5 items, but the catalog .* has 3/],
    [await graph([0, 1], 2), /hnsw\.index holds 2 items, but the catalog .* has 3/],
    [await graph([0, 1, 2], 16), /hnsw\.index has dimension 16, but the bundle's dim is 2/],
    [await graph([0, 1, 7], 2), /hnsw\.index holds id 7, but the catalog's rows are 0\.\.2/],
    [
      await graph([9, 0, 5], 2),
      /hnsw\.index holds id 5 and 1 more past the catalog, but the catalog's rows are 0\.\.2/,
    ],
    // The removed row (id 2) is a waypoint, not an item: the items held are 0, 1 and 3.
    [
      await withRemoved([0, 1, 2, 3], [2]),
      /hnsw\.index holds id 3, but the catalog's rows are 0\.\.2/,
    ],
  ];
  for (const [g, re] of cases)
    await assert.rejects(
      serve(await withGraph(g)),
      (e: Error) => e instanceof BundleIntegrityError && re.test(e.message),
      re.source,
    );
  // Good graphs pass: by inner product, by cosine (the id map inside a pre-transform), with
  // a removed row (saved as id -1), and with an id removed and added again (two rows).
  const cos = await graph([0, 1, 2], 2, 'cosine');
  const removed = await withRemoved([0, 1, 2, 3], [3]);
  const readded = await withRemoved([0, 1, 2], [1]);
  await readded.add(Uint32Array.of(1), Float32Array.of(0.5, 0.5));
  for (const g of [await graph([2, 0, 1], 2), cos, removed, readded]) {
    const dir = await withGraph(g);
    const path = join(dir, 'hnsw.index');
    await checkHnswAgainstCatalog(dir, path, await HnswIndex.load(path), 2, 3);
  }
  // A removed row's slot does not stand in for a missing item.
  await assert.rejects(
    (async () => {
      const dir = await withGraph(removed);
      const path = join(dir, 'hnsw.index');
      await checkHnswAgainstCatalog(dir, path, await HnswIndex.load(path), 2, 4);
    })(),
    /hnsw\.index holds 3 items, but the catalog .* has 4/,
  );
});
