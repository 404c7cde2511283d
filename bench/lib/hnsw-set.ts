// The HNSW benchmarks' data set: 100k x 64 clustered vectors (seed 31), their HNSW index,
// cached under .cache/ after the first build (10 s on the two-core Zen 3 of 2026-12-07, a
// minute on earlier hosts: more than the measurements), and an exact index over them for
// the truth.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ExactIndex } from '../../src/retrieval/exact.js';
import { HNSW_DEFAULTS, HnswIndex } from '../../src/retrieval/hnsw.js';
import { projectRoot } from '../../src/retrieval/native.js';
import { clustered, unitRows } from './data.js';
import { Rng } from './rng.js';
import { nowMs } from './stats.js';

export interface HnswBenchSet {
  n: number;
  d: number;
  /** The rows as the graph holds them (scaled to unit length for a cosine graph). */
  vecs: Float32Array;
  hnsw: HnswIndex;
  /** Float32, default settings: the truth for recall. */
  exact: ExactIndex;
  /** The generator the vectors came from, for the benchmark's own draws after them. */
  rng: Rng;
}

/**
 * A model version's items instead (`dir` holds config.json, item_embeddings.f32 and
 * hnsw.index, as `recserve build` writes them): the index as the server loads it, so the
 * load time includes what the addon does on load (Reconnect).
 */
export async function hnswBundleSet(dir: string): Promise<HnswBenchSet & { loadSeconds: number }> {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { dim: number };
  const d = config.dim;
  const buf = readFileSync(join(dir, 'item_embeddings.f32'));
  const raw = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const n = raw.length / d;
  const t = nowMs();
  const hnsw = await HnswIndex.load(join(dir, 'hnsw.index'));
  const loadSeconds = (nowMs() - t) / 1000;
  // A cosine graph (bundles built since the metric existed) holds its rows at unit length:
  // the exact truth, and the queries the benches draw from `vecs`, take them the same way.
  const vecs = hnsw.metric === 'cosine' ? unitRows(raw, d) : raw;
  const exact = ExactIndex.create({ dim: d });
  exact.build(
    Uint32Array.from({ length: n }, (_, i) => i),
    vecs,
  );
  return { n, d, vecs, hnsw, exact, rng: new Rng(31), loadSeconds };
}

export async function hnswBenchSet(log: (line: string) => void): Promise<HnswBenchSet> {
  const n = 100_000;
  const d = 64;
  const rng = new Rng(31);
  const vecs = clustered(rng, n, d, 100);
  const hnsw = await cachedHnsw(vecs, d, 'seed31', log);
  const exact = ExactIndex.create({ dim: d });
  exact.build(
    Uint32Array.from({ length: n }, (_, i) => i),
    vecs,
  );
  return { n, d, vecs, hnsw, exact, rng };
}

/**
 * The index of `vecs` (ids 0..n-1, default build settings), loaded from the cache when a
 * file for `tag` (which must name the data: size and seed) exists, else built and saved.
 */
async function cachedHnsw(
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
