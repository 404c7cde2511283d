// Piscina worker: feature assembly + ONNX inference for one or more requests at once.
// onnxruntime-node's run() blocks its thread for the whole inference, so it must never run
// on the event loop; each worker owns one session of the bundle it was started for (a new
// bundle gets a new pool, see models/registry.ts). Several requests in one task are scored
// in ONE session.run over their concatenated rows: fewer hand-offs and larger GEMMs.
import { assembleRankerInput, type AssembleBundle } from '../../features/assemble.js';
import type { RequestFeatures, UserFeatureView } from '../../features/catalog.js';
import type { RankerConfig } from '../../models/bundle.js';
import { RankerSession } from '../../ranker/session.js';
import { featureItemsOf, type SharedItems } from './shared-bundle.js';
import { workerData } from 'node:worker_threads';

export interface RankWorkerData {
  items: SharedItems;
  ranker: RankerConfig;
  intraOpThreads: number;
}

export interface RankJob {
  user: UserFeatureView;
  req: RequestFeatures;
  candidates: Int32Array;
  retrievalScores: Float32Array;
}

/** Scores per job, in job order; each a probability per candidate. */
export type RankResult = Float32Array[];

const data = workerData as RankWorkerData;
const bundle: AssembleBundle = {
  dim: data.items.dim,
  itemEmbeddings: data.items.itemEmbeddings,
  items: featureItemsOf(data.items),
};
const sessionReady = RankerSession.create(data.ranker.path, data.ranker, data.items.dim, {
  intraOpNumThreads: data.intraOpThreads,
  interOpNumThreads: 1,
});

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
    return [await session.score(inputs)];
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
    out.push(scores.slice(off, off + j.candidates.length));
    off += j.candidates.length;
  }
  return out;
}
