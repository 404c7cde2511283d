// The little dense linear algebra the ranker's example builder needs (d×d systems for
// folding a user's prefix history into an ALS-style embedding). d is small (≤ 256).

/** Solves A x = b in place for symmetric positive-definite A (d×d, row-major, float64). */
export function choleskySolve(a: Float64Array, b: Float64Array, d: number): boolean {
  // Lower-triangular factor written over A's lower half.
  for (let j = 0; j < d; j++) {
    let s = a[j * d + j]!;
    for (let k = 0; k < j; k++) s -= a[j * d + k]! * a[j * d + k]!;
    if (!(s > 0)) return false;
    const ljj = Math.sqrt(s);
    a[j * d + j] = ljj;
    for (let i = j + 1; i < d; i++) {
      let t = a[i * d + j]!;
      for (let k = 0; k < j; k++) t -= a[i * d + k]! * a[j * d + k]!;
      a[i * d + j] = t / ljj;
    }
  }
  for (let i = 0; i < d; i++) {
    let t = b[i]!;
    for (let k = 0; k < i; k++) t -= a[i * d + k]! * b[k]!;
    b[i] = t / a[i * d + i]!;
  }
  for (let i = d - 1; i >= 0; i--) {
    let t = b[i]!;
    for (let k = i + 1; k < d; k++) t -= a[k * d + i]! * b[k]!;
    b[i] = t / a[i * d + i]!;
  }
  return true;
}

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
 * Implicit-ALS fold-in (Hu, Koren & Volinsky): the user vector that best explains the given
 * items with confidence c = 1 + alpha·weight, holding item vectors Y fixed:
 *   u = (YᵀY + Σ (c_i − 1) y_i y_iᵀ + λI)⁻¹ Σ c_i y_i
 */
export function foldIn(
  y: Float32Array,
  d: number,
  yty: Float64Array,
  items: ArrayLike<number>,
  weights: ArrayLike<number>,
  alpha: number,
  lambda: number,
  out: Float32Array,
): void {
  const a = Float64Array.from(yty);
  const b = new Float64Array(d);
  for (let i = 0; i < d; i++) a[i * d + i]! += lambda;
  for (let n = 0; n < items.length; n++) {
    const o = items[n]! * d;
    const c = 1 + alpha * weights[n]!;
    for (let i = 0; i < d; i++) {
      const yi = y[o + i]!;
      b[i]! += c * yi;
      const s = (c - 1) * yi;
      if (s === 0) continue;
      for (let j = 0; j < d; j++) a[i * d + j]! += s * y[o + j]!;
    }
  }
  if (!choleskySolve(a, b, d)) {
    out.fill(0);
    return;
  }
  for (let i = 0; i < d; i++) out[i] = b[i]!;
}
