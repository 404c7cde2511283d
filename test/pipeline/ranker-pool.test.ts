// RankerPool.close() with a batch still inside a worker: the batch finishes and its caller
// gets scores, then the workers stop. Terminating a worker in the middle of
// onnxruntime-node's run() aborted the whole process (a C++ exception thrown in a dying
// environment), which is what shutdown and hot swaps used to do to rankings that had
// overrun their budget. Real test bundle, real ONNX model, real Piscina workers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureTestModels } from '../http/harness.js';
import { latestVersion, loadBundle } from '../../src/models/repository.js';
import { RankerPool } from '../../src/pipeline/ranking/pool.js';
import { featureItemsOf, shareBundleItems } from '../../src/pipeline/ranking/shared-bundle.js';
import { userViewFromEvents } from '../../src/features/assemble.js';
import type { RankJob } from '../../src/pipeline/ranking/worker.js';

test('close() lets batches already in a worker finish, rejects the queued ones', async () => {
  const models = ensureTestModels();
  const bundle = await loadBundle(
    join(models, 'recserve', String(latestVersion(models, 'recserve'))),
  );
  const items = await shareBundleItems(bundle);
  const pool = new RankerPool(items, bundle.ranker, {
    threads: 1,
    intraOpThreads: 1,
    batchAcrossRequests: false,
  });
  const n = bundle.items.ids.length;
  const job: RankJob = {
    user: userViewFromEvents(
      featureItemsOf(items),
      bundle.userEmbeddings.subarray(0, bundle.dim),
      [0, 1, 2],
      [Date.UTC(2025, 0, 1), Date.UTC(2025, 0, 2), Date.UTC(2025, 0, 3)],
    ),
    req: { timestampMs: Date.UTC(2025, 0, 4), device: 'mobile' },
    candidates: Int32Array.from({ length: n }, (_, i) => i),
    retrievalScores: new Float32Array(n),
  };
  await pool.warm({
    ...job,
    candidates: job.candidates.subarray(0, 4),
    retrievalScores: job.retrievalScores.subarray(0, 4),
  });
  const inWorker = pool.rank(job);
  const queued = pool.rank(job); // one thread: this one waits in the pool's queue
  assert.equal(pool.inWorkerBatches(), 1);
  const queuedRejected = assert.rejects(queued, /ranker pool is closed/);
  const closing = pool.close();
  const out = await inWorker;
  assert.equal(out.scores.length, n);
  assert.ok(out.scores.every((s) => s >= 0 && s <= 1));
  await queuedRejected;
  await closing;
  assert.equal(pool.inWorkerBatches(), 0);
  await assert.rejects(pool.rank(job), /ranker pool is closed/);
});

/** Nice values of this process's threads, from /proc (Linux). */
function threadNiceValues(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // Fields after the parenthesised name: state is field 3, nice is field 19.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

test('the ranking workers run at the configured nice value, the event loop at its own', async (t) => {
  if (!existsSync('/proc/thread-self')) {
    t.skip('per-thread priorities are read from /proc (Linux)');
    return;
  }
  const models = ensureTestModels();
  const bundle = await loadBundle(
    join(models, 'recserve', String(latestVersion(models, 'recserve'))),
  );
  const items = await shareBundleItems(bundle);
  const before = threadNiceValues().filter((n) => n === 7).length;
  const mainNice = () => {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  };
  const mainBefore = mainNice();
  const pool = new RankerPool(items, bundle.ranker, { threads: 2, intraOpThreads: 1, nice: 7 });
  try {
    await pool.warm({
      user: userViewFromEvents(
        featureItemsOf(items),
        bundle.userEmbeddings.subarray(0, bundle.dim),
        [0],
        [Date.UTC(2025, 0, 1)],
      ),
      req: { timestampMs: Date.UTC(2025, 0, 2), device: 'mobile' },
      candidates: Int32Array.from([0, 1, 2, 3]),
      retrievalScores: new Float32Array(4),
    });
    // Both workers (warm() reaches every worker) and nothing else moved to nice 7.
    const at7 = threadNiceValues().filter((n) => n === 7).length - before;
    assert.ok(at7 >= 2, `${at7} threads at nice 7, want the 2 workers`);
    assert.equal(mainNice(), mainBefore, 'the calling thread keeps its priority');
  } finally {
    await pool.close();
  }
});
