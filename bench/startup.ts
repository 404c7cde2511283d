// Loading a model version as the server does at start-up (`npm run bench:startup [-- --json]`):
// loadBundle, then buildServingModel (the exact index, the HNSW graph, the tables, the
// ranking pool), each timed, with a 1 ms timer beside them that records how long the event
// loop went without a turn. The server listens while it loads, so the longest gap is how
// long /healthz, /readyz and /metrics could go unanswered. Then the real server
// (`recserve serve --no-grpc` on the same repository, --servers times): /readyz asked every
// 20 ms from the moment it listens until it says ready, the slowest answer and the time to
// ready (load, build, warm-up and the feedback log's replay together).
//
// Options: --models DIR (a model repository; default a synthetic one of --items N items,
// d = --dim, built once into the temp dir as bench:load does), --items N (default 1,000,000;
// 20,000 with --quick), --dim D (64), --rounds R (loads, one after another; default 3, 1
// with --quick), --servers S (server starts; default 2, 1 with --quick, 0 to skip).
import { join } from 'node:path';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { printTable } from './lib/table.js';
import { once } from 'node:events';
import { ensureSyntheticModels, startBenchServer } from './lib/server.js';
import { sleep } from './lib/beside.js';
import { latestVersion, loadBundle } from '../src/models/repository.js';
import { buildServingModel, releaseServingModel } from '../src/models/registry.js';
import { DEFAULT_PIPELINE } from '../src/config/index.js';

const args = parseBenchArgs();
const items = numberOption(args, 'items', args.quick ? 20_000 : 1_000_000);
const dim = numberOption(args, 'dim', 64);
const rounds = numberOption(args, 'rounds', args.quick ? 1 : 3);
const servers = numberOption(args, 'servers', args.quick ? 1 : 2);
const log = (msg: string) => {
  if (!args.json) console.error(`[startup] ${msg}`);
};
const repo = args.options.get('models') ?? ensureSyntheticModels(items, dim, log);
const version = latestVersion(repo, 'recserve');
if (version === undefined) throw new Error(`no version of 'recserve' under ${repo}`);
const dir = join(repo, 'recserve', String(version));

/** Runs `step` with a 1 ms timer beside it: its time and the event loop's longest gap. */
async function timed<T>(
  step: () => Promise<T>,
): Promise<{ value: T; ms: number; maxGapMs: number; gapsOver100: number }> {
  let last = performance.now();
  let maxGapMs = 0;
  let gapsOver100 = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const gap = now - last;
    if (gap > maxGapMs) maxGapMs = gap;
    if (gap > 100) gapsOver100++;
    last = now;
  }, 1);
  const t0 = performance.now();
  try {
    const value = await step();
    const ms = performance.now() - t0;
    // The gap still open when the step ended counts too.
    const open = performance.now() - last;
    return { value, ms, maxGapMs: Math.max(maxGapMs, open), gapsOver100 };
  } finally {
    clearInterval(timer);
  }
}

interface Row {
  round: number;
  step: 'loadBundle' | 'buildServingModel';
  ms: number;
  max_gap_ms: number;
  gaps_over_100ms: number;
}
const rows: Row[] = [];
let n = 0;
for (let round = 1; round <= rounds; round++) {
  const load = await timed(() => loadBundle(dir));
  n = load.value.items.ids.length;
  rows.push({
    round,
    step: 'loadBundle',
    ms: load.ms,
    max_gap_ms: load.maxGapMs,
    gaps_over_100ms: load.gapsOver100,
  });
  const build = await timed(() => buildServingModel(load.value, { pipeline: DEFAULT_PIPELINE }));
  rows.push({
    round,
    step: 'buildServingModel',
    ms: build.ms,
    max_gap_ms: build.maxGapMs,
    gaps_over_100ms: build.gapsOver100,
  });
  await releaseServingModel(build.value);
  log(`round ${round}: load ${load.ms.toFixed(0)} ms, build ${build.ms.toFixed(0)} ms`);
}

interface ServerRow {
  start: number;
  ready_ms: number;
  readyz_answers: number;
  slowest_readyz_ms: number;
}
const serverRows: ServerRow[] = [];
for (let start = 1; start <= servers; start++) {
  const times: number[] = [];
  let polling = true;
  let poller: Promise<void> = Promise.resolve();
  const poll = async (port: number) => {
    while (polling) {
      const a = performance.now();
      try {
        await (await fetch(`http://127.0.0.1:${port}/readyz`)).text();
        times.push(performance.now() - a);
      } catch {
        /* a refused connection: not counted */
      }
      await sleep(20);
    }
  };
  const t0 = performance.now();
  const server = await startBenchServer(repo, ['--no-grpc'], (port) => {
    poller = poll(port);
  });
  const readyMs = performance.now() - t0;
  polling = false;
  await poller;
  server.child.kill('SIGTERM');
  await once(server.child, 'exit');
  serverRows.push({
    start,
    ready_ms: readyMs,
    readyz_answers: times.length,
    slowest_readyz_ms: Math.max(0, ...times),
  });
  log(`server ${start}: ready after ${readyMs.toFixed(0)} ms`);
}

// null with --rounds 0 (the server starts alone).
const worst = (step: Row['step']) =>
  rows.length === 0
    ? null
    : Math.max(...rows.filter((r) => r.step === step).map((r) => r.max_gap_ms));
const result = {
  bench: 'startup',
  date: new Date().toISOString(),
  models: dir,
  items: rounds > 0 ? n : null,
  dim,
  rounds,
  max_gap_ms: { loadBundle: worst('loadBundle'), buildServingModel: worst('buildServingModel') },
  results: rows,
  servers: serverRows,
};
if (args.json) {
  console.log(JSON.stringify(result, null, 2));
} else {
  console.log(`${dir}: ${result.items} items`);
  printTable(
    ['round', 'step', 'ms', 'longest gap ms', 'gaps > 100 ms'],
    rows.map((r) => [r.round, r.step, r.ms.toFixed(0), r.max_gap_ms.toFixed(0), r.gaps_over_100ms]),
  );
  if (serverRows.length > 0)
    printTable(
      ['server start', 'ready ms', '/readyz answers', 'slowest /readyz ms'],
      serverRows.map((r) => [
        r.start,
        r.ready_ms.toFixed(0),
        r.readyz_answers,
        r.slowest_readyz_ms.toFixed(0),
      ]),
    );
}
