// Offline ranking metrics with binary relevance (an item is relevant when the user
// interacted with it in the held-out period):
//   Recall@K   = |top-K ∩ relevant| / |relevant|
//   NDCG@K     = Σ_{hits at rank r (1-based) ≤ K} 1/log2(r+1)  /  Σ_{r ≤ min(K,|relevant|)} 1/log2(r+1)
//   MRR        = 1 / rank of the first relevant item in the list (0 when none; list length = cut-off)
//   Coverage@K = distinct items shown in any top-K list / catalog size
//   ILD@K      = mean over lists of the mean pairwise category distance (1 − Jaccard) in top-K
// Per-user values are averaged over users with at least one relevant item.

export interface Metrics {
  users: number;
  recall10: number;
  recall20: number;
  ndcg10: number;
  mrr: number;
  coverage10: number;
  diversity10: number;
}

export function recallAt(list: ArrayLike<number>, relevant: Set<number>, k: number): number {
  if (relevant.size === 0) return 0;
  let hits = 0;
  const n = Math.min(k, list.length);
  for (let r = 0; r < n; r++) if (relevant.has(list[r])) hits++;
  return hits / relevant.size;
}

export function ndcgAt(list: ArrayLike<number>, relevant: Set<number>, k: number): number {
  if (relevant.size === 0) return 0;
  let dcg = 0;
  const n = Math.min(k, list.length);
  for (let r = 0; r < n; r++) if (relevant.has(list[r])) dcg += 1 / Math.log2(r + 2);
  let idcg = 0;
  const m = Math.min(k, relevant.size);
  for (let r = 0; r < m; r++) idcg += 1 / Math.log2(r + 2);
  return dcg / idcg;
}

export function reciprocalRank(list: ArrayLike<number>, relevant: Set<number>): number {
  for (let r = 0; r < list.length; r++) if (relevant.has(list[r])) return 1 / (r + 1);
  return 0;
}

/** Mean pairwise (1 − Jaccard) distance between the category sets of the first k items. */
export function intraListDiversity(
  list: ArrayLike<number>,
  categories: Uint16Array[],
  k: number,
): number {
  const n = Math.min(k, list.length);
  if (n < 2) return 0;
  let sum = 0;
  let pairs = 0;
  for (let a = 0; a < n; a++) {
    const ca = categories[list[a]];
    for (let b = a + 1; b < n; b++) {
      const cb = categories[list[b]];
      let inter = 0;
      for (let i = 0; i < ca.length; i++) if (cb.includes(ca[i])) inter++;
      const union = ca.length + cb.length - inter;
      sum += union === 0 ? 0 : 1 - inter / union;
      pairs++;
    }
  }
  return sum / pairs;
}

/** Accumulates per-user lists into the averaged Metrics. */
export class MetricAccumulator {
  private n = 0;
  private sums = { recall10: 0, recall20: 0, ndcg10: 0, mrr: 0, diversity10: 0 };
  private shown: Uint8Array;

  constructor(
    private readonly numItems: number,
    private readonly categories: Uint16Array[],
  ) {
    this.shown = new Uint8Array(numItems);
  }

  /** One user's ranked list (best first, at least 20 long when possible) and held-out items. */
  add(list: ArrayLike<number>, relevant: Set<number>): void {
    if (relevant.size === 0) return;
    this.n++;
    this.sums.recall10 += recallAt(list, relevant, 10);
    this.sums.recall20 += recallAt(list, relevant, 20);
    this.sums.ndcg10 += ndcgAt(list, relevant, 10);
    this.sums.mrr += reciprocalRank(list, relevant);
    this.sums.diversity10 += intraListDiversity(list, this.categories, 10);
    const m = Math.min(10, list.length);
    for (let r = 0; r < m; r++) this.shown[list[r]] = 1;
  }

  result(): Metrics {
    const n = Math.max(1, this.n);
    let shown = 0;
    for (let i = 0; i < this.numItems; i++) shown += this.shown[i];
    return {
      users: this.n,
      recall10: this.sums.recall10 / n,
      recall20: this.sums.recall20 / n,
      ndcg10: this.sums.ndcg10 / n,
      mrr: this.sums.mrr / n,
      coverage10: this.numItems > 0 ? shown / this.numItems : 0,
      diversity10: this.sums.diversity10 / n,
    };
  }
}
