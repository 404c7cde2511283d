// Builds a tiny demo repository through the real CLI (synthetic data → ALS → cold start →
// ranker → HNSW → repository) and loads it back with the real consumers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listVersions, loadBundle } from '../../src/models/repository.js';
import { importRanker } from '../../src/models/import.js';
import {
  HEAVY_RANKER_FLOPS,
  rankerMaxBatchRows,
  rankerPoolThreads,
} from '../../src/models/registry.js';
import { onnxFlopsPerRow } from '../../src/ranker/flops.js';

const root = mkdtempSync(join(tmpdir(), 'recserve-build-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
const addonBuilt = existsSync(join(process.cwd(), 'build', 'Release', 'recserve_native.node'));
const tiny = [
  '--items',
  '400',
  '--users',
  '150',
  '--events',
  '5000',
  '--ranker-examples',
  '4000',
  '--ranker-epochs',
  '1',
];

function recserve(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('build-demo writes a loadable bundle; --if-missing then does nothing', async () => {
  const r = recserve('build-demo', '--repo', root, '--quiet', ...tiny);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(out.version, 1);
  assert.deepEqual(listVersions(root, 'recserve'), [1]);
  const again = recserve('build-demo', '--if-missing', '--repo', root, '--quiet');
  assert.equal(again.status, 0, again.stderr);
  assert.deepEqual(listVersions(root, 'recserve'), [1]);

  const b = await loadBundle(out.dir);
  assert.equal(b.items.ids.length, 400);
  assert.equal(b.itemEmbeddings.length, 400 * b.dim);
  assert.ok(b.userIds.length > 100);
  assert.ok(b.itemEmbeddings.every(Number.isFinite));
  assert.ok(b.coldUserEmbedding.some((x) => x !== 0));
  assert.ok(b.metrics.als_ndcg10 > 0, 'held-out metrics recorded');
  // The ranker loads in ONNX Runtime against its own config and scores assembled features.
  const { RankerSession } = await import('../../src/ranker/session.js');
  const { assembleRankerInput, userViewFromEvents } =
    await import('../../src/features/assemble.js');
  const session = await RankerSession.create(b.ranker.path, b.ranker, b.dim);
  try {
    const emb = b.userEmbeddings.subarray(0, b.dim);
    const view = userViewFromEvents(
      b.items,
      emb,
      [0, 1],
      [Date.UTC(2025, 11, 1), Date.UTC(2025, 11, 2)],
    );
    const cands = Int32Array.of(0, 1, 2, 3, 4);
    const inputs = assembleRankerInput(
      b.ranker.inputs,
      b,
      view,
      { timestampMs: Date.UTC(2025, 11, 3), device: 'mobile' },
      cands,
    );
    const scores = await session.score(inputs);
    assert.equal(scores.length, 5);
    assert.ok(scores.every((s) => s >= 0 && s <= 1));
  } finally {
    await session.release();
  }
  if (addonBuilt) {
    assert.equal(b.hnswPath, join(out.dir, 'hnsw.index'));
    const { HnswIndex } = await import('../../src/retrieval/hnsw.js');
    const index = await HnswIndex.load(b.hnswPath);
    assert.equal(index.size, 400);
    assert.equal(index.dim, b.dim);
  }
});

test("the serving model's lookup tables match what the catalog says, row by row", async () => {
  // buildServingModel builds them in pieces (a turn of the event loop between): each one
  // against the plainest way of computing it from the loaded catalog.
  const repo = join(root, 'tables');
  const r = recserve('build-demo', '--repo', repo, '--quiet', ...tiny);
  assert.equal(r.status, 0, r.stderr);
  const b = await loadBundle(JSON.parse(r.stdout.trim().split('\n').pop()!).dir as string);
  const { buildServingModel, releaseServingModel } = await import('../../src/models/registry.js');
  const { DEFAULT_PIPELINE } = await import('../../src/config/index.js');
  const n = b.items.ids.length;
  const pop = Array.from(b.items.popularity);
  const cats = b.items.categories.map((l) => Array.from(l));
  const creators = b.items.creatorIds.slice();
  const m = await buildServingModel(b, { pipeline: DEFAULT_PIPELINE });
  try {
    const byPop = Array.from({ length: n }, (_, i) => i).sort((x, y) => pop[y]! - pop[x]! || x - y);
    assert.deepEqual(Array.from(m.popular), byPop.slice(0, 2000));
    assert.equal(m.maxPopularity, Math.max(0, ...pop));
    const nc = b.items.categoryNames.length;
    for (let c = 0; c < nc; c++) {
      const rows = Array.from({ length: n }, (_, i) => i).filter((i) => cats[i]!.includes(c));
      assert.deepEqual(Array.from(m.categoryRows[c]!), rows, `category ${c}`);
      const top = byPop.filter((i) => cats[i]!.includes(c)).slice(0, 200);
      assert.deepEqual(Array.from(m.popularByCategory[c]!), top, `category ${c} by popularity`);
      assert.equal(m.categoryIndex.get(b.items.categoryNames[c]!), c);
    }
    const want = new Map<string, number[]>();
    creators.forEach((c, i) => {
      if (c) want.set(c, [...(want.get(c) ?? []), i]);
    });
    assert.deepEqual([...m.creatorRows], [...want]);
    assert.ok(want.size > 1, 'the demo catalog has several creators');
  } finally {
    await releaseServingModel(m);
  }
});

test('import-ranker drops a checked ONNX model into a new version and refuses a bad config', async () => {
  const v1 = join(root, 'recserve', '1');
  if (!existsSync(v1)) recserve('build-demo', '--repo', root, '--quiet', ...tiny);
  const config = JSON.parse(readFileSync(join(v1, 'config.json'), 'utf8'));
  const modelPath = join(root, 'external.onnx');
  writeFileSync(modelPath, readFileSync(join(v1, 'model.onnx')));
  const cfgPath = join(root, 'ranker.json');
  writeFileSync(
    cfgPath,
    JSON.stringify({
      inputs: config.ranker.inputs,
      output: config.ranker.output,
      output_kind: config.ranker.output_kind,
    }),
  );
  const r = await importRanker({ repoDir: root, name: 'recserve', modelPath, configPath: cfgPath });
  assert.equal(r.from, 1);
  assert.equal(r.version, 2);
  const b2 = await loadBundle(r.dir);
  assert.deepEqual(readFileSync(b2.ranker.path), readFileSync(modelPath));
  const b1 = await loadBundle(v1);
  assert.deepEqual(b2.itemEmbeddings, b1.itemEmbeddings);
  // The graph comes over with the metric it was built with.
  assert.equal(b1.hnswMetric, 'cosine');
  assert.equal(b2.hnswMetric, b1.hnswMetric);

  const bad = {
    ...config.ranker,
    inputs: [{ ...config.ranker.inputs[0], features: ['dot', 'shoe_size'] }],
  };
  writeFileSync(cfgPath, JSON.stringify(bad));
  await assert.rejects(
    importRanker({ repoDir: root, name: 'recserve', modelPath, configPath: cfgPath }),
    /shoe_size/,
  );
  writeFileSync(cfgPath, JSON.stringify({ inputs: [], output: 'logit' }));
  await assert.rejects(
    importRanker({ repoDir: root, name: 'recserve', modelPath, configPath: cfgPath }),
    /'inputs'/,
  );
  assert.deepEqual(listVersions(root, 'recserve'), [1, 2]);
});

test('build rejects bad arguments with the option named', () => {
  const r = recserve('build', '--source', 'nowhere', '--repo', root);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--source must be/);
  const r2 = recserve('build-demo', '--repo', root, '--items', 'lots');
  assert.notEqual(r2.status, 0);
  assert.match(r2.stderr, /--items must be a positive integer/);
  // Refused here, not by the addon inside the build (where HNSW would be skipped quietly).
  const r3 = recserve('build-demo', '--repo', root, '--hnsw-m', '1');
  assert.notEqual(r3.status, 0);
  assert.match(r3.stderr, /--hnsw-m must be an integer in \[2, 512\], got "1"/);
  const r4 = recserve('build-demo', '--repo', root, '--hnsw-metric', 'l2');
  assert.notEqual(r4.status, 0);
  assert.match(r4.stderr, /--hnsw-metric must be cosine or ip, got "l2"/);
});

test('--hnsw-m and --hnsw-ef-construction set the graph a version is built with', async () => {
  const repo = join(root, 'graph');
  const r = recserve(
    'build-demo',
    '--repo',
    repo,
    '--quiet',
    '--no-ranker',
    ...tiny,
    '--hnsw-m',
    '8',
    '--hnsw-ef-construction',
    '24',
  );
  assert.equal(r.status, 0, r.stderr);
  const dir = JSON.parse(r.stdout.trim().split('\n').pop()!).dir as string;
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.deepEqual(config.training.hnsw, { M: 8, efConstruction: 24, metric: 'cosine' });
  assert.deepEqual(config.hnsw, { file: 'hnsw.index', metric: 'cosine' });
  // And the version's graph loads.
  const { HnswIndex } = await import('../../src/retrieval/hnsw.js');
  const b = await loadBundle(dir);
  const h = await HnswIndex.load(b.hnswPath);
  assert.equal(h.size, 400);
  assert.equal(h.metric, 'cosine');
});

test('--hnsw-metric ip builds the older inner-product graph; config and file must agree', async () => {
  const repo = join(root, 'ip-graph');
  const r = recserve('build-demo', '--repo', repo, '--quiet', ...tiny);
  assert.equal(r.status, 0, r.stderr);
  const r2 = recserve(
    'build-demo',
    '--repo',
    join(repo, 'ip'),
    '--quiet',
    ...tiny,
    '--hnsw-metric',
    'ip',
  );
  assert.equal(r2.status, 0, r2.stderr);
  const dir = JSON.parse(r2.stdout.trim().split('\n').pop()!).dir as string;
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.deepEqual(config.hnsw, { file: 'hnsw.index', metric: 'inner_product' });
  const { buildServingModel, releaseServingModel } = await import('../../src/models/registry.js');
  const { DEFAULT_PIPELINE } = await import('../../src/config/index.js');
  const { similarItems } = await import('../../src/pipeline/similar.js');
  const b = await loadBundle(dir);
  assert.equal(b.hnswMetric, 'inner_product');
  const m = await buildServingModel(b, { pipeline: DEFAULT_PIPELINE });
  try {
    assert.equal(m.hnsw.metric, 'ip');
    // Such a bundle still answers collaborative similar items (its pool by inner product,
    // ordered by cosine).
    const got = await similarItems(m, {
      row: 3,
      n: 5,
      type: 'collaborative',
      exclude: new Set(),
      user: null,
      efSearch: 64,
    });
    assert.equal(got.length, 5);
    const scores = got.map((x) => x.similarity_score);
    assert.deepEqual(
      scores,
      [...scores].sort((x, y) => y - x),
    );
  } finally {
    await releaseServingModel(m);
  }
  // A config that says cosine over an inner-product file (or the reverse) is refused.
  await assert.rejects(
    buildServingModel({ ...b, hnswMetric: 'cosine' }, { pipeline: DEFAULT_PIPELINE }),
    (e: Error) =>
      e.name === 'BundleIntegrityError' &&
      /hnsw\.index's metric is inner_product, but config\.json hnsw\.metric says cosine/.test(
        e.message,
      ),
  );
  const cos = await loadBundle(JSON.parse(r.stdout.trim().split('\n').pop()!).dir as string);
  // Nor is a version without a ranker or a graph served (each refused by name).
  const noRanker = { ...cos, ranker: { ...cos.ranker, path: '' } };
  await assert.rejects(
    buildServingModel(noRanker, { pipeline: DEFAULT_PIPELINE }),
    /no ranker \(model\.onnx\).*import-ranker/,
  );
  await assert.rejects(
    buildServingModel({ ...cos, hnswPath: '' }, { pipeline: DEFAULT_PIPELINE }),
    /no HNSW index \(hnsw\.index\)/,
  );
  await assert.rejects(
    buildServingModel({ ...cos, hnswMetric: 'inner_product' }, { pipeline: DEFAULT_PIPELINE }),
    /hnsw\.index's metric is cosine, but config\.json hnsw\.metric says inner_product/,
  );
});

test('--ranker-hidden sets the deep tower the ranker is trained and exported with', async () => {
  const repo = join(root, 'hidden');
  const r = recserve(
    'build-demo',
    '--repo',
    repo,
    '--quiet',
    ...tiny,
    '--ranker-hidden',
    '24,12,6',
  );
  assert.equal(r.status, 0, r.stderr);
  const dir = JSON.parse(r.stdout.trim().split('\n').pop()!).dir as string;
  const { default: onnxProto } = await import('onnx-proto');
  const model = onnxProto.onnx.ModelProto.decode(readFileSync(join(dir, 'model.onnx')));
  const dims = new Map(
    (model.graph?.initializer ?? []).map((t) => [t.name, (t.dims ?? []).map(Number)]),
  );
  // The deep tower's Gemm weights, in order: [in, 24], [24, 12], [12, 6], [6, 1].
  const widths = (model.graph?.node ?? [])
    .filter((n) => n.opType === 'Gemm')
    .map((n) => dims.get(n.input?.[1] ?? '')![1]);
  assert.deepEqual(widths, [24, 12, 6, 1]);

  const bad = recserve('build-demo', '--repo', repo, '--ranker-hidden', '64,zero');
  assert.notEqual(bad.status, 0);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^recserve build-demo: flag --ranker-hidden/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /);
});

test('a heavy ranker (a 1024-wide layer) gets two ranking workers', () => {
  const repo = join(root, 'heavy');
  // The last --ranker-examples wins: fewer examples keep the wide tower's training short.
  const r = recserve(
    'build-demo',
    '--repo',
    repo,
    '--quiet',
    '--no-hnsw',
    ...tiny,
    '--ranker-examples',
    '500',
    '--ranker-hidden',
    '1024,256',
  );
  assert.equal(r.status, 0, r.stderr);
  const path = join(JSON.parse(r.stdout.trim().split('\n').pop()!).dir as string, 'model.onnx');
  assert.ok(onnxFlopsPerRow(path) >= HEAVY_RANKER_FLOPS);
  assert.equal(rankerPoolThreads(0, path), 2);
  // Cross-request batches of a heavy ranker hold two requests' candidates; explicit wins.
  assert.equal(rankerMaxBatchRows(0, 200, path), 400);
  assert.equal(rankerMaxBatchRows(0, 150, path), 300);
  assert.equal(rankerMaxBatchRows(1000, 200, path), 1000);
});
