import { test } from 'node:test';
import assert from 'node:assert/strict';
import { positionMap, rowsByPopularity, slicer, turn } from '../../src/models/loading.js';
import { Rng } from '../../bench/lib/rng.js';
import { countTurns } from './turns.js';

test("rowsByPopularity: the comparator sort's order (ties by row, -0 as 0), NaN last", async () => {
  const rng = new Rng(7);
  // Many ties (integer counts), negatives, both zeros and both infinities.
  const n = 5000;
  const pop = new Float32Array(n);
  for (let r = 0; r < n; r++) pop[r] = rng.int(40) - 10;
  pop[3] = -0;
  pop[4] = 0;
  pop[10] = Infinity;
  pop[11] = -Infinity;
  pop[12] = 1e-40; // subnormal, above zero
  pop[13] = -1e-40;
  const want = Array.from({ length: n }, (_, i) => i).sort((a, b) => pop[b]! - pop[a]! || a - b);
  assert.deepEqual(Array.from(await rowsByPopularity(pop)), want);

  // NaN, which the comparator cannot order, goes after everything, by row.
  const withNaN = Float32Array.of(2, NaN, -Infinity, 5, NaN, 2);
  assert.deepEqual(Array.from(await rowsByPopularity(withNaN)), [3, 0, 5, 2, 1, 4]);
  // A view into a larger buffer is read at its own offset.
  const big = Float32Array.of(100, 1, 3, 2, 100);
  assert.deepEqual(Array.from(await rowsByPopularity(big.subarray(1, 4))), [1, 2, 0]);
  assert.equal((await rowsByPopularity(new Float32Array(0))).length, 0);
});

test('positionMap: the same map as new Map(keys.map((k, i) => [k, i])), the event loop turning between chunks', async () => {
  const keys = Array.from({ length: 1000 }, (_, i) => `k${i % 700}`); // repeats: the last wins
  const counter = countTurns();
  // A slice of 0 ms: a turn is due after every chunk.
  const m = await positionMap(keys, 64, undefined, 0);
  const turns = counter.stop();
  assert.deepEqual([...m], [...new Map(keys.map((k, i) => [k, i]))]);
  // 16 chunks: the ticker ran between them, not only after the last.
  assert.ok(turns >= 10, `the event loop turned ${turns} times`);
  // With the default slice the same small map is built without waiting for turns.
  const quick = countTurns();
  assert.deepEqual([...(await positionMap(keys, 64))], [...m]);
  assert.ok(quick.stop() <= 2);
  assert.equal((await positionMap([])).size, 0);
  await turn();
});

test('slicer: yields a turn once the slice has run out, and not before', async () => {
  const due = slicer(5);
  assert.equal(due(), undefined);
  const counter = countTurns();
  const end = performance.now() + 60;
  let yielded = 0;
  while (performance.now() < end) {
    const p = due();
    if (p) {
      yielded++;
      await p;
    }
  }
  const turns = counter.stop();
  // ~60 ms of work in 5 ms slices: about twelve turns (fewer on a busy host), each one the
  // ticker saw.
  assert.ok(yielded >= 2 && yielded <= 13, `yielded ${yielded} times`);
  assert.ok(turns >= yielded - 1, `the event loop turned ${turns} times`);
});
