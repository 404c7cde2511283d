// trainRanker end to end on a small seeded synthetic data set, with the project's own
// temporal split, confidence weights and ALS: the ONNX model it returns loads, scores the
// features the server assembles, and matches the trainer's forward pass (checked inside).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateSynthetic } from '../../src/data/synthetic.js';
import { temporalSplit } from '../../src/data/split.js';
import { computeWeights } from '../../src/training/weights.js';
import { buildInteractions, trainAls } from '../../src/training/als.js';
import { assembleRankerInput, userViewFromEvents } from '../../src/features/assemble.js';
import { RankerSession } from '../../src/ranker/session.js';
import {
  defaultRankerInputs,
  trainRanker,
  type RankerTrainingInput,
} from '../../src/ranker/train.js';

function smallData(): RankerTrainingInput {
  const s = generateSynthetic({ users: 300, items: 400, events: 12000, seed: 3 });
  const { train } = temporalSplit(s.log);
  const weights = computeWeights(train);
  const numItems = s.items.ids.length;
  const pop = new Float32Array(numItems);
  for (let e = 0; e < train.length; e++) pop[train.item[e]!]!++;
  const items = { ...s.items, popularity: pop };
  const als = trainAls(buildInteractions(train, weights, numItems), { factors: 8, iterations: 5 });
  return {
    dim: als.dim,
    items,
    itemEmbeddings: als.itemFactors,
    userEmbeddings: als.userFactors,
    userIds: train.userIds,
    train,
    weights,
    seed: 5,
  };
}

const data = smallData();

test('trains, exports, and the ONNX model scores assembled features', async () => {
  const trained = await trainRanker(data, { epochs: 2, maxExamples: 6000 });
  const m = trained.metrics;
  assert.ok(m.ranker_train_examples! > 500, `examples ${m.ranker_train_examples}`);
  assert.ok(m.ranker_onnx_max_abs_diff! <= 1e-4, `onnx parity ${m.ranker_onnx_max_abs_diff}`);
  assert.ok(Number.isFinite(m.ranker_val_logloss), 'val logloss recorded');
  assert.ok(m.ranker_val_auc! > 0.55, `val AUC ${m.ranker_val_auc}`);
  // ALS with these weights is what the refit calibrates against: it should find it.
  assert.ok(
    m.ranker_foldin_rel_error! < 0.5,
    `fold-in calibration error ${m.ranker_foldin_rel_error}`,
  );
  assert.equal(trained.outputKind, 'logit');
  assert.deepEqual(trained.inputs, defaultRankerInputs(data.dim));

  const session = await RankerSession.create(trained.onnx, trained, data.dim);
  try {
    const u = 0;
    const rows: number[] = [];
    const ts: number[] = [];
    for (let e = 0; e < data.train.length; e++) {
      if (data.train.user[e] === u) {
        rows.push(data.train.item[e]!);
        ts.push(data.train.timestamp[e]!);
      }
    }
    const view = userViewFromEvents(
      data.items,
      data.userEmbeddings.subarray(u * data.dim, (u + 1) * data.dim),
      rows,
      ts,
    );
    const candidates = Int32Array.from({ length: 50 }, (_, i) => i * 7);
    const inputs = assembleRankerInput(
      trained.inputs,
      data,
      view,
      { timestampMs: Math.max(...ts) + 1000, device: 'desktop' },
      candidates,
    );
    const scores = await session.score(inputs);
    assert.equal(scores.length, 50);
    for (const s of scores) assert.ok(s > 0 && s < 1, `probability ${s}`);
    assert.ok(new Set(scores).size > 10, 'scores discriminate between candidates');
  } finally {
    await session.release();
  }
});

test('the same seed trains the same model', async () => {
  const a = await trainRanker(data, { epochs: 1, maxExamples: 1500, valFraction: 0.05 });
  const b = await trainRanker(data, { epochs: 1, maxExamples: 1500, valFraction: 0.05 });
  assert.deepEqual(a.onnx, b.onnx);
});

test('bad inputs fail with errors naming the field', async () => {
  await assert.rejects(
    trainRanker({ ...data, itemEmbeddings: data.itemEmbeddings.subarray(1) }),
    /trainRanker itemEmbeddings: length/,
  );
  await assert.rejects(
    trainRanker({ ...data, userEmbeddings: new Float32Array(3) }),
    /trainRanker userEmbeddings: length/,
  );
  await assert.rejects(
    trainRanker({ ...data, weights: new Float32Array(2) }),
    /trainRanker weights: length 2/,
  );
  await assert.rejects(trainRanker({ ...data, dim: 0 }), /trainRanker dim/);
  await assert.rejects(
    trainRanker(data, { inputs: [{ name: 'deep', features: ['dot', 'nonsense'] }] }),
    /unknown ranker feature 'nonsense'/,
  );
});

test('too little data gives a working fallback ranker that keeps the dot-product order', async () => {
  // Only user 0's first two events: no user with the 3 events a split needs.
  const keep = [] as number[];
  for (let e = 0; e < data.train.length && keep.length < 2; e++) {
    if (data.train.user[e] === 0) keep.push(e);
  }
  const pick = <T extends { [i: number]: number; length: number }>(
    a: T,
    make: (n: number) => T,
  ) => {
    const out = make(keep.length);
    keep.forEach((e, i) => (out[i] = a[e]!));
    return out;
  };
  const train = {
    ...data.train,
    length: keep.length,
    user: pick(data.train.user, (n) => new Int32Array(n)),
    item: pick(data.train.item, (n) => new Int32Array(n)),
    timestamp: pick(data.train.timestamp, (n) => new Float64Array(n)),
    event: pick(data.train.event, (n) => new Uint8Array(n)),
    rating: pick(data.train.rating, (n) => new Float32Array(n)),
    weight: pick(data.train.weight, (n) => new Float32Array(n)),
  };
  const trained = await trainRanker({ ...data, train, weights: undefined });
  assert.equal(trained.metrics.ranker_fallback, 1);
  assert.match(trained.fallbackReason ?? '', /fewer than 2 users/);
  const session = await RankerSession.create(trained.onnx, trained, data.dim);
  try {
    const emb = data.userEmbeddings.subarray(0, data.dim);
    const view = userViewFromEvents(data.items, emb, [], []);
    const candidates = Int32Array.from({ length: 40 }, (_, i) => i);
    const inputs = assembleRankerInput(
      trained.inputs,
      data,
      view,
      { timestampMs: Date.UTC(2025, 0, 1), device: undefined },
      candidates,
    );
    const logits = await session.scoreRaw(inputs);
    candidates.forEach((c, i) => {
      let dot = 0;
      for (let k = 0; k < data.dim; k++) dot += emb[k]! * data.itemEmbeddings[c * data.dim + k]!;
      assert.ok(Math.abs(logits[i]! - dot) < 1e-5, `candidate ${c}: ${logits[i]} vs dot ${dot}`);
    });
  } finally {
    await session.release();
  }
});
