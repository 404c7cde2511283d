// Similar items (POST /v1/similar). Three notions, as the seed's API:
// - collaborative: cosine between item embeddings, over the HNSW graph's cosine neighbours
//   (older bundles' graphs are by inner product: there, the exact search's top by inner
//   product, re-scored by cosine);
// - content: shared categories (Jaccard) and creator, over a pool of HNSW neighbours,
//   the same creator's items and the same categories' popular items;
// - hybrid: the mean of both over the union of their pools.
// With a user_id, blocked items are dropped and the user's taste nudges the order.
import type { SimilarItem, SimilarityType } from '../api/types.js';
import type { ServingModel } from '../models/registry.js';

export interface SimilarQuery {
  row: number;
  n: number;
  type: SimilarityType;
  exclude: Set<number>;
  /** Query vector of the user (personalisation), if any. */
  user: Float32Array | null;
  efSearch: number;
}

function cosine(m: ServingModel, a: number, b: number): number {
  const { dim } = m.bundle;
  const E = m.items.itemEmbeddings;
  let dot = 0;
  for (let j = 0; j < dim; j++) dot += E[a * dim + j]! * E[b * dim + j]!;
  return dot / ((m.itemNorms[a]! || 1) * (m.itemNorms[b]! || 1));
}

/** Does item b have category c? (An item has a handful of categories: a scan is fastest.) */
function hasCategory(m: ServingModel, b: number, c: number): boolean {
  const { catOffsets, catData } = m.items;
  for (let i = catOffsets[b]!, e = catOffsets[b + 1]!; i < e; i++)
    if (catData[i] === c) return true;
  return false;
}

function sameCreator(m: ServingModel, a: number, b: number): boolean {
  const c = m.items.creatorOf[a]!;
  return c >= 0 && c === m.items.creatorOf[b];
}

/** Is position i of the flat category data the first occurrence of its value in its item? */
function firstOfItem(m: ServingModel, from: number, i: number): boolean {
  const { catData } = m.items;
  for (let j = from; j < i; j++) if (catData[j] === catData[i]) return false;
  return true;
}

/**
 * Content similarity: 0.7 × Jaccard of the category sets + 0.3 for the same creator. Numbers
 * only: it runs for every item of the pool (hundreds); the explanation strings are made for
 * the few answered (commonAttributes).
 */
function contentScore(m: ServingModel, a: number, b: number): number {
  const { catOffsets, catData } = m.items;
  let na = 0;
  let common = 0;
  for (let i = catOffsets[a]!, e = catOffsets[a + 1]!; i < e; i++) {
    if (!firstOfItem(m, catOffsets[a]!, i)) continue;
    na++;
    if (hasCategory(m, b, catData[i]!)) common++;
  }
  let nb = 0;
  for (let i = catOffsets[b]!, e = catOffsets[b + 1]!; i < e; i++)
    if (firstOfItem(m, catOffsets[b]!, i)) nb++;
  const union = na + nb - common;
  return (0.7 * common) / (union || 1) + (sameCreator(m, a, b) ? 0.3 : 0);
}

/** "category:<name>" for each shared category, then "creator:<id>" when the creator is shared. */
function commonAttributes(m: ServingModel, a: number, b: number): string[] {
  const { items } = m.bundle;
  const { catOffsets, catData } = m.items;
  const out: string[] = [];
  for (let i = catOffsets[a]!, e = catOffsets[a + 1]!; i < e; i++) {
    const c = catData[i]!;
    if (firstOfItem(m, catOffsets[a]!, i) && hasCategory(m, b, c))
      out.push(`category:${items.categoryNames[c]}`);
  }
  if (sameCreator(m, a, b)) out.push(`creator:${items.creatorIds[a]}`);
  return out;
}

export async function similarItems(m: ServingModel, q: SimilarQuery): Promise<SimilarItem[]> {
  const { dim, items } = m.bundle;
  const vec = m.items.itemEmbeddings.subarray(q.row * dim, q.row * dim + dim);
  // Both searches drop the item itself and the excluded items inside the search.
  const want = Math.min(items.ids.length, q.n * 3);
  const ex = Uint32Array.from(new Set([...q.exclude, q.row])).sort();
  const pool = new Set<number>();
  // The cosine neighbours: a cosine graph (bundles built since the metric existed) finds
  // them for every type. An older bundle's inner-product graph cannot, and neither can the
  // exact index, which scores by inner product too: there the collaborative pool is the
  // top by inner product, mostly the catalogue's largest (most popular) vectors, and the
  // cosine below reorders only those.
  const cosineGraph = m.hnsw.metric === 'cosine';
  if (q.type !== 'content' && !cosineGraph) {
    const hits = await m.collaborative.search(vec, want, ex);
    for (const id of hits.ids) pool.add(id);
  }
  if (q.type !== 'collaborative' || cosineGraph) {
    const res = await m.hnsw.search(vec, want, {
      efSearch: Math.max(q.efSearch, want),
      exclude: [ex],
    });
    for (let i = 0; i < res.k; i++) if (res.ids[i] !== 0xffffffff) pool.add(res.ids[i]!);
  }
  if (q.type !== 'collaborative') {
    const creator = items.creatorIds[q.row];
    for (const r of (creator && m.creatorRows.get(creator)) || []) pool.add(r);
    const { catOffsets, catData } = m.items;
    for (const c of catData.subarray(catOffsets[q.row]!, catOffsets[q.row + 1]!)) {
      const list = m.popularByCategory[c]!;
      for (let i = 0; i < Math.min(50, list.length); i++) pool.add(list[i]!);
    }
  }
  pool.delete(q.row);
  for (const r of q.exclude) pool.delete(r);
  const scored: { row: number; score: number }[] = [];
  for (const r of pool) {
    const cos = q.type === 'content' ? 0 : cosine(m, q.row, r);
    const content = q.type === 'collaborative' ? 0 : contentScore(m, q.row, r);
    let score =
      q.type === 'collaborative' ? cos : q.type === 'content' ? content : 0.5 * cos + 0.5 * content;
    if (q.user) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += q.user[j]! * m.items.itemEmbeddings[r * dim + j]!;
      score += 0.1 * Math.tanh(dot);
    }
    scored.push({ row: r, score });
  }
  scored.sort((a, b) => b.score - a.score || a.row - b.row);
  return scored.slice(0, q.n).map((s) => ({
    item_id: items.ids[s.row]!,
    similarity_score: Math.round(s.score * 1e6) / 1e6,
    similarity_type: q.type,
    common_attributes: commonAttributes(m, q.row, s.row),
  }));
}
