// A/B of two exact-index variants in ONE process, timed interleaved (A B, B A, A B, ...):
// on a shared machine whose neighbours move wall-clock rates by 2x within minutes, two
// separate benchmark runs compare the neighbours more than the code. A variant is a kernel
// set of this addon (--kernels avx2,avx512; default avx2,auto) or another build of the addon (--addons
// OLD.node,NEW.node: an earlier commit built elsewhere, e.g. in a git worktree).
//
//   node dist/bench/exact-ab.js [--kernels A,B | --addons A.node,B.node [--kernel K]] [--n 100000]
//        [--dims 64,128] [--batches 16,32,128] [--storage f32,f16] [--threads 2] [--k 100]
//        [--rounds 7] [--tune-a JSON] [--tune-b JSON] [--screens A,B] [--fresh N]
//        [--allow 0.1,0.5] [--data uniform|normal | --bundle DIR] [--far ROWS,TIMES] [--json]
//
// --data draws the rows and queries uniform in [-1, 1) (the default) or standard normal.
// --bundle DIR takes a model bundle's item_embeddings.f32 as the rows (n and d from the
// bundle; --n and --dims are ignored) and rows of its user_embeddings.f32 as the queries:
// a trained model's vectors, with their heavier tails. --far ROWS,TIMES sets one element of
// ROWS random rows to TIMES the largest |element| of the data, before both variants build:
// a few item vectors far out, which the int8 screen leaves to exact scores (screenOutliers;
// each variant's count, where its addon reports one, and its mid-scan prunes per timed
// search are printed).
//
// --allow times each cell with an allow list of that share of the rows (random rows, the
// same list for both variants; 1, the default, means none): filtered searches.
// --screens sets each variant's ExactIndexOptions.screen (default auto,auto), e.g.
// --kernels avx512-bf16,avx512-bf16 --screens none,int8 for the int8 screen alone.
// --tune-a/--tune-b apply ExactTuning settings (setTuning) to one variant's indexes, e.g.
// --kernels avx512-bf16,avx512-bf16 --tune-b '{"guessRank":0}' for one tuning knob alone.
// --fresh N times each variant over N different query batches instead of one batch
// repeated (one search per batch, the order alternating), and reports the mean time and
// the guessed-floor retries per query: a guess that overshoots for some queries costs
// only on those, which one repeated batch either always or never hits. Without --fresh the
// retries column counts the timed searches of the one batch: a nonzero value there means
// one of its queries is searched twice on every call (1 to 5 queries in 10,000 at the
// default guess, --fresh 300 at B = 16 and 32; 100k x 128 float32, B = 32, --dims 64,128
// --storage f16,f32 draws one, and that cell then takes ~2x the time of its neighbours).
//
// Prints, per (d, storage, B), the median time per search of each variant, B/A, and the
// share of result ids the two agree on (1 unless a variant changes results).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { percentile, nowMs } from './lib/stats.js';
import { Rng } from './lib/rng.js';
import { printTable } from './lib/table.js';
import { EXACT_KERNELS, EXACT_SCREENS } from '../src/retrieval/exact.js';
import {
  loadNative,
  type ExactScreen,
  type ExactTuning,
  type NativeAddon,
  type NativeExactIndex,
} from '../src/retrieval/native.js';

const args = parseBenchArgs();
const list = (name: string, dflt: string) => (args.options.get(name) ?? dflt).split(',');
const n = numberOption(args, 'n', 100_000);
const threads = numberOption(args, 'threads', 2);
const k = numberOption(args, 'k', 100);
const rounds = numberOption(args, 'rounds', 7);
const fresh = numberOption(args, 'fresh', 0);
const dims = list('dims', '64,128').map(Number);
const batches = list('batches', '16,32,128').map(Number);
const storages = list('storage', 'f32,f16');
const allowShares = list('allow', '1').map(Number);
for (const a of allowShares)
  if (!(a > 0 && a <= 1)) throw new RangeError(`--allow takes shares in (0, 1]; got ${a}`);
for (const s of storages)
  if (s !== 'f32' && s !== 'f16') throw new RangeError(`--storage takes f32,f16; got '${s}'`);
const data = args.options.get('data') ?? 'uniform';
if (data !== 'uniform' && data !== 'normal')
  throw new RangeError(`--data takes uniform or normal; got '${data}'`);
const bundle = args.options.get('bundle');
const farOption = args.options.get('far');
const [farRows, farTimes] = farOption === undefined ? [0, 0] : farOption.split(',').map(Number);
if (farOption !== undefined && !(Number.isInteger(farRows) && farRows! >= 0 && farTimes! > 0))
  throw new RangeError(`--far takes ROWS,TIMES (a count and a factor); got '${farOption}'`);

interface Variant {
  name: string;
  addon: NativeAddon;
  kernel: string;
  tuning?: ExactTuning;
  screen?: ExactScreen;
}
function tuningOption(name: string): ExactTuning | undefined {
  const v = args.options.get(name);
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v) as ExactTuning;
  } catch {
    throw new RangeError(`--${name} takes a JSON object of ExactTuning fields; got '${v}'`);
  }
}
function variants(): [Variant, Variant] {
  const addons = args.options.get('addons');
  if (addons !== undefined) {
    const paths = addons.split(',');
    if (paths.length !== 2) throw new RangeError('--addons takes two paths, A,B');
    // Both builds with one kernel set (--kernel, default each build's best).
    const kernel = args.options.get('kernel') ?? 'auto';
    if (kernel !== 'auto' && !(EXACT_KERNELS as readonly string[]).includes(kernel))
      throw new RangeError(`--kernel: '${kernel}' is not one of ${EXACT_KERNELS.join(', ')}`);
    const require = createRequire(import.meta.url);
    const [a, b] = paths.map((p) => ({
      name: p,
      addon: require(p) as NativeAddon,
      kernel,
    }));
    return [a!, b!];
  }
  // Default: the AVX2 set against the best this CPU runs ('auto'; the AVX2 set again on a
  // CPU without AVX-512, where 'avx512' would be refused).
  const kernels = list('kernels', 'avx2,auto');
  if (kernels.length !== 2) throw new RangeError('--kernels takes two kernel sets, A,B');
  for (const x of kernels)
    if (!(EXACT_KERNELS as readonly string[]).includes(x))
      throw new RangeError(`--kernels: '${x}' is not one of ${EXACT_KERNELS.join(', ')}`);
  const addon = loadNative();
  return [
    { name: kernels[0]!, addon, kernel: kernels[0]! },
    { name: kernels[1]!, addon, kernel: kernels[1]! },
  ];
}

const [va, vb] = variants();
va.tuning = tuningOption('tune-a');
vb.tuning = tuningOption('tune-b');
const screens = list('screens', 'auto,auto');
if (screens.length !== 2) throw new RangeError('--screens takes two screens, A,B');
for (const x of screens)
  if (!(EXACT_SCREENS as readonly string[]).includes(x))
    throw new RangeError(`--screens: '${x}' is not one of ${EXACT_SCREENS.join(', ')}`);
[va.screen, vb.screen] = screens as ExactScreen[];
const rng = new Rng(7);
interface AbRow {
  n: number;
  d: number;
  storage: string;
  batch: number;
  k: number;
  threads: number;
  /** Share of the rows the search's allow list admits (1: no list). */
  allow: number;
  a_ms: number;
  b_ms: number;
  b_over_a: number;
  same_ids: number;
  /** Guessed floors that overshot, per query searched (timed searches). */
  a_retries?: number;
  b_retries?: number;
  /** Mid-scan prunes of the int8 screen per timed search (screenPrunes). */
  a_prunes: number;
  b_prunes: number;
  /** Rows the int8 screen leaves to exact scores (null where the addon predates them). */
  a_outliers: number | null;
  b_outliers: number | null;
}
const rows: AbRow[] = [];
// The data sets: (rows, their count and width, a source of query batches).
interface DataSet {
  n: number;
  d: number;
  vecs: Float32Array;
  queries: (batch: number) => Float32Array;
}
function floats(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
}
function dataSets(): DataSet[] {
  if (bundle !== undefined) {
    const manifest = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
      dim?: number;
    };
    const vecs = floats(join(bundle, 'item_embeddings.f32'));
    const users = floats(join(bundle, 'user_embeddings.f32'));
    const d = manifest.dim ?? 0;
    if (!(d > 0)) throw new RangeError(`--bundle: ${bundle}/config.json names no dim`);
    const nu = users.length / d;
    return [
      {
        n: vecs.length / d,
        d,
        vecs: vecs.slice(),
        queries: (batch) => {
          const q = new Float32Array(batch * d);
          for (let i = 0; i < batch; i++)
            q.set(users.subarray(rng.int(nu) * d).subarray(0, d), i * d);
          return q;
        },
      },
    ];
  }
  const draw = (m: number) => (data === 'normal' ? rng.normalArray(m) : rng.uniformArray(m));
  return dims.map((d) => ({ n, d, vecs: draw(n * d), queries: (batch) => draw(batch * d) }));
}
const outliers = (x: NativeExactIndex) => (x as { screenOutliers?: number }).screenOutliers ?? null;
for (const set of dataSets()) {
  const { n, d, vecs } = set;
  if (farRows > 0) {
    let most = 0;
    for (const x of vecs) most = Math.max(most, Math.abs(x));
    for (let i = 0; i < farRows; i++) vecs[rng.int(n) * d + rng.int(d)] = farTimes! * most;
  }
  const ids = Uint32Array.from({ length: n }, (_, i) => i);
  for (const storage of storages) {
    const make = (v: Variant): NativeExactIndex => {
      const index = new v.addon.NativeExactIndex(d, storage, threads, v.kernel, 'cpu', v.screen);
      index.build(ids, vecs);
      if (v.tuning) index.setTuning(v.tuning);
      return index;
    };
    const ia = make(va);
    const ib = make(vb);
    for (const [batch, share] of batches.flatMap((b) => allowShares.map((a) => [b, a]))) {
      const allow = share < 1 ? ids.filter(() => rng.next() < share) : null;
      const q = set.queries(batch);
      const ra = ia.searchSync(q, k, null, allow);
      const rb = ib.searchSync(q, k, null, allow);
      let same = 0;
      for (let i = 0; i < ra.ids.length; i++) same += ra.ids[i] === rb.ids[i] ? 1 : 0;
      // About 50 M multiply-adds per timing window, at least 3 searches.
      const reps = Math.max(3, Math.round(5e7 / (n * d * batch)));
      const time = (index: NativeExactIndex) => {
        index.searchSync(q, k, null, allow);
        const t0 = nowMs();
        for (let i = 0; i < reps; i++) index.searchSync(q, k, null, allow);
        return (nowMs() - t0) / reps;
      };
      if (fresh > 0) {
        const qs = Array.from({ length: fresh }, () => set.queries(batch));
        const timeOne = (index: NativeExactIndex, x: Float32Array) => {
          const t0 = nowMs();
          index.searchSync(x, k, null, allow);
          return nowMs() - t0;
        };
        const [ra0, rb0] = [ia.guessRetries, ib.guessRetries];
        const [pa0, pb0] = [ia.screenPrunes, ib.screenPrunes];
        let sa = 0;
        let sb = 0;
        qs.forEach((x, i) => {
          if (i % 2 === 0) {
            sa += timeOne(ia, x);
            sb += timeOne(ib, x);
          } else {
            sb += timeOne(ib, x);
            sa += timeOne(ia, x);
          }
        });
        rows.push({
          n,
          d,
          storage,
          batch,
          k,
          threads,
          allow: share,
          a_ms: Math.round((sa / fresh) * 1000) / 1000,
          b_ms: Math.round((sb / fresh) * 1000) / 1000,
          b_over_a: Math.round((sb / sa) * 100) / 100,
          same_ids: Math.round((same / ra.ids.length) * 10000) / 10000,
          a_retries: (ia.guessRetries - ra0) / (fresh * batch),
          b_retries: (ib.guessRetries - rb0) / (fresh * batch),
          a_prunes: (ia.screenPrunes - pa0) / fresh,
          b_prunes: (ib.screenPrunes - pb0) / fresh,
          a_outliers: outliers(ia),
          b_outliers: outliers(ib),
        });
        continue;
      }
      const ta: number[] = [];
      const tb: number[] = [];
      const [ra0, rb0] = [ia.guessRetries, ib.guessRetries];
      const [pa0, pb0] = [ia.screenPrunes, ib.screenPrunes];
      for (let r = 0; r < rounds; r++) {
        // Alternate which variant goes first, so neither always follows the other.
        if (r % 2 === 0) {
          ta.push(time(ia));
          tb.push(time(ib));
        } else {
          tb.push(time(ib));
          ta.push(time(ia));
        }
      }
      const ma = percentile(ta, 50);
      const mb = percentile(tb, 50);
      rows.push({
        n,
        d,
        storage,
        batch,
        k,
        threads,
        allow: share,
        a_ms: Math.round(ma * 1000) / 1000,
        b_ms: Math.round(mb * 1000) / 1000,
        b_over_a: Math.round((mb / ma) * 100) / 100,
        same_ids: Math.round((same / ra.ids.length) * 10000) / 10000,
        // The same batch every round: a query whose guess overshoots does so every time.
        a_retries: (ia.guessRetries - ra0) / (rounds * (reps + 1) * batch),
        b_retries: (ib.guessRetries - rb0) / (rounds * (reps + 1) * batch),
        a_prunes: (ia.screenPrunes - pa0) / (rounds * (reps + 1)),
        b_prunes: (ib.screenPrunes - pb0) / (rounds * (reps + 1)),
        a_outliers: outliers(ia),
        b_outliers: outliers(ib),
      });
    }
  }
}

if (args.json) {
  console.log(
    JSON.stringify({
      bench: 'exact-ab',
      date: new Date().toISOString(),
      a: va.name,
      b: vb.name,
      rounds,
      fresh,
      results: rows,
    }),
  );
} else {
  console.log(
    fresh > 0
      ? `A = ${va.name}, B = ${vb.name}; means over ${fresh} fresh query batches\n`
      : `A = ${va.name}, B = ${vb.name}; medians of ${rounds} interleaved rounds\n`,
  );
  const retries = (x?: number) => (x === undefined ? '' : x.toFixed(4));
  printTable(
    [
      'n',
      'd',
      'storage',
      'batch',
      'allow',
      'A ms',
      'B ms',
      'B/A',
      'same ids',
      'A retries/q',
      'B retries/q',
      'A prunes',
      'B prunes',
      'A outliers',
      'B outliers',
    ],
    rows.map((r) => [
      r.n,
      r.d,
      r.storage,
      r.batch,
      r.allow,
      r.a_ms,
      r.b_ms,
      r.b_over_a,
      r.same_ids,
      retries(r.a_retries),
      retries(r.b_retries),
      r.a_prunes.toFixed(1),
      r.b_prunes.toFixed(1),
      r.a_outliers ?? '-',
      r.b_outliers ?? '-',
    ]),
  );
}
