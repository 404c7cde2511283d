// Feature assembly and scoring run inside a worker thread (as the server's Piscina pool does)
// and give the main thread's answer bit for bit: everything they need crosses by
// structured clone (typed arrays, Maps), and nothing depends on main-thread state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { assembleRankerInput, userViewFromEvents } from '../../src/features/assemble.js';
import type { ItemCatalog } from '../../src/models/bundle.js';
import { DeepWideModel, rng } from '../../src/ranker/mlp.js';
import { exportDeepWide } from '../../src/ranker/onnx.js';
import { RankerSession } from '../../src/ranker/session.js';
import { defaultRankerInputs } from '../../src/ranker/train.js';

test('a worker thread assembles and scores exactly what the main thread does', async () => {
  const dim = 8;
  const n = 300;
  const r = rng(21);
  const items: ItemCatalog = {
    ids: Array.from({ length: n }, (_, i) => `i${i}`),
    index: new Map(),
    titles: [],
    categoryNames: ['a', 'b', 'c', 'd'],
    categories: Array.from({ length: n }, (_, i) => Uint16Array.of(i % 4)),
    creatorIds: Array.from({ length: n }, (_, i) => `c${i % 9}`),
    createdAt: Float64Array.from({ length: n }, (_, i) => Date.UTC(2024, 0, 1) + i * 86_400_000),
    quality: Float32Array.from({ length: n }, () => r()),
    popularity: Float32Array.from({ length: n }, () => Math.floor(r() * 50)),
  };
  const itemEmbeddings = Float32Array.from({ length: n * dim }, () => r() - 0.5);
  const history = [3, 14, 15, 92, 65, 35];
  const user = userViewFromEvents(
    items,
    Float32Array.from({ length: dim }, () => r() - 0.5),
    history,
    history.map((_, i) => Date.UTC(2025, 0, 1) + i * 60_000),
  );
  const spec = defaultRankerInputs(dim);
  const probe = assembleRankerInput(
    spec,
    { dim, items, itemEmbeddings },
    user,
    { timestampMs: 0, device: undefined },
    Int32Array.of(0),
  );
  const model = new DeepWideModel(
    { deepIn: probe.deep!.length, wideIn: probe.wide!.length, hidden: [16, 8] },
    4,
  );
  const config = { inputs: spec, output: 'logit', outputKind: 'logit' as const };
  const onnx = exportDeepWide(model);
  const req = { timestampMs: Date.UTC(2025, 0, 2, 9), device: 'tablet' as const };
  const candidates = Int32Array.from({ length: 120 }, (_, i) => (i * 37) % n);

  const worker = new Worker(new URL('./score-worker.js', import.meta.url), {
    workerData: { onnx, config, dim, items, itemEmbeddings, user, req, candidates },
  });
  const fromWorker = await new Promise<Float32Array>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();

  const session = await RankerSession.create(onnx, config, dim);
  try {
    const inputs = assembleRankerInput(spec, { dim, items, itemEmbeddings }, user, req, candidates);
    const here = await session.score(inputs);
    assert.equal(fromWorker.length, 120);
    assert.deepEqual(Array.from(fromWorker), Array.from(here));
  } finally {
    await session.release();
  }
});
