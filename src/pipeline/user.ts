// What the pipeline derives from a user's stored state against ONE serving model: the query
// embedding for retrieval, the ranker's UserFeatureView, and the rows to exclude. Item ids in
// the store are external strings (they outlive models); rows are resolved here per model.
import type { UserState } from '../features/store.js';
import { isPositive } from '../features/store.js';
import { RECENT_ITEMS, type UserFeatureView } from '../features/catalog.js';
import type { ServingModel } from '../models/registry.js';

/** Weight of the live session in a trained user's query (the seed's lukewarm blend). */
const SESSION_BLEND = 0.3;
/** Recency half-life of session items in the session embedding (seed: exp(-hours / 24)). */
const SESSION_TAU_MS = 24 * 3_600_000;

export interface UserContext {
  userId: string;
  state: UserState | null;
  /** Row in the bundle's user embeddings, when the user was in the training data. */
  trainedRow: number | undefined;
  /** Positive recent items (rows), newest first, that this model knows. */
  recentRows: number[];
  recentIds: string[];
  query: Float32Array;
  /** seen ∪ blocked ∪ request's exclude_items, as sorted unique rows. */
  exclude: Uint32Array;
  excludeSet: Set<number>;
}

export function buildUserContext(
  m: ServingModel,
  userId: string,
  state: UserState | null,
  excludeIds: string[] | undefined,
  nowMs: number,
): UserContext {
  const { bundle } = m;
  const { dim, items } = bundle;
  const trainedRow = bundle.userIndex.get(userId);
  const recentRows: number[] = [];
  const recentIds: string[] = [];
  const seenRecent = new Set<number>();
  let session: Float32Array | null = null;
  if (state) {
    let wsum = 0;
    for (const r of state.recent) {
      if (!isPositive(r.event)) continue;
      const row = items.index.get(r.itemId);
      if (row === undefined || seenRecent.has(row)) continue;
      seenRecent.add(row);
      recentRows.push(row);
      recentIds.push(r.itemId);
      const w = Math.exp(-Math.max(0, nowMs - r.timestampMs) / SESSION_TAU_MS);
      if (w <= 0) continue;
      session ??= new Float32Array(dim);
      const off = row * dim;
      for (let j = 0; j < dim; j++) session[j]! += w * m.items.itemEmbeddings[off + j]!;
      wsum += w;
    }
    if (session && wsum > 0) for (let j = 0; j < dim; j++) session[j]! /= wsum;
  }
  let query: Float32Array;
  if (trainedRow !== undefined) {
    query = bundle.userEmbeddings.slice(trainedRow * dim, trainedRow * dim + dim);
    if (session) {
      // Match scales before blending: ALS user vectors and item means differ in norm.
      const qn = norm(query);
      const sn = norm(session) || 1;
      for (let j = 0; j < dim; j++) {
        query[j] = (1 - SESSION_BLEND) * query[j]! + SESSION_BLEND * session[j]! * (qn / sn);
      }
    }
  } else if (session) {
    query = session;
  } else {
    query = Float32Array.from(bundle.coldUserEmbedding);
  }
  const excludeSet = new Set<number>();
  const add = (id: string) => {
    const row = items.index.get(id);
    if (row !== undefined) excludeSet.add(row);
  };
  if (state) {
    for (const id of state.seen) add(id);
    for (const id of state.blocked) add(id);
  }
  if (excludeIds) for (const id of excludeIds) add(id);
  const exclude = Uint32Array.from(excludeSet).sort();
  return { userId, state, trainedRow, recentRows, recentIds, query, exclude, excludeSet };
}

function norm(v: Float32Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return Math.sqrt(s);
}

/** The ranker's view of the user (features/catalog.ts UserFeatureView) for this model. */
export function featureView(m: ServingModel, u: UserContext): UserFeatureView {
  const { items } = m.bundle;
  const affinity = new Float32Array(items.categoryNames.length);
  const itemCounts = new Map<number, number>();
  const creatorCounts = new Map<string, number>();
  let interactionCount = 0;
  if (u.state) {
    let total = 0;
    for (const v of u.state.categoryCounts.total.values()) total += v;
    if (total > 0) {
      for (const [name, v] of u.state.categoryCounts.total) {
        const c = m.categoryIndex.get(name);
        if (c !== undefined) affinity[c] = v / total;
      }
    }
    for (const [id, v] of u.state.itemCounts) {
      const row = items.index.get(id);
      if (row !== undefined) itemCounts.set(row, v);
    }
    for (const [c, v] of u.state.creatorCounts) creatorCounts.set(c, v);
    interactionCount = u.state.interactionCount;
  }
  return {
    embedding: u.query,
    categoryAffinity: affinity,
    itemCounts,
    creatorCounts,
    interactionCount,
    // Newest first, distinct, positive events only: what the recent_sim_* features read.
    recentItems: Int32Array.from(u.recentRows.slice(0, RECENT_ITEMS)),
  };
}

/** The user's preferred categories (numbers), strongest first: last 24 h, else all time. */
export function preferredCategories(m: ServingModel, state: UserState | null, k: number): number[] {
  if (!state) return [];
  const pick =
    state.categoryCounts['24h'].size > 0 ? state.categoryCounts['24h'] : state.categoryCounts.total;
  return [...pick.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([name]) => m.categoryIndex.get(name))
    .filter((c): c is number => c !== undefined)
    .slice(0, k);
}
