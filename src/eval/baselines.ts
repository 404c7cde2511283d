// The recommenders `recserve eval` compares. Each fills a dense score per catalog row for
// one user; the evaluator excludes the user's training items and takes the top k.
import type { Interactions } from '../training/als.js';
import { dotAll, topK } from './topk.js';

export interface Scorer {
  name: string;
  /** Dense scores over all items for a user row (higher is better). */
  score(user: number, out: Float32Array): void;
}

/** Most interacted-with items in training (number of distinct users), the same for everyone. */
export function popularityScorer(data: Interactions): Scorer {
  const pop = new Float32Array(data.numItems);
  for (let i = 0; i < data.numItems; i++) pop[i] = data.itemPtr[i + 1] - data.itemPtr[i];
  return { name: 'popularity', score: (_u, out) => out.set(pop) };
}

/** ALS retrieval: user factor · item factors. */
export function alsScorer(
  userFactors: Float32Array,
  itemFactors: Float32Array,
  dim: number,
  name = 'als',
): Scorer {
  return {
    name,
    score: (u, out) => {
      dotAll(userFactors.subarray(u * dim, (u + 1) * dim), itemFactors, dim, out);
    },
  };
}

export interface ItemKnnOptions {
  /** Neighbours kept per item (default 100). */
  neighbours?: number;
  /** Shrinkage added to the cosine denominator, damping pairs with little support (default 10). */
  shrink?: number;
}

/**
 * Item-based kNN on binary co-occurrence: sim(i,j) = |U(i)∩U(j)| / (sqrt(|U(i)|·|U(j)|) + shrink),
 * top `neighbours` per item; a user's score for j is the sum of sim(i,j) over items i in
 * their history. Building costs Σ_u |I(u)|² work and O(numItems) scratch memory.
 */
export function itemKnnScorer(data: Interactions, opts: ItemKnnOptions = {}): Scorer {
  const K = opts.neighbours ?? 100;
  const shrink = opts.shrink ?? 10;
  const n = data.numItems;
  const count = new Float64Array(n);
  for (let i = 0; i < n; i++) count[i] = data.itemPtr[i + 1] - data.itemPtr[i];
  const nbrIdx = new Int32Array(n * K).fill(-1);
  const nbrSim = new Float32Array(n * K);
  const acc = new Float32Array(n);
  const touched = new Int32Array(n);
  const sims = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let nt = 0;
    for (let a = data.itemPtr[i]; a < data.itemPtr[i + 1]; a++) {
      const u = data.itemUsers[a];
      for (let b = data.userPtr[u]; b < data.userPtr[u + 1]; b++) {
        const j = data.userItems[b];
        if (j === i) continue;
        if (acc[j] === 0) touched[nt++] = j;
        acc[j]++;
      }
    }
    if (nt === 0) continue;
    sims.fill(-Infinity);
    for (let t = 0; t < nt; t++) {
      const j = touched[t];
      sims[j] = acc[j] / (Math.sqrt(count[i] * count[j]) + shrink);
      acc[j] = 0;
    }
    const best = topK(sims, K);
    for (let t = 0; t < best.length; t++) {
      nbrIdx[i * K + t] = best[t];
      nbrSim[i * K + t] = sims[best[t]];
    }
  }
  return {
    name: 'item-knn',
    score: (u, out) => {
      out.fill(0);
      for (let a = data.userPtr[u]; a < data.userPtr[u + 1]; a++) {
        const i = data.userItems[a];
        for (let t = 0; t < K; t++) {
          const j = nbrIdx[i * K + t];
          if (j < 0) break;
          out[j] += nbrSim[i * K + t];
        }
      }
    },
  };
}
