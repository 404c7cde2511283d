// Offline evaluation on a temporal split: for each user with held-out items they had not
// seen in training, rank the catalog minus their training items and score the list.
import type { InteractionLog } from '../data/types.js';
import type { Interactions } from '../training/als.js';
import type { Scorer } from './baselines.js';
import { MetricAccumulator, type Metrics } from './metrics.js';
import { topK } from './topk.js';

/** Held-out relevant items per user row: distinct test items absent from the user's training items. */
export function heldOutSets(train: Interactions, test: InteractionLog): Map<number, Set<number>> {
  const out = new Map<number, Set<number>>();
  const seen = new Set<number>();
  let lastUser = -1;
  for (let e = 0; e < test.length; e++) {
    const u = test.user[e];
    if (u !== lastUser) {
      seen.clear();
      if (u < train.numUsers)
        for (let k = train.userPtr[u]; k < train.userPtr[u + 1]; k++) seen.add(train.userItems[k]);
      lastUser = u;
    }
    const it = test.item[e];
    if (seen.has(it)) continue;
    let s = out.get(u);
    if (!s) out.set(u, (s = new Set()));
    s.add(it);
  }
  return out;
}

export interface EvalOptions {
  /** Evaluate at most this many users (the first by row; default all). */
  maxUsers?: number;
  /** List length (default 20). */
  listLength?: number;
  categories: Uint16Array[];
}

/** Marks the user's training items in `mask` (and returns a function that clears them). */
export function maskTrainItems(train: Interactions, u: number, mask: Uint8Array): () => void {
  const a = u < train.numUsers ? train.userPtr[u] : 0;
  const b = u < train.numUsers ? train.userPtr[u + 1] : 0;
  for (let k = a; k < b; k++) mask[train.userItems[k]] = 1;
  return () => {
    for (let k = a; k < b; k++) mask[train.userItems[k]] = 0;
  };
}

export function evaluateScorer(
  scorer: Scorer,
  train: Interactions,
  relevant: Map<number, Set<number>>,
  opts: EvalOptions,
): Metrics {
  const acc = new MetricAccumulator(train.numItems, opts.categories);
  const scores = new Float32Array(train.numItems);
  const mask = new Uint8Array(train.numItems);
  const L = opts.listLength ?? 20;
  let n = 0;
  for (const [u, rel] of relevant) {
    if (opts.maxUsers !== undefined && n >= opts.maxUsers) break;
    n++;
    scorer.score(u, scores);
    const clear = maskTrainItems(train, u, mask);
    acc.add(topK(scores, L, mask), rel);
    clear();
  }
  return acc.result();
}
