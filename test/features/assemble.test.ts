// Tensor assembly layout, its errors, and the history accumulator the trainer shares with
// the server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  UserHistoryAccumulator,
  assembleRankerInput,
  compileRankerInputs,
  userViewFromEvents,
} from '../../src/features/assemble.js';
import type { ItemCatalog } from '../../src/models/bundle.js';

const dim = 2;
const items: ItemCatalog = {
  ids: ['a', 'b', 'c', 'd'],
  index: new Map(),
  titles: ['', '', '', ''],
  categoryNames: ['x', 'y', 'z'],
  categories: [Uint16Array.of(0), Uint16Array.of(1), Uint16Array.of(0, 1), Uint16Array.of(2)],
  creatorIds: ['p', 'q', 'p', ''],
  createdAt: new Float64Array(4),
  quality: new Float32Array(4).fill(0.5),
  popularity: Float32Array.of(1, 2, 3, 4),
};
const itemEmbeddings = Float32Array.of(1, 0, 0, 1, 1, 1, -1, 0);
const bundle = { dim, items, itemEmbeddings };
const T0 = Date.UTC(2025, 0, 1);

test('assembleRankerInput lays out [candidates × width] row-major per input', () => {
  const user = userViewFromEvents(items, Float32Array.of(1, 2), [0], [T0]);
  const spec = [
    { name: 'deep', features: ['item_emb', 'dot'] },
    { name: 'wide', features: ['item_log_popularity'] },
  ];
  const out = assembleRankerInput(
    spec,
    bundle,
    user,
    { timestampMs: T0, device: undefined },
    Int32Array.of(2, 3),
  );
  assert.deepEqual(Object.keys(out).sort(), ['deep', 'wide']);
  assert.deepEqual(Array.from(out.deep!), [1, 1, 3, -1, 0, -1]);
  assert.deepEqual(Array.from(out.wide!), [Math.fround(Math.log(4)), Math.fround(Math.log(5))]);
  const empty = assembleRankerInput(
    spec,
    bundle,
    user,
    { timestampMs: T0, device: undefined },
    new Int32Array(0),
  );
  assert.equal(empty.deep!.length, 0);
});

test('assembly errors name the field', () => {
  const user = userViewFromEvents(items, Float32Array.of(1, 2), [], []);
  const req = { timestampMs: T0, device: undefined };
  const spec = [{ name: 'x', features: ['dot'] }];
  assert.throws(
    () => assembleRankerInput(spec, bundle, user, req, Int32Array.of(0, 4)),
    /candidates\[1\]: item row 4/,
  );
  assert.throws(
    () => assembleRankerInput(spec, bundle, user, req, Int32Array.of(0), Float32Array.of(1, 2)),
    /retrievalScores: length 2/,
  );
  assert.throws(
    () =>
      assembleRankerInput(
        spec,
        bundle,
        user,
        { timestampMs: NaN, device: undefined },
        Int32Array.of(0),
      ),
    /req.timestampMs/,
  );
  assert.throws(
    () =>
      assembleRankerInput(
        spec,
        bundle,
        { ...user, embedding: Float32Array.of(1) },
        req,
        Int32Array.of(0),
      ),
    /user.embedding: length 1/,
  );
  assert.throws(() => compileRankerInputs([], dim), /lists no inputs/);
  assert.throws(
    () => compileRankerInputs([{ name: 'x', features: [] }], dim),
    /'x': features must be/,
  );
  assert.throws(
    () =>
      compileRankerInputs(
        [
          { name: 'x', features: ['dot'] },
          { name: 'x', features: ['dot'] },
        ],
        dim,
      ),
    /'x' is listed twice/,
  );
  assert.throws(
    () => compileRankerInputs([{ name: 'x', features: ['bogus'] }], dim),
    /unknown ranker feature 'bogus'/,
  );
});

test('compiled widths follow the embedding dimension', () => {
  const [p] = compileRankerInputs(
    [{ name: 'in', features: ['user_emb', 'device', 'dot', 'item_emb[1]'] }],
    8,
  );
  assert.equal(p!.width, 8 + 5 + 1 + 1);
  assert.deepEqual(
    p!.features.map((f) => f.offset),
    [0, 8, 13, 14],
  );
});

test('UserHistoryAccumulator: weighted affinity sums to 1, positives only, counts and recency', () => {
  const acc = new UserHistoryAccumulator(items);
  acc.add(0, T0, 2); // category x, weight 2
  acc.add(2, T0 + 1000); // categories x and y, weight 1 each
  acc.add(1, T0 + 2000, 0); // a skip: ignored everywhere
  const a = acc.affinity();
  assert.ok(Math.abs(a[0]! - 3 / 4) < 1e-6, `x ${a[0]}`);
  assert.ok(Math.abs(a[1]! - 1 / 4) < 1e-6, `y ${a[1]}`);
  assert.equal(a[2], 0);
  acc.add(3, T0 + 3000); // an item without a creator
  const v = acc.view(Float32Array.of(0, 0));
  assert.equal(v.interactionCount, 3);
  assert.equal(v.itemCounts.has(1), false);
  assert.deepEqual([...v.creatorCounts], [['p', 2]]);
  assert.deepEqual(Array.from(v.recentItems!), [3, 2, 0]);
  // The view is a snapshot.
  acc.add(0, T0 + 4000);
  assert.equal(v.itemCounts.get(0), 1);
  assert.deepEqual(Array.from(acc.recentItems()), [0, 3, 2]);
});

test('userViewFromEvents only counts events before the request time, in time order', () => {
  const rows = [1, 0, 3, 2];
  const ts = [T0 + 3000, T0 + 1000, T0 + 9000, T0 + 2000];
  const v = userViewFromEvents(items, Float32Array.of(1, 1), rows, ts, T0 + 5000);
  assert.equal(v.interactionCount, 3);
  assert.equal(v.itemCounts.has(3), false);
  assert.deepEqual(Array.from(v.recentItems!), [1, 2, 0]);
  assert.equal(v.categoryAffinity[2], 0);
  const sum = v.categoryAffinity.reduce((s, x) => s + x, 0);
  assert.ok(sum <= 1 + 1e-6 && sum > 0.99);
  // Weights, when given, weigh the affinity: item 1 (category y) at 3, items 0 and 2 at 1.
  const w = userViewFromEvents(items, Float32Array.of(1, 1), rows, ts, T0 + 5000, [3, 1, 1, 1]);
  assert.ok(Math.abs(w.categoryAffinity[1]! - 4 / 6) < 1e-6, `y ${w.categoryAffinity[1]}`);
});
