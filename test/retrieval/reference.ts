// Brute-force reference for the retrieval tests: float64 dot products over the same
// float32 inputs, plus helpers to compare an engine's B×k result against it.
import assert from 'node:assert/strict';
import { Rng } from '../../bench/lib/rng.js';

export const NO_ID = 0xffffffff;

export interface Hit {
  id: number;
  score: number;
}

export function dot(a: Float32Array, ai: number, b: Float32Array, bi: number, d: number): number {
  let s = 0;
  for (let j = 0; j < d; j++) s += a[ai + j] * b[bi + j];
  return s;
}

/** Sum of |a_j * b_j|: the scale that bounds rounding error of a dot product. */
export function absDot(
  a: Float32Array,
  ai: number,
  b: Float32Array,
  bi: number,
  d: number,
): number {
  let s = 0;
  for (let j = 0; j < d; j++) s += Math.abs(a[ai + j] * b[bi + j]);
  return s;
}

/** The reference contents of an index: id -> vector. */
export class RefIndex {
  readonly rows = new Map<number, Float32Array>();
  constructor(readonly dim: number) {}

  set(ids: Uint32Array, vectors: Float32Array): void {
    for (let i = 0; i < ids.length; i++) {
      this.rows.set(ids[i], vectors.slice(i * this.dim, (i + 1) * this.dim));
    }
  }

  /** Every candidate of query q, best first (ties by smaller id). */
  ranked(
    queries: Float32Array,
    q: number,
    exclude?: Uint32Array | null,
    allow?: Uint32Array | null,
  ): Hit[] {
    const ex = new Set(exclude ?? []);
    const al = allow ? new Set(allow) : null;
    const hits: Hit[] = [];
    for (const [id, v] of this.rows) {
      if (ex.has(id) || (al && !al.has(id))) continue;
      hits.push({ id, score: dot(v, 0, queries, q * this.dim, this.dim) });
    }
    hits.sort((a, b) => b.score - a.score || a.id - b.id);
    return hits;
  }
}

/**
 * Checks one B×k result against the reference: position by position the scores match the
 * true top-k within `tol`, each returned id's true score matches its returned score, ids
 * are distinct and allowed, and rows shorter than k are padded. Comparing scores rather
 * than ids keeps the check exact yet immune to near-ties swapping two ids.
 */
export function assertMatches(
  ref: RefIndex,
  queries: Float32Array,
  k: number,
  got: { ids: Uint32Array; scores: Float32Array; k: number },
  tol: (q: number, id: number) => number,
  opts: { exclude?: (Uint32Array | null)[]; allow?: Uint32Array | null } = {},
  label = '',
): void {
  const B = queries.length / ref.dim;
  // Sets, not includes() on the arrays: a 16k-id allow list checked for each of 12 x 1000
  // results took seconds.
  const allowed = opts.allow ? new Set(opts.allow) : null;
  assert.equal(got.k, k, `${label} k`);
  assert.equal(got.ids.length, B * k, `${label} ids.length`);
  assert.equal(got.scores.length, B * k, `${label} scores.length`);
  for (let q = 0; q < B; q++) {
    const want = ref.ranked(queries, q, opts.exclude?.[q], opts.allow);
    const excluded = opts.exclude?.[q] ? new Set(opts.exclude[q]) : null;
    const n = Math.min(k, want.length);
    const seen = new Set<number>();
    for (let i = 0; i < k; i++) {
      const id = got.ids[q * k + i];
      const s = got.scores[q * k + i];
      const at = `${label} q=${q} i=${i}`;
      if (i >= n) {
        assert.equal(id, NO_ID, `${at}: padding id`);
        assert.equal(s, -Infinity, `${at}: padding score`);
        continue;
      }
      assert.ok(!seen.has(id), `${at}: id ${id} returned twice`);
      seen.add(id);
      const v = ref.rows.get(id);
      assert.ok(v, `${at}: id ${id} is not in the index`);
      if (excluded) assert.ok(!excluded.has(id), `${at}: excluded id ${id}`);
      if (allowed) assert.ok(allowed.has(id), `${at}: id ${id} is not allowed`);
      const t = tol(q, id);
      const trueScore = dot(v, 0, queries, q * ref.dim, ref.dim);
      assert.ok(Math.abs(s - trueScore) <= t, `${at}: score ${s} vs true ${trueScore} of ${id}`);
      assert.ok(
        Math.abs(s - want[i].score) <= 2 * t,
        `${at}: score ${s} vs reference rank-${i} score ${want[i].score}`,
      );
      if (i > 0) assert.ok(s <= got.scores[q * k + i - 1], `${at}: not sorted`);
    }
  }
}

/** Float32 -> nearest binary16 value (round half to even), as a float. */
export function f16Round(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const quantum = 2 ** (e - 10);
  const r = a / quantum;
  let f = Math.floor(r);
  const diff = r - f;
  if (diff > 0.5 || (diff === 0.5 && f % 2 === 1)) f += 1;
  return Math.sign(x) * f * quantum;
}

export function f16RoundArray(v: Float32Array): Float32Array {
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = f16Round(v[i]);
  return out;
}

/** n distinct ids in [0, 2^32 - 2], shuffled. */
export function distinctIds(rng: Rng, n: number): Uint32Array {
  const s = new Set<number>();
  while (s.size < n) s.add(rng.int(0xfffffffe));
  return Uint32Array.from(s);
}

export { clustered } from '../../bench/lib/data.js';
