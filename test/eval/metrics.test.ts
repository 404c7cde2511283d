import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MetricAccumulator,
  intraListDiversity,
  ndcgAt,
  recallAt,
  reciprocalRank,
} from '../../src/eval/metrics.js';
import { topK } from '../../src/eval/topk.js';

const close = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test('recall, NDCG, MRR on a hand-computed list', () => {
  const list = [5, 3, 9, 1, 7];
  const rel = new Set([3, 7, 42]);
  close(recallAt(list, rel, 2), 1 / 3);
  close(recallAt(list, rel, 5), 2 / 3);
  // Hits at ranks 2 and 5: DCG = 1/log2(3) + 1/log2(6); IDCG (3 relevant) = 1 + 1/log2(3) + 1/2.
  close(
    ndcgAt(list, rel, 10),
    (1 / Math.log2(3) + 1 / Math.log2(6)) / (1 + 1 / Math.log2(3) + 0.5),
  );
  close(ndcgAt([3, 7, 42], rel, 10), 1);
  close(ndcgAt(list, rel, 1), 0);
  close(reciprocalRank(list, rel), 0.5);
  close(reciprocalRank([1, 2], rel), 0);
  close(recallAt(list, new Set(), 10), 0);
});

test('intra-list diversity is the mean pairwise category distance', () => {
  const cats = [Uint16Array.of(0), Uint16Array.of(0), Uint16Array.of(1), Uint16Array.of(0, 1)];
  // Pairs: (0,1)=0, (0,2)=1, (1,2)=1 → 2/3.
  close(intraListDiversity([0, 1, 2], cats, 10), 2 / 3);
  // (0,3): Jaccard 1/2 → distance 1/2.
  close(intraListDiversity([0, 3], cats, 10), 0.5);
  close(intraListDiversity([0], cats, 10), 0);
});

test('the accumulator averages over users with relevant items and counts coverage', () => {
  const cats = Array.from({ length: 10 }, (_, i) => Uint16Array.of(i % 2));
  const acc = new MetricAccumulator(10, cats);
  acc.add([0, 1, 2], new Set([0]));
  acc.add([3, 4, 5], new Set([9]));
  acc.add([6], new Set()); // ignored: nothing held out
  const m = acc.result();
  assert.equal(m.users, 2);
  close(m.recall10, 0.5);
  close(m.mrr, 0.5);
  close(m.ndcg10, 0.5);
  close(m.coverage10, 6 / 10);
});

test('topK returns the best rows in order, honouring the mask and skipping NaN', () => {
  const s = Float32Array.of(0.1, 0.9, NaN, 0.5, 0.9, -Infinity, 0.7);
  assert.deepEqual(Array.from(topK(s, 3)), [1, 4, 6]);
  const mask = new Uint8Array(7);
  mask[1] = 1;
  assert.deepEqual(Array.from(topK(s, 3, mask)), [4, 6, 3]);
  assert.deepEqual(Array.from(topK(s, 10)), [1, 4, 6, 3, 0]);
  assert.deepEqual(Array.from(topK(s, 0)), []);
});
