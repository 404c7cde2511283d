// Piscina worker: feature assembly + ONNX inference for one or more requests at once.
// onnxruntime-node's run() blocks its thread for the whole inference, so it must never run
// on the event loop; each worker owns one session of the bundle it was started for (a new
// bundle gets a new pool, see models/registry.ts). Several requests in one task are scored
// in ONE session.run over their concatenated rows: fewer hand-offs and larger GEMMs.
import { assembleRankerInput, type AssembleBundle } from '../../features/assemble.js';
import type { RequestFeatures, UserFeatureView } from '../../features/catalog.js';
import type { RankerConfig } from '../../models/bundle.js';
import { RankerSession } from '../../ranker/session.js';
import { rerank, seededRng } from '../rerank.js';
import { featureItemsOf, primaryCategoryOf, type SharedItems } from './shared-bundle.js';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';

export interface RankWorkerData {
  items: SharedItems;
  ranker: RankerConfig;
  intraOpThreads: number;
  /** Nice value for this worker's thread (0 leaves it as the process's); see pool.ts. */
  nice: number;
}

/** Re-rank parameters (pipeline/rerank.ts) when the worker should also select the list. */
export interface RerankSpec {
  n: number;
  nowMs: number;
  /** Rows the user recently interacted with (no exploration bonus). */
  recent: Int32Array;
  explorationRate: number;
  /** Seed of the exploration RNG (the main thread draws it, so results are reproducible). */
  seed: number;
  maxPerCategory: number;
  maxPerCreator: number;
}

export interface RankJob {
  user: UserFeatureView;
  req: RequestFeatures;
  candidates: Int32Array;
  retrievalScores: Float32Array;
  rerank?: RerankSpec;
}

export interface RankOutput {
  /** Ranker probability per candidate, in candidate order. */
  scores: Float32Array;
  /** With job.rerank: the selected rows, their combined scores, and which were explored. */
  picks?: Int32Array;
  pickScores?: Float32Array;
  explored?: Uint8Array;
}

/** One output per job, in job order. */
export type RankResult = RankOutput[];

const data = workerData as RankWorkerData;
if (data.nice > 0) lowerThisThreadsPriority(data.nice);
const bundle: AssembleBundle = {
  dim: data.items.dim,
  itemEmbeddings: data.items.itemEmbeddings,
  items: featureItemsOf(data.items),
};
const sessionReady = RankerSession.create(data.ranker.path, data.ranker, data.items.dim, {
  intraOpNumThreads: data.intraOpThreads,
  interOpNumThreads: 1,
});

/**
 * The multi-objective re-rank runs here too: it is the main thread's largest per-request
 * CPU cost (a few hundred dot products), and the workers have the embeddings in shared
 * memory and idle time between inferences.
 */
function finish(job: RankJob, scores: Float32Array): RankOutput {
  const spec = job.rerank;
  if (!spec) return { scores };
  const items = bundle.items;
  const picked = rerank(
    Array.from(job.candidates, (row, i) => ({ row, engagement: scores[i]! })),
    {
      n: spec.n,
      dim: data.items.dim,
      itemEmbeddings: data.items.itemEmbeddings,
      itemNorms: data.items.itemNorms,
      primaryCategory: (r) => primaryCategoryOf(data.items, r),
      creatorOf: (r) => data.items.creatorOf[r]!,
      createdAt: items.createdAt,
      nowMs: spec.nowMs,
      recent: new Set(spec.recent),
      explorationRate: spec.explorationRate,
      rng: seededRng(spec.seed),
      maxPerCategory: spec.maxPerCategory,
      maxPerCreator: spec.maxPerCreator,
    },
  );
  return {
    scores,
    picks: Int32Array.from(picked, (p) => p.row),
    pickScores: Float32Array.from(picked, (p) => p.score),
    explored: Uint8Array.from(picked, (p) => (p.explored ? 1 : 0)),
  };
}

export default async function rank(jobs: RankJob[]): Promise<RankResult> {
  const session = await sessionReady;
  if (jobs.length === 1) {
    const j = jobs[0]!;
    const inputs = assembleRankerInput(
      data.ranker.inputs,
      bundle,
      j.user,
      j.req,
      j.candidates,
      j.retrievalScores,
    );
    return [finish(j, await session.score(inputs))];
  }
  // Assemble each job separately (each has its own user), then concatenate per input.
  const parts = jobs.map((j) =>
    assembleRankerInput(data.ranker.inputs, bundle, j.user, j.req, j.candidates, j.retrievalScores),
  );
  const merged: Record<string, Float32Array> = {};
  for (const name of Object.keys(parts[0]!)) {
    let len = 0;
    for (const p of parts) len += p[name]!.length;
    const buf = new Float32Array(len);
    let off = 0;
    for (const p of parts) {
      buf.set(p[name]!, off);
      off += p[name]!.length;
    }
    merged[name] = buf;
  }
  const scores = await session.score(merged);
  const out: RankResult = [];
  let off = 0;
  for (const j of jobs) {
    out.push(finish(j, scores.slice(off, off + j.candidates.length)));
    off += j.candidates.length;
  }
  return out;
}

/**
 * Lowers the scheduling priority of this worker's thread alone. On Linux a thread is a task
 * with its own id and nice value (/proc/thread-self names it), setpriority() on that id
 * changes that thread only, and threads it starts later (ONNX Runtime's) inherit it.
 * Raising a nice value needs no privilege; where the platform has no thread-self or
 * refuses, the worker runs at the process's priority, as with nice 0.
 */
function lowerThisThreadsPriority(nice: number): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // Not Linux, or /proc not mounted: the default priority is a correct, slower choice.
  }
}
