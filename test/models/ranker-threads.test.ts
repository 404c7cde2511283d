// The ranking pool's size with --ranker-threads 0 (auto) follows the ranker's cost, read from
// the ONNX file: a light ranker (the test bundle's [64, 32]-class tower) gets one worker on
// a small machine, a heavy one (a 1024-wide layer) two, and an explicit count always wins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTestModels } from '../http/harness.js';
import { latestVersion, loadBundle } from '../../src/models/repository.js';
import { HEAVY_RANKER_FLOPS, rankerPoolThreads } from '../../src/models/registry.js';
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
});

test('a heavy ranker (a 1024-wide layer) gets two workers on a small machine', () => {
  const repo = mkdtempSync(join(tmpdir(), 'recserve-heavy-'));
  try {
    const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
    const b = spawnSync(
      process.execPath,
      [
        cli,
        'build-demo',
        '--repo',
        join(repo, 'heavy'),
        '--quiet',
        '--no-hnsw',
        '--items',
        '300',
        '--users',
        '100',
        '--events',
        '3000',
        '--ranker-examples',
        '500',
        '--ranker-epochs',
        '1',
        '--ranker-hidden',
        '1024,256',
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(b.status, 0, b.stderr);
    const path = join(repo, 'heavy', 'recserve', '1', 'model.onnx');
    assert.ok(onnxFlopsPerRow(path) >= HEAVY_RANKER_FLOPS);
    assert.equal(rankerPoolThreads(0, path), 2);
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
});
