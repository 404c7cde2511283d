// Ranker benchmark: candidates/s of the default Deep & Wide ranker in onnxruntime-node for
// several batch sizes, with 1 and 2 intra-op threads (2 both without and with ORT's idle
// spinning, which RankerSession turns off), plus the cost of feature assembly
// (assembleRankerInput) for the same batches. The serving engineer sizes the Piscina pool
// and each worker's session threads from these ratios (measured in the same run).
//
//   npm run bench:ranker [-- --quick] [-- --json] [-- --dim 32] [-- --items 20000]
//                        [-- --hidden 1024,512,256,128]
//
// The model has the trainer's exact shape (defaultRankerInputs(dim), hidden [64, 32] or --hidden) with
// random weights: inference cost does not depend on the values.
import { parseBenchArgs, numberOption } from './lib/args.js';
import { Rng } from './lib/rng.js';
import { nowMs, percentile } from './lib/stats.js';
import { printTable } from './lib/table.js';
import { assembleRankerInput, userViewFromEvents } from '../src/features/assemble.js';
import type { ItemCatalog } from '../src/models/bundle.js';
import { DeepWideModel } from '../src/ranker/mlp.js';
import { exportDeepWide } from '../src/ranker/onnx.js';
import { RankerSession } from '../src/ranker/session.js';
import { defaultRankerInputs } from '../src/ranker/train.js';

interface Row {
  what: 'onnx' | 'assemble';
  threads: number;
  /** ORT thread pools spin while idle (ORT's own default; RankerSession turns it off). */
  spinning: boolean;
  batch: number;
  calls: number;
  p50_ms: number;
  p99_ms: number;
  candidates_per_s: number;
  /** Model arithmetic rate (2·MACs per candidate × candidates/s), GFLOP/s. */
  gflops?: number;
}

const args = parseBenchArgs();
const dim = numberOption(args, 'dim', 32);
const numItems = numberOption(args, 'items', 20000);
const windowMs = args.quick ? 150 : 600;
const batches = [1, 16, 64, 150, 256, 1024];
const rng = new Rng(7);

const categoryNames = Array.from({ length: 20 }, (_, i) => `c${i}`);
const items: ItemCatalog = {
  ids: Array.from({ length: numItems }, (_, i) => `i${i}`),
  index: new Map(),
  titles: [],
  categoryNames,
  categories: Array.from({ length: numItems }, () => Uint16Array.of(rng.int(20), rng.int(20))),
  creatorIds: Array.from({ length: numItems }, () => `creator${rng.int(500)}`),
  createdAt: Float64Array.from({ length: numItems }, () => Date.UTC(2025, 0, 1) - rng.int(1e10)),
  quality: Float32Array.from({ length: numItems }, () => rng.next()),
  popularity: Float32Array.from({ length: numItems }, () => rng.int(1000)),
};
const itemEmbeddings = rng.normalArray(numItems * dim);
const history = Array.from({ length: 50 }, () => rng.int(numItems));
const now = Date.UTC(2025, 0, 1);
const user = userViewFromEvents(
  items,
  rng.normalArray(dim),
  history,
  history.map((_, i) => now - (50 - i) * 60_000),
);
const spec = defaultRankerInputs(dim);
const bundle = { dim, items, itemEmbeddings };
const req = { timestampMs: now, device: 'mobile' as const };

const widths = spec.map(
  (s) => assembleRankerInput([s], bundle, user, req, Int32Array.of(0))[s.name]!.length,
);
// --hidden 1024,512,256,128 measures the seed's Deep & Wide MLP (API design seed, Algorithm
// 3) instead of the trainer's default.
const hiddenArg = args.options.get('hidden');
const hidden = hiddenArg ? hiddenArg.split(',').map(Number) : [64, 32];
if (hidden.length === 0 || hidden.some((h) => !Number.isInteger(h) || h < 1)) {
  throw new Error(`--hidden: a comma-separated list of positive integers, got ${hiddenArg}`);
}
const model = new DeepWideModel({ deepIn: widths[0]!, wideIn: widths[1]!, hidden }, 1);
const onnx = exportDeepWide(model);
const sizes = [widths[0]!, ...hidden, 1];
let macs = widths[1]!;
for (let l = 0; l + 1 < sizes.length; l++) macs += sizes[l]! * sizes[l + 1]!;

function candidates(n: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(numItems));
}

async function timeCalls(fn: () => Promise<unknown> | unknown): Promise<number[]> {
  await fn();
  const samples: number[] = [];
  const t0 = nowMs();
  while (samples.length < 5 || nowMs() - t0 < windowMs) {
    const t = nowMs();
    await fn();
    samples.push(nowMs() - t);
  }
  return samples;
}

function row(
  what: Row['what'],
  threads: number,
  spinning: boolean,
  batch: number,
  samples: number[],
): Row {
  const total = samples.reduce((a, b) => a + b, 0);
  const cps = (samples.length * batch * 1000) / total;
  return {
    what,
    threads,
    spinning,
    batch,
    calls: samples.length,
    p50_ms: percentile(samples, 50),
    p99_ms: percentile(samples, 99),
    candidates_per_s: cps,
    ...(what === 'onnx' && { gflops: (2 * macs * cps) / 1e9 }),
  };
}

const rows: Row[] = [];
for (const batch of batches) {
  const c = candidates(batch);
  rows.push(
    row(
      'assemble',
      1,
      false,
      batch,
      await timeCalls(() => assembleRankerInput(spec, bundle, user, req, c)),
    ),
  );
}
// 1 thread; 2 threads as RankerSession sets them up (no spinning); 2 threads with ORT's
// default spinning, to show why RankerSession turns it off.
const configs: [number, boolean][] = [
  [1, false],
  [2, false],
  [2, true],
];
for (const [threads, spinning] of configs) {
  const session = await RankerSession.create(
    onnx,
    { inputs: spec, output: 'logit', outputKind: 'logit' },
    dim,
    { intraOpNumThreads: threads, allowSpinning: spinning },
  );
  for (const batch of batches) {
    const inputs = assembleRankerInput(spec, bundle, user, req, candidates(batch));
    rows.push(row('onnx', threads, spinning, batch, await timeCalls(() => session.score(inputs))));
  }
  await session.release();
}

const onnxRate = (threads: number, spinning: boolean, batch: number) =>
  rows.find(
    (r) =>
      r.what === 'onnx' && r.threads === threads && r.spinning === spinning && r.batch === batch,
  )!.candidates_per_s;
const ratio = (batch: number, spinning = false) =>
  onnxRate(2, spinning, batch) / onnxRate(1, false, batch);
const summary = {
  dim,
  deep_width: widths[0],
  wide_width: widths[1],
  hidden,
  macs_per_candidate: macs,
  two_vs_one_thread: Object.fromEntries(batches.map((b) => [b, ratio(b)])),
  two_spinning_vs_one_thread: Object.fromEntries(batches.map((b) => [b, ratio(b, true)])),
};
if (args.json) {
  console.log(JSON.stringify({ summary, rows }, null, 2));
} else {
  console.log(
    `ranker: deep ${widths[0]} → ${hidden.join(' → ')} → 1, wide ${widths[1]}; ${macs} MACs/candidate (dim ${dim})`,
  );
  printTable(
    ['what', 'threads', 'spin', 'batch', 'calls', 'p50 ms', 'p99 ms', 'candidates/s', 'GFLOP/s'],
    rows.map((r) => [
      r.what,
      r.threads,
      r.spinning ? 'yes' : 'no',
      r.batch,
      r.calls,
      r.p50_ms,
      r.p99_ms,
      r.candidates_per_s,
      r.gflops,
    ]),
  );
  console.log(
    '2 vs 1 intra-op threads (candidates/s ratio), no spinning: ' +
      batches.map((b) => `batch ${b}: ${ratio(b).toFixed(2)}×`).join(', '),
  );
  console.log(
    '2 vs 1 intra-op threads (candidates/s ratio), ORT default spinning: ' +
      batches.map((b) => `batch ${b}: ${ratio(b, true).toFixed(2)}×`).join(', '),
  );
}
