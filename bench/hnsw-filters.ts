// Filtered HNSW search: per-query time and recall@10 of the graph walk and of the scan of
// the admissible items (HnswSearchOptions.filterMode), and what 'auto' picks, against the
// share of items a filter admits. Same data and index as bench:retrieval's HNSW rows
// (100k x 64 clustered, seed 31), single queries on one thread.
//
//   npm run bench:hnsw-filters [-- --quick] [-- --json] [-- --ef 64] [-- --queries 300]
//                              [-- --bundle models/recserve/1]
//
// Then, unfiltered: recall@100 at ef, 4 ef and 16 ef (how deep the graph reaches), and the
// walk after HnswIndex.remove of 1% and then 11% of the items.
//
// Filters: 'random' admits a random share of the items; 'region' the share furthest along
// one direction of the space (a category whose items sit together, away from many queries);
// 'history' excludes per query its own unfiltered top 20 and 200 random items (a user's
// seen items). Truth for recall: the exact index's top 10 under the same filter; its time
// (float32, all cores, the filter applied in its scan) is the 'exact' row.
import { parseBenchArgs, numberOption } from './lib/args.js';
import { nearRows, recallAtK, spreadRows } from './lib/data.js';
import { hnswBenchSet, hnswBundleSet } from './lib/hnsw-set.js';
import { Rng } from './lib/rng.js';
import { nowMs } from './lib/stats.js';
import { printTable } from './lib/table.js';
import type { HnswFilterMode, HnswSearchOptions } from '../src/retrieval/hnsw.js';

interface Row {
  filter: 'random' | 'region' | 'history';
  /** Share of the index the filter admits (1 - excluded share for 'history'). */
  share: number;
  ef_search: number;
  /** HNSW's filterMode, or 'exact': the exact index (float32, all cores) on the same data. */
  path: HnswFilterMode | 'exact';
  us_per_query: number;
  qps: number;
  recall_at_10: number;
}

const args = parseBenchArgs();
const quick = args.quick;
const ef = numberOption(args, 'ef', 64);
const nq = numberOption(args, 'queries', quick ? 100 : 300);
const log = (line: string) => {
  if (!args.json) console.log(line);
};
const t0 = nowMs();

const K = 10;
// --bundle DIR: a model version's items and HNSW index, with item-to-item queries (what
// /v1/similar and similar-to-recent ask); else the synthetic set, with queries near items.
const bundle = args.options.get('bundle');
const bundled = bundle ? await hnswBundleSet(bundle) : null;
const set = bundled ?? (await hnswBenchSet(log));
const { n, d, vecs, hnsw, exact, rng } = set;
const loadSeconds: number | null = bundled ? bundled.loadSeconds : null;
const ids = Uint32Array.from({ length: n }, (_, i) => i);
const queries = bundle ? spreadRows(vecs, d, nq) : nearRows(new Rng(32), vecs, d, nq, 0.3);
const one = (q: number) => queries.subarray(q * d, (q + 1) * d);

/** Items a walk can reach at all: one walk whose beam is as wide as the index (or 2^20). */
function reachable(): number {
  const width = Math.min(n, 1 << 20);
  const r = hnsw.searchSync(one(0), width, {
    efSearch: width,
    threads: 1,
    exclude: [new Uint32Array(0)],
    filterMode: 'graph',
  });
  return r.ids.filter((id) => id !== 0xffffffff).length;
}

// Items ordered along one random direction: the 'region' filters take a prefix.
const dir = Float32Array.from({ length: d }, () => rng.normal());
const along = Array.from({ length: n }, (_, i) => {
  let s = 0;
  for (let j = 0; j < d; j++) s += vecs[i * d + j]! * dir[j]!;
  return { i, s };
})
  .sort((a, b) => b.s - a.s)
  .map((x) => x.i);

/** Runs every query alone for its top k; returns the ids and the time per query. */
function run(opts: (q: number) => HnswSearchOptions, k = K): { ids: Uint32Array; us: number } {
  const got = new Uint32Array(nq * k);
  const ts = nowMs();
  for (let q = 0; q < nq; q++) got.set(hnsw.searchSync(one(q), k, opts(q)).ids, q * k);
  return { ids: got, us: ((nowMs() - ts) * 1000) / nq };
}

const rows: Row[] = [];
function measure(filter: Row['filter'], share: number, opts: (q: number) => HnswSearchOptions) {
  // The exact index's answers are the truth; its time is a row of its own.
  const exactRun = () => {
    const got = new Uint32Array(nq * K);
    const ts = nowMs();
    for (let q = 0; q < nq; q++) {
      const o = opts(q);
      got.set(
        exact.searchSync(one(q), K, { exclude: o.exclude ?? undefined, allow: o.allow }).ids,
        q * K,
      );
    }
    return { ids: got, us: ((nowMs() - ts) * 1000) / nq };
  };
  exactRun(); // warm
  const truth = exactRun();
  rows.push({
    filter,
    share,
    ef_search: ef,
    path: 'exact',
    us_per_query: truth.us,
    qps: 1e6 / truth.us,
    recall_at_10: 1,
  });
  run((q) => ({ ...opts(q), efSearch: ef, threads: 1, filterMode: 'auto' })); // warm
  for (const path of ['graph', 'scan', 'auto'] as const) {
    const r = run((q) => ({ ...opts(q), efSearch: ef, threads: 1, filterMode: path }));
    const row: Row = {
      filter,
      share,
      ef_search: ef,
      path,
      us_per_query: r.us,
      qps: 1e6 / r.us,
      recall_at_10: recallAtK(truth.ids, r.ids, nq, K),
    };
    rows.push(row);
  }
}

const unfiltered = run(() => ({ efSearch: ef, threads: 1 }));
const unfilteredRecall = recallAtK(exact.searchSync(queries, K).ids, unfiltered.ids, nq, K);
// A bundle's index may be large: its walks over small shares cross most of it, so a bundle
// run keeps to the shares where auto still walks or is about to scan.
const shares = bundle
  ? [0.5, 0.2, 0.05]
  : quick
    ? [0.5, 0.1, 0.01]
    : [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.002];
for (const share of shares) {
  const m = Math.round(n * share);
  const pick = new Rng(33);
  const random = Uint32Array.from(ids.filter(() => pick.next() < share));
  measure('random', random.length / n, () => ({ allow: random }));
  const region = Uint32Array.from(along.slice(0, m)).sort();
  measure('region', share, () => ({ allow: region }));
}
// The query's own top 20 (the same walk as the unfiltered run's top 10, so those included).
const history = Array.from({ length: nq }, (_, q) => {
  const own = hnsw.searchSync(one(q), 20, { efSearch: ef }).ids;
  const pick = new Rng(100 + q);
  return Uint32Array.from([...own, ...Array.from({ length: 200 }, () => pick.int(n))]);
});
measure('history', 1 - 220 / n, (q) => ({ exclude: [history[q]!] }));

// Before the removals below.
const reach = reachable();

// Deep ranks: recall@100 of the unfiltered walk at ef, 4 ef and 16 ef. Where it stops
// rising, a filter whose answers sit at those ranks cannot be walked to either (bench/README,
// "Deep ranks on the reference bundle's graph").
const DEEP = 100;
const truthDeep = exact.searchSync(queries, DEEP).ids;
// (A search's beam is at least k wide, so efSearch starts at 100 here.)
const deep = [ef, 4 * ef, 16 * ef].map((e0) => {
  const e = Math.max(e0, DEEP);
  const r = run(() => ({ efSearch: e, threads: 1 }), DEEP);
  return { ef_search: e, us_per_query: r.us, recall_at_100: recallAtK(truthDeep, r.ids, nq, DEEP) };
});

// Removed items (HnswIndex.remove): the unfiltered walk's time and recall@10 against the
// exact index over the items held, after removing a random 1% of the items, then 10% more.
// Last, since it changes the index.
const removed: { share: number; us_per_query: number; recall_at_10: number }[] = [];
{
  const pick = new Rng(34);
  const gone = new Set<number>();
  for (const add of [0.01, 0.1]) {
    const more = Uint32Array.from(ids.filter((id) => !gone.has(id) && pick.next() < add));
    await hnsw.remove(more);
    for (const id of more) gone.add(id);
    const goneIds = Uint32Array.from(gone).sort();
    const truth = new Uint32Array(nq * K);
    for (let q = 0; q < nq; q++)
      truth.set(exact.searchSync(one(q), K, { exclude: [goneIds] }).ids, q * K);
    const r = run(() => ({ efSearch: ef, threads: 1 }));
    removed.push({
      share: gone.size / n,
      us_per_query: r.us,
      recall_at_10: recallAtK(truth, r.ids, nq, K),
    });
  }
}

const out = {
  bench: 'hnsw-filters',
  date: new Date().toISOString(),
  quick,
  n,
  d,
  k: K,
  queries: nq,
  bundle: bundle ?? null,
  /** --bundle: seconds to load its HNSW index (the addon reconnects the graph on load). */
  load_seconds: loadSeconds,
  reachable: reach,
  unfiltered_us_per_query: unfiltered.us,
  unfiltered_recall_at_10: unfilteredRecall,
  seconds: (nowMs() - t0) / 1000,
  results: rows,
  /** Unfiltered walks at ef, 4 ef and 16 ef: recall@100 against the exact index. */
  deep,
  /** Unfiltered walks after removing that share of the items: recall@10 over the held. */
  removed,
};
if (args.json) {
  console.log(JSON.stringify(out));
} else {
  console.log(
    `\n${bundle ? `${bundle}: ${n} x ${d} items, item queries` : `${n} x ${d} clustered`}, ` +
      `${out.reachable} reachable` +
      (loadSeconds === null ? '; ' : `, loaded in ${loadSeconds.toFixed(2)} s; `) +
      `k ${K}, efSearch ${ef}, ${nq} single queries on one thread; ` +
      `unfiltered ${unfiltered.us.toFixed(1)} us/query, recall@10 ${unfilteredRecall.toFixed(3)}\n`,
  );
  printTable(
    ['filter', 'share', 'path', 'us/query', 'recall@10'],
    rows.map((r) => [r.filter, r.share, r.path, r.us_per_query, r.recall_at_10]),
  );
  console.log('\nunfiltered walks, deeper ranks:');
  printTable(
    ['efSearch', 'us/query', 'recall@100'],
    deep.map((r) => [r.ef_search, r.us_per_query, r.recall_at_100]),
  );
  console.log('\nunfiltered walks after remove():');
  printTable(
    ['removed', 'us/query', 'recall@10'],
    removed.map((r) => [r.share, r.us_per_query, r.recall_at_10]),
  );
  console.log(`\n${out.seconds.toFixed(1)} s`);
}
