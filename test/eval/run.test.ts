import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { formatReport, runEvaluation } from '../../src/eval/run.js';

const source = {
  kind: 'synthetic' as const,
  options: { users: 500, items: 900, events: 20000, seed: 3 },
};

test('eval runs every model on a temporal split and ALS beats popularity', async () => {
  const r = await runEvaluation({
    source,
    tune: false,
    als: { factors: 16, iterations: 6 },
    ranker: { epochs: 1, maxExamples: 3000 },
  });
  assert.deepEqual(
    r.rows.map((x) => x.model),
    ['popularity', 'item-knn', 'als', 'als+ranker'],
  );
  assert.equal(r.trainEvents + r.testEvents, r.events);
  for (const row of r.rows) {
    const m = row.metrics;
    assert.ok(m.users > 400, `${row.model} users ${m.users}`);
    for (const k of ['recall10', 'recall20', 'ndcg10', 'mrr', 'coverage10', 'diversity10'] as const)
      assert.ok(m[k] >= 0 && m[k] <= 1, `${row.model} ${k} ${m[k]}`);
    assert.ok(m.recall20 >= m.recall10);
  }
  const by = Object.fromEntries(r.rows.map((x) => [x.model, x.metrics]));
  assert.ok(by.als.ndcg10 > by.popularity.ndcg10, 'ALS beats popularity');
  assert.ok(by['item-knn'].ndcg10 > by.popularity.ndcg10, 'item-kNN beats popularity');
  assert.ok(by['als+ranker'].ndcg10 > 0);
  const table = formatReport(r);
  assert.match(table, /^model\s+recall@10\s+recall@20\s+ndcg@10\s+mrr\s+coverage@10\s+ild@10/m);
  assert.match(table, /als\+ranker vs als: NDCG@10 -?\d+\.\d%/);
});

test('recserve eval --json prints the report as JSON', () => {
  const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
  const r = spawnSync(
    process.execPath,
    [
      cli,
      'eval',
      '--dataset',
      'synthetic',
      '--items',
      '600',
      '--users',
      '300',
      '--events',
      '8000',
      '--no-tune',
      '--no-ranker',
      '--json',
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.dataset, 'synthetic');
  assert.deepEqual(
    report.rows.map((x: { model: string }) => x.model),
    ['popularity', 'item-knn', 'als'],
  );
  const bad = spawnSync(process.execPath, [cli, 'eval', '--dataset', 'netflix'], {
    encoding: 'utf8',
  });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--dataset must be movielens or synthetic/);
});

test('native-retrieval evaluation agrees with the JS scorer', async () => {
  const { generateSynthetic } = await import('../../src/data/synthetic.js');
  const { temporalSplit } = await import('../../src/data/split.js');
  const { buildInteractions, trainAls } = await import('../../src/training/als.js');
  const { computeWeights } = await import('../../src/training/weights.js');
  const { alsScorer } = await import('../../src/eval/baselines.js');
  const { evaluateEmbeddings, evaluateScorer, heldOutSets } =
    await import('../../src/eval/evaluate.js');
  const { log, items } = generateSynthetic({ users: 300, items: 700, events: 9000, seed: 9 });
  const { train, test: held } = temporalSplit(log);
  const cm = buildInteractions(train, computeWeights(train), items.ids.length);
  const rel = heldOutSets(cm, held);
  const m = trainAls(cm, { factors: 8, iterations: 4 });
  const opts = { categories: items.categories };
  const js = evaluateScorer(alsScorer(m.userFactors, m.itemFactors, m.dim), cm, rel, opts);
  const native = await evaluateEmbeddings(m.userFactors, m.itemFactors, m.dim, cm, rel, opts);
  assert.equal(native.users, js.users);
  for (const k of ['recall20', 'ndcg10', 'mrr'] as const)
    assert.ok(Math.abs(native[k] - js[k]) < 0.01, `${k}: native ${native[k]} js ${js[k]}`);
});
