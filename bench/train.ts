// Offline training throughput: synthetic generation, CSR build, one ALS iteration (per
// dimension) and the cold-start content fit, at the demo size by default. A JS
// dot-product scan runs in the same process as a yardstick, so runs on a busy machine can
// be compared by ratio. Usage:
//   node dist/bench/train.js [--quick] [--json] [--items N --users N --events N] [--dims 32,64]
import { generateSynthetic } from '../src/data/synthetic.js';
import { setPopularity } from '../src/data/log.js';
import { buildInteractions, trainAls, trainAlsParallel } from '../src/training/als.js';
import { fitContentModel } from '../src/training/coldstart.js';
import { computeWeights } from '../src/training/weights.js';
import { parseBenchArgs, numberOption } from './lib/args.js';
import { printTable, type Cell } from './lib/table.js';

const args = parseBenchArgs();
const items = numberOption(args, 'items', args.quick ? 5000 : 20000);
const users = numberOption(args, 'users', args.quick ? 1000 : 5000);
const events = numberOption(args, 'events', args.quick ? 50000 : 300000);
const dims = (args.options.get('dims') ?? (args.quick ? '32' : '32,64')).split(',').map(Number);
const iterations = numberOption(args, 'iterations', 2);

function seconds(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

// Yardstick: multiply-adds per second of a plain float32 dot-product loop in V8.
function scanRate(): number {
  const d = 64;
  const M = new Float32Array(20000 * d).map((_, i) => (i % 7) / 7);
  const q = new Float32Array(d).fill(0.5);
  let sink = 0;
  const t = performance.now();
  let macs = 0;
  while (performance.now() - t < 300) {
    for (let o = 0; o < M.length; o += d) {
      let s = 0;
      for (let j = 0; j < d; j++) s += q[j] * M[o + j];
      sink += s;
    }
    macs += M.length;
  }
  if (sink === -1) console.log(sink);
  return macs / ((performance.now() - t) / 1000);
}

const rows: Cell[][] = [];
const out: Record<string, number>[] = [];
const add = (stage: string, s: number, work: number, unit: string): void => {
  rows.push([stage, s, work / s, unit]);
  out.push({ [stage]: s });
};
scanRate(); // warm-up: let V8 optimise the loop first
const yard = scanRate();
let data!: ReturnType<typeof generateSynthetic>;
add(
  'generate',
  seconds(() => (data = generateSynthetic({ items, users, events }))),
  events,
  'events/s',
);
let cm!: ReturnType<typeof buildInteractions>;
add(
  'weights+csr',
  seconds(() => (cm = buildInteractions(data.log, computeWeights(data.log), items))),
  events,
  'events/s',
);
setPopularity(data.items, data.log);
for (const d of dims) {
  let f!: Float32Array;
  const s = seconds(() => (f = trainAls(cm, { factors: d, iterations }).itemFactors));
  add(`als d=${d} (per iteration)`, s / iterations, cm.userItems.length, 'nnz/s');
  add(
    `content fit d=${d}`,
    seconds(() => fitContentModel(data.items, f, d)),
    items,
    'items/s',
  );
  const t = performance.now();
  await trainAlsParallel(cm, { factors: d, iterations, threads: 2 });
  const sp = (performance.now() - t) / 1000;
  add(`als d=${d} 2 threads (per iteration)`, sp / iterations, cm.userItems.length, 'nnz/s');
}
const result = {
  items,
  users,
  events,
  nnz: cm.userItems.length,
  scan_macs_per_s: yard,
  stages: out,
};
if (args.json) console.log(JSON.stringify(result));
else {
  console.log(
    `synthetic ${items} items, ${users} users, ${events} events (nnz ${cm.userItems.length}); JS dot scan ${(yard / 1e9).toFixed(2)} GMAC/s`,
  );
  printTable(['stage', 'seconds', 'rate', 'unit'], rows);
}
