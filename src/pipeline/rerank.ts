// Multi-objective re-rank (the seed's MultiObjectiveReRanker): greedy selection by
//   0.7·engagement + 0.15·diversity + 0.1·freshness + 0.05·exploration bonus
// with ε-greedy exploration (pick from the tail with weight 1/(i+10)), category caps and
// creator caps from the request's diversity_settings, and the seed's backfill: when no
// candidate within the caps is left, the best remaining ones fill the list anyway.
//
// Diversity is the cosine distance to the closest already-selected item, computed lazily
// (see the loop below), so a list costs a few dot products per pick.

export const WEIGHTS = { engagement: 0.7, diversity: 0.15, freshness: 0.1, exploration: 0.05 };
const FRESHNESS_TAU_HOURS = 168;

export interface RerankInput {
  row: number;
  /** Ranker probability (or fallback score) in 0..1. */
  engagement: number;
}

export interface RerankOptions {
  n: number;
  dim: number;
  itemEmbeddings: Float32Array;
  itemNorms: Float32Array;
  /** Primary category number of each row (-1 when none). */
  primaryCategory: (row: number) => number;
  /** Creator id or number of a row; rows with the same value share the creator cap. */
  creatorOf: (row: number) => string | number;
  createdAt: Float64Array;
  nowMs: number;
  /** Rows the user was recently shown or interacted with (no exploration bonus). */
  recent: Set<number>;
  explorationRate: number;
  rng: () => number;
  maxPerCategory: number;
  maxPerCreator: number;
}

export interface Reranked {
  row: number;
  score: number;
  explored: boolean;
}

/** Category cap from diversity_settings.category_diversity (0 = none .. 1 = one per category). */
export function capFor(setting: number | undefined, n: number, fallback: number): number {
  if (setting === undefined) return fallback;
  if (setting <= 0) return n;
  return Math.max(1, Math.ceil(n * (1 - setting)));
}

export function rerank(cands: RerankInput[], o: RerankOptions): Reranked[] {
  const sorted = [...cands].sort((a, b) => b.engagement - a.engagement);
  const m = sorted.length;
  const { dim, itemEmbeddings: E, itemNorms } = o;
  // Everything that does not depend on the selection is computed once per candidate: the
  // score without diversity and small-integer category/creator ids (typed-array counters
  // instead of string-keyed maps). Unit vectors, packed side by side (one cache-friendly
  // block instead of rows scattered over the whole embedding table), are made the first
  // time a candidate's diversity is needed: the lazy greedy below never looks at most of
  // the tail, and gathering 150 scattered rows was the largest cost of a re-rank.
  const rows = new Int32Array(m);
  const base = new Float64Array(m);
  const cat = new Int32Array(m);
  const creator = new Int32Array(m);
  const unit = new Float32Array(m * dim);
  const maxSim = new Float64Array(m).fill(-1);
  const catIds = new Map<number, number>();
  const creatorIds = new Map<string | number, number>();
  for (let i = 0; i < m; i++) {
    const row = sorted[i]!.row;
    rows[i] = row;
    const ageHours = Math.max(0, (o.nowMs - o.createdAt[row]!) / 3_600_000);
    base[i] =
      WEIGHTS.engagement * sorted[i]!.engagement +
      WEIGHTS.freshness * Math.exp(-ageHours / FRESHNESS_TAU_HOURS) +
      (o.recent.has(row) ? 0 : WEIGHTS.exploration);
    const c = o.primaryCategory(row);
    let ci = catIds.get(c);
    if (ci === undefined) catIds.set(c, (ci = catIds.size));
    cat[i] = ci;
    const cr = o.creatorOf(row);
    let ri = creatorIds.get(cr);
    if (ri === undefined) creatorIds.set(cr, (ri = creatorIds.size));
    creator[i] = ri;
  }
  const hasUnit = new Uint8Array(m);
  const ensureUnit = (i: number): void => {
    if (hasUnit[i]) return;
    hasUnit[i] = 1;
    const row = rows[i]!;
    const inv = 1 / (itemNorms[row]! || 1);
    for (let j = 0, src = row * dim, dst = i * dim; j < dim; j++) unit[dst + j] = E[src + j]! * inv;
  };
  const catCount = new Int32Array(catIds.size);
  const creatorCount = new Int32Array(creatorIds.size);

  // Lazy greedy (CELF): diversity only falls as items are selected, so a candidate's score
  // computed against fewer selected items is an upper bound on its current score. A max-heap
  // holds those bounds; the top entry is brought up to date and pushed back until the top
  // is current, which is then the exact best. Most candidates are never refreshed for most
  // picks, so a list costs a few dozen dot products per pick instead of one per candidate.
  const alive = new Uint8Array(m).fill(1);
  let aliveCount = m;
  /** How many of `picked` each candidate's maxSim already accounts for. */
  const upTo = new Int32Array(m);
  const picked: number[] = [];
  const out: Reranked[] = [];
  const refresh = (i: number): number => {
    ensureUnit(i);
    const io = i * dim;
    let best = maxSim[i]!;
    for (let s = upTo[i]!; s < picked.length; s++) {
      const po = picked[s]! * dim;
      let d0 = 0;
      let d1 = 0;
      let j = 0;
      for (; j + 1 < dim; j += 2) {
        d0 += unit[po + j]! * unit[io + j]!;
        d1 += unit[po + j + 1]! * unit[io + j + 1]!;
      }
      if (j < dim) d0 += unit[po + j]! * unit[io + j]!;
      const dot = d0 + d1;
      if (dot > best) best = dot;
    }
    maxSim[i] = best;
    upTo[i] = picked.length;
    return base[i]! + WEIGHTS.diversity * (picked.length === 0 ? 1 : (1 - best) / 2);
  };
  const heap = new MaxHeap(m);
  for (let i = 0; i < m; i++) heap.push(i, base[i]! + WEIGHTS.diversity);
  /** Candidates outside the caps, set aside until the backfill lifts the caps. */
  const deferred: number[] = [];
  let capped = true;
  const within = (i: number) =>
    !capped ||
    (catCount[cat[i]!]! < o.maxPerCategory && creatorCount[creator[i]!]! < o.maxPerCreator);
  while (out.length < o.n && aliveCount > 0) {
    let pick = -1;
    let pickScore = -Infinity;
    let explored = false;
    if (o.explorationRate > 0 && o.rng() < o.explorationRate) {
      // ε-greedy: sample the eligible list in engagement order with weight 1/(rank + 10).
      const eligible: number[] = [];
      for (let i = 0; i < m; i++) if (alive[i] && within(i)) eligible.push(i);
      if (eligible.length > 1) {
        let total = 0;
        for (let j = 0; j < eligible.length; j++) total += 1 / (j + 10);
        let r = o.rng() * total;
        pick = eligible[eligible.length - 1]!;
        for (let j = 0; j < eligible.length; j++) {
          r -= 1 / (j + 10);
          if (r <= 0) {
            pick = eligible[j]!;
            break;
          }
        }
        pickScore = refresh(pick);
        explored = true;
      }
    }
    while (pick < 0 && heap.size > 0) {
      const i = heap.pop();
      if (!alive[i]) continue; // taken by exploration: dropped lazily
      if (!within(i)) {
        deferred.push(i);
        continue;
      }
      if (upTo[i] === picked.length) {
        pick = i;
        pickScore = heap.lastKey;
      } else {
        heap.push(i, refresh(i));
      }
    }
    if (pick < 0) {
      if (!capped || deferred.length === 0) break;
      capped = false; // the seed's backfill: caps give way rather than a short list
      for (const i of deferred.splice(0)) if (alive[i]) heap.push(i, refresh(i));
      continue;
    }
    out.push({ row: rows[pick]!, score: pickScore, explored });
    ensureUnit(pick);
    picked.push(pick);
    alive[pick] = 0;
    aliveCount--;
    catCount[cat[pick]!]!++;
    creatorCount[creator[pick]!]!++;
  }
  return out;
}

/** A binary max-heap of candidate indices by key (ties: smaller index first, deterministic). */
class MaxHeap {
  private readonly idx: Int32Array;
  private readonly key: Float64Array;
  size = 0;
  /** Key of the entry the last pop() returned. */
  lastKey = -Infinity;

  constructor(capacity: number) {
    this.idx = new Int32Array(capacity);
    this.key = new Float64Array(capacity);
  }

  private above(a: number, b: number): boolean {
    const ka = this.key[a]!;
    const kb = this.key[b]!;
    return ka > kb || (ka === kb && this.idx[a]! < this.idx[b]!);
  }

  private swap(a: number, b: number): void {
    const i = this.idx[a]!;
    this.idx[a] = this.idx[b]!;
    this.idx[b] = i;
    const k = this.key[a]!;
    this.key[a] = this.key[b]!;
    this.key[b] = k;
  }

  push(i: number, k: number): void {
    let c = this.size++;
    this.idx[c] = i;
    this.key[c] = k;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (!this.above(c, p)) break;
      this.swap(c, p);
      c = p;
    }
  }

  pop(): number {
    const top = this.idx[0]!;
    this.lastKey = this.key[0]!;
    const last = --this.size;
    if (last > 0) {
      this.idx[0] = this.idx[last]!;
      this.key[0] = this.key[last]!;
      let c = 0;
      for (;;) {
        const l = 2 * c + 1;
        if (l >= last) break;
        const r = l + 1;
        const best = r < last && this.above(r, l) ? r : l;
        if (!this.above(best, c)) break;
        this.swap(best, c);
        c = best;
      }
    }
    return top;
  }
}

/** mulberry32: a tiny seeded RNG (exploration must be reproducible in tests). */
export function seededRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
