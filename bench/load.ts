// HTTP load benchmark (`npm run bench:load [-- --quick --json]`): starts `recserve serve` as
// a child process on a model repository, drives it through the scenarios (autocannon
// closed loop, and an open-loop Poisson generator for the fixed-rate figure, see
// lib/openloop.ts), and prints requests/s, p50/p90/p99, errors and the server's event-loop lag
// (scraped from /metrics, whose lag percentiles cover the interval since the last scrape).
// It also measures the machine's floor for the bundle in the same run:
//   floor seconds/request = N·d·4 bytes / scan bandwidth  +  C · ranker FLOPs / sgemm rate
// with the scan bandwidth from one un-batched exact search (ExactIndex, one query) and the
// sgemm rate from FAISS IndexFlatIP over a 256-query batch (a BLAS sgemm).
//
// Options: --models DIR (default: a demo repository built into the temp dir), --items N
// (build a synthetic repository of N items with d = --dim, default 64, the reference
// configuration, e.g. --items 1000000; built once and reused), --duration S (per scenario),
// --connections C, --open-duration S (the open-loop scenario; default max(duration, 30)),
// --only a,b (just those scenarios), --rate R (an extra open-loop row at R req/s), --sweep (ranking pool size and cross-request batching
// compared on the uncached scenario), --storage f16|f32 (the server's exact-index storage;
// with f16 a second open-loop row runs at 70% of the floor of the bytes really read).
import { join } from 'node:path';
import autocannon from 'autocannon';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { printTable } from './lib/table.js';
import { openLoop } from './lib/openloop.js';
import { onnxFlopsPerRow } from '../src/ranker/flops.js';
import { DEFAULT_PIPELINE } from '../src/config/index.js';
import { ensureSyntheticModels, startBenchServer } from './lib/server.js';
import { latestVersion, loadBundle } from '../src/models/repository.js';
import { ExactIndex } from '../src/retrieval/exact.js';
import { FaissFlatIndex } from '../src/retrieval/faiss-flat.js';

const args = parseBenchArgs();
const quick = args.quick;
const duration = numberOption(args, 'duration', quick ? 3 : 10);
const connections = numberOption(args, 'connections', 16);
// The open-loop scenario runs longer: at ~35 req/s, 10 s is ~350 answers and the p99 would be
// the 4th slowest of them; 30 s puts ~1,000 under it.
const openDuration = numberOption(args, 'open-duration', quick ? duration : Math.max(duration, 30));
const items = numberOption(args, 'items', quick ? 3000 : 20000);
// --rate R adds an open-loop row at a fixed R req/s (`warm_uncached@R`): the same offered
// load for every run of an A/B, where the 0.7-floor row's rate follows each run's floor.
const fixedRate = numberOption(args, 'rate', 0);
// The reference configuration is d = 64; --dim changes it.
const dim = numberOption(args, 'dim', 64);
const log = (msg: string) => {
  if (!args.json) console.error(`[load] ${msg}`);
};

function ensureModels(): string {
  return args.options.get('models') ?? ensureSyntheticModels(items, dim, log);
}

// The server's exact-index storage, passed explicitly so the bench knows the bytes a scan
// really reads (--storage f32|f16; default f16, the server's default).
const storage = args.options.get('storage') ?? 'f16';
if (storage !== 'f16' && storage !== 'f32') throw new Error(`--storage must be f16 or f32`);
const servedBytes = storage === 'f16' ? 2 : 4;

// HTTP only here; bench/grpc-load.ts measures gRPC.
const startServer = (models: string, extra: string[] = []) =>
  startBenchServer(models, ['--no-grpc', '--exact-storage', storage, ...extra]);

/**
 * One scrape of /metrics: the event loop's lag p99 since the last scrape, and the running
 * totals of the retrieval batches (queries, passes), whose difference across a scenario is
 * the mean batch the server formed.
 */
async function scrape(base: string): Promise<{ lagMs: number; queries: number; passes: number }> {
  const text = await (await fetch(base + '/metrics')).text();
  const num = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return {
    lagMs: num(/recserve_event_loop_lag_seconds\{quantile="0.99"\} ([\d.e+-]+)/) * 1000,
    queries: num(/recserve_batch_size_sum\{stage="retrieval"\} ([\d.e+-]+)/) || 0,
    passes: num(/recserve_batch_size_count\{stage="retrieval"\} ([\d.e+-]+)/) || 0,
  };
}

/** Queries per exact-retrieval pass between two scrapes (null: no pass ran). */
function meanBatch(a: { queries: number; passes: number }, b: typeof a): number | null {
  const passes = b.passes - a.passes;
  return passes > 0 ? Math.round(((b.queries - a.queries) / passes) * 100) / 100 : null;
}

interface Row {
  scenario: string;
  /** 'closed' (autocannon, as fast as answers come), 'autocannon-rate' or 'poisson'. */
  load: string;
  /** Open loop: the arrival rate asked for. */
  offered_rps?: number;
  /** Open loop: requests sent (all of them are answered or counted as errors). */
  sent?: number;
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  errors: number;
  non2xx: number;
  loop_lag_p99_ms: number;
  /** Mean queries per exact-retrieval pass the server's batcher formed (null: none ran). */
  retrieval_batch: number | null;
}

function pick<T>(a: T[]): T {
  return a[Math.floor(Math.random() * a.length)]!;
}

/**
 * One autocannon scenario. `makeBody` is either a function (a fresh request each time) or a
 * fixed list of requests that every connection cycles through: autocannon encodes a fixed
 * request once, where a function costs the generator a JSON encoding and a request build per
 * request, CPU taken from the server on this 2-core machine (it matters at 20k req/s).
 */
async function scenario(
  base: string,
  name: string,
  makeBody: (() => { path: string; body: string }) | { path: string; body: string }[],
  overallRate?: number,
): Promise<Row> {
  const before = await scrape(base); // starts a fresh lag interval
  const headers = { 'content-type': 'application/json' };
  const result = await autocannon({
    url: base,
    connections,
    duration,
    ...(overallRate ? { overallRate } : {}),
    requests: Array.isArray(makeBody)
      ? makeBody.map((r) => ({ method: 'POST' as const, headers, ...r }))
      : [
          {
            method: 'POST',
            headers,
            setupRequest: (req) => {
              const { path, body } = makeBody();
              return { ...req, path, body };
            },
          },
        ],
  });
  const after = await scrape(base);
  return {
    scenario: name,
    load: overallRate ? 'autocannon-rate' : 'closed',
    rps: Math.round(result.requests.average),
    p50_ms: result.latency.p50,
    p90_ms: result.latency.p90,
    p99_ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    loop_lag_p99_ms: Math.round(after.lagMs * 100) / 100,
    retrieval_batch: meanBatch(before, after),
  };
}

/** The same requests, open loop: Poisson arrivals at `rate` (bench/lib/openloop.ts). */
async function poissonScenario(
  base: string,
  name: string,
  makeBody: () => { path: string; body: string },
  rate: number,
): Promise<Row> {
  const before = await scrape(base);
  const r = await openLoop({ url: base, rate, durationS: openDuration, makeRequest: makeBody });
  const after = await scrape(base);
  return {
    scenario: name,
    load: 'poisson',
    offered_rps: rate,
    sent: r.sent,
    rps: Math.round(r.rps * 10) / 10,
    p50_ms: r.p50_ms,
    p90_ms: r.p90_ms,
    p99_ms: r.p99_ms,
    errors: r.errors,
    non2xx: r.non2xx,
    loop_lag_p99_ms: Math.round(after.lagMs * 100) / 100,
    retrieval_batch: meanBatch(before, after),
  };
}

async function main(): Promise<void> {
  const models = ensureModels();
  const v = latestVersion(models, 'recserve')!;
  const bundle = await loadBundle(join(models, 'recserve', String(v)));
  const n = bundle.items.ids.length;
  const d = bundle.dim;

  // --- the floor, measured now on this machine --------------------------------------------
  log('measuring the floor (scan bandwidth, sgemm rate)');
  const exact = ExactIndex.create({ dim: d, threads: 1 });
  exact.build(
    Uint32Array.from({ length: n }, (_, i) => i),
    bundle.itemEmbeddings,
  );
  const q1 = bundle.userEmbeddings.slice(0, d);
  exact.searchSync(q1, 100);
  let t = performance.now();
  const scans = quick ? 5 : 20;
  for (let i = 0; i < scans; i++) exact.searchSync(q1, 100);
  const scanSec = (performance.now() - t) / 1000 / scans;
  const bandwidth = (n * d * 4) / scanSec;
  // Matrix-multiply rate: a 256-query batch is arithmetic-bound. Measured two ways, the
  // better one counts: FAISS IndexFlatIP (BLAS sgemm; one OpenMP thread, because OpenMP's
  // spinning collapses on shared cores) and the addon's blocked batch scan.
  const B = 256;
  const qb = new Float32Array(B * d);
  for (let i = 0; i < qb.length; i++) qb[i] = Math.random() - 0.5;
  const flat = FaissFlatIndex.create(d);
  flat.add(bundle.itemEmbeddings);
  flat.searchSync(qb, 10, 1);
  t = performance.now();
  flat.searchSync(qb, 10, 1);
  const faissFlops = (2 * n * d * B) / ((performance.now() - t) / 1000);
  const exact2 = ExactIndex.create({ dim: d });
  exact2.build(
    Uint32Array.from({ length: n }, (_, i) => i),
    bundle.itemEmbeddings,
  );
  exact2.searchSync(qb, 10);
  t = performance.now();
  exact2.searchSync(qb, 10);
  const exactFlops = (2 * n * d * B) / ((performance.now() - t) / 1000);
  const sgemmFlops = Math.max(faissFlops, exactFlops);
  // The ranker's cost per candidate, read from the bundle's ONNX model (every Gemm/MatMul
  // weight: 2 × in × out), so the floor follows the ranker actually served.
  const flopsPerCandidate = onnxFlopsPerRow(bundle.ranker.path);
  // As many candidates as the server ranks (its default; the bench does not change it).
  const candidates = DEFAULT_PIPELINE.maxCandidates;
  const floorSec = (n * d * 4) / bandwidth + (candidates * flopsPerCandidate) / sgemmFlops;
  const floorRps = 1 / floorSec;
  // A stricter floor from the bytes the server's scan really reads (float16 rows: half of
  // ARCHITECTURE.md's float32 N·d·4), at the same measured scan rate. Not the issue's
  // figure; reported so the f16 default does not make the target easy.
  const servedFloorSec =
    (n * d * servedBytes) / bandwidth + (candidates * flopsPerCandidate) / sgemmFlops;
  const servedFloorRps = 1 / servedFloorSec;

  // --- load -----------------------------------------------------------------------------
  const { child, port } = await startServer(models);
  const base = `http://127.0.0.1:${port}`;
  const users = bundle.userIds;
  const itemIds = bundle.items.ids;
  const rows: Row[] = [];
  const recs = (user: string, extra: Record<string, unknown> = {}) => ({
    path: '/v1/recommendations',
    body: JSON.stringify({ user_id: user, num_items: 20, ...extra }),
  });
  // --only a,b runs just those scenarios (development runs; the figures come from all).
  const only = args.options.get('only')?.split(',');
  const want = (name: string) => !only || only.includes(name);
  const run = async (name: string, go: () => Promise<Row>) => {
    if (want(name)) rows.push(await go());
  };
  try {
    log(
      `scenarios: ${duration}s each, ${connections} connections, ${n} items, d=${d}, HNSW by ${bundle.hnswMetric}`,
    );
    // A random excluded item gives every request its own cache key: all misses.
    const uncached = () => recs(pick(users), { exclude_items: [pick(itemIds)] });
    // Untimed warm-up (JIT, the post-start garbage collections), so that the first scenario
    // measured, whichever --only picks, sees a warm server as the later ones do.
    await autocannon({
      url: base,
      connections,
      duration: quick ? 1 : 3,
      requests: [
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          setupRequest: (req) => ({ ...req, ...uncached() }),
        },
      ],
    });
    await run('warm_uncached', () => scenario(base, 'warm_uncached', uncached));
    // The figure: p99 at a fixed rate of 70% of the floor's rate, open loop
    // (Poisson arrivals, latency from each request's scheduled time).
    const rate07 = Math.max(1, Math.round(0.7 * floorRps));
    await run('warm_uncached@0.7floor', () =>
      poissonScenario(base, 'warm_uncached@0.7floor', uncached, rate07),
    );
    if (fixedRate > 0) {
      await run(`warm_uncached@${fixedRate}`, () =>
        poissonScenario(base, `warm_uncached@${fixedRate}`, uncached, fixedRate),
      );
    }
    if (servedBytes !== 4) {
      const rateServed = Math.max(1, Math.round(0.7 * servedFloorRps));
      await run('warm_uncached@0.7servedfloor', () =>
        poissonScenario(base, 'warm_uncached@0.7servedfloor', uncached, rateServed),
      );
    }
    // The same rate through autocannon's rate limiter, as measured before: each connection
    // sends its share at the top of every second, i.e. bursts of `connections` requests
    // (bench/lib/openloop.ts says why this is not a rate).
    await run('warm_uncached@0.7floor_bursts', () =>
      scenario(base, 'warm_uncached@0.7floor_bursts', uncached, rate07),
    );
    let c = 0;
    await run('cold', () => scenario(base, 'cold', () => recs(`bench-cold-${c++}`)));
    await run('cached', async () => {
      const hot = users.slice(0, 50);
      for (const u of hot) {
        await fetch(base + '/v1/recommendations', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: recs(u).body,
        });
      }
      // Each connection cycles through the 50 users (fixed requests, see scenario()).
      return scenario(
        base,
        'cached',
        hot.map((u) => recs(u)),
      );
    });
    const types = ['content', 'collaborative', 'hybrid'];
    await run('similar', () =>
      scenario(base, 'similar', () => ({
        path: '/v1/similar',
        body: JSON.stringify({
          item_id: pick(itemIds),
          num_items: 20,
          similarity_type: pick(types),
        }),
      })),
    );
    await run('mixed_feedback', () =>
      scenario(base, 'mixed_feedback', () => {
        const r = Math.random();
        const user = pick(users);
        if (r < 0.15) {
          return {
            path: '/v1/feedback',
            body: JSON.stringify({
              user_id: user,
              events: [{ item_id: pick(itemIds), event_type: pick(['view', 'click', 'like']) }],
            }),
          };
        }
        if (r < 0.2) {
          return {
            path: '/v1/similar',
            body: JSON.stringify({ item_id: pick(itemIds), num_items: 10 }),
          };
        }
        return recs(user);
      }),
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }

  // Pool sizing and cross-request batching, measured rather than assumed: the uncached
  // scenario again with 1 and 2 ranking threads, batching on and off (--sweep).
  const sweep: (Row & { threads: number; batching: boolean })[] = [];
  if (args.options.has('sweep')) {
    for (const threads of [1, 2]) {
      for (const batching of [true, false]) {
        const s2 = await startServer(models, [
          '--ranker-threads',
          String(threads),
          batching ? '--ranker-batching' : '--no-ranker-batching',
        ]);
        try {
          const r = await scenario(`http://127.0.0.1:${s2.port}`, 'warm_uncached', () =>
            recs(pick(users), { exclude_items: [pick(itemIds)] }),
          );
          sweep.push({ ...r, threads, batching });
        } finally {
          s2.child.kill('SIGTERM');
          await new Promise((r) => s2.child.once('exit', r));
        }
      }
    }
  }

  const row = (name: string) => rows.find((r) => r.scenario === name);
  const warm = row('warm_uncached');
  const at07 = row('warm_uncached@0.7floor');
  const cached = row('cached');
  const summary = {
    items: n,
    dim: d,
    // Bundles cached before the cosine graph keep the inner-product one (and /v1/similar's
    // exact scan): the figures say which the run served.
    hnsw_metric: bundle.hnswMetric,
    candidates,
    connections,
    duration_s: duration,
    open_loop_duration_s: openDuration,
    floor: {
      scan_gb_per_s: Math.round(bandwidth / 1e7) / 100,
      sgemm_gflops: Math.round(sgemmFlops / 1e7) / 100,
      faiss_flat_gflops: Math.round(faissFlops / 1e7) / 100,
      exact_batch_gflops: Math.round(exactFlops / 1e7) / 100,
      ranker_flops_per_candidate: flopsPerCandidate,
      ms_per_request: Math.round(floorSec * 1e5) / 100,
      rps: Math.round(floorRps),
      storage,
      served_ms_per_request: Math.round(servedFloorSec * 1e5) / 100,
      served_rps: Math.round(servedFloorRps),
    },
    scenarios: rows,
    sweep,
    targets: {
      warm_uncached_rps_vs_floor: warm ? Math.round((warm.rps / floorRps) * 100) / 100 : null,
      warm_uncached_p99_under_50ms: warm ? warm.p99_ms < 50 : null,
      warm_at_0_7_floor_rps: at07?.rps ?? null,
      // Open loop: the offered rate is the rate; every request sent must have been answered
      // (the realised count differs from rate × duration by Poisson noise, ~±6% in 10 s).
      warm_at_0_7_floor_p99_under_50ms: at07
        ? at07.offered_rps! >= Math.floor(0.7 * floorRps) &&
          at07.errors + at07.non2xx === 0 &&
          at07.p99_ms < 50
        : null,
      cached_20k_rps_p99_under_5ms: cached ? cached.rps >= 20_000 && cached.p99_ms < 5 : null,
      loop_lag_p99_under_10ms: warm ? warm.loop_lag_p99_ms < 10 : null,
    },
    date: new Date().toISOString(),
  };
  if (args.json) {
    console.log(JSON.stringify(summary, null, 2));
    return;
  }
  printTable(
    [
      'scenario',
      'load',
      'req/s',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'errors',
      'non-2xx',
      'loop lag p99 ms',
      'retrieval batch',
    ],
    rows.map((r) => [
      r.scenario,
      r.load,
      r.rps,
      r.p50_ms,
      r.p90_ms,
      r.p99_ms,
      r.errors,
      r.non2xx,
      r.loop_lag_p99_ms,
      r.retrieval_batch ?? '-',
    ]),
  );
  console.log(
    `\nfloor (${n} items × d=${d}, ${candidates} candidates): scan ${summary.floor.scan_gb_per_s} GB/s, ` +
      `sgemm ${summary.floor.sgemm_gflops} GFLOP/s → ${summary.floor.ms_per_request} ms/request = ` +
      `${summary.floor.rps} req/s (one un-batched scan per request)`,
  );
  if (servedBytes !== 4)
    console.log(
      `served floor (${storage} rows, ${servedBytes} bytes per element): ` +
        `${summary.floor.served_ms_per_request} ms/request = ${summary.floor.served_rps} req/s`,
    );
  if (sweep.length > 0) {
    console.log('\nwarm_uncached by ranking pool size and cross-request batching:');
    printTable(
      ['threads', 'batching', 'req/s', 'p50 ms', 'p99 ms', 'loop lag p99 ms'],
      sweep.map((r) => [r.threads, r.batching, r.rps, r.p50_ms, r.p99_ms, r.loop_lag_p99_ms]),
    );
  }
  console.log(`targets: ${JSON.stringify(summary.targets)}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
