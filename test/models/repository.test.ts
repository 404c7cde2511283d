import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync,
  rmSync,
  writeFileSync,
  readFileSync,
  mkdirSync,
  existsSync,
  readdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifacts } from './fixtures.js';
import {
  BundleIntegrityError,
  VersionExistsError,
  listVersions,
  loadBundle,
  loadLatest,
  writeVersion,
} from '../../src/models/repository.js';
import { shareBundleItems } from '../../src/pipeline/ranking/shared-bundle.js';

const root = mkdtempSync(join(tmpdir(), 'recserve-repo-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

test('write then load round-trips every part of the bundle', async () => {
  const a = artifacts();
  const { version, dir } = await writeVersion(root, a);
  assert.equal(version, 1);
  const b = await loadBundle(dir);
  assert.equal(b.name, 'demo');
  assert.equal(b.version, 1);
  assert.equal(b.dim, 2);
  assert.deepEqual(b.items.ids, ['a', 'b', 'c']);
  assert.equal(b.items.index.get('c'), 2);
  assert.deepEqual(b.items.titles, a.items.titles);
  assert.deepEqual(b.items.categoryNames, ['x', 'y']);
  assert.deepEqual(
    b.items.categories.map((x) => Array.from(x)),
    [[0], [0, 1], []],
  );
  assert.deepEqual(b.items.creatorIds, ['c1', 'c2', '']);
  assert.deepEqual(b.items.createdAt, a.items.createdAt);
  assert.deepEqual(b.items.quality, a.items.quality);
  assert.deepEqual(b.items.popularity, a.items.popularity);
  assert.deepEqual(b.itemEmbeddings, a.itemEmbeddings);
  // Read straight into shared memory: what ranking workers read, used as it is.
  for (const x of [b.itemEmbeddings, b.items.createdAt, b.items.quality, b.items.popularity])
    assert.ok(x.buffer instanceof SharedArrayBuffer);
  const shared = await shareBundleItems(b);
  assert.equal(shared.itemEmbeddings, b.itemEmbeddings);
  assert.equal(shared.popularity, b.items.popularity);
  assert.deepEqual(b.userEmbeddings, a.userEmbeddings);
  assert.equal(b.userIndex.get('u2'), 1);
  assert.deepEqual(b.coldUserEmbedding, a.coldUserEmbedding);
  assert.deepEqual(b.content?.weights, a.content!.weights);
  assert.equal(b.ranker.path, join(dir, 'model.onnx'));
  assert.deepEqual(b.ranker.inputs, a.ranker!.inputs);
  assert.equal(b.ranker.outputKind, 'logit');
  assert.deepEqual(readFileSync(b.ranker.path), Buffer.from([1, 2, 3]));
  assert.equal(b.hnswPath, '');
  assert.equal(b.metrics.als_ndcg10, 0.5);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.equal(config.kind, 'recserve-bundle');
  assert.ok(Date.parse(config.created_at) > 0);
  assert.ok(
    !readdirSync(join(root, 'demo')).some((f) => f.startsWith('.tmp-')),
    'no temp dir left',
  );
});

test('versions are numbered, listed in order and never overwritten', async () => {
  const a = artifacts('multi');
  await writeVersion(root, a);
  await writeVersion(root, a);
  await writeVersion(root, a, { version: 10 });
  // A crashed writer's temp dir and an incomplete (manifest-less) number are not versions.
  mkdirSync(join(root, 'multi', '.tmp-11-1-abcd'));
  mkdirSync(join(root, 'multi', '12'));
  assert.deepEqual(listVersions(root, 'multi'), [1, 2, 10]);
  assert.equal((await loadLatest(root, 'multi')).version, 10);
  const before = readFileSync(join(root, 'multi', '2', 'manifest.json'), 'utf8');
  await assert.rejects(writeVersion(root, a, { version: 2 }), VersionExistsError);
  assert.equal(readFileSync(join(root, 'multi', '2', 'manifest.json'), 'utf8'), before);
  assert.deepEqual(listVersions(root, 'nothing-here'), []);
  await assert.rejects(loadLatest(root, 'nothing-here'), /build-demo/);
});

test('a corrupted, truncated or missing file makes loadBundle reject', async () => {
  const a = artifacts('corrupt');
  const { dir: d1 } = await writeVersion(root, a);
  const emb = join(d1, 'item_embeddings.f32');
  const bytes = readFileSync(emb);
  bytes[5] ^= 0xff;
  writeFileSync(emb, bytes);
  await assert.rejects(
    loadBundle(d1),
    (e: unknown) =>
      e instanceof BundleIntegrityError && /item_embeddings.f32 checksum mismatch/.test(e.message),
  );

  const { dir: d2 } = await writeVersion(root, a);
  writeFileSync(join(d2, 'users.json'), '["u1"]');
  await assert.rejects(loadBundle(d2), /users.json has \d+ bytes/);

  const { dir: d3 } = await writeVersion(root, a);
  rmSync(join(d3, 'model.onnx'));
  await assert.rejects(loadBundle(d3), /model.onnx is missing/);

  const { dir: d4 } = await writeVersion(root, a);
  rmSync(join(d4, 'manifest.json'));
  await assert.rejects(loadBundle(d4), /manifest.json unreadable/);
});

test('inconsistent artifacts are refused before anything is written', async () => {
  const a = artifacts('bad');
  await assert.rejects(
    writeVersion(root, { ...a, itemEmbeddings: new Float32Array(5) }),
    /itemEmbeddings has 5 floats/,
  );
  await assert.rejects(
    writeVersion(root, { ...a, itemEmbeddings: Float32Array.of(1, 0, 0, 1, NaN, 0) }),
    /itemEmbeddings\[4\] is not finite/,
  );
  await assert.rejects(writeVersion(root, { ...a, name: '../escape' }), /bundle name/);
  assert.equal(existsSync(join(root, 'bad')), false);
});

test('a version whose embeddings cannot be scored in its storage is refused by item, not served as infinities', async () => {
  const { buildServingModel } = await import('../../src/models/registry.js');
  const { DEFAULT_PIPELINE } = await import('../../src/config/index.js');
  const a = artifacts('wide');
  a.itemEmbeddings = Float32Array.of(1, 0, 0, 1e5, 0.5, 0.5);
  const { dir } = await writeVersion(root, a);
  await assert.rejects(
    buildServingModel(await loadBundle(dir), {
      pipeline: { ...DEFAULT_PIPELINE, exactStorage: 'f16' },
    }),
    (e: Error) =>
      e instanceof RangeError &&
      /^item "b": embedding component 1 is 100000, beyond float16's range .*'f16'/.test(e.message),
  );
  // Any storage: a squared norm whose scores could overflow float32.
  const b = artifacts('huge');
  b.itemEmbeddings = Float32Array.of(1, 0, 0, 1, 1e19, 1e19);
  const v2 = await writeVersion(root, b);
  await assert.rejects(
    buildServingModel(await loadBundle(v2.dir), {
      pipeline: { ...DEFAULT_PIPELINE, exactStorage: 'f32' },
    }),
    (e: Error) =>
      e instanceof RangeError &&
      /^item "c": its embedding has a squared norm of 2e\+38/.test(e.message),
  ); // A user's embedding is a query: the same bound, checked at load, naming the user.
  const c = artifacts('huge-user');
  c.userEmbeddings = Float32Array.of(0.1, 0.2, 1e19, -1e19);
  const v3 = await writeVersion(root, c);
  await assert.rejects(
    buildServingModel(await loadBundle(v3.dir), { pipeline: DEFAULT_PIPELINE }),
    (e: Error) =>
      e instanceof RangeError &&
      /^user "u2": its embedding has a squared norm of 2/.test(e.message),
  );
});

test('loadBundle reuse: a version with the same items.json and users.json shares the catalog and users, others are parsed, and a changed file still fails', async () => {
  const a = artifacts('reuse');
  const v1 = await loadBundle((await writeVersion(root, a)).dir);
  // New embeddings over the same catalog and users (a retrained model).
  const embeddings = Float32Array.of(0, 1, 1, 0, 0.25, 0.75);
  const v2 = await loadBundle(
    (await writeVersion(root, { ...a, itemEmbeddings: embeddings })).dir,
    {
      reuse: v1,
    },
  );
  assert.equal(v2.version, 2);
  assert.equal(v2.items.ids, v1.items.ids);
  assert.equal(v2.items.index, v1.items.index);
  assert.equal(v2.items.titles, v1.items.titles);
  assert.equal(v2.items.categoryTable, v1.items.categoryTable);
  assert.equal(v2.items.creatorTable, v1.items.creatorTable);
  assert.equal(v2.userIds, v1.userIds);
  assert.equal(v2.userIndex, v1.userIndex);
  // What comes from the version's other files is its own.
  assert.deepEqual(v2.itemEmbeddings, embeddings);
  assert.notEqual(v2.items.quality, v1.items.quality);
  assert.deepEqual(v2.items.quality, v1.items.quality);
  // Without `reuse` nothing is shared.
  const alone = await loadBundle(v2.dir);
  assert.notEqual(alone.items.ids, v1.items.ids);
  assert.deepEqual(alone.items.ids, v1.items.ids);

  // A catalog with one title changed is parsed afresh; the unchanged users are still shared.
  const v3 = await loadBundle(
    (await writeVersion(root, { ...a, items: { ...a.items, titles: ['A2', 'Beta', 'Gamma'] } }))
      .dir,
    { reuse: v2 },
  );
  assert.notEqual(v3.items.ids, v2.items.ids);
  assert.deepEqual(v3.items.titles, ['A2', 'Beta', 'Gamma']);
  assert.equal(v3.items.index.get('c'), 2);
  assert.equal(v3.userIndex, v2.userIndex);

  // A version whose items.json no longer matches its manifest fails as before, though the
  // manifest states the catalog `reuse` holds: the file is checked, not the claim.
  const v4 = await writeVersion(root, a);
  writeFileSync(join(v4.dir, 'items.json'), readFileSync(join(v3.dir, 'items.json')));
  await assert.rejects(loadBundle(v4.dir, { reuse: v1 }), BundleIntegrityError);
});
