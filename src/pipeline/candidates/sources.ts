// The candidate sources of a warm request (the seed's CandidateGenerator), each returning
// item rows with a retrieval score and, where it has one, the item that led to it. They run
// in parallel; merge() dedupes, drops excluded/filtered rows, and interleaves the sources so
// every one is represented when the list is capped (the seed samples; round-robin keeps the
// result deterministic).
import type { FeatureStore } from '../../features/store.js';
import type { ServingModel } from '../../models/registry.js';
import type { UserContext } from '../user.js';

export type SourceName =
  'collaborative' | 'similar_to_recent' | 'trending' | 'popular_in_category' | 'popular';

export interface Candidate {
  row: number;
  score: number;
  source: SourceName;
  sourceItems: string[];
}

/**
 * Collaborative: exact top-k of the user's query over all item embeddings, batched with
 * concurrent requests' queries unless `k` exceeds `maxSharedK`.
 */
export async function collaborative(
  m: ServingModel,
  u: UserContext,
  k: number,
  allow: Uint32Array | null,
  maxSharedK = Infinity,
): Promise<Candidate[]> {
  if (k <= 0) return [];
  // A category filter restricts the scan itself (allow-list), which the shared batch
  // cannot express per query; a deeper k than usual would be every batched query's k (a
  // pass scans for its largest), slowing the default requests that share it. Either takes
  // its own pass.
  const hits =
    allow || k > maxSharedK
      ? await m.exact.search(u.query, k, { exclude: [u.exclude], allow }).then((r) => {
          let n = 0;
          while (n < r.k && r.ids[n] !== 0xffffffff) n++;
          return { ids: r.ids.subarray(0, n), scores: r.scores.subarray(0, n) };
        })
      : await m.collaborative.search(u.query, k, u.exclude);
  const out: Candidate[] = [];
  for (let i = 0; i < hits.ids.length; i++) {
    out.push({
      row: hits.ids[i]!,
      score: hits.scores[i]!,
      source: 'collaborative',
      sourceItems: [],
    });
  }
  return out;
}

/**
 * Similar to recent: HNSW neighbours of the user's last few positive items, one search.
 * The user's seen, blocked and excluded items (the seeds among them) and items outside a
 * category filter are filtered inside the search, so each seed brings `perItem` items the
 * merge keeps rather than neighbours the user has already watched.
 */
export async function similarToRecent(
  m: ServingModel,
  u: UserContext,
  seeds: number,
  perItem: number,
  efSearch: number,
  allow: Uint32Array | null,
): Promise<Candidate[]> {
  const rows = u.recentRows.slice(0, seeds);
  if (rows.length === 0 || perItem <= 0 || allow?.length === 0) return [];
  const { dim } = m.bundle;
  const q = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => q.set(m.items.itemEmbeddings.subarray(r * dim, r * dim + dim), i * dim));
  const seen = new Uint32Array(u.exclude.length + rows.length);
  seen.set(u.exclude);
  seen.set(rows, u.exclude.length);
  const res = await m.hnsw.search(q, perItem, {
    efSearch,
    exclude: rows.map(() => seen),
    allow,
  });
  const out: Candidate[] = [];
  for (let i = 0; i < rows.length; i++) {
    for (let j = 0; j < res.k; j++) {
      const id = res.ids[i * res.k + j]!;
      if (id === 0xffffffff) break; // fewer admissible items than asked for
      out.push({
        row: id,
        score: res.scores[i * res.k + j]!,
        source: 'similar_to_recent',
        sourceItems: [u.recentIds[i]!],
      });
    }
  }
  return out;
}

/** Trending now (store's time-decayed counters): last hour, else the last day. */
export async function trending(
  m: ServingModel,
  store: Pick<FeatureStore, 'trending'>,
  k: number,
  nowMs: number,
): Promise<Candidate[]> {
  if (k <= 0) return [];
  let list = await store.trending('1h', k, nowMs);
  if (list.length === 0) list = await store.trending('24h', k, nowMs);
  const out: Candidate[] = [];
  for (const t of list) {
    const row = m.bundle.items.index.get(t.itemId);
    if (row !== undefined) out.push({ row, score: t.score, source: 'trending', sourceItems: [] });
  }
  return out;
}

/** Popular in the user's preferred categories (training popularity). */
export function popularInCategories(
  m: ServingModel,
  categories: number[],
  perCategory: number,
): Candidate[] {
  const out: Candidate[] = [];
  for (const c of categories) {
    const list = m.popularByCategory[c];
    if (!list) continue;
    for (let i = 0; i < Math.min(perCategory, list.length); i++) {
      const row = list[i]!;
      out.push({
        row,
        score: m.bundle.items.popularity[row]!,
        source: 'popular_in_category',
        sourceItems: [],
      });
    }
  }
  return out;
}

export interface ItemFilter {
  /** Allowed category numbers (null = any). */
  categories: Set<number> | null;
  minQuality: number;
}

export function passes(m: ServingModel, row: number, f: ItemFilter): boolean {
  if (f.minQuality > 0 && m.bundle.items.quality[row]! < f.minQuality) return false;
  if (f.categories) {
    const { catOffsets, catData } = m.items;
    let ok = false;
    for (let i = catOffsets[row]!, e = catOffsets[row + 1]!; i < e; i++) {
      if (f.categories.has(catData[i]!)) {
        ok = true;
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

/**
 * Dedupe across sources (first source in round-robin order wins, its source items are
 * kept), drop excluded and filtered rows, cap at `max`.
 */
export function merge(
  m: ServingModel,
  lists: Candidate[][],
  exclude: Set<number>,
  filter: ItemFilter,
  max: number,
): Candidate[] {
  const out: Candidate[] = [];
  const taken = new Set<number>();
  const pos = lists.map(() => 0);
  let progressed = true;
  while (out.length < max && progressed) {
    progressed = false;
    for (let s = 0; s < lists.length && out.length < max; s++) {
      const list = lists[s]!;
      while (pos[s]! < list.length) {
        const c = list[pos[s]!++]!;
        if (taken.has(c.row) || exclude.has(c.row) || !passes(m, c.row, filter)) continue;
        taken.add(c.row);
        out.push(c);
        progressed = true;
        break;
      }
    }
  }
  return out;
}

/**
 * Tops up a list its sources left short of `want` (a strict min_quality_score, a user who
 * has seen most of what the scan found) with the catalog's most popular items (the top
 * 2,000) that pass the filter and are neither excluded nor taken; returns how many it added.
 * A full list costs nothing here.
 */
export function backfillPopular(
  m: ServingModel,
  cands: Candidate[],
  want: number,
  exclude: Set<number>,
  filter: ItemFilter,
): number {
  if (cands.length >= want) return 0;
  const taken = new Set<number>();
  for (const c of cands) taken.add(c.row);
  const before = cands.length;
  for (let i = 0; i < m.popular.length && cands.length < want; i++) {
    const row = m.popular[i]!;
    if (taken.has(row) || exclude.has(row) || !passes(m, row, filter)) continue;
    cands.push({
      row,
      score: m.bundle.items.popularity[row]!,
      source: 'popular',
      sourceItems: [],
    });
  }
  return cands.length - before;
}
