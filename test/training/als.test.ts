import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogBuilder, eventCode } from '../../src/data/log.js';
import { generateSynthetic } from '../../src/data/synthetic.js';
import { temporalSplit } from '../../src/data/split.js';
import { buildInteractions, trainAls } from '../../src/training/als.js';
import { computeWeights } from '../../src/training/weights.js';
import { alsScorer, popularityScorer } from '../../src/eval/baselines.js';
import { evaluateScorer, heldOutSets } from '../../src/eval/evaluate.js';
import {
  applyColdItems,
  contentEmbedding,
  fitContentModel,
  meanUserEmbedding,
} from '../../src/training/coldstart.js';
import { setPopularity } from '../../src/data/log.js';

test('buildInteractions merges repeats and drops non-positive totals', () => {
  const b = new LogBuilder();
  const u = b.userRow('u');
  const v = b.userRow('v');
  b.push(u, 2, 1, eventCode('view'));
  b.push(u, 2, 2, eventCode('click'));
  b.push(u, 1, 3, eventCode('skip'));
  b.push(v, 0, 4, eventCode('purchase'));
  const log = b.finish();
  const m = buildInteractions(log, computeWeights(log, { decayPerDay: 0 }), 3);
  assert.deepEqual(Array.from(m.userPtr), [0, 1, 2]);
  assert.deepEqual(Array.from(m.userItems), [2, 0]);
  assert.deepEqual(Array.from(m.userWeights), [4, 10]);
  assert.deepEqual(Array.from(m.itemPtr), [0, 1, 1, 2]);
  assert.deepEqual(Array.from(m.itemUsers), [1, 0]);
  assert.throws(() => buildInteractions(log, new Float32Array(4), 2), /outside the catalog/);
});

test('enough CG steps solve each row exactly: the user rows satisfy the normal equations', () => {
  const { log, items } = generateSynthetic({ users: 40, items: 60, events: 800, seed: 3 });
  const cm = buildInteractions(log, computeWeights(log), items.ids.length);
  const d = 6;
  const lambda = 0.5;
  const alpha = 2;
  const m = trainAls(cm, { factors: d, regularization: lambda, alpha, iterations: 3, cgSteps: 40 });
  // After the last sweep items are exact given users; check item rows: A x = b.
  const X = m.itemFactors;
  const Y = m.userFactors;
  let worst = 0;
  for (let i = 0; i < cm.numItems; i++) {
    const a = cm.itemPtr[i];
    const b = cm.itemPtr[i + 1];
    if (a === b) continue;
    const x = X.subarray(i * d, (i + 1) * d);
    for (let r = 0; r < d; r++) {
      let lhs = lambda * x[r];
      for (let u = 0; u < cm.numUsers; u++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += Y[u * d + j] * x[j];
        lhs += Y[u * d + r] * dot;
      }
      let rhs = 0;
      for (let k = a; k < b; k++) {
        const u = cm.itemUsers[k];
        const c = 1 + alpha * cm.itemWeights[k];
        let dot = 0;
        for (let j = 0; j < d; j++) dot += Y[u * d + j] * x[j];
        lhs += (c - 1) * dot * Y[u * d + r];
        rhs += c * Y[u * d + r];
      }
      worst = Math.max(worst, Math.abs(lhs - rhs) / (1 + Math.abs(rhs)));
    }
  }
  assert.ok(worst < 1e-3, `normal-equation residual ${worst}`);
});

test('ALS recovers planted taste clusters: held-out recall far above popularity', () => {
  const { log, items } = generateSynthetic({
    users: 800,
    items: 1500,
    events: 40000,
    seed: 11,
    clusters: 10,
  });
  const { train, test: held } = temporalSplit(log);
  const cm = buildInteractions(train, computeWeights(train), items.ids.length);
  const rel = heldOutSets(cm, held);
  const m = trainAls(cm, { factors: 16, regularization: 0.1, alpha: 5, iterations: 8 });
  const opts = { categories: items.categories };
  const als = evaluateScorer(alsScorer(m.userFactors, m.itemFactors, m.dim), cm, rel, opts);
  const pop = evaluateScorer(popularityScorer(cm), cm, rel, opts);
  assert.ok(als.recall20 > 1.5 * pop.recall20, `als ${als.recall20} vs popularity ${pop.recall20}`);
  assert.ok(als.ndcg10 > 1.5 * pop.ndcg10, `als ${als.ndcg10} vs popularity ${pop.ndcg10}`);
  assert.ok(als.coverage10 > pop.coverage10);
  assert.throws(() => trainAls(cm, { factors: 0 }), /'factors'/);
  assert.throws(() => trainAls(cm, { alpha: -1 }), /'alpha'/);
});

test('cold start: a new item lands near its taste cluster; new users get the mean', () => {
  const s = generateSynthetic({ users: 800, items: 1500, events: 40000, seed: 5, clusters: 6 });
  const { log, items } = s;
  setPopularity(items, log);
  const cm = buildInteractions(log, computeWeights(log), items.ids.length);
  const m = trainAls(cm, { factors: 16, iterations: 8 });
  const d = m.dim;
  const model = fitContentModel(items, m.itemFactors, d, { minInteractions: 5 });
  assert.equal(model.weights.length, model.features.length * d);
  // Cluster centroids of warm items.
  const K = 6;
  const cent = new Float64Array(K * d);
  const cnt = new Float64Array(K);
  for (let i = 0; i < items.ids.length; i++) {
    if (items.popularity[i] < 5) continue;
    const k = s.itemCluster[i];
    cnt[k]++;
    for (let j = 0; j < d; j++) cent[k * d + j] += m.itemFactors[i * d + j];
  }
  // For warm items, predict from content alone and check the nearest centroid (cosine).
  let right = 0;
  let total = 0;
  for (let i = 0; i < items.ids.length && total < 300; i++) {
    if (items.popularity[i] < 5) continue;
    const e = contentEmbedding(
      model,
      items.titles[i],
      Array.from(items.categories[i], (c) => items.categoryNames[c]),
      items.creatorIds[i],
    );
    let best = -1;
    let bestSim = -Infinity;
    for (let k = 0; k < K; k++) {
      let dot = 0;
      let nn = 0;
      for (let j = 0; j < d; j++) {
        dot += e[j] * cent[k * d + j];
        nn += cent[k * d + j] ** 2;
      }
      const sim = dot / Math.sqrt(nn + 1e-12);
      if (sim > bestSim) {
        bestSim = sim;
        best = k;
      }
    }
    total++;
    if (best === s.itemCluster[i]) right++;
  }
  assert.ok(right / total > 0.6, `content → cluster accuracy ${right / total} (chance ${1 / K})`);
  const before = Float32Array.from(m.itemFactors);
  const touched = applyColdItems(items, m.itemFactors, model, 5);
  assert.ok(touched > 0);
  let changedWarm = 0;
  for (let i = 0; i < items.ids.length; i++)
    if (items.popularity[i] >= 5 && m.itemFactors[i * d] !== before[i * d]) changedWarm++;
  assert.equal(changedWarm, 0, 'warm items keep their ALS factors');
  const mean = meanUserEmbedding(m.userFactors, d);
  assert.equal(mean.length, d);
  assert.ok(mean.some((x) => x !== 0));
});

test('trainAlsParallel (2 worker threads) matches trainAls', async () => {
  const { trainAlsParallel } = await import('../../src/training/als.js');
  const { log, items } = generateSynthetic({ users: 300, items: 500, events: 9000, seed: 21 });
  const cm = buildInteractions(log, computeWeights(log), items.ids.length);
  const o = { factors: 12, iterations: 4, regularization: 0.1, alpha: 5 };
  const seq = trainAls(cm, o);
  const par = await trainAlsParallel(cm, { ...o, threads: 2 });
  // Scores (not raw factors) are the invariant: compare user·item for a sample of pairs.
  let worst = 0;
  for (let u = 0; u < 300; u += 7)
    for (let i = 0; i < 500; i += 11) {
      let a = 0;
      let b = 0;
      for (let j = 0; j < 12; j++) {
        a += seq.userFactors[u * 12 + j] * seq.itemFactors[i * 12 + j];
        b += par.userFactors[u * 12 + j] * par.itemFactors[i * 12 + j];
      }
      worst = Math.max(worst, Math.abs(a - b));
    }
  assert.ok(worst < 1e-3, `max score difference ${worst}`);
  assert.ok(!(par.itemFactors.buffer instanceof SharedArrayBuffer));
});
