// Builds the ranker's input tensors from a user view, the request context and a list of
// candidate item rows. It is a pure function over typed arrays (no I/O, no globals that
// change), so the serving engineer runs it inside Piscina workers and the trainer builds
// its examples with it: the features a model was trained on are, by construction, the
// features it is served.
//
// Also here: UserHistoryAccumulator, the trainer's definition of the user-side history
// features (category affinity, per-item and per-creator counts, recent items), written to
// match what the server's FeatureStore keeps. The trainer replays events through it to
// build features "as of" each example's time.
import { DEVICE_TYPES } from '../api/types.js';
import {
  categoryTableOf,
  creatorTableOf,
  type ModelBundle,
  type RankerInputSpec,
} from '../models/bundle.js';
import {
  RECENT_ITEMS,
  resolveFeature,
  type FeatureContext,
  type FeatureDef,
  type FeatureItems,
  type RequestFeatures,
  type UserFeatureView,
} from './catalog.js';

export type { UserFeatureView, RequestFeatures } from './catalog.js';

/** One ONNX input after its feature names were resolved. */
export interface CompiledInput {
  name: string;
  /** Floats per row (sum of the features' widths). */
  width: number;
  features: { def: FeatureDef; offset: number }[];
}

/**
 * Resolves every feature name of a ranker config for a bundle of dimension `dim`. Call it at
 * model load time: it throws UnknownFeatureError naming the first unknown feature, and an
 * Error naming the input for an empty or duplicated input.
 */
export function compileRankerInputs(
  spec: readonly RankerInputSpec[],
  dim: number,
): CompiledInput[] {
  if (!Array.isArray(spec) || spec.length === 0) {
    throw new Error('ranker inputs: the model config lists no inputs');
  }
  if (!Number.isInteger(dim) || dim <= 0) throw new Error(`ranker inputs: bad dim ${dim}`);
  const seen = new Set<string>();
  return spec.map((input, i) => {
    if (!input || typeof input.name !== 'string' || input.name === '') {
      throw new Error(`ranker inputs[${i}].name: must be a non-empty string`);
    }
    if (seen.has(input.name)) throw new Error(`ranker input '${input.name}' is listed twice`);
    seen.add(input.name);
    if (!Array.isArray(input.features) || input.features.length === 0) {
      throw new Error(`ranker input '${input.name}': features must be a non-empty list`);
    }
    let offset = 0;
    const features = input.features.map((fname: string) => {
      const def = resolveFeature(String(fname), dim);
      const entry = { def, offset };
      offset += def.width(dim);
      return entry;
    });
    return { name: input.name, width: offset, features };
  });
}

// Compiled plans are cached per spec object (a bundle's config is immutable once loaded),
// so per-request assembly does no string parsing or map look-ups by name.
const planCache = new WeakMap<readonly RankerInputSpec[], { dim: number; plan: CompiledInput[] }>();

function planFor(spec: readonly RankerInputSpec[], dim: number): CompiledInput[] {
  const hit = planCache.get(spec);
  if (hit && hit.dim === dim) return hit.plan;
  const plan = compileRankerInputs(spec, dim);
  planCache.set(spec, { dim, plan });
  return plan;
}

/** The bundle parts assembly reads. */
export type AssembleBundle = Pick<ModelBundle, 'dim' | 'itemEmbeddings'> & {
  items: FeatureItems;
};

/** Builds the per-request part of a FeatureContext (row fields are filled per candidate). */
export function requestContext(
  bundle: AssembleBundle,
  user: UserFeatureView,
  req: RequestFeatures,
): FeatureContext {
  const { dim } = bundle;
  if (user.embedding.length < dim) {
    throw new Error(`user.embedding: length ${user.embedding.length} is less than dim ${dim}`);
  }
  if (!Number.isFinite(req.timestampMs)) {
    throw new Error(`req.timestampMs: must be a finite number, got ${req.timestampMs}`);
  }
  const date = new Date(req.timestampMs);
  // Recent items' unit vectors, computed once per request for the recent_sim_* features.
  const recent = user.recentItems ?? new Int32Array(0);
  const numItems = Math.floor(bundle.itemEmbeddings.length / dim);
  const recentUnit = new Float32Array(Math.min(recent.length, RECENT_ITEMS) * dim);
  let recentCount = 0;
  for (let k = 0; k < recent.length && recentCount < RECENT_ITEMS; k++) {
    const it = recent[k]!;
    if (it < 0 || it >= numItems) continue;
    let nn = 0;
    for (let i = 0; i < dim; i++) nn += bundle.itemEmbeddings[it * dim + i]! ** 2;
    if (nn === 0) continue;
    const inv = 1 / Math.sqrt(nn);
    for (let i = 0; i < dim; i++) {
      recentUnit[recentCount * dim + i] = bundle.itemEmbeddings[it * dim + i]! * inv;
    }
    recentCount++;
  }
  // Mean age of the recent items at request time (recent_age_gap): do they watch new releases
  // or classics?
  let ageSum = 0;
  let ageN = 0;
  for (let k = 0; k < recent.length && k < RECENT_ITEMS; k++) {
    const created = bundle.items.createdAt[recent[k]!];
    if (created === undefined || !Number.isFinite(created)) continue;
    ageSum += Math.log1p(Math.max(0, (req.timestampMs - created) / 86_400_000));
    ageN++;
  }
  let userNorm = 0;
  for (let i = 0; i < dim; i++) userNorm += user.embedding[i]! * user.embedding[i]!;
  const table = categoryTableOf(bundle.items);
  const creators = creatorTableOf(bundle.items);
  return {
    dim,
    items: bundle.items,
    catOffsets: table.offsets,
    catData: table.data,
    creatorOf: creators.of,
    creatorNames: creators.names,
    itemEmbeddings: bundle.itemEmbeddings,
    user,
    req,
    hour: date.getUTCHours() + date.getUTCMinutes() / 60,
    weekday: date.getUTCDay(),
    userNorm: Math.sqrt(userNorm),
    deviceIndex: req.device === undefined ? -1 : DEVICE_TYPES.indexOf(req.device),
    recentUnit,
    recentCount,
    recentLogAge: ageN > 0 ? ageSum / ageN : NaN,
    item: 0,
    itemOffset: 0,
    dot: 0,
    itemNorm: 0,
    retrievalScore: NaN,
    memo: { recentFor: -1, recentMax: 0, recentMean: 0, recent3Max: 0, catFor: -1, catSum: 0 },
  };
}

/** Points ctx at candidate `item` and computes the per-candidate shared values. */
export function setCandidate(ctx: FeatureContext, item: number, retrievalScore: number): void {
  const { dim } = ctx;
  const off = item * dim;
  const u = ctx.user.embedding;
  const e = ctx.itemEmbeddings;
  let dot = 0;
  let nn = 0;
  for (let i = 0; i < dim; i++) {
    const v = e[off + i]!;
    dot += u[i]! * v;
    nn += v * v;
  }
  ctx.item = item;
  ctx.itemOffset = off;
  ctx.dot = dot;
  ctx.itemNorm = Math.sqrt(nn);
  ctx.retrievalScore = retrievalScore;
  ctx.memo.recentFor = -1;
  ctx.memo.catFor = -1;
}

/**
 * Builds the ranker's input tensors.
 *
 * @param spec the model config's inputs: ONNX input name -> the features filling its last dim
 * @param bundle dim, the item catalog and item embeddings (numItems × dim, row-major)
 * @param user the user's features at request time
 * @param req request time and device
 * @param candidates item rows to score
 * @param retrievalScores optional, one per candidate (NaN entries fall back to the dot product)
 * @returns ONNX input name -> Float32Array of [candidates.length × width], row-major
 *
 * Throws (naming the field) on an unknown feature, an out-of-range candidate row or a
 * retrievalScores array of the wrong length; never returns NaN from valid inputs.
 */
export function assembleRankerInput(
  spec: readonly RankerInputSpec[],
  bundle: AssembleBundle,
  user: UserFeatureView,
  req: RequestFeatures,
  candidates: Int32Array,
  retrievalScores?: Float32Array,
): Record<string, Float32Array> {
  const plan = planFor(spec, bundle.dim);
  const n = candidates.length;
  if (retrievalScores && retrievalScores.length !== n) {
    throw new Error(
      `retrievalScores: length ${retrievalScores.length} differs from candidates (${n})`,
    );
  }
  const numItems = Math.floor(bundle.itemEmbeddings.length / bundle.dim);
  const out: Record<string, Float32Array> = {};
  const bufs = plan.map((input) => (out[input.name] = new Float32Array(n * input.width)));
  const ctx = requestContext(bundle, user, req);
  for (let r = 0; r < n; r++) {
    const item = candidates[r]!;
    if (item < 0 || item >= numItems) {
      throw new Error(`candidates[${r}]: item row ${item} is outside 0..${numItems - 1}`);
    }
    setCandidate(ctx, item, retrievalScores ? retrievalScores[r]! : NaN);
    for (let p = 0; p < plan.length; p++) {
      const input = plan[p]!;
      const buf = bufs[p]!;
      const base = r * input.width;
      const feats = input.features;
      for (let f = 0; f < feats.length; f++)
        feats[f]!.def.compute(ctx, buf, base + feats[f]!.offset);
    }
  }
  return out;
}

/**
 * Folds a user's events, in time order, into the history features of UserFeatureView, with
 * the semantics of the server's FeatureStore (features/store.ts), so the features a model
 * is trained on are the ones it is served:
 * - only positive events count (weight > 0; a skip has weight 0);
 * - category affinity: each event adds its weight to every category of its item, all
 *   time, normalised by the sum over categories (so it sums to 1 once any category is seen);
 * - item and creator counts and interactionCount count positive events;
 * - recentItems: the last RECENT_ITEMS distinct positive items, newest first.
 */
export class UserHistoryAccumulator {
  private readonly mass: Float64Array;
  private total = 0;
  readonly itemCounts = new Map<number, number>();
  readonly creatorCounts = new Map<string, number>();
  interactionCount = 0;
  /** Distinct recent item rows, newest last (trimmed to RECENT_ITEMS). */
  private recent: number[] = [];
  private recentLastMs = -Infinity;

  constructor(private readonly items: FeatureItems) {
    this.mass = new Float64Array(items.categoryNames.length);
  }

  /** One event; `weight` is its event-type (or rating) weight, without time decay. */
  add(item: number, timestampMs: number, weight = 1): void {
    if (!(weight > 0)) return;
    const cats = this.items.categories[item];
    if (cats) {
      for (let i = 0; i < cats.length; i++) this.mass[cats[i]!]! += weight;
      this.total += weight * cats.length;
    }
    this.itemCounts.set(item, (this.itemCounts.get(item) ?? 0) + 1);
    const creator = this.items.creatorIds[item];
    if (creator !== undefined && creator !== '') {
      this.creatorCounts.set(creator, (this.creatorCounts.get(creator) ?? 0) + 1);
    }
    this.interactionCount++;
    // A late event only enters the recent list if it is not older than the newest one.
    if (timestampMs >= this.recentLastMs) {
      const at = this.recent.indexOf(item);
      if (at >= 0) this.recent.splice(at, 1);
      this.recent.push(item);
      if (this.recent.length > RECENT_ITEMS) this.recent.shift();
      this.recentLastMs = timestampMs;
    }
  }

  /** Recent distinct item rows, newest first. */
  recentItems(): Int32Array {
    return Int32Array.from(this.recent).reverse();
  }

  /** Normalised category affinity as of the events added so far. */
  affinity(): Float32Array {
    const a = new Float32Array(this.mass.length);
    if (this.total > 0) for (let c = 0; c < a.length; c++) a[c] = this.mass[c]! / this.total;
    return a;
  }

  /** A snapshot view (maps are copied, so adding more events does not change it). */
  view(embedding: Float32Array): UserFeatureView {
    return {
      embedding,
      categoryAffinity: this.affinity(),
      itemCounts: new Map(this.itemCounts),
      creatorCounts: new Map(this.creatorCounts),
      interactionCount: this.interactionCount,
      recentItems: this.recentItems(),
    };
  }
}

/**
 * The view of a user built from their events (item rows with timestamps, any order); only
 * events strictly before `beforeMs` count. `weights` (undecayed event weights, e.g.
 * training/weights computeWeights(log, { decayPerDay: 0 })) default to 1 each. Offline
 * evaluation uses this to build the same features the trainer saw.
 */
export function userViewFromEvents(
  items: FeatureItems,
  embedding: Float32Array,
  itemRows: ArrayLike<number>,
  timestamps: ArrayLike<number>,
  beforeMs = Infinity,
  weights?: ArrayLike<number>,
): UserFeatureView {
  const order: number[] = [];
  for (let i = 0; i < itemRows.length; i++) if (timestamps[i]! < beforeMs) order.push(i);
  order.sort((a, b) => timestamps[a]! - timestamps[b]!);
  const acc = new UserHistoryAccumulator(items);
  for (const i of order) acc.add(itemRows[i]!, timestamps[i]!, weights ? weights[i]! : 1);
  return acc.view(embedding);
}
