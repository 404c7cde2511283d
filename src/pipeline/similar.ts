// Similar items (POST /v1/similar). Three notions, as the seed's API:
// - collaborative: cosine between item embeddings (exact search, re-scored by cosine so
//   popular items with large norms do not win by size alone);
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

function contentScore(m: ServingModel, a: number, b: number): { score: number; common: string[] } {
  const { items } = m.bundle;
  const { catOffsets, catData } = m.items;
  const ca = catData.subarray(catOffsets[a]!, catOffsets[a + 1]!);
  const cb = catData.subarray(catOffsets[b]!, catOffsets[b + 1]!);
  const common: string[] = [];
  for (const c of ca) if (cb.includes(c)) common.push(`category:${items.categoryNames[c]}`);
  const union = new Set([...ca, ...cb]).size || 1;
  const sameCreator = !!items.creatorIds[a] && items.creatorIds[a] === items.creatorIds[b];
  if (sameCreator) common.push(`creator:${items.creatorIds[a]}`);
  return {
    score: (0.7 * (common.length - (sameCreator ? 1 : 0))) / union + (sameCreator ? 0.3 : 0),
    common,
  };
}

export async function similarItems(m: ServingModel, q: SimilarQuery): Promise<SimilarItem[]> {
  const { dim, items } = m.bundle;
  const vec = m.items.itemEmbeddings.subarray(q.row * dim, q.row * dim + dim);
  const want = Math.min(items.ids.length, q.n * 3 + q.exclude.size + 1);
  const pool = new Set<number>();
  if (q.type !== 'content') {
    const ex = Uint32Array.from(new Set([...q.exclude, q.row])).sort();
    const hits = await m.collaborative.search(vec, want, ex);
    for (const id of hits.ids) pool.add(id);
  }
  if (q.type !== 'collaborative') {
    const res = await m.hnsw.search(vec, Math.min(want, items.ids.length), {
      efSearch: Math.max(q.efSearch, want),
    });
    for (let i = 0; i < res.k; i++) if (res.ids[i] !== 0xffffffff) pool.add(res.ids[i]!);
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
  const scored: { row: number; score: number; common: string[] }[] = [];
  for (const r of pool) {
    const cos = cosine(m, q.row, r);
    const content = contentScore(m, q.row, r);
    let score =
      q.type === 'collaborative'
        ? cos
        : q.type === 'content'
          ? content.score
          : 0.5 * cos + 0.5 * content.score;
    if (q.user) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += q.user[j]! * m.items.itemEmbeddings[r * dim + j]!;
      score += 0.1 * Math.tanh(dot);
    }
    scored.push({ row: r, score, common: content.common });
  }
  scored.sort((a, b) => b.score - a.score || a.row - b.row);
  return scored.slice(0, q.n).map((s) => ({
    item_id: items.ids[s.row]!,
    similarity_score: Math.round(s.score * 1e6) / 1e6,
    similarity_type: q.type,
    common_attributes: s.common,
  }));
}
