// The ranking pool's size with --ranker-threads 0 (auto) follows the ranker's cost, read from
// the ONNX file: a light ranker (the test bundle's [64, 32]-class tower) gets one worker on
// a small machine and an explicit count always wins. The heavy case (a 1024-wide layer gets
// two) is in test/models/build.test.ts, next to the other --ranker-hidden build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ensureTestModels } from '../http/harness.js';
import { latestVersion, loadBundle } from '../../src/models/repository.js';
import {
  HEAVY_RANKER_FLOPS,
  rankerMaxBatchRows,
  rankerPoolThreads,
} from '../../src/models/registry.js';
import { onnxFlopsPerRow } from '../../src/ranker/flops.js';

test('auto ranker pool size follows the ranker cost; an explicit count wins', async () => {
  const models = ensureTestModels();
  const dir = join(models, 'recserve', String(latestVersion(models, 'recserve')));
  const bundle = await loadBundle(dir);
  const flops = onnxFlopsPerRow(bundle.ranker.path);
  // 2 × (deep inputs × 64 + 64 × 32 + 32 × 1 + wide inputs): tens of thousands, well below heavy.
  assert.ok(flops > 2 * (64 * 32) && flops < HEAVY_RANKER_FLOPS, `flops ${flops}`);
  assert.equal(rankerPoolThreads(3, bundle.ranker.path), 3);
  const auto = rankerPoolThreads(0, bundle.ranker.path);
  assert.equal(auto, availableParallelism() >= 4 ? 2 : 1);
  // A light ranker shares its per-call cost over large cross-request batches.
  assert.equal(rankerMaxBatchRows(0, 200, bundle.ranker.path), 2048);
  assert.equal(rankerMaxBatchRows(300, 200, bundle.ranker.path), 300);
});
