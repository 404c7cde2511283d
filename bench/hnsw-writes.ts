// Writes beside searches on the HNSW index: how long searches wait while items are added,
// removed and the graph compacted, and what compaction gives back.
//
//   npm run bench:hnsw-writes [-- --json] [-- --ef 64] [-- --searchers 2]
//                             [-- --bundle models/recserve/1] [-- --skip-compact]
//
// Same data as bench:retrieval's HNSW rows (100k x 64 clustered, seed 31), or a model
// version's items and graph (--bundle). `searchers` loops each issue one query at a time
// (k 10, async, as the server does) for the whole run; for each write the table gives the
// write's time and the latency of the searches that overlapped it. The writes, in order:
// - add 1 (three times), 4, 16, 100 and 10,000 new items (near existing ones; a loaded
//   graph has room for a quarter more rows, so no add here copies its storage). Adds of up to one item per 2,048 held
//   reconnect the graph from what they changed, larger ones over the whole graph; the
//   output ends with the count of each (HnswIndex.checkGraph, which also checks that every
//   row is reachable both ways);
// - a burst: 8 adds of 200 items issued together, and the time of one search beside them;
// - remove 10% of the items;
// - compact (HnswIndex.compact, every core), with the unfiltered walk's time and
//   recall@10 (one thread, against the exact index over the items held) before and after;
// - remove another 10%, and compact with one build thread (the other core left to the
//   searches).
// An addon without compact (RECSERVE_ADDON=<an older build>, for an A/B) skips it, as
// does --skip-compact (the adds alone: a 1M bundle's compactions take minutes).
import { parseBenchArgs, numberOption } from './lib/args.js';
import { nearRows, recallAtK, spreadRows } from './lib/data.js';
import { hnswBenchSet, hnswBundleSet } from './lib/hnsw-set.js';
import { Rng } from './lib/rng.js';
import { searchesBeside, sleep } from './lib/beside.js';
import { nowMs } from './lib/stats.js';
import { printTable } from './lib/table.js';

const args = parseBenchArgs();
const ef = numberOption(args, 'ef', 64);
const searchers = numberOption(args, 'searchers', 2);
const log = (line: string) => {
  if (!args.json) console.log(line);
};
const t0 = nowMs();
const K = 10;
const bundle = args.options.get('bundle');
const skipCompact = args.options.has('skip-compact');
const bundleSet = bundle ? await hnswBundleSet(bundle) : null;
const set = bundleSet ?? (await hnswBenchSet(log));
const { n, d, vecs, hnsw, exact } = set;
const loadSeconds = bundleSet ? bundleSet.loadSeconds : null;
const rng = new Rng(40);
const NQ = 256;
// Queries and new items near existing items, with noise a quarter of the items' RMS
// element (their scale differs between sets); with --bundle the queries are items
// themselves, as /v1/similar asks (and as bench:hnsw-filters does).
let sq = 0;
for (const x of vecs) sq += x * x;
const noise = 0.25 * Math.sqrt(sq / vecs.length);
const queries = bundle ? spreadRows(vecs, d, NQ) : nearRows(rng, vecs, d, NQ, noise);
const one = (q: number) => queries.subarray(q * d, (q + 1) * d);

// The search loops run from here to the end.
const { rows, beside, stop } = searchesBeside(
  searchers,
  (i) => hnsw.search(one(i % NQ), K, { efSearch: ef }),
  50,
  log,
);

/** The unfiltered walk on one thread: time per query and recall@10 against `exact`. */
function walks(): { us_per_query: number; recall_at_10: number; removed_rows: number } {
  const truth = exact.searchSync(queries, K).ids;
  const got = new Uint32Array(NQ * K);
  const ts = nowMs();
  for (let q = 0; q < NQ; q++)
    got.set(hnsw.searchSync(one(q), K, { efSearch: ef, threads: 1 }).ids, q * K);
  return {
    us_per_query: ((nowMs() - ts) * 1000) / NQ,
    recall_at_10: recallAtK(truth, got, NQ, K),
    removed_rows: hnsw.removedRows ?? 0, // (undefined in an addon from before compact)
  };
}

await beside('none (1 s)', () => sleep(1000));
let next = n;
for (const count of [1, 1, 1, 4, 16, 100, 10_000]) {
  const ids = Uint32Array.from({ length: count }, (_, i) => next + i);
  const v = nearRows(rng, vecs, d, count, noise);
  next += count;
  await beside(`add ${count}`, () => hnsw.add(ids, v));
  exact.upsert(ids, v);
}
// How the adds reconnected the graph, and that every row stays reachable (null from an
// addon from before checkGraph). Not timed against searches: it runs between writes.
let graph: Awaited<ReturnType<typeof hnsw.checkGraph>> | null = null;
try {
  graph = await hnsw.checkGraph();
} catch (err) {
  if (!(err instanceof TypeError)) throw err;
}
// A burst: 8 adds of 200 items issued together, not awaited, and one search issued beside
// them. An index's writes enter libuv's pool one at a time (WriteQueue), so the search
// keeps a pool thread; when each add waited for the writer mutex on a pool thread of its
// own, the burst held all four and the search waited behind it.
const burstAdds: Promise<void>[] = [];
const tb = nowMs();
for (let b = 0; b < 8; b++) {
  const ids = Uint32Array.from({ length: 200 }, (_, i) => next + i);
  const v = nearRows(rng, vecs, d, 200, noise);
  next += 200;
  burstAdds.push(hnsw.add(ids, v));
  exact.upsert(ids, v);
}
const ts = nowMs();
await hnsw.search(one(0), K, { efSearch: ef });
const burst = { adds: 8, rows_each: 200, search_ms: nowMs() - ts, adds_ms: 0 };
await Promise.all(burstAdds);
burst.adds_ms = nowMs() - tb;
log(`a search beside 8 adds issued together: ${burst.search_ms.toFixed(1)} ms`);
const gone = Uint32Array.from({ length: Math.floor(n / 10) }, (_, i) => i * 10);
await beside(`remove ${gone.length}`, () => hnsw.remove(gone));
exact.remove(gone);

const beforeCompact = walks();
let afterCompact: ReturnType<typeof walks> | null = null;
let dropped: number | null = null;
if (skipCompact) log('compact: skipped');
else {
  try {
    await beside('compact', async () => {
      dropped = await hnsw.compact();
    });
    afterCompact = walks();
    // Again with one build thread, leaving the other core to the searches, after removing
    // another tenth (an addon with checkGraph takes the option; older ones skip this).
    if (graph) {
      const more = Uint32Array.from({ length: Math.floor(n / 10) }, (_, i) => i * 10 + 5);
      await beside(`remove ${more.length}`, () => hnsw.remove(more));
      exact.remove(more);
      await beside('compact (1 thread)', () => hnsw.compact({ threads: 1 }));
    }
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    log('compact: not in this addon');
  }
}
await beside('none (1 s)', () => sleep(1000));
await stop();

const out = {
  bench: 'hnsw-writes',
  date: new Date().toISOString(),
  n,
  d,
  k: K,
  ef_search: ef,
  searchers,
  bundle: bundle ?? null,
  /** --bundle: seconds to load its graph (with the reconnection and the room for adds). */
  load_seconds: loadSeconds,
  seconds: (nowMs() - t0) / 1000,
  results: rows,
  /** A search issued beside 8 adds issued together, and the adds' time to the last. */
  burst,
  /** HnswIndex.checkGraph() after the adds (the load's reconnection counts too). */
  graph,
  /** compact(): rows dropped; the walk before and after it (one thread). */
  compact: { dropped, before: beforeCompact, after: afterCompact },
};
if (args.json) {
  console.log(JSON.stringify(out));
} else {
  console.log(
    `\n${bundle ? `${bundle}: ${n} x ${d} items` : `${n} x ${d} clustered`}; ` +
      `${searchers} search loops (k ${K}, efSearch ${ef}) beside each write\n`,
  );
  printTable(
    ['write', 'write ms', 'searches', 'p50 ms', 'p99 ms', 'max ms', '> 20 ms'],
    rows.map((r) => [r.write, r.write_ms, r.searches, r.p50_ms, r.p99_ms, r.max_ms, r.over_20ms]),
  );
  if (graph)
    console.log(
      `\nafter the adds: reconnections ${graph.reconnectsIncremental} incremental, ` +
        `${graph.reconnectsFull} over the whole graph (the load's included); rows not ` +
        `reachable from the entry ${graph.fromEntryMissing}, with no path back ` +
        `${graph.toEntryMissing}, tree faults ${graph.treeFaults}`,
    );
  console.log(
    `\na search beside 8 adds of 200 issued together: ${burst.search_ms.toFixed(1)} ms ` +
      `(the adds: ${burst.adds_ms.toFixed(0)} ms to the last)` +
      (out.load_seconds === null
        ? ''
        : `; the bundle's graph loaded in ${out.load_seconds.toFixed(2)} s`),
  );
  console.log(`\nunfiltered walks (one thread), compact() dropped ${dropped ?? '-'} rows:`);
  printTable(
    ['', 'removed rows', 'us/query', 'recall@10'],
    [beforeCompact, afterCompact]
      .filter((w) => w !== null)
      .map((w, i) => [
        i === 0 ? 'before compact' : 'after compact',
        w.removed_rows,
        w.us_per_query,
        w.recall_at_10,
      ]),
  );
  console.log(`\n${out.seconds.toFixed(1)} s`);
}
