// The `recserve eval` experiment: temporal split, then popularity, item-kNN and ALS (both
// tuned on a validation split carved out of the training data the same way, by time),
// and ALS + ranker (ALS retrieves the top candidates, the ONNX ranker reorders them).
// Everything the test users did after the split is unseen by every model.
import type { ItemCatalog } from '../models/bundle.js';
import type { DataSource } from '../models/builder.js';
import { loadSource } from '../models/builder.js';
import { temporalSplit } from '../data/split.js';
import type { InteractionLog } from '../data/types.js';
import {
  buildInteractions,
  trainAls,
  type AlsOptions,
  type Interactions,
} from '../training/als.js';
import { computeWeights, type WeightOptions } from '../training/weights.js';
import {
  alsScorer,
  itemKnnScorer,
  popularityScorer,
  type ItemKnnOptions,
  type Scorer,
} from './baselines.js';
import { evaluateScorer, heldOutSets, maskTrainItems } from './evaluate.js';
import { MetricAccumulator, type Metrics } from './metrics.js';
import { dotAll, topK } from './topk.js';
import { DEVICE_TYPES } from '../api/types.js';

export interface EvalRunOptions {
  source: DataSource;
  /** Tune ALS / item-kNN on a validation split (default true). */
  tune?: boolean;
  /** ALS parameters when not tuning (and the starting point when tuning). */
  als?: AlsOptions;
  ranker?: false | { epochs?: number; maxExamples?: number };
  /** Candidates ALS retrieves for the ranker (default 200). */
  candidates?: number;
  /** Evaluate at most this many test users (default: all). */
  maxUsers?: number;
  weights?: WeightOptions;
  seed?: number;
  log?: (msg: string) => void;
}

export interface EvalRow {
  model: string;
  metrics: Metrics;
  /** Parameters the row used (tuned values included). */
  params: Record<string, number | string>;
  seconds: number;
}

export interface EvalReport {
  dataset: string;
  events: number;
  users: number;
  items: number;
  trainEvents: number;
  testEvents: number;
  rows: EvalRow[];
  /** Validation NDCG@10 of every ALS / kNN configuration tried. */
  tuning: { model: string; params: Record<string, number>; ndcg10: number }[];
}

const ALS_GRID = {
  alpha: [0.5, 1, 3, 10, 30],
  regularization: [0.1, 1, 10, 30, 100],
  factors: [32, 64, 128],
  iterations: [5, 10, 20],
};

/** Coordinate search: tune one parameter at a time, keeping the best of each so far. */
function tuneAls(
  cm: Interactions,
  rel: Map<number, Set<number>>,
  categories: Uint16Array[],
  base: AlsOptions,
  record: (p: Record<string, number>, ndcg: number) => void,
  maxUsers?: number,
): AlsOptions {
  let best: AlsOptions = { factors: 64, regularization: 1, alpha: 3, iterations: 10, ...base };
  let bestScore = -1;
  const tried = new Map<string, number>();
  const score = (o: AlsOptions): number => {
    const key = JSON.stringify(o);
    const hit = tried.get(key);
    if (hit !== undefined) return hit;
    const m = trainAls(cm, o);
    const r = evaluateScorer(alsScorer(m.userFactors, m.itemFactors, m.dim), cm, rel, {
      categories,
      maxUsers,
    });
    tried.set(key, r.ndcg10);
    record(
      {
        factors: o.factors!,
        regularization: o.regularization!,
        alpha: o.alpha!,
        iterations: o.iterations!,
      },
      r.ndcg10,
    );
    return r.ndcg10;
  };
  bestScore = score(best);
  for (const key of ['alpha', 'regularization', 'factors', 'iterations'] as const) {
    for (const v of ALS_GRID[key]) {
      const o = { ...best, [key]: v };
      const s = score(o);
      if (s > bestScore) {
        bestScore = s;
        best = o;
      }
    }
  }
  return best;
}

function tuneKnn(
  cm: Interactions,
  rel: Map<number, Set<number>>,
  categories: Uint16Array[],
  record: (p: Record<string, number>, ndcg: number) => void,
  maxUsers?: number,
): ItemKnnOptions {
  let best: ItemKnnOptions = { neighbours: 100, shrink: 10 };
  let bestScore = -1;
  for (const neighbours of [20, 50, 100, 200])
    for (const shrink of [0, 10, 50]) {
      const r = evaluateScorer(itemKnnScorer(cm, { neighbours, shrink }), cm, rel, {
        categories,
        maxUsers,
      });
      record({ neighbours, shrink }, r.ndcg10);
      if (r.ndcg10 > bestScore) {
        bestScore = r.ndcg10;
        best = { neighbours, shrink };
      }
    }
  return best;
}

/** Per user row: the first held-out event's time and device (the "request" being answered). */
function requestOf(test: InteractionLog): Map<number, { ts: number; device: number }> {
  const out = new Map<number, { ts: number; device: number }>();
  for (let e = 0; e < test.length; e++) {
    const u = test.user[e];
    const prev = out.get(u);
    if (!prev || test.timestamp[e] < prev.ts)
      out.set(u, { ts: test.timestamp[e], device: test.device ? test.device[e] : 255 });
  }
  return out;
}

export async function runEvaluation(opts: EvalRunOptions): Promise<EvalReport> {
  const say = opts.log ?? (() => {});
  const data = await loadSource(opts.source);
  const { log, items } = data;
  const numItems = items.ids.length;
  const { train, test } = temporalSplit(log);
  const weightOpts = { ...data.defaults.weights, ...opts.weights };
  const cm = buildInteractions(train, computeWeights(train, weightOpts), numItems);
  const rel = heldOutSets(cm, test);
  const categories = items.categories;
  const report: EvalReport = {
    dataset: opts.source.kind,
    events: log.length,
    users: log.userIds.length,
    items: numItems,
    trainEvents: train.length,
    testEvents: test.length,
    rows: [],
    tuning: [],
  };
  say(`split: ${train.length} train / ${test.length} test events, ${rel.size} test users`);
  const evalOpts = { categories, maxUsers: opts.maxUsers };

  let alsOpts: AlsOptions = {
    factors: 64,
    regularization: 1,
    alpha: 3,
    iterations: 10,
    seed: opts.seed,
    ...opts.als,
  };
  let knnOpts: ItemKnnOptions = { neighbours: 100, shrink: 10 };
  if (opts.tune !== false) {
    const t = performance.now();
    const inner = temporalSplit(train);
    const vcm = buildInteractions(inner.train, computeWeights(inner.train, weightOpts), numItems);
    const vrel = heldOutSets(vcm, inner.test);
    alsOpts = tuneAls(
      vcm,
      vrel,
      categories,
      alsOpts,
      (p, s) => {
        report.tuning.push({ model: 'als', params: p, ndcg10: s });
        say(`tune als ${JSON.stringify(p)}: val ndcg@10 ${s.toFixed(4)}`);
      },
      opts.maxUsers,
    );
    knnOpts = tuneKnn(
      vcm,
      vrel,
      categories,
      (p, s) => {
        report.tuning.push({ model: 'item-knn', params: p, ndcg10: s });
        say(`tune item-knn ${JSON.stringify(p)}: val ndcg@10 ${s.toFixed(4)}`);
      },
      opts.maxUsers,
    );
    say(`tuning took ${((performance.now() - t) / 1000).toFixed(1)}s`);
  }

  const run = (scorer: Scorer, params: Record<string, number | string>, t0: number): void => {
    const metrics = evaluateScorer(scorer, cm, rel, evalOpts);
    report.rows.push({
      model: scorer.name,
      metrics,
      params,
      seconds: (performance.now() - t0) / 1000,
    });
    say(
      `${scorer.name}: ndcg@10 ${metrics.ndcg10.toFixed(4)} recall@20 ${metrics.recall20.toFixed(4)}`,
    );
  };
  let t = performance.now();
  run(popularityScorer(cm), {}, t);
  t = performance.now();
  run(itemKnnScorer(cm, knnOpts), { ...knnOpts } as Record<string, number>, t);
  t = performance.now();
  const als = trainAls(cm, alsOpts);
  run(
    alsScorer(als.userFactors, als.itemFactors, als.dim),
    { ...alsOpts } as Record<string, number>,
    t,
  );

  if (opts.ranker !== false) {
    t = performance.now();
    const row = await rankerRow(
      als.userFactors,
      als.itemFactors,
      als.dim,
      items,
      train,
      test,
      cm,
      rel,
      opts,
      say,
    );
    row.seconds = (performance.now() - t) / 1000;
    report.rows.push(row);
  }
  return report;
}

async function rankerRow(
  userFactors: Float32Array,
  itemFactors: Float32Array,
  dim: number,
  items: ItemCatalog,
  train: InteractionLog,
  test: InteractionLog,
  cm: Interactions,
  rel: Map<number, Set<number>>,
  opts: EvalRunOptions,
  say: (m: string) => void,
): Promise<EvalRow> {
  const { trainRanker } = await import('../ranker/train.js');
  const { RankerSession } = await import('../ranker/session.js');
  const { assembleRankerInput, userViewFromEvents } = await import('../features/assemble.js');
  const rankerOpts = opts.ranker || {};
  const trained = await trainRanker(
    {
      dim,
      items,
      itemEmbeddings: itemFactors,
      userEmbeddings: userFactors,
      userIds: train.userIds,
      train,
      seed: opts.seed,
    },
    rankerOpts,
  );
  say(`ranker trained: ${JSON.stringify(trained.metrics)}`);
  const session = await RankerSession.create(trained.onnx, trained, dim);
  const C = opts.candidates ?? 200;
  const acc = new MetricAccumulator(items.ids.length, items.categories);
  const scores = new Float32Array(items.ids.length);
  const mask = new Uint8Array(items.ids.length);
  const reqs = requestOf(test);
  // Each user's training events, for the history features "as of" the request.
  const byUser = new Map<number, { items: number[]; ts: number[] }>();
  for (let e = 0; e < train.length; e++) {
    const u = train.user[e];
    if (!rel.has(u)) continue;
    let h = byUser.get(u);
    if (!h) byUser.set(u, (h = { items: [], ts: [] }));
    h.items.push(train.item[e]);
    h.ts.push(train.timestamp[e]);
  }
  const bundle = { dim, items, itemEmbeddings: itemFactors };
  let n = 0;
  try {
    for (const [u, relevant] of rel) {
      if (opts.maxUsers !== undefined && n >= opts.maxUsers) break;
      n++;
      const emb = userFactors.subarray(u * dim, (u + 1) * dim);
      dotAll(emb, itemFactors, dim, scores);
      const clear = maskTrainItems(cm, u, mask);
      const cands = topK(scores, C, mask);
      clear();
      const h = byUser.get(u) ?? { items: [], ts: [] };
      const req = reqs.get(u)!;
      const view = userViewFromEvents(items, emb, h.items, h.ts, req.ts);
      const device = req.device < DEVICE_TYPES.length ? DEVICE_TYPES[req.device] : undefined;
      const retrieval = Float32Array.from(cands, (c) => scores[c]);
      const inputs = assembleRankerInput(
        trained.inputs,
        bundle,
        view,
        { timestampMs: req.ts, device },
        cands,
        retrieval,
      );
      const s = await session.scoreRaw(inputs);
      const order = Array.from(cands.keys()).sort((a, b) => s[b] - s[a] || a - b);
      acc.add(
        order.slice(0, 20).map((i) => cands[i]),
        relevant,
      );
    }
  } finally {
    await session.release();
  }
  return {
    model: 'als+ranker',
    metrics: acc.result(),
    params: { candidates: C, ...(rankerOpts as Record<string, number>) },
    seconds: 0,
  };
}

/** Fixed-width text table of the report rows. */
export function formatReport(r: EvalReport): string {
  const cols = [
    'model',
    'recall@10',
    'recall@20',
    'ndcg@10',
    'mrr',
    'coverage@10',
    'ild@10',
    'seconds',
  ];
  const lines = [
    `dataset ${r.dataset}: ${r.events} events, ${r.users} users, ${r.items} items; temporal split ${r.trainEvents} train / ${r.testEvents} test events`,
    cols.map((c, i) => (i === 0 ? c.padEnd(12) : c.padStart(12))).join(''),
  ];
  for (const row of r.rows) {
    const m = row.metrics;
    const vals = [m.recall10, m.recall20, m.ndcg10, m.mrr, m.coverage10, m.diversity10].map((x) =>
      x.toFixed(4),
    );
    lines.push(
      [
        row.model.padEnd(12),
        ...vals.map((v) => v.padStart(12)),
        row.seconds.toFixed(1).padStart(12),
      ].join(''),
    );
  }
  const best = (name: string): number | undefined =>
    r.rows.find((x) => x.model === name)?.metrics.ndcg10;
  const ranked = best('als+ranker');
  if (ranked !== undefined) {
    for (const other of ['als', 'item-knn', 'popularity']) {
      const b = best(other);
      if (b !== undefined && b > 0)
        lines.push(`als+ranker vs ${other}: NDCG@10 ${((ranked / b - 1) * 100).toFixed(1)}%`);
    }
  }
  return lines.join('\n');
}
