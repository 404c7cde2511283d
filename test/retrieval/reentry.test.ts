// JavaScript that runs while a native call reads its arguments, and native work that outlives
// the JS environment that started it. An element getter of an `exclude` array runs JS in the
// middle of argument parsing: it can grow the array past the length already checked, or
// detach the queries' buffer. A worker thread can be terminated while its searches, writes and
// compactions still run on native threads. Each case once crashed the whole process (a heap
// overflow, a read of freed memory, an abort in a completion callback, code unloaded under a
// running thread); the cases run in child processes so that a crash fails the test instead of
// killing the runner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { assertClean, runModule } from './child.js';

const EXACT = fileURLToPath(new URL('../../src/retrieval/exact.js', import.meta.url));
const HNSW = fileURLToPath(new URL('../../src/retrieval/hnsw.js', import.meta.url));

for (const [name, path, make] of [
  ['exact', EXACT, 'm.ExactIndex.create({ dim: 4 }); ix.build(Uint32Array.of(1, 2, 3), rows)'],
  ['hnsw', HNSW, 'await m.HnswIndex.build(Uint32Array.of(1, 2, 3), rows, 4)'],
] as const) {
  test(`${name}: an exclude getter that grows the array is read to the length checked`, () => {
    const r = runModule(`
      const m = await import(${JSON.stringify(path)});
      const rows = Float32Array.of(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0);
      let ix; ix = ${make};
      const exclude = [null];
      Object.defineProperty(exclude, 0, { get() {
        for (let i = 0; i < 64; i++) exclude.push(new Uint32Array(4096));
        return Uint32Array.of(1);
      } });
      const got = ix.searchSync(Float32Array.of(1, 0.5, 0.25, 0), 3, { exclude });
      console.log(JSON.stringify(Array.from(got.ids)));`);
    // Id 1 excluded, as the getter said; the 64 arrays pushed past the checked length ignored.
    assert.equal(assertClean(r), JSON.stringify([2, 3, 0xffffffff]));
  });

  test(`${name}: a getter that detaches the queries' buffer does not change the queries`, () => {
    const r = runModule(
      `
      const m = await import(${JSON.stringify(path)});
      const rows = Float32Array.of(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0);
      let ix; ix = ${make};
      const nq = 16384; // 256 KiB: freed, a buffer this large is unmapped, and a read faults
      const q = new Float32Array(4 * nq);
      for (let i = 0; i < nq; i++) q[4 * i + 1] = 1; // every query points at id 2
      const exclude = new Array(nq).fill(null);
      Object.defineProperty(exclude, 0, { get() {
        structuredClone(q.buffer, { transfer: [q.buffer] });
        globalThis.gc();
        return null;
      } });
      const got = ix.searchSync(q, 1, { exclude });
      let best2 = 0;
      for (let i = 0; i < nq; i++) best2 += got.ids[i] === 2 && got.scores[i] === 1 ? 1 : 0;
      console.log(q.length, best2);`,
      ['--expose-gc'],
    );
    // The buffer was detached (length 0), and every query still found id 2 at score 1.
    assert.equal(assertClean(r), '0 16384');
  });
}

test('a worker terminated while its native calls run leaves the process running', () => {
  // Searches and writes in libuv's pool, an HNSW save and a compaction on a thread of its own,
  // all in flight when the worker ends; the main thread then lives on while they finish.
  // An ES module, as the parent is (the worker inherits --input-type=module).
  const worker = `
    import { parentPort } from 'node:worker_threads';
    const e = await import(${JSON.stringify(EXACT)});
    const h = await import(${JSON.stringify(HNSW)});
    const D = 16, N = 20000;
    const rows = new Float32Array(N * D).map((_, i) => Math.sin(i * 0.37));
    const ids = Uint32Array.from({ length: N }, (_, i) => i);
    const exact = e.ExactIndex.create({ dim: D });
    exact.build(ids, rows);
    const graph = await h.HnswIndex.build(ids, rows, D);
    await graph.remove(ids.subarray(0, 100));
    const none = () => {};
    for (let i = 0; i < 4; i++) exact.search(rows.subarray(0, 32 * D), 100).then(none, none);
    exact.upsertAsync(ids.subarray(0, 10), rows.subarray(0, 10 * D)).then(none, none);
    exact.buildAsync(ids, rows).then(none, none);
    graph.search(rows.subarray(0, 32 * D), 10).then(none, none);
    graph.add(Uint32Array.of(N + 1), rows.subarray(0, D)).then(none, none);
    graph.save(process.env.SAVE_TO).then(none, none);
    graph.compact().then(none, none);
    parentPort.postMessage('started');`;
  const r = runModule(`
    import { Worker } from 'node:worker_threads';
    import { mkdtempSync, rmSync } from 'node:fs';
    import { join } from 'node:path';
    import { tmpdir } from 'node:os';
    const dir = mkdtempSync(join(tmpdir(), 'recserve-reentry-'));
    process.env.SAVE_TO = join(dir, 'g.idx');
    const w = new Worker(${JSON.stringify(worker)}, { eval: true });
    w.once('message', async () => {
      await w.terminate();
      setTimeout(() => {
        rmSync(dir, { recursive: true, force: true });
        console.log('alive');
      }, 4000);
    });`);
  assert.equal(assertClean(r), 'alive');
});
