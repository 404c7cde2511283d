// Writes beside searches on the exact index: how long an upsert or remove holds the
// calling thread (the event loop: writes are synchronous) and how long searches that
// overlap it take.
//
//   npm run bench:exact-writes [-- --json] [-- --n 1000000] [-- --d 64]
//                              [-- --storage f32|f16] [-- --searchers 2] [-- --async]
//
// Random rows (N x d, default 1M x 64 float32). `searchers` loops each issue one query at a
// time (k 100, as the server's collaborative candidates ask) for the whole run. The
// writes, in order: upsert 1 new id (the first after the build), upsert 1 new, upsert 100
// new, upsert 1 existing id (an overwrite), remove 1; then new ids 10,000 at a time until
// one upsert outgrows the buffers the build allocated (it moves their pages into larger
// mappings, or copies the rows where it cannot: the row says which). Then, with the
// searchers stopped, 300 upserts of one new id each (`upsert_one_new`). For each write: its time and the latency of the searches that overlapped it.
// With --async the build and the writes go through buildAsync/upsertAsync/removeAsync (on a
// native thread, the event loop free meanwhile) instead of the synchronous calls, and
// `build_hold_ms` and each row's `hold_ms` say how long each call still held the calling
// thread before returning its promise (checking and copying its arguments). Last, with the
// searchers stopped: B = 32 batches before and after upserts of rows spread wider than the
// others (`wide_rows`, `far_row`, `past_cap`: see below).
import { parseBenchArgs, numberOption } from './lib/args.js';
import { Rng } from './lib/rng.js';
import { searchesBeside, sleep } from './lib/beside.js';
import { nowMs, percentile } from './lib/stats.js';
import { printTable } from './lib/table.js';
import { ExactIndex, type Storage } from '../src/retrieval/exact.js';

const args = parseBenchArgs();
const n = numberOption(args, 'n', args.quick ? 100_000 : 1_000_000);
const d = numberOption(args, 'd', 64);
const searchers = numberOption(args, 'searchers', 2);
const storage = (args.options.get('storage') ?? 'f32') as Storage;
const useAsync = args.options.has('async');
if (storage !== 'f32' && storage !== 'f16')
  throw new RangeError(`--storage must be f32 or f16, got '${storage}'`);
const log = (line: string) => {
  if (!args.json) console.log(line);
};
const K = 100;
const t0 = nowMs();
const rng = new Rng(51);
const vecs = rng.normalArray(n * d);
const index = ExactIndex.create({ dim: d, storage });
const buildIds = Uint32Array.from({ length: n }, (_, i) => i);
const tb = nowMs();
const building = (useAsync ? index.buildAsync : index.build).call(index, buildIds, vecs);
const buildHoldMs = nowMs() - tb;
await building;
const buildMs = nowMs() - tb;
log(
  `build ${n} x ${d} ${storage}: ${buildMs.toFixed(0)} ms (held the calling thread ${buildHoldMs.toFixed(0)} ms)`,
);
const NQ = 64;
const queries = rng.normalArray(NQ * d);
const one = (q: number) => queries.subarray(q * d, (q + 1) * d);

const { rows, beside, stop } = searchesBeside(
  searchers,
  (i) => index.search(one(i % NQ), K),
  100,
  log,
);

const upsert = (ids: Uint32Array, v: Float32Array) =>
  useAsync ? index.upsertAsync(ids, v) : index.upsert(ids, v);
let next = n;
const fresh = (count: number) => {
  const ids = Uint32Array.from({ length: count }, (_, i) => next + i);
  next += count;
  return { ids, v: rng.normalArray(count * d) };
};
await beside('none (1 s)', () => sleep(1000));
for (const [label, count] of [
  ['upsert 1 new (first)', 1],
  ['upsert 1 new', 1],
  ['upsert 100 new', 100],
] as const) {
  const { ids, v } = fresh(count);
  await beside(label, () => upsert(ids, v));
}
await beside('upsert 1 existing', () => upsert(Uint32Array.of(7), rng.normalArray(d)));
await beside('remove 1', () =>
  useAsync ? index.removeAsync(Uint32Array.of(8)) : index.remove(Uint32Array.of(8)),
);
// New ids until an upsert outgrows the buffers.
const batches: number[] = [];
const before = rows.length;
// (An addon from before `growths`, RECSERVE_ADDON=<older build> for an A/B: the batch
// that passes the room build left, a quarter more rows and 1,024.)
const growths = () =>
  index.growths
    ? index.growths.moved + index.growths.copied
    : Number(index.size > n + Math.floor(n / 4) + 1024);
const grown0 = growths();
let grew = -1;
while (batches.length < 100 && grew < 0) {
  const { ids, v } = fresh(10_000);
  batches.push(await beside(`upsert 10,000 new (#${batches.length + 1})`, () => upsert(ids, v)));
  if (growths() > grown0) grew = batches.length - 1;
}
if (grew < 0) throw new Error('no upsert grew the buffers in 100 batches');
const how = !index.growths
  ? 'rows copied'
  : index.growths.moved > 0
    ? 'pages moved'
    : 'rows copied';
// Keep the batch that grew and the typical one; the rest only pad the table.
const kept = rows.splice(before);
rows.push(kept[grew]!);
rows.at(-1)!.write = `upsert 10,000 new (grows: ${how})`;
const others = kept.filter((_, i) => i !== grew);
if (others.length > 0) {
  const typical = others.sort((a, b) => a.write_ms - b.write_ms)[others.length >> 1]!;
  rows.push({ ...typical, write: 'upsert 10,000 new (median)' });
}
await stop();

// One new id at a time, 300 times, with no searches beside: what a single upsert costs
// the calling thread when nothing grows.
const single: number[] = [];
for (let i = 0; i < 300; i++) {
  const { ids, v } = fresh(1);
  const ts = nowMs();
  await upsert(ids, v);
  single.push(nowMs() - ts);
}
const upsertOneNew = {
  count: single.length,
  p50_ms: percentile(single, 50),
  p90_ms: percentile(single, 90),
  max_ms: Math.max(...single),
};

// Rows spread wider than the built ones. B = 32 batches (through the screen), with no
// searchers beside, before and after each of three upserts that overwrite existing rows:
// 1,000 rows at twice the spread (`wide_rows`), then one row with an element at 20x the
// spread (`far_row`), then 2,000 more at three times the spread (`past_cap`). The int8 screen
// leaves rows past its range to exact scores (screenOutliers) up to twice 1 in 2,048 rows,
// and past that is fitted again, every row coded again before the write lock (screenRefits).
// Before the outliers, every such upsert refitted, and before the refits, the clamped
// elements widened every pair's bound until the next build.
const batchQ = rng.normalArray(32 * d);
const batchMs = () => {
  for (let i = 0; i < 2; i++) index.searchSync(batchQ, K);
  const tq = nowMs();
  for (let i = 0; i < 5; i++) index.searchSync(batchQ, K);
  return (nowMs() - tq) / 5;
};
// (screenRefits is undefined in an addon from before the refit, screenOutliers in one from
// before the outliers: null in the JSON.)
const outliers = () => index.screenOutliers ?? null;
const batchBefore = batchMs();
const spreadStep = async (ids: Uint32Array, vecs: Float32Array) => {
  const refits0 = index.screenRefits ?? 0;
  const tw = nowMs();
  await upsert(ids, vecs);
  return {
    upsert_ms: nowMs() - tw,
    refits: (index.screenRefits ?? 0) - refits0,
    outliers: outliers(),
    batch32_ms_after: batchMs(),
  };
};
const wide = await spreadStep(
  Uint32Array.from({ length: 1000 }, (_, i) => i * 97),
  rng.normalArray(1000 * d).map((x) => x * 2),
);
const screen = {
  screen: index.screen,
  batch32_ms_before: batchBefore,
  upsert_wide_ms: wide.upsert_ms,
  refits: wide.refits,
  outliers: wide.outliers,
  batch32_ms_after: wide.batch32_ms_after,
};
const farVec = rng.normalArray(d);
farVec[3] = 20 * 4; // 20x the spread of normal draws (their extremes sit near 4 to 5)
const farRow = await spreadStep(Uint32Array.of(5), farVec);
const pastCap = await spreadStep(
  Uint32Array.from({ length: 2000 }, (_, i) => i * 97 + 13),
  rng.normalArray(2000 * d).map((x) => x * 3),
);

const out = {
  bench: 'exact-writes',
  date: new Date().toISOString(),
  n,
  d,
  storage,
  async: useAsync,
  k: K,
  searchers,
  build_ms: buildMs,
  build_hold_ms: buildHoldMs,
  batches_of_10k: batches.length,
  seconds: (nowMs() - t0) / 1000,
  results: rows,
  upsert_one_new: upsertOneNew,
  wide_rows: screen,
  far_row: farRow,
  past_cap: pastCap,
};
if (args.json) {
  console.log(JSON.stringify(out));
} else {
  console.log(
    `\n${n} x ${d} ${storage}, ${useAsync ? 'async' : 'synchronous'} writes; ` +
      `${searchers} search loops (k ${K}, B 1) beside each write\n`,
  );
  printTable(
    ['write', 'write ms', 'held ms', 'searches', 'p50 ms', 'p99 ms', 'max ms'],
    rows.map((r) => [r.write, r.write_ms, r.hold_ms, r.searches, r.p50_ms, r.p99_ms, r.max_ms]),
  );
  console.log(
    `\nupsert of one new id, ${upsertOneNew.count} times, no searches: ` +
      `p50 ${upsertOneNew.p50_ms.toFixed(3)} ms, p90 ${upsertOneNew.p90_ms.toFixed(3)} ms`,
  );
  const outl = (x: number | null) => (x === null ? '' : `, ${x} outlier rows`);
  console.log(
    `\nB = 32 batches (screen ${screen.screen}): ${screen.batch32_ms_before.toFixed(2)} ms, ` +
      `then ${screen.batch32_ms_after.toFixed(2)} ms after 1,000 rows at twice the spread ` +
      `(that upsert ${screen.upsert_wide_ms.toFixed(1)} ms, ${screen.refits} refit(s)` +
      `${outl(screen.outliers)})`,
  );
  console.log(
    `${farRow.batch32_ms_after.toFixed(2)} ms after one row at 20x the spread ` +
      `(${farRow.upsert_ms.toFixed(1)} ms, ${farRow.refits} refit(s)${outl(farRow.outliers)})`,
  );
  console.log(
    `${pastCap.batch32_ms_after.toFixed(2)} ms after 2,000 more at 3x the spread ` +
      `(${pastCap.upsert_ms.toFixed(1)} ms, ${pastCap.refits} refit(s)${outl(pastCap.outliers)})`,
  );
  console.log(`\n${out.seconds.toFixed(1)} s`);
}
