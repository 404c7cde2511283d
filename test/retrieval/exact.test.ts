import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EXACT_KERNELS,
  ExactIndex,
  NO_ID,
  type ExactKernel,
  type Storage,
} from '../../src/retrieval/exact.js';
import { loadNative } from '../../src/retrieval/native.js';
import { Rng } from '../../bench/lib/rng.js';
import { RefIndex, absDot, assertMatches, distinctIds, f16RoundArray } from './reference.js';

// Float32 accumulation error bound used for every f32 check: relative to the sum of
// |x_j * q_j| (the dot product's condition), generous enough for any summation order.
const f32Tol = (d: number) => (scale: number) => 1e-6 * d * (scale + 1e-3) + 1e-6;

type Kernel = ExactKernel;
// Every kernel set this CPU runs, forced one by one ('auto' is the best of them).
const KERNELS: Kernel[] = EXACT_KERNELS.filter((kernel) => {
  try {
    ExactIndex.create({ dim: 1, kernel });
    return true;
  } catch {
    return false;
  }
});

// The kernel sets that have the int8 screen (every SIMD set this CPU runs: AVX2's with
// vpmaddubsw, AVX-512's with vpdpbusd where it has AVX512_VNNI).
const SCREENED: Kernel[] = KERNELS.filter((kernel) => {
  try {
    return ExactIndex.create({ dim: 1, kernel, screen: 'int8' }).screen === 'int8';
  } catch {
    return false;
  }
});
// The tests of the screen itself skip, saying why, where no kernel set has it.
const NO_SCREEN =
  SCREENED.length === 0 ? 'no int8 screen on this CPU (it needs AVX2 or AVX-512)' : false;
type Screen = 'int8' | 'none';
const screensOf = (kernel: Kernel): Screen[] =>
  SCREENED.includes(kernel) ? ['none', 'int8'] : ['none'];

function setup(
  rng: Rng,
  n: number,
  d: number,
  storage: Storage,
  kernel: Kernel,
  screen: Screen | 'auto' = 'auto',
) {
  const ids = distinctIds(rng, n);
  const vecs = rng.uniformArray(n * d);
  const index = ExactIndex.create({ dim: d, storage, kernel, screen });
  index.build(ids, vecs);
  // The f16 index is checked against the reference over f16-rounded vectors: the scan itself
  // must then be exact to float32 accuracy. The rounding error vs the unrounded vectors is
  // at most 2^-11 * sum|x_j q_j| per score (binary16 has an 11-bit significand).
  const ref = new RefIndex(d);
  ref.set(ids, storage === 'f16' ? f16RoundArray(vecs) : vecs);
  return { ids, vecs, index, ref };
}

function tolFor(ref: RefIndex, queries: Float32Array) {
  const t = f32Tol(ref.dim);
  return (q: number, id: number) => t(absDot(ref.rows.get(id)!, 0, queries, q * ref.dim, ref.dim));
}

test('exact search matches brute force for every B, d, k, storage and kernel', async () => {
  const rng = new Rng(11);
  const n = 300;
  for (const kernel of KERNELS) {
    for (const storage of ['f32', 'f16'] as const) {
      for (const d of [1, 7, 64, 100, 128]) {
        const { ids, vecs, index, ref } = setup(rng, n, d, storage, kernel);
        assert.equal(index.size, n);
        assert.equal(index.dim, d);
        // Unscreened, so that B = 2 takes the direct two-query scan (with the screen, float32
        // pairs go through it: scores within float32 accuracy, checked above, not bit for bit).
        const direct = ExactIndex.create({ dim: d, storage, kernel, screen: 'none' });
        direct.build(ids, vecs);
        for (const B of [1, 2, 3, 64]) {
          const queries = rng.uniformArray(B * d);
          for (const k of [1, 10, 100, n + 5]) {
            const got = await index.search(queries, k);
            assertMatches(
              ref,
              queries,
              k,
              got,
              tolFor(ref, queries),
              {},
              `${kernel}/${storage} d=${d} B=${B} k=${k}`,
            );
            // The SIMD sets scan two queries at the unrolled widths in one pass, summing
            // each as the single-query scan does: the same scores bit for bit.
            if (B === 2 && index.kernel !== 'scalar' && (d === 64 || d === 128)) {
              const pair = direct.searchSync(queries, k);
              for (let q = 0; q < 2; q++) {
                const one = direct.searchSync(queries.subarray(q * d, (q + 1) * d), k);
                const what: string = `${kernel}/${storage} d=${d} k=${k} query ${q} alone`;
                assert.deepEqual(pair.ids.subarray(q * k, (q + 1) * k), one.ids, what);
                assert.deepEqual(pair.scores.subarray(q * k, (q + 1) * k), one.scores, what);
              }
            }
          }
        }
      }
    }
  }
});

test('the SIMD and scalar kernels agree, single queries and batches', () => {
  const rng = new Rng(12);
  assert.ok(KERNELS.includes('scalar'));
  assert.throws(() => ExactIndex.create({ dim: 4, kernel: 'sse' as Kernel }), {
    name: 'RangeError',
    message: /kernel must be/,
  });
  for (const storage of ['f32', 'f16'] as const) {
    // 501 rows: partial 8-row tiles; d = 37 and 40: padded tails, and for the AVX-512
    // float16 scan both a 16-wide body with an 8-wide tail (40) and without one (37 -> 40,
    // 24 -> 24). d = 32, 64, 128 and 256 take the AVX-512 files' unrolled 8-row B = 1
    // scans, whose last rows (501 = 62 x 8 + 5) go to the 4-row and single-row ones.
    for (const d of [24, 32, 37, 40, 64, 128, 256]) {
      const ids = distinctIds(rng, 501);
      const vecs = rng.uniformArray(501 * d);
      const s = ExactIndex.create({ dim: d, storage, kernel: 'scalar' });
      assert.equal(s.kernel, 'scalar');
      s.build(ids, vecs);
      for (const kernel of KERNELS.filter((x) => x !== 'scalar')) {
        const a = ExactIndex.create({ dim: d, storage, kernel });
        if (kernel !== 'auto') assert.equal(a.kernel, kernel);
        a.build(ids, vecs);
        for (const B of [1, 5]) {
          const queries = rng.uniformArray(B * d);
          const ra = a.searchSync(queries, 20);
          const rs = s.searchSync(queries, 20);
          for (let i = 0; i < ra.scores.length; i++) {
            const label = `${kernel}/${storage} d=${d} B=${B} score ${i}`;
            assert.ok(Math.abs(ra.scores[i] - rs.scores[i]) < 1e-4, label);
          }
        }
      }
    }
  }
});

test('the batch (query-panel) and direct kernels match brute force at every batch size', async () => {
  // packMinBatch 1 sends every batch, B = 1 included, through the query-panel kernel; 0
  // sends every batch through the direct one. B spans partial query panels (8 per panel and
  // 16 per pass in AVX2, 16 and 32 in AVX-512), n leaves partial tiles of 4, 6, 8 and 12
  // rows, d odd and padded (100 pads to 104, not a multiple of 16).
  const rng = new Rng(20);
  const n = 203;
  for (const kernel of KERNELS.filter((x) => x !== 'scalar' && x !== 'auto')) {
    for (const [storage, screen] of (['f32', 'f16'] as const).flatMap((s) =>
      screensOf(kernel).map((x) => [s, x] as const),
    )) {
      for (const d of [1, 7, 37, 100]) {
        const { ids, vecs, index, ref } = setup(rng, n, d, storage, kernel, screen);
        assert.equal(index.screen, screen);
        const scalar = ExactIndex.create({ dim: d, storage, kernel: 'scalar' });
        scalar.build(ids, vecs);
        for (const B of [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 17, 24, 25, 33, 48, 65]) {
          const queries = rng.uniformArray(B * d);
          const want = scalar.searchSync(queries, 10);
          for (const packMinBatch of [1, 0]) {
            index.setTuning({ packMinBatch, blockBytes: 1024, scanBlockBytes: 1024 });
            const got = await index.search(queries, 10);
            const label = `${kernel}/${storage}/${screen} d=${d} B=${B} packMinBatch=${packMinBatch}`;
            assertMatches(ref, queries, 10, got, tolFor(ref, queries), {}, label);
            for (let i = 0; i < got.scores.length; i++) {
              const tol = 1e-5 * (Math.abs(want.scores[i]) + d);
              assert.ok(Math.abs(got.scores[i] - want.scores[i]) <= tol, `${label} score ${i}`);
            }
          }
        }
      }
    }
  }
});

test('equal scores come out by ascending id, across cuts, tasks and kernels', async () => {
  // Small integers make every dot product exact in float32 whatever the summation order,
  // so the 20 distinct rows give exactly equal scores for their 20 copies each; the order
  // among them must be by id, including negative scores and many cuts of the top-k buffer.
  const rng = new Rng(21);
  const d = 5;
  const n = 400;
  const base = Float32Array.from({ length: 20 * d }, () => rng.int(5) - 2);
  const ids = distinctIds(rng, n);
  const vecs = new Float32Array(n * d);
  for (let i = 0; i < n; i++) vecs.set(base.subarray((i % 20) * d, (i % 20) * d + d), i * d);
  for (const storage of ['f32', 'f16'] as const) {
    const index = ExactIndex.create({ dim: d, storage });
    index.build(ids, vecs);
    // B = 20 goes through the batch (query-panel) kernels, whose threshold filter runs on
    // the accumulators; packMinBatch 1 sends B = 1 and 9 there too.
    for (const B of [1, 9, 20]) {
      const queries = Float32Array.from({ length: B * d }, () => rng.int(7) - 3);
      for (const tuning of [
        {},
        { minRowsPerTask: 50, blockBytes: 256, scanBlockBytes: 256, claimDivisor: 1 },
        { minRowsPerTask: 50, blockBytes: 256, claimDivisor: 1, packMinBatch: 1 },
      ]) {
        index.setTuning(tuning);
        const k = 90;
        const got = await index.search(queries, k);
        for (let q = 0; q < B; q++) {
          const want = [...ids]
            .map((id, i) => {
              let sc = 0;
              for (let j = 0; j < d; j++) sc += vecs[i * d + j] * queries[q * d + j];
              return { id, sc };
            })
            .sort((a, b) => b.sc - a.sc || a.id - b.id)
            .slice(0, k);
          const label = `${storage} B=${B} q=${q} ${JSON.stringify(tuning)}`;
          assert.deepEqual(
            [...got.ids.subarray(q * k, (q + 1) * k)],
            want.map((w) => w.id),
            label,
          );
          assert.deepEqual(
            [...got.scores.subarray(q * k, (q + 1) * k)],
            want.map((w) => w.sc),
            label,
          );
        }
      }
    }
  }
});

test('batch kernels rank by float32 scores where bfloat16 cannot tell the rows apart', async () => {
  // Rows 4 + e with |e| < 0.01: bfloat16 keeps 8 significant bits (a step of 2^-5 at 4), so
  // the bfloat16 products of the avx512-bf16 tiles see nearly equal rows and are off by
  // about 0.03 per score, far beyond the float32 tolerance (~0.008 here). Only the float32
  // rescoring of the pairs within the error margin ranks them right; B = 32 takes the
  // batch kernels.
  const rng = new Rng(31);
  const n = 3000;
  const d = 64;
  const ids = distinctIds(rng, n);
  const vecs = Float32Array.from({ length: n * d }, () => 4 + 0.01 * (2 * rng.next() - 1));
  const queries = rng.uniformArray(32 * d);
  for (const kernel of KERNELS) {
    for (const storage of ['f32', 'f16'] as const) {
      const index = ExactIndex.create({ dim: d, storage, kernel });
      index.build(ids, vecs);
      const ref = new RefIndex(d);
      ref.set(ids, storage === 'f16' ? f16RoundArray(vecs) : vecs);
      for (const k of [10, 100]) {
        const got = await index.search(queries, k);
        assertMatches(
          ref,
          queries,
          k,
          got,
          tolFor(ref, queries),
          {},
          `${kernel}/${storage} k=${k}`,
        );
      }
    }
  }
});

test('guessed floors: results stay exact, and a query whose guess overshoots is searched again', async () => {
  // 20000 rows and k = 100: the batch scan starts each query at a guess from a sample of
  // 14 * 20000 / 300 = 934 rows. guessRank 1 guesses the sample's best score, which beats
  // the true 100th best for about a quarter of the queries (P(Poisson(1/3) >= 1)): those
  // must be searched again, and every result must still be the brute-force one, with
  // exclusions and an allow list (90% of the rows, so still sampled) too.
  const rng = new Rng(32);
  const n = 20000;
  const d = 16;
  const B = 32;
  const k = 100;
  // Both samplers: the int8 screen's (runs of rows through its kernel) where the CPU has
  // it, and the batch kernels' (rows one by one) without it.
  for (const [storage, screen] of [
    ['f32', 'auto'],
    ['f16', 'auto'],
    ['f32', 'none'],
    ['f16', 'none'],
  ] as const) {
    const { ids, index, ref } = setup(rng, n, d, storage, 'auto', screen);
    const queries = rng.uniformArray(B * d);
    const exclude = Array.from({ length: B }, (_, q) => (q % 3 ? null : ids.slice(q, q + 200)));
    const allow = ids.filter((_, i) => i % 10 !== 0);
    for (const guessRank of [0, 14, 1]) {
      index.setTuning({ guessRank });
      const before = index.guessRetries;
      for (const opts of [{}, { exclude }, { allow }]) {
        const got = await index.search(queries, k, opts);
        const label = `${storage}/${screen} guessRank=${guessRank} ${Object.keys(opts).join()}`;
        assertMatches(ref, queries, k, got, tolFor(ref, queries), opts, label);
      }
      const retried = index.guessRetries - before;
      if (guessRank === 0) assert.equal(retried, 0, `${storage}: no guesses, no retries`);
      if (guessRank === 1) assert.ok(retried >= 3 * 4, `${storage}: ${retried} retries`);
    }
    index.setTuning({ guessRank: 14 });
  }
});

test(
  'the int8 screen returns the unscreened results on data it codes badly',
  { skip: NO_SCREEN },
  async () => {
    // Every pair the screen lets through is rescored in float32 by the code the unscreened
    // batch kernels use, so an int8-screened index must return the same ids and the same
    // scores as an unscreened one with the same kernel set, whatever the data does to the
    // codes: a centre far from zero, one outlier setting the step for everyone, rows and
    // queries that are constant or zero, upserts past the coded range (clamped: the error
    // bound grows) and into an emptied index, swap-removes, float16 overflow. B = 20 takes
    // the batch kernels; blockBytes 1024 and minRowsPerTask 64 make many blocks and threads.
    const rng = new Rng(33);
    const n = 700;
    const B = 20;
    const noisy = (len: number, centre: number, spread: number) =>
      Float32Array.from({ length: len }, () => centre + spread * (2 * rng.next() - 1));
    const cases: {
      name: string;
      d: number;
      rows: () => Float32Array;
      queries: () => Float32Array;
    }[] = [
      {
        name: 'offset',
        d: 24,
        rows: () => noisy(n * 24, 100, 1),
        queries: () => noisy(B * 24, 5, 1),
      },
      {
        name: 'outlier',
        d: 37,
        rows: () => {
          const v = noisy(n * 37, 0, 1);
          v[5 * 37 + 3] = 3e3; // x 10 + 3 by the upsert below: still a finite float16
          return v;
        },
        queries: () => noisy(B * 37, -0.5, 1),
      },
      {
        name: 'constant rows and queries',
        d: 8,
        rows: () => Float32Array.from({ length: n * 8 }, (_, i) => Math.floor(i / 8) % 7),
        queries: () => Float32Array.from({ length: B * 8 }, (_, i) => (Math.floor(i / 8) % 5) - 2),
      },
      {
        name: 'tiny and huge',
        d: 16,
        rows: () => noisy(n * 16, 0, 1e-30),
        queries: () => noisy(B * 16, 1e3, 1e-3),
      },
      {
        // Trained vectors' norms grow with popularity: rows of a 20x spread in size, and
        // queries with one large element. The screen's bands are each row's own.
        name: 'sized rows, spiky queries',
        d: 24,
        rows: () => {
          const v = noisy(n * 24, 0, 1);
          for (let r = 0; r < n; r++) {
            const size = Math.exp(1.8 * rng.normal());
            for (let j = 0; j < 24; j++) v[r * 24 + j] *= size;
          }
          return v;
        },
        queries: () => {
          const q = noisy(B * 24, 0, 0.2);
          for (let i = 0; i < B; i++) q[i * 24 + (i % 24)] = 5;
          return q;
        },
      },
      {
        name: 'f16 overflow',
        d: 16,
        rows: () => noisy(n * 16, 0, 1e5),
        queries: () => noisy(B * 16, 0, 1),
      },
    ];
    for (const kernel of SCREENED) {
      // The avx512-bf16 set's unscreened batches rescore with the same float32 code as the
      // screen, so there the two must agree bit for bit; every set must match brute force.
      const sameCode = ExactIndex.create({ dim: 1, kernel }).kernel === 'avx512-bf16';
      for (const storage of ['f32', 'f16'] as const) {
        for (const c of cases) {
          const ids = distinctIds(rng, n);
          const rows = c.rows();
          const screened = ExactIndex.create({ dim: c.d, storage, kernel, screen: 'int8' });
          const plain = ExactIndex.create({ dim: c.d, storage, kernel, screen: 'none' });
          const ref = new RefIndex(c.d);
          const store = (x: Float32Array) => (storage === 'f16' ? f16RoundArray(x) : x);
          if (storage === 'f16' && c.name === 'f16 overflow') {
            // Stored as infinities, such rows would score infinite or NaN and drop out.
            for (const index of [screened, plain])
              assert.throws(
                () => index.build(ids, rows),
                (e: Error) => e instanceof RangeError && /beyond float16's range/.test(e.message),
              );
            continue;
          }
          const queries = c.queries();
          const check = async (label: string) => {
            for (const k of [1, 10, 100]) {
              const a = await screened.search(queries, k);
              const b = await plain.search(queries, k);
              const tag = `${kernel}/${storage} ${c.name} ${label} k=${k}`;
              if (sameCode) {
                assert.deepEqual([...a.ids], [...b.ids], tag);
                assert.deepEqual([...a.scores], [...b.scores], tag);
              }
              assertMatches(ref, queries, k, a, tolFor(ref, queries), {}, tag);
            }
          };
          for (const index of [screened, plain]) {
            index.setTuning({ blockBytes: 1024, scanBlockBytes: 1024, minRowsPerTask: 64 });
            index.build(ids, rows);
          }
          ref.set(ids, store(rows));
          await check('built');
          // Past the coded range: rows ten times as large, and a centre moved.
          const up = ids.slice(0, 50);
          const upRows = Float32Array.from(rows.subarray(0, 50 * c.d), (x) => 10 * x + 3);
          const fresh = Uint32Array.from({ length: 30 }, (_, i) => 5_000_000 + i);
          const freshRows = noisy(30 * c.d, -20, 20);
          const gone = ids.slice(100, 400);
          for (const index of [screened, plain]) {
            index.upsert(up, upRows);
            index.upsert(fresh, freshRows);
            index.remove(gone);
          }
          ref.set(up, store(upRows));
          ref.set(fresh, store(freshRows));
          for (const id of gone) ref.rows.delete(id);
          await check('after upserts and removes');
          // Emptied, then filled again by an upsert (which takes its own codes' range).
          for (const index of [screened, plain]) {
            index.remove(Uint32Array.from(ref.rows.keys()));
            assert.equal(index.size, 0);
            index.upsert(ids.slice(0, 300), rows.subarray(0, 300 * c.d));
          }
          ref.rows.clear();
          ref.set(ids.slice(0, 300), store(rows.subarray(0, 300 * c.d)));
          await check('refilled');
        }
      }
    }
    // An upsert naming one new id 31 times into an index of 30 rows: the index was not
    // empty, so the 30 rows keep the codes of their own range ([0, 50]), and the screen must
    // keep that range too. Refitted to the batch's ([-1, 1]), the codes would read the best
    // row (50s, in the third block of 8 rows) as 1s, below the 10s of the first two (whose
    // 16 candidates fill the top-1 buffer and raise its threshold).
    {
      const d = 16;
      const index = ExactIndex.create({ dim: d, screen: 'int8' });
      index.setTuning({ blockBytes: 8 * d * 4, scanBlockBytes: 8 * d * 4 });
      const ref = new RefIndex(d);
      const old = Float32Array.from({ length: 30 * d }, (_, i) =>
        Math.floor(i / d) === 20 ? 50 : 10,
      );
      const oldIds = Uint32Array.from({ length: 30 }, (_, i) => i);
      index.build(oldIds, old);
      ref.set(oldIds, old);
      const batch = noisy(31 * d, 0, 1);
      index.upsert(new Uint32Array(31).fill(1000), batch);
      ref.set(Uint32Array.of(1000), batch.subarray(30 * d));
      const queries = noisy(B * d, 1, 0.1);
      const got = await index.search(queries, 1);
      assertMatches(ref, queries, 1, got, tolFor(ref, queries), {}, 'repeated id in an upsert');
      assert.equal(got.ids[0], 20);
    }
    // Against brute force as well, with exclusions and an allow list, on offset data.
    const d = 40;
    const ids = distinctIds(rng, n);
    const rows = noisy(n * d, 3, 0.5);
    const index = ExactIndex.create({ dim: d, screen: 'int8' });
    index.build(ids, rows);
    const ref = new RefIndex(d);
    ref.set(ids, rows);
    const queries = noisy(B * d, 1, 2);
    const exclude = Array.from({ length: B }, (_, q) => (q % 2 ? null : ids.slice(q, q + 40)));
    const allow = ids.filter((_, i) => i % 4 !== 1);
    for (const opts of [{}, { exclude }, { allow }, { exclude, allow }]) {
      const got = await index.search(queries, 50, opts);
      assertMatches(ref, queries, 50, got, tolFor(ref, queries), opts, Object.keys(opts).join());
    }
  },
);

test(
  'the int8 screen prunes mid-scan on rows of very different sizes, and stays exact',
  { skip: NO_SCREEN },
  async () => {
    // Trained vectors' norms grow with popularity; queries with one large element code
    // their other elements coarsely. At 12k rows such bands overflow the candidate buffers,
    // so the scan rescores and prunes mid-scan (screenPrunes), and its cuts, floors and the
    // merge all run on rows whose slacks differ 100-fold. Results must be brute force's.
    const rng = new Rng(61);
    const n = 12_000;
    const d = 24;
    const B = 12;
    const ids = distinctIds(rng, n);
    const rows = new Float32Array(n * d);
    for (let r = 0; r < n; r++) {
      const size = Math.exp(1.6 * rng.normal());
      for (let j = 0; j < d; j++) rows[r * d + j] = (rng.normal() + 0.3) * size;
    }
    const queries = new Float32Array(B * d);
    for (let q = 0; q < B; q++) {
      for (let j = 0; j < d; j++) queries[q * d + j] = (q % 2 ? 0.05 : 1) * rng.normal();
      if (q % 2) queries[q * d + (q % d)] = 4;
    }
    const allow = ids.filter((_, i) => i % 5 !== 2);
    const exclude = Array.from({ length: B }, (_, q) => (q % 3 ? null : ids.slice(q, q + 300)));
    for (const kernel of SCREENED) {
      for (const storage of ['f32', 'f16'] as const) {
        const index = ExactIndex.create({ dim: d, storage, kernel, screen: 'int8' });
        index.build(ids, rows);
        const ref = new RefIndex(d);
        ref.set(ids, storage === 'f16' ? f16RoundArray(rows) : rows);
        for (const k of [10, 100, 1000]) {
          for (const opts of [{}, { allow, exclude }]) {
            const got = await index.search(queries, k, opts);
            const tag = `${kernel}/${storage} k=${k} ${Object.keys(opts).join()}`;
            assertMatches(ref, queries, k, got, tolFor(ref, queries), opts, tag);
          }
        }
        assert.ok(index.screenPrunes > 0, `${kernel}/${storage}: no mid-scan prune ran`);
      }
    }
  },
);

test(
  'the int8 screen stays exact and bounded for queries whose codes cannot rank the rows',
  { skip: NO_SCREEN },
  async () => {
    // A query of zeros (every score 0, ties broken by id) and a constant query code to a
    // step of 0: their integer scores say nothing, the screen keeps every pair it sees, and
    // past 8k + 1024 candidates it rescores them, keeps the best k in float32 and raises the
    // query's floor to what the k-th needs (screenPrunes counts those). The results must still
    // be the unscreened index's, bit for bit on the avx512-bf16 set, and brute force's, with
    // exclusions too; the other queries of the batch keep their usual path. minRowsPerTask
    // splits the scan between threads.
    const rng = new Rng(35);
    const n = 6000;
    const d = 24;
    const B = 20;
    for (const kernel of SCREENED) {
      const sameCode = ExactIndex.create({ dim: 1, kernel }).kernel === 'avx512-bf16';
      for (const [storage, outlier] of [
        ['f32', false],
        ['f16', false],
        ['f32', true],
        ['f16', true],
      ] as const) {
        // Forty rows far out set the codes' step for every row (more than the screen leaves
        // out: screenOutliers), at a size where the prunes happen: then no query's bound
        // narrows its candidates either.
        const ids = distinctIds(rng, n);
        const vecs = rng.uniformArray(n * d);
        if (outlier) for (let i = 0; i < 40; i++) vecs[(17 + 97 * i) * d + (i % d)] = 1e4;
        const index = ExactIndex.create({ dim: d, storage, kernel, screen: 'int8' });
        const plain = ExactIndex.create({ dim: d, storage, kernel, screen: 'none' });
        for (const x of [index, plain]) x.build(ids, vecs);
        const ref = new RefIndex(d);
        ref.set(ids, storage === 'f16' ? f16RoundArray(vecs) : vecs);
        for (const x of [index, plain])
          x.setTuning({ minRowsPerTask: 1000, blockBytes: 4096, scanBlockBytes: 4096 });
        const queries = rng.uniformArray(B * d);
        queries.fill(0, 3 * d, 4 * d); // query 3: zeros
        queries.fill(0.5, 7 * d, 8 * d); // query 7: constant
        const exclude = Array.from({ length: B }, (_, q) => (q % 2 ? ids.slice(q, q + 30) : null));
        for (const k of [10, 100]) {
          for (const opts of [{}, { exclude }]) {
            const before = index.screenPrunes;
            const got = await index.search(queries, k, opts);
            const tag = `${kernel}/${storage}${outlier ? ' outlier' : ''} k=${k} ${Object.keys(opts).join()}`;
            // 6000 rows against 8k + 1024 = 1104 at k = 10: the two queries are pruned (with
            // the outlier, every query).
            if (k === 10) {
              const prunes = index.screenPrunes - before;
              assert.ok(prunes >= (outlier ? B : 2), `${tag}: ${prunes} prunes`);
            }
            assertMatches(ref, queries, k, got, tolFor(ref, queries), opts, tag);
            if (sameCode) {
              const want = await plain.search(queries, k, opts);
              assert.deepEqual([...got.ids], [...want.ids], `${tag} ids`);
              assert.deepEqual([...got.scores], [...want.scores], `${tag} scores`);
            }
          }
        }
      }
    }
  },
);

test(
  'the int8 tiles over consecutive code rows match the gathered ones and brute force',
  { skip: NO_SCREEN },
  async () => {
    // An unfiltered screened batch passes its rows as a base and a stride, and at padded
    // d = 32, 64, 128 and 256 the tile reads each code row at a constant offset; an allow list
    // of every id sends the same rows through the pointer-per-row tile. The two read the same
    // codes in the same order, so they must agree bit for bit, and both match brute force. 197
    // rows in blocks of 60 leave whole tiles of 12 rows and partial ones; B spans one and two
    // query panels.
    const rng = new Rng(34);
    const n = 197;
    for (const kernel of SCREENED) {
      for (const storage of ['f32', 'f16'] as const) {
        for (const d of [32, 64, 128, 256]) {
          const { ids, index, ref } = setup(rng, n, d, storage, kernel, 'int8');
          index.setTuning({ packMinBatch: 1, blockBytes: 60 * d * (storage === 'f16' ? 2 : 4) });
          for (const B of [1, 12, 16, 17, 32, 33]) {
            const queries = rng.uniformArray(B * d);
            const label = `${kernel}/${storage} d=${d} B=${B}`;
            const spans = await index.search(queries, 10);
            const gathered = await index.search(queries, 10, { allow: ids });
            assert.deepEqual(spans.ids, gathered.ids, `${label} ids`);
            assert.deepEqual(spans.scores, gathered.scores, `${label} scores`);
            assertMatches(ref, queries, 10, spans, tolFor(ref, queries), {}, label);
          }
        }
      }
    }
  },
);

test('float16 storage: scores stay within 2^-11 * sum|x*q| of the float32 dot product', () => {
  const rng = new Rng(13);
  const d = 64;
  const ids = distinctIds(rng, 1000);
  const vecs = rng.uniformArray(1000 * d);
  const index = ExactIndex.create({ dim: d, storage: 'f16' });
  index.build(ids, vecs);
  const ref = new RefIndex(d);
  ref.set(ids, vecs);
  const queries = rng.uniformArray(4 * d);
  const got = index.searchSync(queries, 50);
  for (let q = 0; q < 4; q++) {
    for (let i = 0; i < 50; i++) {
      const id = got.ids[q * 50 + i];
      const v = ref.rows.get(id)!;
      let exact = 0;
      for (let j = 0; j < d; j++) exact += v[j] * queries[q * d + j];
      const bound = 2 ** -11 * absDot(v, 0, queries, q * d, d) + 1e-5;
      assert.ok(Math.abs(got.scores[q * 50 + i] - exact) <= bound, `q=${q} i=${i}`);
    }
  }
});

test('an empty index returns padded rows', async () => {
  const index = ExactIndex.create({ dim: 8 });
  assert.equal(index.size, 0);
  const got = await index.search(new Float32Array(16), 3);
  assert.deepEqual([...got.ids], new Array(6).fill(NO_ID));
  assert.deepEqual([...got.scores], new Array(6).fill(-Infinity));
  index.build(new Uint32Array(0), new Float32Array(0));
  assert.equal((await index.search(new Float32Array(8), 1)).ids[0], NO_ID);
});

test('per-query exclusions and a shared allow list apply inside the scan', async () => {
  const rng = new Rng(14);
  // Every kernel set, and d = 64 as well: a single query there takes the unrolled 8-row scan
  // (single_query_scan_inl.h), which reads an allow list's rows through the same pointer array.
  for (const [kernel, storage, d] of KERNELS.flatMap((kn) =>
    (['f32', 'f16'] as const).flatMap((st) => [16, 64].map((dd) => [kn, st, dd] as const)),
  )) {
    const { ids, index, ref } = setup(rng, 2000, d, storage, kernel);
    const B = 3;
    const queries = rng.uniformArray(B * d);
    // Exclude each query's own top 15 (the ones a scan would otherwise return) plus noise.
    const exclude: (Uint32Array | null)[] = [];
    for (let q = 0; q < B; q++) {
      if (q === 1) {
        exclude.push(null);
        continue;
      }
      const top = ref
        .ranked(queries, q)
        .slice(0, 15)
        .map((h) => h.id);
      exclude.push(Uint32Array.from([...top, 123456789, ...ids.slice(100, 110)]));
    }
    const tol = tolFor(ref, queries);
    // An allow list: a 10% subset plus ids the index does not hold (they match nothing).
    const allow = Uint32Array.from([...ids.filter((_, i) => i % 10 === 3), 7, 8, 9]);
    const small = ids.slice(0, 5);
    // Dense allow lists (a quarter of the rows or more): single queries read every row and
    // check candidates against the list instead of gathering the allowed rows. One leaves
    // out every query's 40 best rows, so the best scores of the scan are all refused.
    const dense = Uint32Array.from([...ids.filter((_, i) => i % 5 !== 0), 7, 8, 9]);
    const best = new Set(
      Array.from({ length: B }, (_, q) =>
        ref
          .ranked(queries, q)
          .slice(0, 40)
          .map((h) => h.id),
      ).flat(),
    );
    const denseButBest = ids.filter((id) => !best.has(id));
    // Exclusions, an allow list, both at once with an allow list smaller than k (rows are
    // padded); packMinBatch 1 sends the same through the batch (query-panel) kernels.
    const cases = [
      { name: 'exclude', k: 20, opts: { exclude } },
      { name: 'allow', k: 30, opts: { allow } },
      { name: 'both', k: 10, opts: { exclude, allow: small } },
      { name: 'dense allow', k: 30, opts: { allow: dense } },
      { name: 'dense allow + exclude', k: 20, opts: { exclude, allow: dense } },
      { name: 'dense allow without the best rows', k: 25, opts: { allow: denseButBest } },
    ];
    const q1 = queries.subarray(0, d);
    const tol1 = tolFor(ref, q1);
    for (const packMinBatch of [0, 1]) {
      index.setTuning({ packMinBatch });
      for (const { name, k, opts } of cases) {
        const tag = `${kernel}/${storage} d=${d} ${name} packMinBatch=${packMinBatch}`;
        const got = await index.search(queries, k, opts);
        assertMatches(ref, queries, k, got, tol, opts, tag);
        // The first query alone (B = 1), with its own exclusions.
        const opts1 = { exclude: opts.exclude?.slice(0, 1), allow: opts.allow };
        const got1 = await index.search(q1, k, opts1);
        assertMatches(ref, q1, k, got1, tol1, opts1, `${tag} B=1`);
      }
      const none = await index.search(queries, 4, { allow: new Uint32Array(0) });
      assert.ok(none.ids.every((x) => x === NO_ID));
    }
  }
});

test('upsert and remove are visible to the next search', async () => {
  const rng = new Rng(15);
  const d = 24;
  const { ids, index, ref } = setup(rng, 1000, d, 'f32', 'auto');
  const queries = rng.uniformArray(2 * d);
  // Overwrite 50 existing rows, add 50 new ones.
  const upIds = Uint32Array.from([...ids.slice(0, 50), ...distinctIds(rng, 50)]);
  const upVecs = rng.uniformArray(100 * d);
  index.upsert(upIds, upVecs);
  ref.set(upIds, upVecs);
  assert.equal(index.size, ref.rows.size);
  const tol = tolFor(ref, queries);
  assertMatches(ref, queries, 40, await index.search(queries, 40), tol, {}, 'after upsert');

  // A new item with a huge score is recommendable at once.
  const star = new Float32Array(d).fill(10);
  index.upsert(Uint32Array.of(4242), star);
  ref.set(Uint32Array.of(4242), star);
  const pos = Float32Array.from({ length: d }, () => 1);
  assert.equal((await index.search(pos, 1)).ids[0], 4242);

  // Remove the top hits of query 0 (swap-remove moves other rows around).
  const top = ref
    .ranked(queries, 0)
    .slice(0, 30)
    .map((h) => h.id);
  index.remove(Uint32Array.from(top));
  for (const id of top) ref.rows.delete(id);
  assert.equal(index.size, ref.rows.size);
  assertMatches(
    ref,
    queries,
    40,
    await index.search(queries, 40),
    tolFor(ref, queries),
    {},
    'after remove',
  );

  // An unknown id anywhere in the batch removes nothing.
  const before = index.size;
  assert.throws(() => index.remove(Uint32Array.of(ids[500], 999)), {
    name: 'RangeError',
    message: /ids\[1\]: unknown id 999/,
  });
  assert.equal(index.size, before);
  // Removing everything leaves a working empty index.
  index.remove(Uint32Array.from(ref.rows.keys()));
  assert.equal(index.size, 0);
  assert.equal((await index.search(queries, 2)).ids[0], NO_ID);
});

test("ids that start compact and turn sparse keep their lookups, past the build's headroom", async () => {
  // Row numbers as ids keep the id map a table; ids far past them turn it into a hash map
  // (converted before the write lock), and upserts past the quarter of headroom the build
  // left grow the rows (copied before it). Every id must still be found: overwritten,
  // removed, and allowed, by the next search.
  const rng = new Rng(16);
  const d = 12;
  for (const storage of ['f32', 'f16'] as const) {
    const index = ExactIndex.create({ dim: d, storage });
    const ref = new RefIndex(d);
    const small = Uint32Array.from({ length: 2000 }, (_, i) => i);
    const sv = rng.uniformArray(2000 * d);
    // (float16 rows checked against their rounded values, as setup() does)
    const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    index.build(small, sv);
    ref.set(small, as(sv));
    assert.equal(index.capacity, 2000 + 500 + 1024, storage);
    const far = Uint32Array.from({ length: 1600 }, (_, i) => 4_000_000_000 + 7919 * i);
    const fv = rng.uniformArray(1600 * d);
    index.upsert(far, fv); // 2,000 + 1,600 rows: past the 2,000 + 500 + 1,024 room
    ref.set(far, as(fv));
    // Buffers this small (under 1 MiB) are copied, not moved.
    assert.ok(index.capacity >= 3600, `${storage} capacity ${index.capacity}`);
    assert.deepEqual(index.growths, { moved: 0, copied: 1 }, storage);
    // Overwrites of both kinds, and removes of both kinds.
    const over = Uint32Array.of(small[3]!, far[7]!, small[1999]!, far[1499]!);
    const ov = rng.uniformArray(4 * d);
    index.upsert(over, ov);
    ref.set(over, as(ov));
    const gone = Uint32Array.of(small[10]!, far[20]!);
    index.remove(gone);
    for (const id of gone) ref.rows.delete(id);
    assert.equal(index.size, ref.rows.size, storage);
    const queries = rng.uniformArray(3 * d);
    const tol = tolFor(ref, queries);
    assertMatches(ref, queries, 25, await index.search(queries, 25), tol, {}, `${storage} all`);
    const allow = Uint32Array.from([
      ...small.filter((id) => id % 4 === 0),
      ...far.subarray(0, 600),
    ]);
    const got = await index.search(queries, 25, { allow });
    assertMatches(ref, queries, 25, got, tol, { allow }, `${storage} allowed`);
    assert.throws(() => index.remove(Uint32Array.of(far[20]!)), /unknown id/);
  }
});

test('upserts past the room keep every row: buffers of 1 MiB and up move their pages, twice over', async () => {
  // 20,000 x 64 rows: float32 and float16 rows and the int8 codes (where the kernel set has
  // the screen) are each over 1 MiB, so on Linux a growth moves their pages into larger
  // mappings (MappedRegion::TakePages) instead of copying them. Two growths, the second
  // moving a mapping that was itself moved into; one synchronous upsert and one async, each
  // also overwriting rows. Single queries and a batch (through the screen) must then match
  // brute force: a page lost or left behind would read as zeros.
  const rng = new Rng(18);
  const d = 64;
  const n = 20_000;
  for (const storage of ['f32', 'f16'] as const) {
    const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    const index = ExactIndex.create({ dim: d, storage });
    const ref = new RefIndex(d);
    const ids = Uint32Array.from({ length: n }, (_, i) => i);
    const vecs = rng.uniformArray(n * d);
    index.build(ids, vecs);
    ref.set(ids, as(vecs));
    let next = n;
    const grow = async (how: 'sync' | 'async') => {
      const cap = index.capacity;
      const fresh = cap - index.size + 1 + 500;
      const up = new Uint32Array(fresh + 300);
      for (let i = 0; i < fresh; i++) up[i] = next++;
      for (let i = 0; i < 300; i++) up[fresh + i] = (i * 61) % n;
      const v = rng.uniformArray(up.length * d);
      if (how === 'sync') index.upsert(up, v);
      else await index.upsertAsync(up, v);
      ref.set(up, as(v));
      assert.ok(index.capacity > cap, `${storage} ${how}: capacity ${cap} -> ${index.capacity}`);
    };
    await grow('sync');
    await grow('async');
    assert.equal(index.size, ref.rows.size, storage);
    const g = index.growths;
    assert.equal(g.moved + g.copied, 2, storage);
    if (process.platform === 'linux') assert.equal(g.moved, 2, `${storage} ${JSON.stringify(g)}`);
    for (const B of [1, 16]) {
      const queries = rng.uniformArray(B * d);
      const tol = tolFor(ref, queries);
      assertMatches(
        ref,
        queries,
        50,
        await index.search(queries, 50),
        tol,
        {},
        `${storage} B=${B}`,
      );
    }
    // The last rows, which landed in the pages past the moved ones, are searchable one by one.
    const last = Uint32Array.of(next - 1, next - 2, n - 1);
    const q = rng.uniformArray(d);
    const got = await index.search(q, 3, { allow: last });
    assert.deepEqual([...got.ids].sort(), [...last].sort(), storage);
  }
});

test('rows spread wider than the built ones fit the int8 screen again; batches stay exact', async () => {
  // The screen codes every element with one centre and step; an upsert with elements past
  // its range codes every stored row again rather than clamping them (which widened every
  // pair's error bound: the batches then rescored nearly every row, prunes by the
  // thousand). Normal rows, then 200 at 3x the spread: one refit, and a second batch within
  // the new range (its margin) none. Batches through the screen must match brute force,
  // with the screen narrowing the candidates as before (mid-scan prunes stay rare).
  const rng = new Rng(19);
  const d = 32;
  const n = 20_000;
  for (const kernel of SCREENED) {
    for (const storage of ['f32', 'f16'] as const) {
      const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
      const index = ExactIndex.create({ dim: d, storage, kernel, screen: 'int8' });
      const ref = new RefIndex(d);
      const ids = Uint32Array.from({ length: n }, (_, i) => i);
      const vecs = rng.normalArray(n * d);
      index.build(ids, vecs);
      ref.set(ids, as(vecs));
      const label = `${kernel} ${storage}`;
      const search = async (what: string) => {
        const queries = rng.normalArray(16 * d);
        const got = await index.search(queries, 40);
        assertMatches(ref, queries, 40, got, tolFor(ref, queries), {}, `${label} ${what}`);
      };
      await search('built');
      const wide = Uint32Array.from({ length: 200 }, (_, i) => i * 53);
      const wv = rng.normalArray(200 * d).map((x) => x * 3);
      index.upsert(wide, wv);
      ref.set(wide, as(wv));
      assert.equal(index.screenRefits, 1, label);
      const prunes = index.screenPrunes;
      for (let i = 0; i < 4; i++) await search(`after the wide rows (${i})`);
      assert.ok(
        index.screenPrunes - prunes <= 4,
        `${label}: ${index.screenPrunes - prunes} prunes`,
      );
      // Within the new range (3x normal draws stay inside it): no refit; new ids and the
      // async path too.
      const more = Uint32Array.from({ length: 100 }, (_, i) => n + i);
      const mv = rng.normalArray(100 * d).map((x) => x * 2);
      await index.upsertAsync(more, mv);
      ref.set(more, as(mv));
      assert.equal(index.screenRefits, 1, label);
      await search('after more');
    }
  }
});

test('a few rows far out stay out of the int8 screen and are scored exactly', async () => {
  // One item vector with an element at 60x the spread used to set the screen's one step for
  // every row: each pair's bound widened with it, and batches rescored nearly every row
  // (prunes by the thousand, a B = 32 batch at 200k rows 17x slower). The screen now leaves
  // such rows out (screenOutliers) and the merge scores them exactly. Those rows must still
  // be found (queries aimed at them), through exclusions and allow lists, after overwrites,
  // removes (whose swaps move an outlier's row) and upserts of more far rows; past the cap
  // (twice 16 rows at 20k) the screen is fitted again and takes them in.
  const rng = new Rng(41);
  const d = 32;
  const n = 20_000;
  for (const kernel of SCREENED) {
    for (const storage of ['f32', 'f16'] as const) {
      const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
      const label = `${kernel} ${storage}`;
      const index = ExactIndex.create({ dim: d, storage, kernel, screen: 'int8' });
      const ref = new RefIndex(d);
      const ids = Uint32Array.from({ length: n }, (_, i) => i);
      const vecs = rng.normalArray(n * d);
      const far = (v: Float32Array, row: number, x: number) => (v[row * d + (row % d)] = x);
      far(vecs, 7, 60);
      // The rows the steps below overwrite or remove start small, so that none of them is
      // among the normal rows left out, and the counts below are exact.
      for (const row of [1, 2, 3, 4, 100, 200, 300, 400, 500])
        for (let j = row * d; j < (row + 1) * d; j++) vecs[j]! /= 10;
      index.build(ids, vecs);
      ref.set(ids, as(vecs));
      // The far row, and at most a few of the normal draws' most extreme (OutlierBudget: 16).
      const built = index.screenOutliers;
      assert.ok(built >= 1 && built <= 16, `${label}: ${built} outliers built`);
      // Queries of normal draws, and some aimed at the far rows' elements.
      const search = async (what: string, aim: number[], opts = {}) => {
        const queries = rng.normalArray(16 * d);
        aim.forEach((row, q) => (queries[q * d + (row % d)] = 5));
        const before = index.screenPrunes;
        const got = await index.search(queries, 40, opts);
        assertMatches(ref, queries, 40, got, tolFor(ref, queries), opts, `${label} ${what}`);
        return { got, prunes: index.screenPrunes - before };
      };
      let prunes = 0;
      for (let i = 0; i < 3; i++) prunes += (await search('built', [7])).prunes;
      const first = await search('built', [7]);
      assert.equal(first.got.ids[0], 7, `${label}: the far row tops the query aimed at it`);
      // Ten more far rows, at the end (new ids) and over stored ones: no refit.
      const wide = Uint32Array.from([n, n + 1, n + 2, n + 3, n + 4, 100, 200, 300, 400, 500]);
      const wv = rng.normalArray(wide.length * d);
      wide.forEach((id, i) => (wv[i * d + (id % d)] = 40 + i));
      await index.upsertAsync(wide, wv);
      ref.set(wide, as(wv));
      assert.equal(index.screenOutliers, built + 10, `${label}: upserted`);
      assert.equal(index.screenRefits, 0, label);
      for (let i = 0; i < 3; i++)
        prunes += (await search('upserted', [...wide.slice(3, 8)])).prunes;
      const exclude = Array.from({ length: 16 }, (_, q) =>
        q < 4 ? Uint32Array.of(7, n, 300) : null,
      );
      const allow = Uint32Array.from([...ids.filter((id) => id % 3 === 0), n + 1, n + 4, 200]);
      for (const opts of [{ exclude }, { allow }, { exclude, allow }])
        prunes += (await search(Object.keys(opts).join(), [7, n, 300, n + 1, 200], opts)).prunes;
      // The first far row made normal, two removed (one of them the last row: no swap), and
      // rows removed in front of far ones, whose swaps move the last rows (far ones among
      // them) into the holes.
      const calm = rng.normalArray(d).map((x) => x / 2);
      index.upsert(Uint32Array.of(7), calm);
      ref.set(Uint32Array.of(7), as(calm));
      const gone = Uint32Array.of(n + 4, 300, 1, 2, 3, 4);
      await index.removeAsync(gone);
      for (const id of gone) ref.rows.delete(id);
      assert.equal(index.screenOutliers, built + 7, `${label}: after the overwrite and removes`);
      for (let i = 0; i < 3; i++)
        prunes += (await search('moved', [n, n + 1, n + 2, n + 3, 100])).prunes;
      // Mid-scan prunes stay rare (with the far row setting the step: thousands).
      assert.ok(prunes <= 6, `${label}: ${prunes} prunes`);
      // B = 1 scans every row directly, far ones included.
      const q1 = rng.normalArray(d);
      q1[n % d] = 5;
      assertMatches(ref, q1, 10, await index.search(q1, 10), tolFor(ref, q1), {}, `${label} B=1`);
      // Forty more far rows: past the cap, the screen is fitted again and covers them all.
      const more = Uint32Array.from({ length: 40 }, (_, i) => n + 10 + i);
      const mv = rng.normalArray(40 * d);
      more.forEach((id, i) => (mv[i * d + (id % d)] = 30 + i));
      index.upsert(more, mv);
      ref.set(more, as(mv));
      assert.equal(index.screenRefits, 1, label);
      assert.equal(index.screenOutliers, 0, `${label}: refitted`);
      await search('refitted', [...more.slice(0, 8), n, n + 1]);
    }
  }
});

test('buildAsync, upsertAsync and removeAsync: off the event loop, own copies, errors reject', async () => {
  const rng = new Rng(17);
  const d = 20;
  for (const storage of ['f32', 'f16'] as const) {
    const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    const index = ExactIndex.create({ dim: d, storage });
    const ref = new RefIndex(d);
    const ids = distinctIds(rng, 800);
    const vecs = rng.uniformArray(800 * d);
    const built = index.buildAsync(ids, vecs);
    ref.set(ids, as(vecs.slice()));
    vecs.fill(99); // the call copied them: this must not reach the index
    await built;
    const up = Uint32Array.from([...ids.slice(0, 40), ...distinctIds(rng, 40)]);
    const upVecs = rng.uniformArray(80 * d);
    const upserted = index.upsertAsync(up, upVecs);
    ref.set(up, as(upVecs.slice()));
    upVecs.fill(-99);
    up.fill(0);
    await upserted;
    const gone = ids.slice(100, 130);
    const removed = index.removeAsync(gone);
    for (const id of gone) ref.rows.delete(id);
    gone.fill(ids[0]!);
    await removed;
    assert.equal(index.size, ref.rows.size, storage);
    const queries = rng.uniformArray(3 * d);
    const matchesRef = async (what: string) =>
      assertMatches(
        ref,
        queries,
        30,
        await index.search(queries, 30),
        tolFor(ref, queries),
        {},
        `${storage} ${what}`,
      );
    await matchesRef('after async writes');
    // Bad arguments reject, before or during the work, and change nothing.
    const size = index.size;
    await assert.rejects(index.upsertAsync(Uint32Array.of(1), new Float32Array(3)), {
      name: 'RangeError',
      message: /vectors\.length/,
    });
    await assert.rejects(index.removeAsync(Uint32Array.of(ids[0]!, 7)), {
      name: 'RangeError',
      message: /unknown id 7/,
    });
    await assert.rejects(index.removeAsync([1] as unknown as Uint32Array), { name: 'TypeError' });
    await assert.rejects(index.buildAsync(Uint32Array.of(1, 1), new Float32Array(2 * d)), {
      name: 'RangeError',
      message: /duplicate id 1/,
    });
    // Values are checked in the call's own copy, on the worker: a bad one rejects naming
    // the element or row, as the synchronous calls throw ...
    const bad = rng.uniformArray(2 * d);
    bad[d + 3] = Number.NaN;
    await assert.rejects(index.upsertAsync(Uint32Array.of(ids[1]!, 4_000_000), bad), {
      name: 'RangeError',
      message: new RegExp(`^vectors\\[${d + 3}\\] is NaN`),
    });
    await assert.rejects(index.buildAsync(Uint32Array.of(9), new Float32Array(d).fill(3e18)), {
      name: 'RangeError',
      message: /^vectors row 0 .* squared norm/,
    });
    if (storage === 'f16')
      await assert.rejects(index.upsertAsync(Uint32Array.of(9), new Float32Array(d).fill(7e4)), {
        name: 'RangeError',
        message: /beyond float16's range/,
      });
    assert.equal(index.size, size);
    // ... and a bad value written into the caller's array after the call reaches nothing.
    const late = rng.uniformArray(d);
    const wrote = index.upsertAsync(Uint32Array.of(ids[2]!), late);
    ref.set(Uint32Array.of(ids[2]!), as(late.slice()));
    late.fill(Number.NaN);
    await wrote;
    await matchesRef('after rejected async writes');
    assert.equal(index.size, size);
  }
});

test('async writes read rows in a SharedArrayBuffer in place until the promise settles', async () => {
  // Shared memory cannot be detached, so buildAsync and upsertAsync read it on the worker
  // instead of copying it on the event loop (the server's item embeddings are such rows).
  // Once the promise settles the index holds its own rows, and the array is the caller's.
  const rng = new Rng(23);
  const d = 24;
  const shared = (v: Float32Array) => {
    const s = new Float32Array(new SharedArrayBuffer(v.byteLength));
    s.set(v);
    return s;
  };
  for (const storage of ['f32', 'f16'] as const) {
    const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    const index = ExactIndex.create({ dim: d, storage });
    const ref = new RefIndex(d);
    const ids = distinctIds(rng, 600);
    const vecs = shared(rng.uniformArray(600 * d));
    await index.buildAsync(ids, vecs);
    ref.set(ids, as(vecs.slice()));
    vecs.fill(99);
    const up = ids.slice(0, 30);
    const upVecs = shared(rng.uniformArray(30 * d));
    await index.upsertAsync(up, upVecs);
    ref.set(up, as(upVecs.slice()));
    upVecs.fill(-99);
    // A view into a larger shared buffer is read from its own offset.
    const big = new Float32Array(new SharedArrayBuffer((3 * d + 5) * 4));
    const row = rng.uniformArray(d);
    big.set(row, 5 + d);
    await index.upsertAsync(Uint32Array.of(ids[40]!), big.subarray(5 + d, 5 + 2 * d));
    ref.set(Uint32Array.of(ids[40]!), as(row.slice()));
    big.fill(7);
    const queries = rng.uniformArray(4 * d);
    assertMatches(
      ref,
      queries,
      25,
      await index.search(queries, 25),
      tolFor(ref, queries),
      {},
      `${storage} shared rows`,
    );
    // A bad value in shared rows rejects naming the element, and nothing is written.
    const size = index.size;
    const bad = shared(rng.uniformArray(2 * d));
    bad[d + 1] = Number.NaN;
    await assert.rejects(index.upsertAsync(Uint32Array.of(ids[0]!, 5_000_000), bad), {
      name: 'RangeError',
      message: new RegExp(`^vectors\\[${d + 1}\\] is NaN`),
    });
    assert.equal(index.size, size);
  }
});

test('async writes apply in call order, one in the pool at a time', async () => {
  // Issued without waiting: each index's async writes go to libuv's pool one at a time in
  // call order (they would otherwise race for the writer mutex on as many pool threads).
  // The same id overwritten, removed and written again: the last call wins, every time.
  const rng = new Rng(20);
  const d = 16;
  for (const storage of ['f32', 'f16'] as const) {
    const as = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    const index = ExactIndex.create({ dim: d, storage });
    const ref = new RefIndex(d);
    const ids = Uint32Array.from({ length: 3000 }, (_, i) => i);
    const vecs = rng.uniformArray(3000 * d);
    const pending: Promise<void>[] = [index.buildAsync(ids, vecs)];
    ref.set(ids, as(vecs));
    const order: number[] = [];
    for (let round = 0; round < 40; round++) {
      const id = Uint32Array.of(round % 5);
      const v = rng.uniformArray(d);
      pending.push(index.upsertAsync(id, v).then(() => void order.push(round)));
      if (round % 4 === 3) {
        pending.push(index.removeAsync(id));
        ref.rows.delete(id[0]!);
      } else {
        ref.set(id, as(v));
      }
    }
    await Promise.all(pending);
    assert.deepEqual(
      order,
      Array.from({ length: 40 }, (_, i) => i),
      `${storage}: settled out of order`,
    );
    assert.equal(index.size, ref.rows.size, storage);
    const queries = rng.uniformArray(4 * d);
    assertMatches(
      ref,
      queries,
      20,
      await index.search(queries, 20),
      tolFor(ref, queries),
      {},
      storage,
    );
  }
});

test('a synchronous write while an async one is pending throws instead of overtaking it', async () => {
  const d = 4;
  const index = ExactIndex.create({ dim: d });
  index.build(Uint32Array.of(1, 2), new Float32Array(2 * d));
  const one = Float32Array.of(1, 0, 0, 0);
  const two = Float32Array.of(2, 0, 0, 0);
  const pending = index.upsertAsync(Uint32Array.of(1), one);
  for (const write of [
    () => index.upsert(Uint32Array.of(1), two),
    () => index.remove(Uint32Array.of(2)),
    () => index.build(Uint32Array.of(1), two),
  ])
    assert.throws(write, /pending would run before it/);
  await pending;
  // Settled: the synchronous write goes in after it, and wins.
  index.upsert(Uint32Array.of(1), two);
  const top = await index.search(Float32Array.of(1, 0, 0, 0), 1);
  assert.deepEqual([top.ids[0], top.scores[0]], [1, 2]);
  assert.equal(index.size, 2);
});

test('large N splits across threads and cache blocks and still matches', async () => {
  const rng = new Rng(16);
  for (const storage of ['f32', 'f16'] as const) {
    const { index, ref } = setup(rng, 20000, 32, storage, 'auto');
    // Force many tasks and small blocks so the merge and block edges are exercised, with
    // blocks claimed one at a time and in runs that shrink as the blocks run out.
    const queries = rng.uniformArray(5 * 32);
    let first: Uint32Array | undefined;
    for (const claimDivisor of [0, 1, 3, 8]) {
      index.setTuning({
        minRowsPerTask: 1000,
        blockBytes: 1024,
        scanBlockBytes: 1024,
        claimDivisor,
      });
      const got = await index.search(queries, 100);
      assertMatches(ref, queries, 100, got, tolFor(ref, queries), {}, `${storage} ${claimDivisor}`);
      first ??= got.ids;
      assert.deepEqual(got.ids, first);
    }
    index.setTuning({
      minRowsPerTask: 16384,
      blockBytes: 32768,
      scanBlockBytes: 65536,
      claimDivisor: 2,
    });
    assert.deepEqual(index.searchSync(queries, 100).ids, first);
  }
});

test('the sgemm path (CMake build) matches brute force, with exclusions', async (t) => {
  if (!loadNative().exactHasSgemm) {
    t.skip('this addon build has no BLAS');
    return;
  }
  const rng = new Rng(18);
  for (const storage of ['f32', 'f16'] as const) {
    const { ids, index, ref } = setup(rng, 5000, 40, storage, 'auto');
    // Chunks that do not divide N, so the last chunk is partial.
    index.setTuning({ sgemmMinBatch: 2, sgemmRows: 700 });
    const queries = rng.uniformArray(40 * 40);
    const exclude = Array.from({ length: 40 }, (_, q) => (q % 2 ? ids.slice(q, q + 50) : null));
    const got = await index.search(queries, 25, { exclude });
    assertMatches(ref, queries, 25, got, tolFor(ref, queries), { exclude }, `sgemm ${storage}`);
  }
});

test('search runs off the event loop and owns a copy of its queries', async () => {
  const rng = new Rng(19);
  const d = 64;
  // One search thread, so that on a 2-core machine a core is left for the event loop: with
  // every core scanning, the main thread could be descheduled for the whole search, and a
  // timer count would then measure the scheduler, not where the search runs. 200k rows and
  // no int8 screen keep the search near 30 ms: at 100k rows with the screen it took ~9 ms,
  // and once in a local test run the timer turned only once meanwhile.
  const index = ExactIndex.create({ dim: d, threads: 1, screen: 'none' });
  index.build(distinctIds(rng, 200_000), rng.uniformArray(200_000 * d));
  const queries = rng.uniformArray(128 * d);
  const saved = queries.slice();
  const expected = index.searchSync(saved, 100);
  // 3.3 GFLOP of work: tens of milliseconds on a native thread, while timers keep firing.
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const pending = index.search(queries, 100);
  queries.fill(0); // the caller may reuse its buffer at once
  const got = await pending;
  clearInterval(timer);
  assert.ok(ticks >= 2, `event loop turned ${ticks} times during the search`);
  assert.deepEqual(got.ids, expected.ids);
});

test('concurrent searches stay correct while upserts run', async () => {
  const rng = new Rng(17);
  const d = 16;
  const { ids, index } = setup(rng, 30000, d, 'f32', 'auto');
  const queries = rng.uniformArray(4 * d);
  // B = 32 takes the batch kernels (and the int8 screen where the CPU has it), whose merge
  // reads the stored rows again to rescore.
  const batch = rng.uniformArray(32 * d);
  const pending: Promise<unknown>[] = [];
  for (let round = 0; round < 20; round++) {
    pending.push(index.search(queries, 10));
    pending.push(index.search(batch, 100));
    // Overwrite existing rows and add new ones between searches in flight.
    index.upsert(ids.slice(round * 10, round * 10 + 10), rng.uniformArray(10 * d));
    index.upsert(Uint32Array.of(0xfffffff0 - round), rng.uniformArray(d));
  }
  const results = (await Promise.all(pending)) as { ids: Uint32Array }[];
  for (const r of results) assert.ok(r.ids.every((x) => x !== NO_ID));
  assert.equal(index.size, 30020);
});

test(
  'larger scans take smaller batches through the screen (screenStepBytes)',
  {
    skip: NO_SCREEN,
  },
  async () => {
    // 4,096 rows of d = 16: 256 KiB of float32 rows (64 bytes each), 128 KiB of float16. With
    // screenMinBatch 5, a step of a quarter of the rows' bytes takes B = 2 (three steps), the
    // whole rows' bytes B = 4 (one), and an allow list of a quarter of the rows is a quarter
    // of the bytes. Every screened batch must still match brute force.
    const rng = new Rng(41);
    const n = 4096;
    const d = 16;
    for (const kernel of SCREENED) {
      for (const storage of ['f32', 'f16'] as const) {
        const { ids, index, ref } = setup(rng, n, d, storage, kernel, 'int8');
        const bytes = n * d * (storage === 'f32' ? 4 : 2);
        const quarter = ids.slice(0, n / 4);
        const label = `${kernel}/${storage}`;
        const screened = async (B: number, step: number, allow?: Uint32Array): Promise<boolean> => {
          index.setTuning({ screenMinBatch: 5, screenStepBytes: step });
          const queries = rng.uniformArray(B * d);
          const before = index.screenedBatches;
          const got = await index.search(queries, 10, { allow });
          assertMatches(ref, queries, 10, got, tolFor(ref, queries), { allow }, label);
          // No guess runs below guessMinRows (16,384), so no retry counts twice here.
          return index.screenedBatches > before;
        };
        assert.equal(await screened(1, bytes / 4), false, `${label} B = 1 stays direct`);
        assert.equal(await screened(2, bytes / 4), true, `${label} B = 2 at three steps`);
        assert.equal(await screened(3, bytes), false, `${label} B = 3 at one step`);
        assert.equal(await screened(4, bytes), true, `${label} B = 4 at one step`);
        assert.equal(await screened(4, bytes + 1), false, `${label} B = 4 below the step`);
        assert.equal(await screened(4, 0), false, `${label} B = 4 without steps`);
        assert.equal(await screened(5, 0), true, `${label} B = 5 without steps`);
        // The allow list's quarter of the bytes reaches a step of a quarter, not of the whole.
        assert.equal(await screened(4, bytes / 4, quarter), true, `${label} allow, one step`);
        assert.equal(await screened(4, bytes / 2, quarter), false, `${label} allow, no step`);
        // screenMinBatch 0 leaves small batches to packMinBatch whatever the steps.
        index.setTuning({ screenMinBatch: 0, screenStepBytes: 1 });
        const before = index.screenedBatches;
        await index.search(rng.uniformArray(4 * d), 10);
        assert.equal(index.screenedBatches, before, `${label} screenMinBatch 0`);
      }
    }
  },
);

test('tuning: defaults per kernel set and storage, round trip, all or nothing', () => {
  for (const kernel of KERNELS) {
    for (const storage of ['f32', 'f16'] as Storage[]) {
      const index = ExactIndex.create({ dim: 8, storage, kernel });
      const t = index.tuning;
      assert.equal(t.blockBytes, 32768);
      assert.equal(t.guessRank, 14);
      // The screen's first batch size is per set and storage (Kernels::screen_min_batch_*).
      if (index.screen === 'int8') assert.ok(t.screenMinBatch >= 2 && t.screenMinBatch <= 6);
      // The AVX2 set takes float16 batches of 2 through the screen from a size on
      // (Kernels::screen_step_bytes_f16); float32 starts at 2 already.
      if (index.kernel === 'avx2' && storage === 'f16') assert.ok(t.screenStepBytes >= 1 << 20);
      index.setTuning({ blockBytes: 4096, guessRank: 3 });
      assert.deepEqual(index.tuning, { ...t, blockBytes: 4096, guessRank: 3 });
      // A bad field after a good one: neither applies.
      assert.throws(() => index.setTuning({ blockBytes: 8192, guessRank: -1 }), RangeError);
      assert.deepEqual(index.tuning, { ...t, blockBytes: 4096, guessRank: 3 });
    }
  }
  // The int8 screen takes float32 pairs, not float16 ones, on every set that has it.
  for (const kernel of SCREENED) {
    const f32 = ExactIndex.create({ dim: 8, storage: 'f32', kernel }).tuning.screenMinBatch;
    const f16 = ExactIndex.create({ dim: 8, storage: 'f16', kernel }).tuning.screenMinBatch;
    assert.ok(f32 < f16, `${kernel}: screenMinBatch f32 ${f32}, f16 ${f16}`);
  }
});

test('bad arguments throw TypeError/RangeError naming the argument', async () => {
  const bad = (fn: () => unknown, name: string, re: RegExp) =>
    assert.throws(fn, (e: Error) => e.name === name && re.test(e.message), `${name} ${re}`);
  bad(() => ExactIndex.create({ dim: 0 }), 'RangeError', /dim/);
  bad(() => ExactIndex.create({ dim: 2.5 }), 'RangeError', /dim/);
  bad(() => ExactIndex.create({ dim: '4' as unknown as number }), 'TypeError', /dim/);
  bad(() => ExactIndex.create({ dim: 4, storage: 'f8' as Storage }), 'RangeError', /storage/);
  bad(() => ExactIndex.create({ dim: 4, threads: -1 }), 'RangeError', /threads/);
  bad(() => ExactIndex.create(null as unknown as { dim: number }), 'TypeError', /opts/);

  const index = ExactIndex.create({ dim: 4 });
  const ids = Uint32Array.of(1, 2);
  const vecs = new Float32Array(8).fill(0.5);
  bad(() => index.build([1, 2] as unknown as Uint32Array, vecs), 'TypeError', /ids/);
  bad(
    () => index.build(ids, new Float64Array(8) as unknown as Float32Array),
    'TypeError',
    /vectors/,
  );
  bad(() => index.build(ids, new Float32Array(7)), 'RangeError', /vectors\.length/);
  bad(() => index.build(Uint32Array.of(1, 1), vecs), 'RangeError', /duplicate id 1/);
  bad(
    () => index.build(ids, Float32Array.of(0, 0, 0, 0, 0, NaN, 0, 0)),
    'RangeError',
    /vectors\[5\] is NaN/,
  );
  bad(
    () => index.upsert(ids, Float32Array.of(0, 0, Infinity, 0, 0, 0, 0, 0)),
    'RangeError',
    /vectors\[2\] is infinite/,
  );
  // float16 keeps magnitudes up to 65504: larger ones would be stored as infinity.
  const half = ExactIndex.create({ dim: 4, storage: 'f16' });
  half.build(ids, Float32Array.of(65504, -65504, 1, 0, 0, 0, 0, 0));
  bad(
    () => half.upsert(ids, Float32Array.of(0, 0, 0, 0, 0, 0, -65505, 0)),
    'RangeError',
    /vectors\[6\] is -65505, beyond float16's range/,
  );
  bad(
    () => half.build(ids, Float32Array.of(1e5, 0, 0, 0, 0, 0, 0, 0)),
    'RangeError',
    /vectors\[0\]/,
  );
  assert.deepEqual([...(await half.search(Float32Array.of(1, 0, 0, 0), 2)).ids], [1, 2]);
  bad(() => index.remove(new Int32Array(1) as unknown as Uint32Array), 'TypeError', /ids/);
  // NO_ID pads short results: an item holding it would read as padding.
  bad(
    () => index.build(Uint32Array.of(1, NO_ID), new Float32Array(8)),
    'RangeError',
    /ids\[1\]: id 4294967295 is reserved/,
  );
  bad(() => index.upsert(Uint32Array.of(NO_ID), new Float32Array(4)), 'RangeError', /reserved/);
  index.build(ids, vecs);
  bad(() => index.remove(Uint32Array.of(3)), 'RangeError', /unknown id 3/);
  assert.equal(index.size, 2);

  const q = new Float32Array(4);
  const rej = (p: Promise<unknown>, name: string, re: RegExp) =>
    assert.rejects(p, (e: Error) => e.name === name && re.test(e.message), `${name} ${re}`);
  // Rows and queries whose squared norm reaches float32's range could score Infinity or
  // NaN; 1e19 in one element of 4 is refused, 4e18 in each is not (squared norm 6.4e37).
  bad(
    () => index.upsert(ids, Float32Array.of(0, 0, 0, 0, 1e19, 0, 0, 0)),
    'RangeError',
    /vectors row 1 \(elements from 4\) has a squared norm of 1e\+38/,
  );
  await rej(
    index.search(Float32Array.of(0, 0, -1e19, 0), 1),
    'RangeError',
    /queries row 0 .*squared norm/,
  );
  const wide = ExactIndex.create({ dim: 4 });
  wide.build(ids, new Float32Array(8).fill(4e18));
  const top = await wide.search(new Float32Array(4).fill(4e18), 2);
  assert.ok(
    top.scores.every((x) => x > 6e37 && Number.isFinite(x)),
    `${top.scores}`,
  );
  await rej(index.search([0, 0, 0, 0] as unknown as Float32Array, 1), 'TypeError', /queries/);
  await rej(index.search(new Float32Array(6), 1), 'RangeError', /queries\.length/);
  await rej(index.search(Float32Array.of(0, NaN, 0, 0), 1), 'RangeError', /queries\[1\] is NaN/);
  await rej(index.search(Float32Array.of(0, 0, -Infinity, 0), 1), 'RangeError', /queries\[2\]/);
  for (const k of [0, -1, 1.5, NaN, Infinity, 2 ** 40]) {
    await rej(index.search(q, k), 'RangeError', /k must be an integer/);
  }
  await rej(index.search(q, '3' as unknown as number), 'TypeError', /k must be a number/);
  // B x k past 2^24 result entries is refused before anything is allocated (it was 2^28: 256
  // queries at k = 2^20 took 4 GB and 10 s on this 2-row index); 2^24 itself is served.
  bad(() => index.searchSync(new Float32Array(4 * 256), 2 ** 16 + 1), 'RangeError', /too large/);
  assert.equal(index.searchSync(new Float32Array(4 * 16), 2 ** 20).ids.length, 2 ** 24);
  await rej(index.search(q, 1, { exclude: [null, null] }), 'RangeError', /exclude\.length/);
  await rej(
    index.search(q, 1, { exclude: [[1] as unknown as Uint32Array] }),
    'TypeError',
    /exclude\[0\]/,
  );
  await rej(index.search(q, 1, { exclude: {} as unknown as null[] }), 'TypeError', /exclude/);
  await rej(index.search(q, 1, { allow: [1] as unknown as Uint32Array }), 'TypeError', /allow/);
  bad(() => index.searchSync(q, 0), 'RangeError', /k/);
  bad(() => index.setTuning({ blockBytes: 1 }), 'RangeError', /blockBytes/);
  bad(() => index.setTuning({ scanBlockBytes: 1 }), 'RangeError', /scanBlockBytes/);
  bad(() => index.setTuning({ packMinBatch: -1 }), 'RangeError', /packMinBatch/);
  bad(() => index.setTuning({ screenMinBatch: 2.5 }), 'RangeError', /screenMinBatch/);
  bad(() => index.setTuning({ claimDivisor: 0.5 }), 'RangeError', /claimDivisor/);
  bad(
    () => ExactIndex.create({ dim: 4, screen: 'int4' as 'int8' }),
    'RangeError',
    /screen must be 'none', 'int8' or 'auto', got 'int4'/,
  );
  // The int8 screen needs an AVX2 or AVX-512 set: forced on the scalar set it is refused,
  // and 'auto' quietly goes without.
  bad(
    () => ExactIndex.create({ dim: 4, kernel: 'scalar', screen: 'int8' }),
    'RangeError',
    /screen 'int8' needs an AVX2 or AVX-512 kernel set; kernel 'scalar'/,
  );
  assert.equal(ExactIndex.create({ dim: 4, kernel: 'scalar' }).screen, 'none');
  // The index still works after all of that.
  assert.equal((await index.search(q, 5)).ids.filter((x) => x !== NO_ID).length, 2);
});

test('the CUDA backend, when absent or without a device, leaves the CPU engine serving', () => {
  const index = ExactIndex.create({ dim: 4, device: 'cuda' });
  // Whatever was compiled, without a device the CPU engine must serve.
  const { cuda } = loadNative().engineInfo();
  assert.equal(index.backend, cuda.devices > 0 ? 'cuda' : 'cpu');
  index.build(Uint32Array.of(1), Float32Array.of(1, 2, 3, 4));
  assert.equal(index.searchSync(Float32Array.of(1, 1, 1, 1), 1).scores[0], 10);
  assert.equal(ExactIndex.create({ dim: 4, device: 'cpu' }).backend, 'cpu');
});
