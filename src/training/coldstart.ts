// Cold start in the collaborative space. Items: a ridge regression from sparse content
// features (categories, creator, title tokens) to the ALS item factors, fitted on items
// with enough interactions; items with fewer get the prediction (blended with their weak
// ALS factors in proportion to how much data they have), so a brand-new item has a
// meaningful vector and is retrievable by the HNSW index. Users: the mean trained user.
import type { ItemCatalog } from '../models/bundle.js';

/** A fitted content → embedding map: one row of `weights` (dim floats) per feature. */
export interface ContentModel {
  dim: number;
  /** Feature names: "bias", "cat:<name>", "creator:<id>", "tok:<word>". */
  features: string[];
  /** features.length × dim, row-major. */
  weights: Float32Array;
}

export interface ContentOptions {
  /** Items with at least this many training interactions are regression targets (default 5). */
  minInteractions?: number;
  /** Ridge λ (default 1). */
  regularization?: number;
  /** Keep this many most frequent title tokens / creators (default 20000 / 20000). */
  maxTokens?: number;
  maxCreators?: number;
  /** Fit on at most this many warm items (a seeded sample beyond it; default 50000). */
  maxTrainItems?: number;
  /** CG iterations of the ridge solve (default 40). */
  iterations?: number;
}

/** Lower-cased title words of 2+ letters; digits-only words (ids, years) are dropped. */
export function titleTokens(title: string): string[] {
  const out: string[] = [];
  for (const w of title.toLowerCase().split(/[^\p{L}\p{N}]+/u))
    if (w.length >= 2 && !/^\d+$/.test(w)) out.push(w);
  return out;
}

/** Feature names describing one item (unknown names are ignored by the model). */
export function itemContentFeatures(
  title: string,
  categories: readonly string[],
  creatorId: string,
): string[] {
  const f = ['bias'];
  for (const c of categories) f.push(`cat:${c}`);
  if (creatorId) f.push(`creator:${creatorId}`);
  for (const t of new Set(titleTokens(title))) f.push(`tok:${t}`);
  return f;
}

function topByCount(counts: Map<string, number>, minCount: number, max: number): string[] {
  return [...counts.entries()]
    .filter(([, c]) => c >= minCount)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, max)
    .map(([k]) => k);
}

/** Sparse item × feature rows (binary, each row scaled to unit L2 norm). */
interface SparseRows {
  ptr: Int32Array;
  idx: Int32Array;
  val: Float32Array;
}

function itemRows(
  items: ItemCatalog,
  rows: ArrayLike<number>,
  index: Map<string, number>,
): SparseRows {
  const ptr = new Int32Array(rows.length + 1);
  const idx: number[] = [];
  const val: number[] = [];
  for (let k = 0; k < rows.length; k++) {
    const r = rows[k];
    const names = itemContentFeatures(
      items.titles[r] ?? '',
      Array.from(items.categories[r] ?? [], (c) => items.categoryNames[c]),
      items.creatorIds[r] ?? '',
    );
    const ids = [
      ...new Set(names.map((n) => index.get(n)).filter((x): x is number => x !== undefined)),
    ];
    const v = 1 / Math.sqrt(ids.length || 1);
    for (const id of ids) {
      idx.push(id);
      val.push(v);
    }
    ptr[k + 1] = idx.length;
  }
  return { ptr, idx: Int32Array.from(idx), val: Float32Array.from(val) };
}

/**
 * Fits the ridge regression W = argmin ‖XW − V‖² + λ‖W‖² by conjugate gradients on the
 * normal equations, all embedding columns at once (they share XᵀX + λI).
 */
export function fitContentModel(
  items: ItemCatalog,
  itemFactors: Float32Array,
  dim: number,
  opts: ContentOptions = {},
): ContentModel {
  const minN = opts.minInteractions ?? 5;
  const lambda = opts.regularization ?? 1;
  const maxTrain = opts.maxTrainItems ?? 50000;
  const iters = opts.iterations ?? 40;
  const n = items.ids.length;
  // Training rows: warm items with a non-zero factor, every k-th one beyond the cap
  // (deterministic, spread over the catalog).
  let warm: number[] = [];
  for (let r = 0; r < n; r++) if ((items.popularity[r] ?? 0) >= minN) warm.push(r);
  if (warm.length > maxTrain) {
    const step = warm.length / maxTrain;
    warm = Array.from({ length: maxTrain }, (_, k) => warm[Math.floor(k * step)]);
  }
  // Vocabulary from the training rows only (a feature no warm item has cannot be fitted).
  const cats = new Map<string, number>();
  const creators = new Map<string, number>();
  const toks = new Map<string, number>();
  for (const r of warm) {
    for (const c of items.categories[r] ?? []) cats.set(items.categoryNames[c], 1);
    const cr = items.creatorIds[r];
    if (cr) creators.set(cr, (creators.get(cr) ?? 0) + 1);
    for (const t of new Set(titleTokens(items.titles[r] ?? '')))
      toks.set(t, (toks.get(t) ?? 0) + 1);
  }
  const features = [
    'bias',
    ...[...cats.keys()].sort().map((c) => `cat:${c}`),
    ...topByCount(creators, 2, opts.maxCreators ?? 20000).map((c) => `creator:${c}`),
    ...topByCount(toks, 2, opts.maxTokens ?? 20000).map((t) => `tok:${t}`),
  ];
  const index = new Map(features.map((f, i) => [f, i]));
  const F = features.length;
  const d = dim;
  const X = itemRows(items, warm, index);
  const m = warm.length;
  // B = XᵀV (F×d).
  const B = new Float64Array(F * d);
  for (let k = 0; k < m; k++) {
    const vo = warm[k] * d;
    for (let p = X.ptr[k]; p < X.ptr[k + 1]; p++) {
      const fo = X.idx[p] * d;
      const x = X.val[p];
      for (let j = 0; j < d; j++) B[fo + j] += x * itemFactors[vo + j];
    }
  }
  // CG per column, vectorised across the d columns.
  const W = new Float64Array(F * d);
  const R = B.slice();
  const P = B.slice();
  const AP = new Float64Array(F * d);
  const tmp = new Float64Array(d);
  const rs = new Float64Array(d);
  for (let f = 0; f < F; f++) for (let j = 0; j < d; j++) rs[j] += R[f * d + j] ** 2;
  for (let it = 0; it < iters; it++) {
    // AP = XᵀX P + λP.
    for (let i = 0; i < F * d; i++) AP[i] = lambda * P[i];
    for (let k = 0; k < m; k++) {
      tmp.fill(0);
      for (let p = X.ptr[k]; p < X.ptr[k + 1]; p++) {
        const fo = X.idx[p] * d;
        const x = X.val[p];
        for (let j = 0; j < d; j++) tmp[j] += x * P[fo + j];
      }
      for (let p = X.ptr[k]; p < X.ptr[k + 1]; p++) {
        const fo = X.idx[p] * d;
        const x = X.val[p];
        for (let j = 0; j < d; j++) AP[fo + j] += x * tmp[j];
      }
    }
    const pAp = new Float64Array(d);
    for (let f = 0; f < F; f++) for (let j = 0; j < d; j++) pAp[j] += P[f * d + j] * AP[f * d + j];
    const a = new Float64Array(d);
    for (let j = 0; j < d; j++) a[j] = pAp[j] > 0 ? rs[j] / pAp[j] : 0;
    const rsNew = new Float64Array(d);
    for (let f = 0; f < F; f++)
      for (let j = 0; j < d; j++) {
        const i = f * d + j;
        W[i] += a[j] * P[i];
        R[i] -= a[j] * AP[i];
        rsNew[j] += R[i] * R[i];
      }
    let done = true;
    for (let j = 0; j < d; j++) if (rsNew[j] > 1e-12 * (1 + rs[j])) done = false;
    for (let f = 0; f < F; f++)
      for (let j = 0; j < d; j++) {
        const i = f * d + j;
        P[i] = R[i] + (rs[j] > 0 ? rsNew[j] / rs[j] : 0) * P[i];
      }
    rs.set(rsNew);
    if (done) break;
  }
  return { dim: d, features, weights: Float32Array.from(W) };
}

/** The content embedding of an item described by its metadata (zeros if nothing is known). */
export function contentEmbedding(
  model: ContentModel,
  title: string,
  categories: readonly string[],
  creatorId: string,
  index: Map<string, number> = new Map(model.features.map((f, i) => [f, i])),
): Float32Array {
  const ids = [
    ...new Set(
      itemContentFeatures(title, categories, creatorId)
        .map((n) => index.get(n))
        .filter((x): x is number => x !== undefined),
    ),
  ];
  const out = new Float32Array(model.dim);
  if (ids.length === 0) return out;
  const v = 1 / Math.sqrt(ids.length);
  for (const id of ids)
    for (let j = 0; j < model.dim; j++) out[j] += v * model.weights[id * model.dim + j];
  return out;
}

/**
 * Replaces the factors of items with fewer than `minInteractions` training interactions by
 * (n/min)·ALS + (1 − n/min)·content, in place. Returns how many items were touched.
 */
export function applyColdItems(
  items: ItemCatalog,
  itemFactors: Float32Array,
  model: ContentModel,
  minInteractions = 5,
): number {
  const d = model.dim;
  const index = new Map(model.features.map((f, i) => [f, i]));
  let touched = 0;
  for (let r = 0; r < items.ids.length; r++) {
    const cnt = items.popularity[r] ?? 0;
    if (cnt >= minInteractions) continue;
    const e = contentEmbedding(
      model,
      items.titles[r] ?? '',
      Array.from(items.categories[r] ?? [], (c) => items.categoryNames[c]),
      items.creatorIds[r] ?? '',
      index,
    );
    const w = cnt / minInteractions;
    for (let j = 0; j < d; j++)
      itemFactors[r * d + j] = w * itemFactors[r * d + j] + (1 - w) * e[j];
    touched++;
  }
  return touched;
}

/** Mean of the non-zero user rows: the embedding served to a user with no history. */
export function meanUserEmbedding(userFactors: Float32Array, dim: number): Float32Array {
  const out = new Float64Array(dim);
  let n = 0;
  for (let o = 0; o < userFactors.length; o += dim) {
    let nz = false;
    for (let j = 0; j < dim; j++) if (userFactors[o + j] !== 0) nz = true;
    if (!nz) continue;
    for (let j = 0; j < dim; j++) out[j] += userFactors[o + j];
    n++;
  }
  return Float32Array.from(out, (x) => (n > 0 ? x / n : 0));
}
