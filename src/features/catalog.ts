// The registry of ranker features the server knows. A ranker's config names, per ONNX input,
// the features that fill that input's last dimension (models/bundle.ts RankerInputSpec);
// every name there must resolve here, so a model exported by another tool can be dropped
// in when it asks for features from this list.
//
// Each feature writes `width` floats for one (user, item, request) triple into a row of the
// input tensor. Compute functions only read typed arrays and small maps, so the whole
// assembly runs in a Piscina worker (no I/O, no shared mutable state). The trainer builds
// its examples through the very same functions (features/assemble.ts), so training and
// serving features cannot drift apart.
import { DEVICE_TYPES, type DeviceType } from '../api/types.js';
import type { ItemCatalog } from '../models/bundle.js';

/** What the server knows about one user at request time (filled from its FeatureStore). */
export interface UserFeatureView {
  /** Length dim (the bundle's trained user embedding, or its cold-user embedding). */
  embedding: Float32Array;
  /**
   * Per category number (bundle.items.categoryNames): the user's all-time weighted positive
   * interactions in that category, normalised by their sum over categories (sums to <= 1;
   * features/assemble.ts UserHistoryAccumulator is the exact definition the trainer uses).
   */
  categoryAffinity: Float32Array;
  /** Item row -> number of the user's past interactions with it. */
  itemCounts: Map<number, number>;
  /** Creator id -> number of the user's past interactions with that creator's items. */
  creatorCounts: Map<string, number>;
  /** Total past interactions of the user. */
  interactionCount: number;
  /**
   * The user's most recent distinct item rows, newest first (up to RECENT_ITEMS). Optional
   * for callers, but the recent_sim_* features read 0 without it, so a server that serves a
   * model using them must fill it (UserHistoryAccumulator does).
   */
  recentItems?: Int32Array;
}

/** How many recent items the history keeps and recent_sim_* features look at. */
export const RECENT_ITEMS = 10;

/** Per-request context features. */
export interface RequestFeatures {
  /** Request time, ms since epoch (the client's context.timestamp, else the server clock). */
  timestampMs: number;
  device: DeviceType | undefined;
}

/** The item-side data features read (a subset of ItemCatalog). */
export type FeatureItems = Pick<
  ItemCatalog,
  | 'categoryNames'
  | 'categories'
  | 'categoryTable'
  | 'creatorIds'
  | 'creatorTable'
  | 'createdAt'
  | 'quality'
  | 'popularity'
>;

/**
 * Everything a compute function may read for one candidate. `assemble` fills the
 * per-request fields once and the per-candidate fields (item, dot, norms) per row, so no
 * feature recomputes a dot product.
 */
export interface FeatureContext {
  dim: number;
  items: FeatureItems;
  /** items' categories, flat (models/bundle.ts CategoryTable): item r's are catData[catOffsets[r]..catOffsets[r+1]). */
  catOffsets: Uint32Array;
  catData: Uint16Array;
  /** items' creators as numbers (models/bundle.ts CreatorTable). */
  creatorOf: Int32Array;
  creatorNames: string[];
  itemEmbeddings: Float32Array;
  user: UserFeatureView;
  req: RequestFeatures;
  /** Derived once per request. */
  hour: number;
  weekday: number;
  userNorm: number;
  deviceIndex: number;
  /** Unit-normalised embeddings of user.recentItems ([recentCount × dim]), once per request. */
  recentUnit: Float32Array;
  recentCount: number;
  /** Candidate item row. */
  item: number;
  /** Offset of the item's embedding in itemEmbeddings (item * dim). */
  itemOffset: number;
  /** user · item. */
  dot: number;
  itemNorm: number;
  /** The retrieval stage's score for this candidate; NaN when the caller gave none. */
  retrievalScore: number;
  /**
   * Per-candidate memo for values several features share (set to -1 by setCandidate):
   * the item row they were computed for, then their values.
   */
  memo: {
    recentFor: number;
    recentMax: number;
    recentMean: number;
    recent3Max: number;
    catFor: number;
    catSum: number;
  };
  /** Mean log(1 + age in days) of the recent items at request time; NaN when unknown. */
  recentLogAge: number;
}

export interface FeatureDef {
  name: string;
  /** One line for docs and `recserve` listings. */
  doc: string;
  /** Floats this feature writes per row, for a bundle of this embedding dimension. */
  width(dim: number): number;
  /** Writes `width(dim)` floats at out[offset..]. */
  compute(ctx: FeatureContext, out: Float32Array, offset: number): void;
}

const DAY_MS = 86_400_000;
/** Freshness half-life: an item this old scores 0.5 on item_freshness. */
export const FRESHNESS_HALF_LIFE_DAYS = 30;

function scalar(name: string, doc: string, f: (ctx: FeatureContext) => number): FeatureDef {
  return {
    name,
    doc,
    width: () => 1,
    compute: (ctx, out, offset) => {
      out[offset] = f(ctx);
    },
  };
}

function categorySum(ctx: FeatureContext): number {
  if (ctx.memo.catFor === ctx.item) return ctx.memo.catSum;
  const { catOffsets, catData } = ctx;
  const aff = ctx.user.categoryAffinity;
  let s = 0;
  for (let i = catOffsets[ctx.item]!, e = catOffsets[ctx.item + 1]!; i < e; i++)
    s += aff[catData[i]!] ?? 0;
  ctx.memo.catFor = ctx.item;
  ctx.memo.catSum = s;
  return s;
}

function categoryMax(ctx: FeatureContext): number {
  const { catOffsets, catData } = ctx;
  const aff = ctx.user.categoryAffinity;
  let m = 0;
  for (let i = catOffsets[ctx.item]!, e = catOffsets[ctx.item + 1]!; i < e; i++)
    m = Math.max(m, aff[catData[i]!] ?? 0);
  return m;
}

function ageDays(ctx: FeatureContext): number {
  const created = ctx.items.createdAt[ctx.item] ?? NaN;
  // Unknown creation time reads as "a year old" rather than NaN, which would poison the MLP.
  if (!Number.isFinite(created)) return 365;
  return Math.max(0, (ctx.req.timestampMs - created) / DAY_MS);
}

function logPopularity(ctx: FeatureContext): number {
  return Math.log1p(Math.max(0, ctx.items.popularity[ctx.item] ?? 0));
}

function userItemPrev(ctx: FeatureContext): number {
  return Math.log1p(ctx.user.itemCounts.get(ctx.item) ?? 0);
}

function userCreatorPrev(ctx: FeatureContext): number {
  // Numbers in shared memory, then one of the few distinct names: no per-item string.
  const c = ctx.creatorOf[ctx.item];
  if (c === undefined || c < 0 || ctx.user.creatorCounts.size === 0) return 0;
  return Math.log1p(ctx.user.creatorCounts.get(ctx.creatorNames[c]!) ?? 0);
}

const TWO_PI = 2 * Math.PI;

/** Cosine of the candidate with each recent item, reduced by `mode` (all memoised). */
function recentSim(ctx: FeatureContext, mode: 'max' | 'mean' | 'max3'): number {
  const m = ctx.memo;
  if (m.recentFor !== ctx.item) {
    m.recentFor = ctx.item;
    m.recentMax = 0;
    m.recentMean = 0;
    m.recent3Max = 0;
    if (ctx.recentCount > 0 && ctx.itemNorm > 0) {
      const { dim, itemOffset, itemEmbeddings: e, recentUnit } = ctx;
      let best = -1;
      let sum = 0;
      for (let r = 0; r < ctx.recentCount; r++) {
        const o = r * dim;
        let s = 0;
        for (let i = 0; i < dim; i++) s += recentUnit[o + i]! * e[itemOffset + i]!;
        s /= ctx.itemNorm;
        sum += s;
        if (s > best) best = s;
        if (r === Math.min(3, ctx.recentCount) - 1) m.recent3Max = best;
      }
      m.recentMax = best;
      m.recentMean = sum / ctx.recentCount;
    }
  }
  return mode === 'max' ? m.recentMax : mode === 'max3' ? m.recent3Max : m.recentMean;
}

const BASE: FeatureDef[] = [
  {
    name: 'user_emb',
    doc: 'user embedding (dim floats; user_emb[i] selects one dimension)',
    width: (dim) => dim,
    // Plain loops: a subarray() view per candidate costs more than copying 32-128 floats.
    compute: (ctx, out, offset) => {
      const u = ctx.user.embedding;
      for (let i = 0; i < ctx.dim; i++) out[offset + i] = u[i]!;
    },
  },
  {
    name: 'item_emb',
    doc: 'item embedding (dim floats; item_emb[i] selects one dimension)',
    width: (dim) => dim,
    compute: (ctx, out, offset) => {
      const e = ctx.itemEmbeddings;
      const o = ctx.itemOffset;
      for (let i = 0; i < ctx.dim; i++) out[offset + i] = e[o + i]!;
    },
  },
  {
    name: 'user_item_product',
    doc: 'element-wise user*item embedding product (dim floats): lets the MLP reweight dimensions',
    width: (dim) => dim,
    compute: (ctx, out, offset) => {
      const u = ctx.user.embedding;
      const e = ctx.itemEmbeddings;
      for (let i = 0; i < ctx.dim; i++) out[offset + i] = u[i]! * e[ctx.itemOffset + i]!;
    },
  },
  scalar('dot', 'user · item embedding dot product (the ALS score)', (ctx) => ctx.dot),
  scalar(
    'cosine',
    'cosine similarity of user and item embeddings (0 when either is zero)',
    (ctx) => (ctx.userNorm > 0 && ctx.itemNorm > 0 ? ctx.dot / (ctx.userNorm * ctx.itemNorm) : 0),
  ),
  scalar(
    'item_norm',
    'L2 norm of the item embedding (ALS: grows with popularity)',
    (ctx) => ctx.itemNorm,
  ),
  scalar(
    'retrieval_score',
    'score the candidate source gave the item (the dot product when none was given)',
    (ctx) => (Number.isNaN(ctx.retrievalScore) ? ctx.dot : ctx.retrievalScore),
  ),
  scalar('item_log_popularity', 'log(1 + training interaction count of the item)', logPopularity),
  scalar(
    'item_freshness',
    `exp decay of the item's age at request time, half-life ${FRESHNESS_HALF_LIFE_DAYS} days`,
    (ctx) => Math.pow(0.5, ageDays(ctx) / FRESHNESS_HALF_LIFE_DAYS),
  ),
  scalar('item_log_age_days', "log(1 + item's age in days at request time)", (ctx) =>
    Math.log1p(ageDays(ctx)),
  ),
  scalar('item_quality', 'editorial/content quality of the item, 0..1', (ctx) =>
    Number.isFinite(ctx.items.quality[ctx.item]) ? ctx.items.quality[ctx.item]! : 0.5,
  ),
  scalar(
    'category_affinity',
    "sum of the user's category affinity over the item's categories",
    categorySum,
  ),
  scalar('category_affinity_max', "largest user affinity among the item's categories", categoryMax),
  scalar(
    'user_item_prev',
    'log(1 + number of past user interactions with this item)',
    userItemPrev,
  ),
  scalar(
    'user_creator_prev',
    "log(1 + number of past user interactions with this item's creator)",
    userCreatorPrev,
  ),
  scalar(
    'recent_sim_max',
    `largest cosine between the item and the user's last ${RECENT_ITEMS} items (0 without history)`,
    (ctx) => recentSim(ctx, 'max'),
  ),
  scalar(
    'recent_sim_mean',
    `mean cosine between the item and the user's last ${RECENT_ITEMS} items (0 without history)`,
    (ctx) => recentSim(ctx, 'mean'),
  ),
  scalar(
    'recent3_sim_max',
    "largest cosine between the item and the user's last 3 items (0 without history)",
    (ctx) => recentSim(ctx, 'max3'),
  ),
  scalar(
    'recent_age_gap',
    "|log(1 + item age) − mean log(1 + age) of the user's recent items|, in days at request time (0 without history)",
    (ctx) =>
      Number.isNaN(ctx.recentLogAge) ? 0 : Math.abs(Math.log1p(ageDays(ctx)) - ctx.recentLogAge),
  ),
  scalar('user_log_interactions', 'log(1 + total past interactions of the user)', (ctx) =>
    Math.log1p(Math.max(0, ctx.user.interactionCount)),
  ),
  scalar('hour_sin', 'sin(2π·hour/24) of the request time (UTC)', (ctx) =>
    Math.sin((TWO_PI * ctx.hour) / 24),
  ),
  scalar('hour_cos', 'cos(2π·hour/24) of the request time (UTC)', (ctx) =>
    Math.cos((TWO_PI * ctx.hour) / 24),
  ),
  scalar('weekday_sin', 'sin(2π·weekday/7) of the request time (UTC, Sunday = 0)', (ctx) =>
    Math.sin((TWO_PI * ctx.weekday) / 7),
  ),
  scalar('weekday_cos', 'cos(2π·weekday/7) of the request time (UTC, Sunday = 0)', (ctx) =>
    Math.cos((TWO_PI * ctx.weekday) / 7),
  ),
  {
    name: 'device',
    doc: `device one-hot over ${DEVICE_TYPES.join('/')} (all zero when unknown)`,
    width: () => DEVICE_TYPES.length,
    compute: (ctx, out, offset) => {
      for (let i = 0; i < DEVICE_TYPES.length; i++) out[offset + i] = 0;
      if (ctx.deviceIndex >= 0) out[offset + ctx.deviceIndex] = 1;
    },
  },
  ...DEVICE_TYPES.map((d, i) =>
    scalar(`device_${d}`, `1 when the request's device_type is '${d}'`, (ctx) =>
      ctx.deviceIndex === i ? 1 : 0,
    ),
  ),
  // Crosses for the wide (linear) part: products a linear model cannot form by itself.
  scalar(
    'cross_affinity_popularity',
    'category_affinity × item_log_popularity (wide cross)',
    (ctx) => categorySum(ctx) * logPopularity(ctx),
  ),
  scalar(
    'cross_dot_affinity',
    'dot × category_affinity (wide cross)',
    (ctx) => ctx.dot * categorySum(ctx),
  ),
  scalar(
    'cross_dot_popularity',
    'dot × item_log_popularity (wide cross)',
    (ctx) => ctx.dot * logPopularity(ctx),
  ),
  scalar(
    'cross_creator_quality',
    'user_creator_prev × item_quality (wide cross)',
    (ctx) =>
      userCreatorPrev(ctx) *
      (Number.isFinite(ctx.items.quality[ctx.item]) ? ctx.items.quality[ctx.item]! : 0.5),
  ),
];

/** Every registered feature by name (indexed names like user_emb[3] resolve on demand). */
export const FEATURES: ReadonlyMap<string, FeatureDef> = new Map(BASE.map((f) => [f.name, f]));

const INDEXED = /^(user_emb|item_emb|user_item_product)\[(\d+)\]$/;

/** Raised when a model config names a feature this server does not know. */
export class UnknownFeatureError extends Error {
  readonly feature: string;
  constructor(feature: string, detail: string) {
    super(detail);
    this.name = 'UnknownFeatureError';
    this.feature = feature;
  }
}

/**
 * Resolves a feature name, including one dimension of a vector feature ("user_emb[3]").
 * Throws UnknownFeatureError naming the feature when it is not known or out of range.
 */
export function resolveFeature(name: string, dim: number): FeatureDef {
  const direct = FEATURES.get(name);
  if (direct) return direct;
  const m = INDEXED.exec(name);
  if (m) {
    const base = m[1]!;
    const index = Number(m[2]);
    if (index >= dim) {
      throw new UnknownFeatureError(
        name,
        `ranker feature '${name}': index ${index} is out of range for embedding dimension ${dim}`,
      );
    }
    const vec = FEATURES.get(base)!;
    // Compute the full vector into a scratch row and pick one element: simple, and these
    // per-dimension names only appear in models exported by other tools.
    let scratch = new Float32Array(dim);
    return {
      name,
      doc: `dimension ${index} of ${base}`,
      width: () => 1,
      compute: (ctx, out, offset) => {
        if (scratch.length < ctx.dim) scratch = new Float32Array(ctx.dim);
        vec.compute(ctx, scratch, 0);
        out[offset] = scratch[index]!;
      },
    };
  }
  const known = [...FEATURES.keys()].join(', ');
  throw new UnknownFeatureError(
    name,
    `unknown ranker feature '${name}'; known features: ${known} (and user_emb[i], item_emb[i], user_item_product[i])`,
  );
}

/** Lines of "name  doc" for help output and models/README.md. */
export function describeFeatures(): string[] {
  return [
    ...BASE.map((f) => `${f.name.padEnd(26)} ${f.doc}`),
    `${'user_emb[i] item_emb[i]'.padEnd(26)} one dimension of a vector feature (also user_item_product[i])`,
  ];
}
