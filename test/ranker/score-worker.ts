// Worker-thread half of worker.test.ts: what a Piscina task does with a ranker. It gets
// plain data (structured-cloned), builds the features and scores them with its own session.
import { parentPort, workerData } from 'node:worker_threads';
import { assembleRankerInput } from '../../src/features/assemble.js';
import type { RequestFeatures, UserFeatureView } from '../../src/features/catalog.js';
import type { ItemCatalog, RankerInputSpec } from '../../src/models/bundle.js';
import { RankerSession } from '../../src/ranker/session.js';

interface Job {
  onnx: Uint8Array;
  config: { inputs: RankerInputSpec[]; output: string; outputKind: 'logit' | 'probability' };
  dim: number;
  items: ItemCatalog;
  itemEmbeddings: Float32Array;
  user: UserFeatureView;
  req: RequestFeatures;
  candidates: Int32Array;
}

const job = workerData as Job;
const session = await RankerSession.create(job.onnx, job.config, job.dim);
const inputs = assembleRankerInput(
  job.config.inputs,
  { dim: job.dim, items: job.items, itemEmbeddings: job.itemEmbeddings },
  job.user,
  job.req,
  job.candidates,
);
const scores = await session.score(inputs);
await session.release();
parentPort!.postMessage(scores);
