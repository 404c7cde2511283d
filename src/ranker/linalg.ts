// The little dense linear algebra the ranker's example builder needs: re-solving ALS rows
// on a user's history only (see ranker/train.ts). d is small (≤ 256).

/** YᵀY over all rows of Y (n×d float32), as float64 d×d. */
export function gram(y: Float32Array, d: number): Float64Array {
  const n = Math.floor(y.length / d);
  const g = new Float64Array(d * d);
  for (let r = 0; r < n; r++) {
    const o = r * d;
    for (let i = 0; i < d; i++) {
      const yi = y[o + i]!;
      if (yi === 0) continue;
      for (let j = i; j < d; j++) g[i * d + j]! += yi * y[o + j]!;
    }
  }
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) g[i * d + j] = g[j * d + i]!;
  return g;
}

/**
 * Implicit-ALS fold-in (Hu, Koren & Volinsky): the row x that best explains the given items
 * with confidence c = 1 + alpha·weight, holding the item vectors Y fixed, i.e. the solution of
 *   (YᵀY + Σ (c_i − 1) y_i y_iᵀ + λI) x = Σ c_i y_i
 * by `steps` conjugate-gradient iterations warm-started from x (in/out), as training/als.ts
 * does: O(d² + n·d) per step instead of forming and factorising the d×d matrix, which
 * matters at d = 128.
 */
export function foldInCG(
  y: Float32Array,
  d: number,
  yty: Float64Array,
  items: ArrayLike<number>,
  weights: ArrayLike<number>,
  alpha: number,
  lambda: number,
  x: Float32Array,
  steps: number,
): void {
  const n = items.length;
  const ax = new Float64Array(d);
  // A·v = YᵀY v + λv + Σ alpha·w_i (y_i·v) y_i
  const apply = (v: Float64Array, out: Float64Array) => {
    for (let i = 0; i < d; i++) {
      let s = lambda * v[i]!;
      const row = i * d;
      for (let j = 0; j < d; j++) s += yty[row + j]! * v[j]!;
      out[i] = s;
    }
    for (let k = 0; k < n; k++) {
      const o = items[k]! * d;
      const cw = alpha * weights[k]!;
      if (cw === 0) continue;
      let dot = 0;
      for (let j = 0; j < d; j++) dot += y[o + j]! * v[j]!;
      const f = cw * dot;
      for (let j = 0; j < d; j++) out[j]! += f * y[o + j]!;
    }
  };
  const xv = Float64Array.from(x.subarray(0, d));
  const r = new Float64Array(d);
  for (let k = 0; k < n; k++) {
    const o = items[k]! * d;
    const c = 1 + alpha * weights[k]!;
    for (let j = 0; j < d; j++) r[j]! += c * y[o + j]!;
  }
  apply(xv, ax);
  for (let j = 0; j < d; j++) r[j]! -= ax[j]!;
  const p = Float64Array.from(r);
  let rs = 0;
  for (let j = 0; j < d; j++) rs += r[j]! * r[j]!;
  const ap = new Float64Array(d);
  for (let s = 0; s < steps && rs > 1e-20; s++) {
    apply(p, ap);
    let pap = 0;
    for (let j = 0; j < d; j++) pap += p[j]! * ap[j]!;
    if (!(pap > 0)) break;
    const a = rs / pap;
    let rsNew = 0;
    for (let j = 0; j < d; j++) {
      xv[j]! += a * p[j]!;
      r[j]! -= a * ap[j]!;
      rsNew += r[j]! * r[j]!;
    }
    const beta = rsNew / rs;
    for (let j = 0; j < d; j++) p[j] = r[j]! + beta * p[j]!;
    rs = rsNew;
  }
  for (let j = 0; j < d; j++) x[j] = xv[j]!;
}
