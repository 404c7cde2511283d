// Synthetic embeddings for benchmarks and tests.
import { Rng } from './rng.js';

/**
 * Clustered data: `clusters` Gaussian centres (unit variance per coordinate), each point a
 * centre plus `noise`-scaled Gaussian noise, the way item embeddings group by topic.
 */
export function clustered(
  rng: Rng,
  n: number,
  d: number,
  clusters: number,
  noise = 0.5,
): Float32Array {
  const centres = rng.normalArray(clusters * d);
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = rng.int(clusters);
    for (let j = 0; j < d; j++) out[i * d + j] = centres[c * d + j] + noise * rng.normal();
  }
  return out;
}

/** nq queries near random rows of `vecs` ("more like this item"), plus Gaussian noise. */
export function nearRows(
  rng: Rng,
  vecs: Float32Array,
  d: number,
  nq: number,
  noise: number,
): Float32Array {
  const n = vecs.length / d;
  const q = new Float32Array(nq * d);
  for (let i = 0; i < nq; i++) {
    const r = rng.int(n);
    for (let j = 0; j < d; j++) q[i * d + j] = vecs[r * d + j] + noise * rng.normal();
  }
  return q;
}

/** `count` rows of `vecs` spread over all of them (a fixed multiplicative stride): item queries. */
export function spreadRows(vecs: Float32Array, d: number, count: number): Float32Array {
  const rows = vecs.length / d;
  const out = new Float32Array(count * d);
  for (let i = 0; i < count; i++) {
    const r = (i * 2654435761) % rows;
    out.set(vecs.subarray(r * d, (r + 1) * d), i * d);
  }
  return out;
}

/** Fraction of each query's true top-k (row q of `truth`, width k) found in `got`. */
export function recallAtK(
  truth: Uint32Array,
  got: Uint32Array,
  nq: number,
  k: number,
  gotWidth = k,
): number {
  let hit = 0;
  for (let q = 0; q < nq; q++) {
    const want = new Set(truth.subarray(q * k, q * k + k));
    for (const id of got.subarray(q * gotWidth, q * gotWidth + k)) if (want.has(id)) hit++;
  }
  return hit / (nq * k);
}

/** Rows scaled to unit length (a zero row stays zero), as a cosine HNSW index stores them. */
export function unitRows(v: Float32Array, d: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let r = 0; r < v.length / d; r++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += v[r * d + j]! ** 2;
    const norm = Math.sqrt(ss) || 1;
    for (let j = 0; j < d; j++) out[r * d + j] = v[r * d + j]! / norm;
  }
  return out;
}
