// The dynamic retrieval batcher over the real exact index: concurrent queries share passes,
// and each caller gets exactly what a search of its own would have returned.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metrics } from '../../src/observability/metrics.js';
import { RetrievalBatcher } from '../../src/pipeline/candidates/batcher.js';
import { ExactIndex } from '../../src/retrieval/exact.js';

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296 - 0.5;
}

test('concurrent searches are coalesced and answered as if alone', async () => {
  const n = 5000;
  const dim = 16;
  const r = rand(3);
  const vectors = Float32Array.from({ length: n * dim }, r);
  const index = ExactIndex.create({ dim });
  index.build(
    Uint32Array.from({ length: n }, (_, i) => i),
    vectors,
  );
  const metrics = new Metrics();
  const batcher = new RetrievalBatcher(index, { maxBatch: 8, metrics });
  const queries = Array.from({ length: 20 }, () => Float32Array.from({ length: dim }, r));
  const excludes = queries.map((_, i) => (i % 2 ? Uint32Array.from([i, i + 1]) : null));
  const ks = queries.map((_, i) => 5 + (i % 4));
  const got = await Promise.all(queries.map((q, i) => batcher.search(q, ks[i]!, excludes[i]!)));
  for (let i = 0; i < queries.length; i++) {
    const alone = index.searchSync(queries[i]!, ks[i]!, { exclude: [excludes[i]!] });
    assert.deepEqual([...got[i]!.ids], [...alone.ids.subarray(0, ks[i]!)]);
    for (const id of got[i]!.ids) assert.ok(!excludes[i]?.includes(id));
  }
  const text = metrics.render();
  const passes = Number(/recserve_batch_size_count\{stage="retrieval"\} (\d+)/.exec(text)![1]);
  const total = Number(/recserve_batch_size_sum\{stage="retrieval"\} (\d+)/.exec(text)![1]);
  assert.equal(total, 20);
  assert.ok(passes < 20 && passes >= 3, `passes=${passes}`); // maxBatch 8 → at least 3
  metrics.close();
});
