// Trains the Deep & Wide ranker from the training split of an interaction log and exports it
// to ONNX. Called by the bundle builder after the collaborative embeddings are trained.
//
// How examples are made (why it looks like this):
// - Each user's events are split in time, the way evaluation and serving see them: the
//   earlier part is the user's history, the last ~20% (1..10 events) are the "future" the
//   ranker must predict. History features (category affinity, per-item and per-creator
//   counts) are folded from the earlier events only (UserHistoryAccumulator), so no example
//   sees its own future.
// - The embeddings and popularity examples see are, by default, re-fitted on history only:
//   an implicit-ALS sweep (users, then items) over each user's pre-cut events, warm-started from the
//   trained embeddings, with alpha/lambda calibrated to reproduce the trained user vectors.
//   The trained vectors themselves were fitted to the very events used as positives, so
//   examples built on them teach the ranker to trust the ALS score far more than it
//   deserves on items the user has not touched yet (measured on MovieLens: the ranker then
//   loses to ALS alone).
// - Each example list is what the server would rank at that moment: the user's ALS top-k
//   (hard negatives: retrieved but not taken), the most popular unseen items, a few uniform
//   ones; label = the user went on to interact. Positives drawn from outside the retrieved
//   set would teach "high ALS score means negative", since hard negatives out-score typical
//   positives by construction.
// - Features come from features/assemble.ts, the function the server runs per request.
// - Cleaning follows the design seed's clean_training_data: users with >100 events in a
//   minute (bots) or >10,000 events (outliers) do not make examples.
import type { InteractionLog } from '../data/types.js';
import {
  assembleRankerInput,
  compileRankerInputs,
  UserHistoryAccumulator,
  type AssembleBundle,
  type CompiledInput,
} from '../features/assemble.js';
import type { ItemCatalog, RankerInputSpec } from '../models/bundle.js';
import { computeWeights } from '../training/weights.js';
import { foldInCG, gram } from './linalg.js';
import { Adam, DeepWideModel, rng, sigmoid } from './mlp.js';
import { DEFAULT_NAMES, exportDeepWide } from './onnx.js';

export interface RankerTrainingInput {
  dim: number;
  items: ItemCatalog;
  itemEmbeddings: Float32Array;
  /** Rows match InteractionLog.user. */
  userEmbeddings: Float32Array;
  userIds: string[];
  /** Training split only. */
  train: InteractionLog;
  /**
   * Per-event confidence weights the embeddings were trained with (training/weights
   * computeWeights with the same options). Default: computeWeights(train) with its defaults,
   * which is wrong for data trained without time decay (e.g. MovieLens): pass them.
   */
  weights?: Float32Array;
  seed?: number;
}

export interface TrainedRanker {
  onnx: Uint8Array;
  inputs: RankerInputSpec[];
  output: string;
  outputKind: 'logit' | 'probability';
  /** Example counts, train/val logloss and AUC, validation NDCG@10 of ranker vs dot, timings. */
  metrics: Record<string, number>;
  /** Set when the data could not train a model and a dot-product fallback was returned. */
  fallbackReason?: string;
}

export interface TrainRankerOptions {
  /** Passes over the examples. Default 3. */
  epochs?: number;
  /** Cap on training examples (rows); users are sampled until it is reached. Default 40,000. */
  maxExamples?: number;
  seed?: number;
  /** Deep hidden layer sizes. Default [64, 32]. */
  hidden?: number[];
  /** Size of the user's ALS top-k in each example list (hard negatives). Default 150. */
  hardTopK?: number;
  /** Most popular unseen items added to each example list. Default 30. */
  popularCandidates?: number;
  /** Uniformly drawn items added to each example list. Default 20. */
  randomCandidates?: number;
  /** Negatives kept per training list (a uniform sample of the list's). Default 40. */
  listNegatives?: number;
  /**
   * Embeddings examples are built from: 'refit' (default: ALS re-fitted on history only,
   * see the file comment) or 'trained' (as given: faster, but they leak the targets).
   */
  userEmbedding?: 'refit' | 'trained';
  /** ALS sweeps (users, then items) of the 'refit' mode. Default 1. */
  refitIterations?: number;
  /** Mini-batch size. Default 256. */
  batchSize?: number;
  /** Adam learning rate. Default 2e-3. */
  learningRate?: number;
  /** Feature spec to train (deep/wide inputs). Default defaultRankerInputs(dim). */
  inputs?: RankerInputSpec[];
  /** Share of users held out for validation metrics (at most 150 users). Default 0.1. */
  valFraction?: number;
}

/** Largest embedding dimension whose raw user/item vectors go into the deep input. */
export const MAX_EMBEDDING_INPUT_DIM = 64;

/**
 * The feature layout the trainer uses by default for embeddings of dimension `dim`.
 *
 * - Raw user_emb/item_emb enter the deep input only up to MAX_EMBEDDING_INPUT_DIM: above it
 *   they multiply the first layer's cost (2·dim of ~20 inputs) and, on MovieLens at d=128,
 *   did not beat the scalar features within noise (+16.9% vs +14.8% NDCG@10 over ALS) while
 *   training 4× slower.
 * - Device is left out: interaction logs carry no device, and a feature that is constant
 *   in training gets untrained weights that would fire at serve time.
 * - retrieval_score is left out: at serve time candidates come from several sources whose
 *   scores are on different scales; dot is the same quantity, computed consistently.
 */
export function defaultRankerInputs(dim = 32): RankerInputSpec[] {
  const embeddings = dim <= MAX_EMBEDDING_INPUT_DIM ? ['user_emb', 'item_emb'] : [];
  return [
    {
      name: DEFAULT_NAMES.deep,
      features: [
        ...embeddings,
        'dot',
        'cosine',
        'item_norm',
        'recent_sim_max',
        'recent_sim_mean',
        'recent3_sim_max',
        'recent_age_gap',
        'item_log_popularity',
        'item_freshness',
        'item_log_age_days',
        'item_quality',
        'category_affinity',
        'category_affinity_max',
        'user_item_prev',
        'user_creator_prev',
        'user_log_interactions',
        'hour_sin',
        'hour_cos',
        'weekday_sin',
        'weekday_cos',
      ],
    },
    {
      name: DEFAULT_NAMES.wide,
      features: [
        'dot',
        'recent_sim_max',
        'recent_sim_mean',
        'recent3_sim_max',
        'recent_age_gap',
        'item_log_popularity',
        'category_affinity',
        'user_item_prev',
        'user_creator_prev',
        'item_freshness',
        'item_quality',
        'cross_affinity_popularity',
        'cross_dot_affinity',
        'cross_dot_popularity',
        'cross_creator_quality',
      ],
    },
  ];
}

/** Events of one user, sorted by time: positions into the log. */
interface UserEvents {
  user: number;
  events: Int32Array;
}

function groupByUser(log: InteractionLog, numUsers: number): UserEvents[] {
  const counts = new Int32Array(numUsers + 1);
  for (let e = 0; e < log.length; e++) counts[log.user[e]! + 1]!++;
  for (let u = 0; u < numUsers; u++) counts[u + 1]! += counts[u]!;
  const order = new Int32Array(log.length);
  const fill = counts.slice(0, numUsers);
  for (let e = 0; e < log.length; e++) order[fill[log.user[e]!]!++] = e;
  const out: UserEvents[] = [];
  for (let u = 0; u < numUsers; u++) {
    const seg = order.subarray(counts[u]!, counts[u + 1]!);
    if (seg.length === 0) continue;
    // Stable on ties so equal timestamps keep log order.
    const sorted = Int32Array.from(seg).sort(
      (a, b) => log.timestamp[a]! - log.timestamp[b]! || a - b,
    );
    out.push({ user: u, events: sorted });
  }
  return out;
}

/** The seed's bot rule: more than 100 events inside any 60-second window. */
function isBot(log: InteractionLog, events: Int32Array): boolean {
  let lo = 0;
  for (let hi = 0; hi < events.length; hi++) {
    while (log.timestamp[events[hi]!]! - log.timestamp[events[lo]!]! > 60_000) lo++;
    if (hi - lo + 1 > 100) return true;
  }
  return false;
}

/** Top-k item rows by score, excluding `skip`; k small, so a bounded insertion list. */
function topK(scores: Float32Array, k: number, skip: { has(i: number): boolean }): Int32Array {
  const ids = new Int32Array(k).fill(-1);
  const vals = new Float32Array(k).fill(-Infinity);
  let size = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i]!;
    if (size === k && s <= vals[k - 1]!) continue;
    if (skip.has(i)) continue;
    let p = size < k ? size++ : k - 1;
    while (p > 0 && vals[p - 1]! < s) {
      vals[p] = vals[p - 1]!;
      ids[p] = ids[p - 1]!;
      p--;
    }
    vals[p] = s;
    ids[p] = i;
  }
  return ids.subarray(0, size);
}

function scoreAll(emb: Float32Array, itemEmb: Float32Array, dim: number, out: Float32Array): void {
  const n = out.length;
  for (let r = 0; r < n; r++) {
    const o = r * dim;
    let s = 0;
    for (let i = 0; i < dim; i++) s += emb[i]! * itemEmb[o + i]!;
    out[r] = s;
  }
}

/** Growable row-major float buffer. */
class Rows {
  data: Float32Array;
  n = 0;
  constructor(
    readonly width: number,
    capacity = 1024,
  ) {
    this.data = new Float32Array(Math.max(1, capacity) * Math.max(1, width));
  }
  append(block: Float32Array, rows: number): void {
    const need = (this.n + rows) * this.width;
    if (need > this.data.length) {
      const next = new Float32Array(Math.max(need, this.data.length * 2));
      next.set(this.data.subarray(0, this.n * this.width));
      this.data = next;
    }
    this.data.set(block.subarray(0, rows * this.width), this.n * this.width);
    this.n += rows;
  }
  view(): Float32Array {
    return this.data.subarray(0, this.n * this.width);
  }
}

/** Area under the ROC curve (ties count half). */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort(
    (a, b) => scores[a]! - scores[b]!,
  );
  let pos = 0;
  let neg = 0;
  let rankSum = 0;
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && scores[idx[j + 1]!] === scores[idx[i]!]) j++;
    const avgRank = (i + j) / 2 + 1;
    for (let t = i; t <= j; t++) {
      if (labels[idx[t]!]! > 0.5) {
        pos++;
        rankSum += avgRank;
      } else neg++;
    }
    i = j + 1;
  }
  if (pos === 0 || neg === 0) return NaN;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** NDCG@k of one candidate list ordered by `scores` (binary relevance). */
function ndcgAt(scores: ArrayLike<number>, labels: ArrayLike<number>, k: number): number {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort(
    (a, b) => scores[b]! - scores[a]!,
  );
  let dcg = 0;
  for (let r = 0; r < Math.min(k, idx.length); r++) {
    if (labels[idx[r]!]! > 0.5) dcg += 1 / Math.log2(r + 2);
  }
  let relevant = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i]! > 0.5) relevant++;
  let ideal = 0;
  for (let r = 0; r < Math.min(k, relevant); r++) ideal += 1 / Math.log2(r + 2);
  return ideal > 0 ? dcg / ideal : 0;
}

/**
 * Finds the implicit-ALS alpha/lambda that best reproduce the trained user vectors from the
 * users' events (so the history-only refit solves the same problem the trainer of the
 * embeddings solved, whatever its settings were).
 */
function calibrateFoldIn(
  input: RankerTrainingInput,
  weights: Float32Array,
  users: UserEvents[],
  yty: Float64Array,
  rand: () => number,
): { alpha: number; lambda: number; relError: number } {
  const { dim, itemEmbeddings, userEmbeddings, train } = input;
  const sample: UserEvents[] = [];
  for (let i = 0; i < 15 && users.length > 0; i++) {
    sample.push(users[Math.floor(rand() * users.length)]!);
  }
  let best = { alpha: 1, lambda: 1, relError: Infinity };
  const out = new Float32Array(dim);
  const steps = Math.min(dim, 15);
  for (const alpha of [0.5, 1, 4, 10, 40]) {
    for (const lambda of [0.01, 0.1, 1, 10, 100]) {
      let err = 0;
      let norm = 0;
      for (const u of sample) {
        const { items, w } = aggregateEvents(u.events, train, weights);
        out.fill(0);
        foldInCG(itemEmbeddings, dim, yty, items, w, alpha, lambda, out, steps);
        for (let i = 0; i < dim; i++) {
          const t = userEmbeddings[u.user * dim + i]!;
          err += (out[i]! - t) ** 2;
          norm += t * t;
        }
      }
      const rel = norm > 0 ? Math.sqrt(err / norm) : Infinity;
      if (rel < best.relError) best = { alpha, lambda, relError: rel };
    }
  }
  return best;
}

/**
 * A user's events as training/als.ts sees them: repeated items merged (weights added) and
 * pairs whose total weight is <= 0 (e.g. only skips) left out.
 */
function aggregateEvents(
  events: ArrayLike<number>,
  train: InteractionLog,
  weights: Float32Array,
): { items: Int32Array; w: Float32Array } {
  const sums = new Map<number, number>();
  for (let k = 0; k < events.length; k++) {
    const e = events[k]!;
    const it = train.item[e]!;
    sums.set(it, (sums.get(it) ?? 0) + weights[e]!);
  }
  const kept = [...sums].filter(([, w]) => w > 0);
  return {
    items: Int32Array.from(kept, ([it]) => it),
    w: Float32Array.from(kept, ([, w]) => w),
  };
}

/** Number of an n-event user's latest events held back as that user's prediction targets. */
function targetCount(n: number): number {
  return Math.min(10, Math.max(1, Math.round(n * 0.2)));
}

/**
 * Re-fits the collaborative embeddings on history only (each user's events before their
 * cut), warm-started from the trained ones: `iters` alternating implicit-ALS sweeps with the
 * calibrated alpha/lambda. Also returns history-only popularity. Examples built on these
 * see what the server sees at request time: embeddings and counts that never contained
 * the events being predicted.
 */
function refitOnHistory(
  input: RankerTrainingInput,
  weights: Float32Array,
  grouped: UserEvents[],
  alpha: number,
  lambda: number,
  iters: number,
): { userEmb: Float32Array; itemEmb: Float32Array; popularity: Float32Array } {
  const { dim, train } = input;
  const numItems = input.items.ids.length;
  const userEmb = Float32Array.from(input.userEmbeddings);
  const itemEmb = Float32Array.from(input.itemEmbeddings);
  const popularity = new Float32Array(numItems);
  // History events per user (time order) and per item (CSR), as (row, weight) pairs.
  const userHist: { user: number; items: Int32Array; w: Float32Array }[] = [];
  const itemCount = new Int32Array(numItems + 1);
  for (const { user, events } of grouped) {
    const cut = events.length - targetCount(events.length);
    const hist = events.subarray(0, Math.max(0, cut));
    const agg = aggregateEvents(hist, train, weights);
    userHist.push({ user, items: agg.items, w: agg.w });
    for (const it of agg.items) itemCount[it + 1]!++;
    for (const e of hist) popularity[train.item[e]!]!++;
  }
  for (let i = 0; i < numItems; i++) itemCount[i + 1]! += itemCount[i]!;
  const total = itemCount[numItems]!;
  const itemUsers = new Int32Array(total);
  const itemW = new Float32Array(total);
  const fill = itemCount.slice(0, numItems);
  for (const h of userHist) {
    for (let k = 0; k < h.items.length; k++) {
      const at = fill[h.items[k]!]!++;
      itemUsers[at] = h.user;
      itemW[at] = h.w[k]!;
    }
  }
  for (let it = 0; it < iters; it++) {
    // Users get more CG steps: their rows move most (their targets just left the data).
    let g = gram(itemEmb, dim);
    for (const h of userHist) {
      const row = userEmb.subarray(h.user * dim, (h.user + 1) * dim);
      foldInCG(itemEmb, dim, g, h.items, h.w, alpha, lambda, row, 6);
    }
    g = gram(userEmb, dim);
    for (let i = 0; i < numItems; i++) {
      const a = itemCount[i]!;
      const b = itemCount[i + 1]!;
      const row = itemEmb.subarray(i * dim, (i + 1) * dim);
      if (a === b) continue; // no history: keep the trained (e.g. content) vector
      foldInCG(
        userEmb,
        dim,
        g,
        itemUsers.subarray(a, b),
        itemW.subarray(a, b),
        alpha,
        lambda,
        row,
        3,
      );
    }
  }
  return { userEmb, itemEmb, popularity };
}

/**
 * What trainRanker returns when the data cannot teach anything (too few users, no example
 * list with a positive): a valid model of the same inputs whose logit is the dot product
 * when the wide input has it (so ranking keeps the ALS order), else constant. A bundle
 * build on tiny data still gets a working ranker; metrics.ranker_fallback says so.
 */
function fallbackRanker(
  spec: RankerInputSpec[],
  plan: CompiledInput[],
  hidden: number[],
  reason: string,
): TrainedRanker {
  const deepW = plan[0]!.width;
  const wideW = plan[1]?.width ?? 0;
  const model = new DeepWideModel({ deepIn: deepW, wideIn: wideW, hidden }, 1);
  for (const w of model.weights) w.fill(0);
  const dot = plan[1]?.features.find((f) => f.def.name === 'dot');
  if (dot) model.wide[dot.offset] = 1;
  const deepName = plan[0]!.name;
  const wideName = plan[1]?.name ?? 'wide';
  return {
    onnx: exportDeepWide(model, { deep: deepName, wide: wideName, output: DEFAULT_NAMES.output }),
    inputs: spec.map((s) => ({ name: s.name, features: [...s.features] })),
    output: DEFAULT_NAMES.output,
    outputKind: 'logit',
    metrics: { ranker_fallback: 1, ranker_train_examples: 0, ranker_fallback_dot: dot ? 1 : 0 },
    fallbackReason: reason,
  };
}

/** Largest |ONNX − forward| logit over (up to) the first 512 example rows. */
async function onnxParity(
  onnx: Uint8Array,
  spec: RankerInputSpec[],
  dim: number,
  model: DeepWideModel,
  xd: Float32Array,
  xw: Float32Array,
  n: number,
): Promise<number> {
  const { RankerSession } = await import('./session.js');
  const rows = Math.min(512, n);
  if (rows === 0) return 0;
  const { deepIn, wideIn } = model.shape;
  const deep = xd.slice(0, rows * deepIn);
  const wide = xw.slice(0, rows * wideIn);
  const session = await RankerSession.create(
    onnx,
    { inputs: spec, output: DEFAULT_NAMES.output, outputKind: 'logit' },
    dim,
  );
  try {
    const feeds: Record<string, Float32Array> = { [spec[0]!.name]: deep };
    if (spec[1]) feeds[spec[1].name] = wide;
    const got = await session.scoreRaw(feeds);
    const want = model.forward(deep, wide, rows);
    let worst = 0;
    for (let i = 0; i < rows; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    return worst;
  } finally {
    await session.release();
  }
}

function validate(input: RankerTrainingInput): void {
  const { dim, items, itemEmbeddings, userEmbeddings, userIds, train } = input;
  if (!Number.isInteger(dim) || dim <= 0)
    throw new Error(`trainRanker dim: must be a positive integer, got ${dim}`);
  const numItems = items.ids.length;
  if (itemEmbeddings.length !== numItems * dim) {
    throw new Error(
      `trainRanker itemEmbeddings: length ${itemEmbeddings.length}, want ${numItems}×${dim}`,
    );
  }
  if (userEmbeddings.length !== userIds.length * dim) {
    throw new Error(
      `trainRanker userEmbeddings: length ${userEmbeddings.length}, want ${userIds.length}×${dim}`,
    );
  }
  for (let e = 0; e < train.length; e++) {
    const u = train.user[e]!;
    const it = train.item[e]!;
    if (u < 0 || u >= userIds.length)
      throw new Error(`trainRanker train.user[${e}]: row ${u} out of range`);
    if (it < 0 || it >= numItems)
      throw new Error(`trainRanker train.item[${e}]: row ${it} out of range`);
  }
}

export async function trainRanker(
  input: RankerTrainingInput,
  opts: TrainRankerOptions = {},
): Promise<TrainedRanker> {
  const t0 = performance.now();
  validate(input);
  const seed = opts.seed ?? input.seed ?? 42;
  const rand = rng(seed);
  const epochs = opts.epochs ?? 3;
  const maxExamples = opts.maxExamples ?? 40_000;
  const hardK = opts.hardTopK ?? 150;
  const numPopular = opts.popularCandidates ?? 30;
  const numRandom = opts.randomCandidates ?? 20;
  const listNegatives = opts.listNegatives ?? 40;
  const batchSize = opts.batchSize ?? 256;
  const valFraction = opts.valFraction ?? 0.1;
  const spec = opts.inputs ?? defaultRankerInputs(input.dim);
  const { dim, items, itemEmbeddings, userEmbeddings, train } = input;
  const numItems = items.ids.length;
  const plan = compileRankerInputs(spec, dim);
  if (plan.length < 1 || plan.length > 2)
    throw new Error('trainRanker inputs: want a deep input and optionally a wide one');
  const deepName = plan[0]!.name;
  const wideName = plan[1]?.name;
  const deepW = plan[0]!.width;
  const wideW = plan[1]?.width ?? 0;

  // Popularity: the catalog's prior when present, else counts from the training log.
  let pop = items.popularity;
  if (!pop || pop.length !== numItems || !pop.some((v) => v > 0)) {
    pop = new Float32Array(numItems);
    for (let e = 0; e < train.length; e++) pop[train.item[e]!]!++;
  }
  const grouped = groupByUser(train, input.userIds.length);
  let bots = 0;
  let outliers = 0;
  const users = grouped.filter((u) => {
    if (u.events.length > 10_000) {
      outliers++;
      return false;
    }
    if (isBot(train, u.events)) {
      bots++;
      return false;
    }
    return u.events.length >= 3;
  });
  // Shuffle users (Fisher-Yates) so a capped run samples them evenly.
  for (let i = users.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [users[i], users[j]] = [users[j]!, users[i]!];
  }
  if (users.length < 2) {
    return fallbackRanker(
      spec,
      plan,
      opts.hidden ?? [64, 32],
      'fewer than 2 users with ≥ 3 events',
    );
  }

  const mode = opts.userEmbedding ?? 'refit';
  // Confidence weights as the embeddings' trainer saw them (the log's weight column is NaN
  // where the loader left it to training/weights). Without them, try training/weights with
  // and without its time decay and keep whichever reproduces the trained vectors better.
  if (input.weights && input.weights.length < train.length) {
    throw new Error(
      `trainRanker weights: length ${input.weights.length} is less than train.length ${train.length}`,
    );
  }
  const tCalib = performance.now();
  let weights = input.weights ?? computeWeights(train);
  let calib = { alpha: 0, lambda: 0, relError: 0 };
  let weightsGuessed = 0;
  if (mode === 'refit') {
    const yty = gram(itemEmbeddings, dim);
    calib = calibrateFoldIn(input, weights, users, yty, rng(seed + 1));
    if (!input.weights) {
      const undecayed = computeWeights(train, { decayPerDay: 0 });
      const alt = calibrateFoldIn(input, undecayed, users, yty, rng(seed + 1));
      weightsGuessed = 1;
      if (alt.relError < calib.relError) {
        weights = undecayed;
        calib = alt;
        weightsGuessed = 2;
      }
    }
  }
  const tRefit = performance.now();
  // History features use undecayed event weights, as the FeatureStore keeps them.
  const baseWeights = computeWeights(train, { decayPerDay: 0 });
  // Embeddings, popularity and the bundle view that examples are built from (see refit).
  let exItemEmb = itemEmbeddings;
  let exUserEmb = userEmbeddings;
  let exItems: ItemCatalog = items;
  if (mode === 'refit') {
    const r = refitOnHistory(
      input,
      weights,
      grouped,
      calib.alpha,
      calib.lambda,
      opts.refitIterations ?? 1,
    );
    exItemEmb = r.itemEmb;
    exUserEmb = r.userEmb;
    exItems = { ...items, popularity: r.popularity };
    pop = r.popularity;
  }
  const tRefitDone = performance.now();
  // Items by descending popularity (as the examples see it), for the popular candidates.
  const popOrder = Int32Array.from({ length: numItems }, (_, i) => i).sort(
    (x, y) => pop[y]! - pop[x]! || x - y,
  );

  const bundle: AssembleBundle = { dim, items: exItems, itemEmbeddings: exItemEmb };
  const numVal = Math.min(150, Math.max(1, Math.round(users.length * valFraction)));
  const trainDeep = new Rows(deepW, 4096);
  const trainWide = new Rows(wideW, 4096);
  const trainLabels: number[] = [];
  const valDeep = new Rows(deepW, 4096);
  const valWide = new Rows(wideW, 4096);
  const valLabels: number[] = [];
  const valGroups: { start: number; end: number; dot: Float32Array }[] = [];
  const scores = new Float32Array(numItems);
  let usersUsed = 0;

  for (let ui = 0; ui < users.length; ui++) {
    const isVal = ui < numVal;
    if (!isVal && trainLabels.length >= maxExamples) break;
    const { user, events } = users[ui]!;
    const n = events.length;
    const cut = n - targetCount(n);
    const history = new UserHistoryAccumulator(items);
    // Everything the user touched before the cut (skips too) is "seen": never a candidate.
    const seen = new Set<number>();
    for (let i = 0; i < cut; i++) {
      const e = events[i]!;
      history.add(train.item[e]!, train.timestamp[e]!, baseWeights[e]!);
      seen.add(train.item[e]!);
    }
    const reqMs = train.timestamp[events[cut]!]!;
    const emb = exUserEmb.subarray(user * dim, (user + 1) * dim);
    const view = history.view(emb);
    // Positives: what the user went on to do with positive weight (a skip is no positive).
    const positives = aggregateEvents(events.subarray(cut), train, weights).items;
    scoreAll(emb, exItemEmb, dim, scores);
    const top = topK(scores, hardK, seen);

    // The candidate list a server would rank for this user at reqMs: the ALS top-k (hard
    // negatives), the most popular unseen items and a few uniform ones. Labels are whether
    // the user went on to interact; training on anything else (e.g. positives drawn from
    // outside the retrieved set) teaches the model that a high ALS score means "negative",
    // because hard negatives out-score typical positives by construction.
    const pool = new Set<number>(top);
    for (let i = 0, added = 0; i < popOrder.length && added < numPopular; i++) {
      const it = popOrder[i]!;
      if (seen.has(it) || pool.has(it)) continue;
      pool.add(it);
      added++;
    }
    for (let r = 0; r < numRandom; r++) {
      const it = Math.floor(rand() * numItems);
      if (!seen.has(it)) pool.add(it);
    }
    const posSet = new Set(positives);
    let cands = [...pool];
    if (!cands.some((c) => posSet.has(c))) continue; // no ranking signal, only base rate
    if (!isVal && cands.length - posSet.size > listNegatives) {
      // Keep every positive and a uniform sample of the negatives: more users per example
      // budget, in the same hard/popular/random proportions.
      const negs = cands.filter((c) => !posSet.has(c));
      for (let i = 0; i < listNegatives; i++) {
        const j = i + Math.floor(rand() * (negs.length - i));
        [negs[i], negs[j]] = [negs[j]!, negs[i]!];
      }
      cands = [...cands.filter((c) => posSet.has(c)), ...negs.slice(0, listNegatives)];
    }
    const labels = cands.map((c) => (posSet.has(c) ? 1 : 0));
    const candArr = Int32Array.from(cands);
    const tensors = assembleRankerInput(
      spec,
      bundle,
      view,
      { timestampMs: reqMs, device: undefined },
      candArr,
    );
    if (isVal) {
      const start = valLabels.length;
      valDeep.append(tensors[deepName]!, candArr.length);
      if (wideName) valWide.append(tensors[wideName]!, candArr.length);
      valLabels.push(...labels);
      const dots = new Float32Array(candArr.length);
      for (let i = 0; i < candArr.length; i++) dots[i] = scores[candArr[i]!]!;
      valGroups.push({ start, end: valLabels.length, dot: dots });
    } else {
      trainDeep.append(tensors[deepName]!, candArr.length);
      if (wideName) trainWide.append(tensors[wideName]!, candArr.length);
      trainLabels.push(...labels);
      usersUsed++;
    }
  }
  const tExamples = performance.now();

  const nTrain = trainLabels.length;
  if (!trainLabels.some((l) => l > 0)) {
    return fallbackRanker(spec, plan, opts.hidden ?? [64, 32], 'no example list had a positive');
  }
  const model = new DeepWideModel(
    { deepIn: deepW, wideIn: wideW, hidden: opts.hidden ?? [64, 32] },
    seed,
  );
  const xd = trainDeep.view();
  const xw = trainWide.view();
  model.fitNormalisation(xd, xw, nTrain);
  const adam = new Adam(model.params(), opts.learningRate ?? 2e-3);
  const grads = model.zeroGrads();
  const order = Int32Array.from({ length: nTrain }, (_, i) => i);
  const bd = new Float32Array(batchSize * deepW);
  const bw = new Float32Array(batchSize * wideW);
  const by = new Float32Array(batchSize);
  let lastEpochLoss = NaN;
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let i = nTrain - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    let lossSum = 0;
    let batches = 0;
    for (let s = 0; s < nTrain; s += batchSize) {
      const b = Math.min(batchSize, nTrain - s);
      for (let r = 0; r < b; r++) {
        const src = order[s + r]!;
        bd.set(xd.subarray(src * deepW, (src + 1) * deepW), r * deepW);
        if (wideW > 0) bw.set(xw.subarray(src * wideW, (src + 1) * wideW), r * wideW);
        by[r] = trainLabels[src]!;
      }
      lossSum += model.lossAndGrad(bd, bw, by, b, grads, 1e-5);
      adam.step(grads);
      batches++;
    }
    lastEpochLoss = lossSum / Math.max(1, batches);
    // Let the event loop breathe between epochs (the builder may report progress).
    await new Promise((r) => setImmediate(r));
  }
  const tTrain = performance.now();

  const metrics: Record<string, number> = {
    ranker_train_examples: nTrain,
    ranker_train_users: usersUsed,
    ranker_val_users: valGroups.length,
    ranker_val_examples: valLabels.length,
    ranker_bot_users_skipped: bots,
    ranker_outlier_users_skipped: outliers,
    ranker_train_logloss: lastEpochLoss,
    ranker_foldin_alpha: calib.alpha,
    ranker_foldin_lambda: calib.lambda,
    ranker_foldin_rel_error: calib.relError,
    /** 0: weights given; 1: guessed, decayed; 2: guessed, undecayed. */
    ranker_weights_guessed: weightsGuessed,
  };
  const evalRows = (deep: Float32Array, wide: Float32Array, labels: number[]) => {
    const logits = new Float32Array(labels.length);
    const chunk = 4096;
    for (let s = 0; s < labels.length; s += chunk) {
      const b = Math.min(chunk, labels.length - s);
      const out = model.forward(
        deep.subarray(s * deepW, (s + b) * deepW),
        wide.subarray(s * wideW, (s + b) * wideW),
        b,
      );
      logits.set(out, s);
    }
    let ll = 0;
    for (let i = 0; i < labels.length; i++) {
      const p = Math.min(1 - 1e-7, Math.max(1e-7, sigmoid(logits[i]!)));
      ll -= labels[i]! > 0.5 ? Math.log(p) : Math.log(1 - p);
    }
    return { logits, logloss: ll / Math.max(1, labels.length) };
  };
  if (valLabels.length > 0) {
    const { logits, logloss } = evalRows(valDeep.view(), valWide.view(), valLabels);
    metrics.ranker_val_logloss = logloss;
    metrics.ranker_val_auc = auc(logits, valLabels);
    let nd = 0;
    let ndDot = 0;
    let groups = 0;
    const allDots: number[] = [];
    for (const g of valGroups) {
      const lab = valLabels.slice(g.start, g.end);
      allDots.push(...g.dot);
      if (!lab.some((l) => l > 0.5)) continue;
      nd += ndcgAt(logits.subarray(g.start, g.end), lab, 10);
      ndDot += ndcgAt(g.dot, lab, 10);
      groups++;
    }
    metrics.ranker_val_auc_dot = auc(allDots, valLabels);
    // Over each validation user's ALS top-k (+ held-back items): ranker order vs ALS order.
    metrics.ranker_val_ndcg10 = groups > 0 ? nd / groups : NaN;
    metrics.ranker_val_ndcg10_dot = groups > 0 ? ndDot / groups : NaN;
  }
  const outputName = DEFAULT_NAMES.output;
  const onnx = exportDeepWide(model, {
    deep: deepName,
    wide: wideName ?? 'wide',
    output: outputName,
  });
  // Guard the export: ONNX Runtime must reproduce the trainer's forward pass on real rows.
  metrics.ranker_onnx_max_abs_diff = await onnxParity(onnx, spec, dim, model, xd, xw, nTrain);
  if (!(metrics.ranker_onnx_max_abs_diff <= 1e-4)) {
    throw new Error(
      `trainRanker: exported ONNX differs from the trained model by ${metrics.ranker_onnx_max_abs_diff}`,
    );
  }
  metrics.ranker_calibrate_seconds = (tRefit - tCalib) / 1000;
  metrics.ranker_refit_seconds = (tRefitDone - tRefit) / 1000;
  metrics.ranker_example_seconds = (tExamples - t0) / 1000;
  metrics.ranker_fit_seconds = (tTrain - tExamples) / 1000;
  metrics.ranker_params = model.params().reduce((s, p) => s + p.length, 0);
  return {
    onnx,
    inputs: spec.map((s) => ({ name: s.name, features: [...s.features] })),
    output: outputName,
    outputKind: 'logit',
    metrics,
  };
}
