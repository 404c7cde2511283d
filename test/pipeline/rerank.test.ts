// The multi-objective re-rank on hand-made candidates: caps, backfill, exploration's
// reproducibility and the diversity term's effect.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capFor, rerank, seededRng, type RerankOptions } from '../../src/pipeline/rerank.js';

const DIM = 2;
/** Items 0..n-1; item i points at angle i·step, in category cats[i], by creator i % creators. */
function setup(n: number, cats: number[], creators = n): RerankOptions {
  const E = new Float32Array(n * DIM);
  for (let i = 0; i < n; i++) {
    E[i * DIM] = Math.cos(i * 0.3);
    E[i * DIM + 1] = Math.sin(i * 0.3);
  }
  return {
    n: 5,
    dim: DIM,
    itemEmbeddings: E,
    itemNorms: new Float32Array(n).fill(1),
    primaryCategory: (r) => cats[r]!,
    creatorOf: (r) => `c${r % creators}`,
    createdAt: new Float64Array(n).fill(0),
    nowMs: 0,
    recent: new Set(),
    explorationRate: 0,
    rng: seededRng(1),
    maxPerCategory: 100,
    maxPerCreator: 100,
  };
}

test('capFor maps category_diversity to a per-category cap', () => {
  assert.equal(capFor(undefined, 10, 5), 5);
  assert.equal(capFor(0, 10, 5), 10);
  assert.equal(capFor(0.8, 10, 5), 2);
  assert.equal(capFor(1, 10, 5), 1);
});

test('without caps or exploration the best engagement comes first', () => {
  const o = setup(10, new Array(10).fill(0));
  const cands = Array.from({ length: 10 }, (_, i) => ({ row: i, engagement: i / 10 }));
  const out = rerank(cands, o);
  assert.equal(out.length, 5);
  assert.equal(out[0]!.row, 9);
  assert.equal(new Set(out.map((x) => x.row)).size, 5);
});

test('category caps hold while enough other categories exist, then backfill', () => {
  // Rows 0..7 in category 0 (the most engaging), rows 8..9 in categories 1 and 2.
  const cats = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2];
  const cands = Array.from({ length: 10 }, (_, i) => ({ row: i, engagement: 1 - i / 20 }));
  const capped = rerank(cands, { ...setup(10, cats), n: 4, maxPerCategory: 2 });
  const perCat = (rows: number[]) =>
    rows.reduce((m, r) => m.set(cats[r]!, (m.get(cats[r]!) ?? 0) + 1), new Map<number, number>());
  assert.deepEqual([...perCat(capped.map((x) => x.row)).entries()].sort(), [
    [0, 2],
    [1, 1],
    [2, 1],
  ]);
  // Asking for more than the caps allow: the list is filled from the overflow.
  const filled = rerank(cands, { ...setup(10, cats), n: 8, maxPerCategory: 2 });
  assert.equal(filled.length, 8);
});

test('creator caps hold', () => {
  const cands = Array.from({ length: 12 }, (_, i) => ({ row: i, engagement: 1 - i / 24 }));
  const out = rerank(cands, { ...setup(12, new Array(12).fill(0), 3), n: 6, maxPerCreator: 2 });
  const counts = new Map<string, number>();
  for (const x of out) counts.set(`c${x.row % 3}`, (counts.get(`c${x.row % 3}`) ?? 0) + 1);
  for (const v of counts.values()) assert.ok(v <= 2);
});

test('exploration is reproducible with a seed and marks its picks', () => {
  const cands = Array.from({ length: 50 }, (_, i) => ({ row: i, engagement: 1 - i / 100 }));
  const run = () =>
    rerank(cands, {
      ...setup(50, new Array(50).fill(0)),
      n: 20,
      explorationRate: 0.5,
      rng: seededRng(42),
    });
  const a = run();
  const b = run();
  assert.deepEqual(a, b);
  assert.ok(a.some((x) => x.explored));
  assert.ok(a.some((x) => !x.explored));
});

test('the diversity term prefers an item unlike those already selected', () => {
  // Rows 0 and 1 point the same way; row 2 is orthogonal and slightly less engaging.
  const E = new Float32Array([1, 0, 1, 0, 0, 1]);
  const o = { ...setup(3, [0, 1, 2]), itemEmbeddings: E, n: 2 };
  const out = rerank(
    [
      { row: 0, engagement: 0.9 },
      { row: 1, engagement: 0.89 },
      { row: 2, engagement: 0.85 },
    ],
    o,
  );
  assert.deepEqual(
    out.map((x) => x.row),
    [0, 2],
  );
});
