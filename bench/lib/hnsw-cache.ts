// The benchmarks' HNSW index over their 100k x 64 data, cached under .cache/ after the first
// build: building it (about a minute on two cores) costs more than the measurements.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { HNSW_DEFAULTS, HnswIndex } from '../../src/retrieval/hnsw.js';
import { projectRoot } from '../../src/retrieval/native.js';
import { nowMs } from './stats.js';

/**
 * The index of `vecs` (ids 0..n-1, default build settings), loaded from the cache when a
 * file for `tag` (which must name the data: size and seed) exists, else built and saved.
 */
export async function cachedHnsw(
  vecs: Float32Array,
  d: number,
  tag: string,
  log: (line: string) => void,
): Promise<HnswIndex> {
  const n = vecs.length / d;
  const cacheDir = join(projectRoot(), '.cache');
  const cached = join(
    cacheDir,
    `bench-hnsw-${n}x${d}-M${HNSW_DEFAULTS.M}-efc${HNSW_DEFAULTS.efConstruction}-${tag}.faiss`,
  );
  if (existsSync(cached)) return HnswIndex.load(cached);
  const tb = nowMs();
  const ids = Uint32Array.from({ length: n }, (_, i) => i);
  const hnsw = await HnswIndex.build(ids, vecs, d);
  log(`hnsw build ${((nowMs() - tb) / 1000).toFixed(1)} s (cached at ${cached})`);
  mkdirSync(cacheDir, { recursive: true });
  await hnsw.save(cached);
  return hnsw;
}
