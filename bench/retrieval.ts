// Retrieval benchmark: the machine's read bandwidth and sgemm rate, then queries/s of the
// exact index (fp32, fp16) and FAISS IndexFlatIP on the same data, and HNSW recall@10
// against queries/s for several efSearch values, all in one run.
//
//   npm run bench:retrieval [-- --quick] [-- --json] [-- --kernel NAME] [-- --screen S]
//
// --quick keeps the whole run under a minute (shorter timing windows, fewer queries);
// --json prints one JSON object instead of tables; --kernel forces the exact index's kernel
// set (ExactIndexOptions.kernel: avx2, avx512, avx512-bf16, avx512-scan, scalar; default
// auto) and --screen its int8 screen (ExactIndexOptions.screen: auto, int8, none). The HNSW
// index (100k x 64) is cached under .cache/ after the first build. A --quick run took 45 s
// with the cached graph and 54 s without on the two-core Zen 3 of 2026-12-07 (74 s before
// FAISS's cells took one warm-up call each and two windows in --quick runs).
// libgomp reads OMP_WAIT_POLICY once, when the addon loads it. Its default (spin for a
// while after each parallel region) lets FAISS's idle OpenMP threads starve OpenBLAS's
// threads on a 2-core machine: FAISS IndexFlatIP ran 10-50x slower at B >= 20 (its sgemm
// path) in our first runs. PASSIVE gives FAISS its best case; set it in the environment to
// measure something else.
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';

import { cpus } from 'node:os';
import { parseBenchArgs } from './lib/args.js';
import { nearRows, recallAtK } from './lib/data.js';
import { Rng } from './lib/rng.js';
import { nowMs, rateWithCpu } from './lib/stats.js';
import { printTable, type Cell } from './lib/table.js';
import {
  EXACT_KERNELS,
  EXACT_SCREENS,
  ExactIndex,
  type ExactKernel,
  type ExactScreen,
  type ExactTuning,
} from '../src/retrieval/exact.js';
import { FaissFlatIndex } from '../src/retrieval/faiss-flat.js';
import type { HnswIndex } from '../src/retrieval/hnsw.js';
import { hnswBenchSet } from './lib/hnsw-set.js';
import { loadNative } from '../src/retrieval/native.js';

interface Row {
  engine: 'exact-fp32' | 'exact-fp16' | 'exact-fp32-sgemm' | 'faiss-flat' | 'hnsw' | 'hnsw-faiss';
  n: number;
  d: number;
  batch: number;
  k: number;
  qps: number;
  /** Mean rate over all timing windows (qps is the best window's rate). */
  qps_mean?: number;
  /** Process CPU time (all threads) per query, microseconds: steadier than qps under load. */
  cpu_us_per_query: number;
  threads: number;
  /** exact-fp32/fp16: bytes of item rows read per query / time per query, GB/s. */
  read_gbps?: number;
  /**
   * exact-fp32 B = 1: the best all-thread bandwidth probe taken between this n x d group's
   * timing rounds (bandwidth_gbps is the best of the whole run).
   */
  probe_gbps?: number;
  /** qps / faiss-flat qps on the same n, d, batch. */
  vs_faiss?: number;
  /** exact-fp16: recall@100 against exact fp32. */
  recall_at_100_vs_fp32?: number;
  ef_search?: number;
  recall_at_10?: number;
}

const args = parseBenchArgs();
const quick = args.quick;
const log = (msg: string) => {
  if (!args.json) console.error(msg);
};
const addon = loadNative();
const info = addon.engineInfo();
const kernelOption = args.options.get('kernel') ?? 'auto';
if (!(EXACT_KERNELS as readonly string[]).includes(kernelOption))
  throw new RangeError(
    `--kernel must be one of ${EXACT_KERNELS.join(', ')}, got '${kernelOption}'`,
  );
const kernel = kernelOption as ExactKernel;
const screenOption = args.options.get('screen') ?? 'auto';
if (!(EXACT_SCREENS as readonly string[]).includes(screenOption))
  throw new RangeError(
    `--screen must be one of ${EXACT_SCREENS.join(', ')}, got '${screenOption}'`,
  );
const screen = screenOption as ExactScreen;
/** The exact indexes' screen in this run ('int8' or 'none'; set from the first index). */
let screenInUse = '';
/** The exact indexes' settings in this run, per storage (their defaults differ). */
const tuningInUse: Partial<Record<'f32' | 'f16', Required<ExactTuning>>> = {};
/** The kernel set the exact indexes of this run use. */
const kernelInUse = kernel === 'auto' ? info.exactKernel : kernel;
const threads = info.hardwareThreads;
const cpuModel = cpus()[0]?.model ?? '';
const windowMs = quick ? 150 : 800;
// Each exact/FAISS cell is timed over WINDOWS windows of windowMs / WINDOWS and reports the
// best window's rate (CPU time from that window), like the bandwidth probe's best of
// passes: on this shared 2-core machine another process running for part of a window
// halved a mean-based rate, and the probe (best of 3) would then be compared with a
// disturbed scan. qps_mean keeps the plain mean over all windows.
const WINDOWS = 5;
const BLAS_IDLE_MS = 250;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const K = 100;
const BATCHES = [1, 8, 32, 128];
const t0 = nowMs();

// --- machine probes ----------------------------------------------------------------------
// The probe runs here and again after each n x d group; the best of its runs is reported.
// One run at the start was sometimes caught by another process (all-thread rate below the
// one-thread rate), which made the scans' share of it look better than it was.
let bandwidth1 = 0;
let bandwidth = 0;
const probe = () => {
  bandwidth1 = Math.max(bandwidth1, addon.benchStreamRead(quick ? 256 : 1024, 1, quick ? 3 : 6));
  bandwidth = Math.max(
    bandwidth,
    addon.benchStreamRead(quick ? 256 : 1024, threads, quick ? 3 : 6),
  );
};
probe();
const sgemm = addon.benchSgemm ? addon.benchSgemm(1024, quick ? 3 : 8) : NaN;
log(
  `read bandwidth ${bandwidth.toFixed(1)} GB/s (${threads} threads), ` +
    `${bandwidth1.toFixed(1)} GB/s (1 thread); sgemm ${sgemm.toFixed(0)} GFLOP/s`,
);

const results: Row[] = [];

// --- exact: fp32, fp16 and FAISS IndexFlatIP on the same data --------------------------------
for (const n of [100_000, 1_000_000]) {
  for (const d of [64, 128]) {
    const rng = new Rng(n + d);
    const vecs = rng.uniformArray(n * d);
    const ids = Uint32Array.from({ length: n }, (_, i) => i);
    const queries = rng.uniformArray(128 * d);
    const f32 = ExactIndex.create({ dim: d, storage: 'f32', kernel, screen });
    f32.build(ids, vecs);
    const f16 = ExactIndex.create({ dim: d, storage: 'f16', kernel, screen });
    f16.build(ids, vecs);
    screenInUse = f16.screen;
    tuningInUse.f32 = f32.tuning;
    tuningInUse.f16 = f16.tuning;
    const faiss = FaissFlatIndex.create(d);
    faiss.add(vecs);
    // fp16 quality: recall@100 of the fp16 index against the fp32 one on 32 queries.
    const q32 = queries.subarray(0, 32 * d);
    const recall16 = recallAtK(f32.searchSync(q32, K).ids, f16.searchSync(q32, K).ids, 32, K);

    // The sgemm variant of the exact index (off by default: see bench/README.md).
    // (No screen: sgemm scores every batch it takes, and the codes would cost build time.)
    // Not in --quick runs, which must stay under a minute: with it a quick run took 70-75 s
    // on this VM, without it 39 s (2026-12-06; its build, its B >= 32 windows with
    // OpenBLAS's threads, and 256 or 512 MB more fresh memory, whose first touch ran at
    // 0.6-2 GB/s here, timed by a throwaway program).
    const viaSgemm =
      addon.exactHasSgemm && !quick ? ExactIndex.create({ dim: d, kernel, screen: 'none' }) : null;
    viaSgemm?.build(ids, vecs);
    viaSgemm?.setTuning({ sgemmMinBatch: 1 });

    type Window = ReturnType<typeof rateWithCpu>;
    const row = (engine: Row['engine'], B: number, wins: Window[]): Row => {
      const best = wins.reduce((a, b) => (b.perSec > a.perSec ? b : a));
      const meanPerSec = wins.length / wins.reduce((s, w) => s + 1 / w.perSec, 0);
      return {
        engine,
        n,
        d,
        batch: B,
        k: K,
        threads,
        qps: B * best.perSec,
        qps_mean: B * meanPerSec,
        cpu_us_per_query: (best.cpuMs * 1000) / B,
      };
    };
    const window = (fn: () => void) => rateWithCpu(fn, windowMs / WINDOWS, quick ? 1 : 2);

    // Our engines at every batch size, interleaved: each round times one window of every
    // (storage, batch) pair, so fp16 against fp32 and B = 32 against B = 1 compare windows
    // a few milliseconds apart. Timed one cell after another, another process busy for a
    // part of the run moved those ratios by up to 2x between runs on this shared machine.
    const ours = BATCHES.flatMap((B) => {
      const q = queries.subarray(0, B * d);
      return [
        { engine: 'exact-fp32' as const, B, fn: () => f32.searchSync(q, K), wins: [] as Window[] },
        { engine: 'exact-fp16' as const, B, fn: () => f16.searchSync(q, K), wins: [] as Window[] },
      ];
    });
    // A bandwidth probe in every round too, where the float32 rows (over 64 MiB) come from
    // memory: the host's bandwidth moved 2x within seconds (35-72 GB/s), and a scan is fairly
    // compared with the probe taken beside it as well as with the run's best (128 MiB: four
    // times the L3, and half the page faults of 256 per probe). (At 100k rows
    // the scans run from cache, and the probes would only add time.)
    let probeNear = 0;
    const probeHere = n * d * 4 > 64 << 20;
    for (let w = 0; w < WINDOWS; w++) {
      if (probeHere) probeNear = Math.max(probeNear, addon.benchStreamRead(128, threads, 2));
      for (const o of ours) o.wins.push(window(o.fn));
    }

    for (const B of BATCHES) {
      const q = queries.subarray(0, B * d);
      // FAISS and the sgemm variant run one cell at a time: one warm-up call for the cell,
      // not one per window (at 1M rows a FAISS call takes 0.08-0.8 s, and the warm-ups were a
      // quarter of a --quick run), and in --quick runs 2 windows, not 5.
      const measure = (engine: Row['engine'], fn: () => void): Row => {
        fn();
        const wins = Array.from({ length: quick ? 2 : WINDOWS }, () =>
          rateWithCpu(fn, windowMs / WINDOWS, quick ? 1 : 2, false),
        );
        return row(engine, B, wins);
      };
      // The engines that call OpenBLAS (FAISS at B >= 20, the sgemm variant) go after ours,
      // and the next cell waits BLAS_IDLE_MS: Debian's OpenBLAS is the pthreads build, whose
      // threads spin after each call. Measured right after FAISS, our B = 32 scan got half
      // a core and its process CPU time included the spinning (100k x 64 fp32: 241 µs per
      // query wall and 482 µs CPU, against ~120 µs wall with no FAISS in the process).
      const rows: Row[] = ours.filter((o) => o.B === B).map((o) => row(o.engine, B, o.wins));
      if (viaSgemm && B >= 32)
        rows.push(measure('exact-fp32-sgemm', () => viaSgemm.searchSync(q, K)));
      const faissRow = measure('faiss-flat', () => faiss.searchSync(q, K));
      rows.push(faissRow);
      await sleep(BLAS_IDLE_MS);
      for (const r of rows) {
        r.vs_faiss = r.qps / faissRow.qps;
        if (r.engine === 'exact-fp32') {
          r.read_gbps = (n * d * 4 * r.qps) / 1e9;
          if (B === 1) r.probe_gbps = probeNear;
        }
        if (r.engine === 'exact-fp16') {
          r.read_gbps = (n * d * 2 * r.qps) / 1e9;
          r.recall_at_100_vs_fp32 = recall16;
        }
        results.push(r);
      }
    }
    log(`exact n=${n} d=${d} done (${((nowMs() - t0) / 1000).toFixed(1)} s)`);
    probe();
  }
}

// --- HNSW: recall@10 against queries/s, single queries on one thread ----------------------
{
  const { n, d, vecs, hnsw, exact, rng } = await hnswBenchSet(log);
  const nq = quick ? 200 : 2000;
  const queries = nearRows(rng, vecs, d, nq, 0.3);
  const truth = exact.searchSync(queries, 10).ids;
  const single = (opts: Parameters<HnswIndex['searchSync']>[2]) => {
    const got = new Uint32Array(nq * 10);
    const c0 = process.cpuUsage();
    const ts = nowMs();
    for (let q = 0; q < nq; q++) {
      got.set(hnsw.searchSync(queries.subarray(q * d, (q + 1) * d), 10, opts).ids, q * 10);
    }
    const qps = (nq * 1000) / (nowMs() - ts);
    const c = process.cpuUsage(c0);
    return { qps, cpu: (c.user + c.system) / nq, recall: recallAtK(truth, got, nq, 10) };
  };
  single({ efSearch: 64 }); // warm caches
  for (const ef of [16, 32, 64, 128, 256]) {
    const r = single({ efSearch: ef, threads: 1 });
    results.push({
      engine: 'hnsw',
      n,
      d,
      batch: 1,
      k: 10,
      qps: r.qps,
      cpu_us_per_query: r.cpu,
      threads: 1,
      ef_search: ef,
      recall_at_10: r.recall,
    });
  }
  // FAISS's own IndexHNSW::search on the same graph (its efSearch is fixed at 16 in 1.7.3),
  // with 1 and 2 OpenMP threads for a single query.
  for (const th of [1, 2]) {
    const r = single({ impl: 'faiss', threads: th, efSearch: 16 });
    results.push({
      engine: 'hnsw-faiss',
      n,
      d,
      batch: 1,
      k: 10,
      qps: r.qps,
      cpu_us_per_query: r.cpu,
      threads: th,
      ef_search: 16,
      recall_at_10: r.recall,
    });
  }
}

// Issue 2's figures, each from this run's rows: the value, the target and whether it holds.
interface Figure {
  figure: string;
  n: number;
  d: number;
  value: number;
  target: number;
  met: boolean;
}
const figures: Figure[] = [];
{
  const at = (engine: Row['engine'], n: number, d: number, batch: number) =>
    results.find((r) => r.engine === engine && r.n === n && r.d === d && r.batch === batch);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  const add = (figure: string, n: number, d: number, value: number, target: number) =>
    figures.push({ figure, n, d, value: round(value), target, met: value >= target });
  for (const r of results.filter((x) => x.engine === 'exact-fp32' && x.batch === 1)) {
    const { n, d } = r;
    add('fp32 B=1 read rate / bandwidth', n, d, (r.read_gbps ?? 0) / bandwidth, 0.8);
    // The same against the probes taken between this group's timing rounds (not a figure of
    // the issue: it tells the scan from the moment's bandwidth when the one above misses).
    if (r.probe_gbps)
      add('  same, vs the probes beside it', n, d, (r.read_gbps ?? 0) / r.probe_gbps, 0.8);
    // The index as it serves (fp32 and fp16), not the sgemm variant: that one is off by
    // default and runs the same BLAS call as FAISS, so its ratio sits near 1 either side.
    const vsFaiss = results
      .filter(
        (x) =>
          x.n === n &&
          x.d === d &&
          (x.engine === 'exact-fp32' || x.engine === 'exact-fp16') &&
          x.vs_faiss,
      )
      .map((x) => x.vs_faiss!);
    add('min over B of exact / faiss-flat qps', n, d, Math.min(...vsFaiss), 1);
    for (const engine of ['exact-fp32', 'exact-fp16'] as const) {
      const b1 = at(engine, n, d, 1);
      const b32 = at(engine, n, d, 32);
      // B = 32's qps over B = 1's: per-query cost at most 1/5 is a ratio of at least 5.
      if (b1 && b32) add(`${engine} B=32 qps / B=1 qps`, n, d, b32.qps / b1.qps, 5);
    }
    const h1 = at('exact-fp16', n, d, 1);
    if (h1) {
      add('fp16 / fp32 qps at B=1', n, d, h1.qps / r.qps, 1.7);
      add('fp16 recall@100 vs fp32', n, d, h1.recall_at_100_vs_fp32 ?? 0, 0.99);
    }
  }
  // HNSW: the best recall@10 among the efSearch settings that keep 5,000 q/s on one thread.
  const fast = results.filter((r) => r.engine === 'hnsw' && r.threads === 1 && r.qps >= 5000);
  if (fast.length > 0) {
    const best = fast.reduce((a, b) => ((b.recall_at_10 ?? 0) > (a.recall_at_10 ?? 0) ? b : a));
    add(
      `hnsw recall@10 at >= 5000 q/s (ef ${best.ef_search})`,
      best.n,
      best.d,
      best.recall_at_10 ?? 0,
      0.95,
    );
  }
}

const out = {
  bench: 'retrieval',
  date: new Date().toISOString(),
  quick,
  omp_wait_policy: process.env.OMP_WAIT_POLICY,
  seconds: (nowMs() - t0) / 1000,
  machine: { ...info, threads, cpu_model: cpuModel },
  /** The exact index's kernel set in this run (--kernel, else the CPU's default). */
  kernel: kernelInUse,
  /** The exact indexes' int8 screen in this run (--screen, default auto). */
  screen: screenInUse,
  /** The exact indexes' settings (ExactIndex.tuning), per storage. */
  tuning: tuningInUse,
  bandwidth_gbps: bandwidth,
  bandwidth_1t_gbps: bandwidth1,
  sgemm_gflops: sgemm,
  results,
  figures,
};

if (args.json) {
  console.log(JSON.stringify(out));
} else {
  const fmt = (x: number | undefined): Cell => (x === undefined ? '' : x);
  console.log(
    `\nread bandwidth ${bandwidth.toFixed(1)} GB/s (${threads} threads), ` +
      `${bandwidth1.toFixed(1)} GB/s (1 thread); sgemm ${sgemm.toFixed(0)} GFLOP/s; ` +
      `kernel ${kernelInUse}, screen ${screenInUse}; ${cpuModel}\n`,
  );
  printTable(
    [
      'engine',
      'n',
      'd',
      'batch',
      'k',
      'qps',
      'mean qps',
      'us/query',
      'cpu us/q',
      'read GB/s',
      'vs faiss',
      'recall',
    ],
    results
      .filter((r) => !r.engine.startsWith('hnsw'))
      .map((r) => [
        r.engine,
        r.n,
        r.d,
        r.batch,
        r.k,
        r.qps,
        fmt(r.qps_mean),
        1e6 / r.qps,
        r.cpu_us_per_query,
        fmt(r.read_gbps),
        fmt(r.vs_faiss),
        fmt(r.recall_at_100_vs_fp32),
      ]),
  );
  console.log('');
  printTable(
    ['engine', 'n', 'd', 'threads', 'efSearch', 'recall@10', 'qps', 'cpu us/q'],
    results
      .filter((r) => r.engine.startsWith('hnsw'))
      .map((r) => [
        r.engine,
        r.n,
        r.d,
        r.threads,
        fmt(r.ef_search),
        fmt(r.recall_at_10),
        r.qps,
        r.cpu_us_per_query,
      ]),
  );
  console.log('');
  printTable(
    ['figure (issue 2)', 'n', 'd', 'value', 'target', 'met'],
    figures.map((f) => [f.figure, f.n, f.d, f.value, f.target, f.met ? 'yes' : 'NO']),
  );
  console.log(`\n${out.seconds.toFixed(1)} s`);
}
