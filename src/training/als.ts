// Implicit-feedback ALS (Hu, Koren & Volinsky 2008) solved with a few conjugate-gradient
// steps per row (Takács, Pilászy & Tikk 2011), warm-started from the previous sweep.
//
// For user u with observed items I(u) and confidences c_ui = 1 + alpha·w_ui, the row
// solves (YᵀY + λI + Σ_{i∈I(u)} (c_ui − 1) y_i y_iᵀ) x_u = Σ_{i∈I(u)} c_ui y_i.
// YᵀY is computed once per sweep, so one CG step on a row costs O(d² + |I(u)|·d) instead of
// the O(|I(u)|·d² + d³) of forming and factorising the matrix: that is what makes 10M events
// a matter of minutes in plain TypeScript.
import type { InteractionLog } from '../data/types.js';
import { rng } from '../data/synthetic.js';

export interface AlsOptions {
  /** Embedding dimension (default 64). */
  factors?: number;
  /** L2 regularisation λ (default 0.05). */
  regularization?: number;
  /** Confidence scale: c = 1 + alpha · weight (default 10). */
  alpha?: number;
  /** Alternating sweeps (default 12). */
  iterations?: number;
  /** Preconditioned CG steps per row per sweep (default 2). */
  cgSteps?: number;
  seed?: number;
  /** Called after each sweep (for progress output). */
  onIteration?: (iteration: number, seconds: number) => void;
}

/** A sparse user×item confidence matrix in CSR form, plus its transpose. */
export interface Interactions {
  numUsers: number;
  numItems: number;
  /** CSR by user: items userItems[userPtr[u]..userPtr[u+1]) with weights userWeights. */
  userPtr: Int32Array;
  userItems: Int32Array;
  userWeights: Float32Array;
  /** CSR by item (the transpose). */
  itemPtr: Int32Array;
  itemUsers: Int32Array;
  itemWeights: Float32Array;
}

export interface AlsModel {
  dim: number;
  /** numUsers × dim, row-major. */
  userFactors: Float32Array;
  /** numItems × dim, row-major; items without training data are all zeros. */
  itemFactors: Float32Array;
  seconds: number;
  nnz: number;
}

/**
 * Aggregates a log into a CSR matrix: repeated (user, item) events add their weights;
 * pairs whose total weight is ≤ 0 (e.g. only skips) are left out.
 */
export function buildInteractions(
  log: InteractionLog,
  weights: Float32Array,
  numItems: number,
): Interactions {
  const numUsers = log.userIds.length;
  const n = log.length;
  const start = new Int32Array(numUsers + 1);
  for (let i = 0; i < n; i++) start[log.user[i] + 1]++;
  for (let u = 0; u < numUsers; u++) start[u + 1] += start[u];
  const fill = start.slice(0, numUsers);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[fill[log.user[i]]++] = i;
  // Merge repeats per user with a "slot of item in this user's row" scratch array.
  const slot = new Int32Array(numItems).fill(-1);
  const userPtr = new Int32Array(numUsers + 1);
  const items = new Int32Array(n);
  const w = new Float32Array(n);
  let nnz = 0;
  for (let u = 0; u < numUsers; u++) {
    const rowStart = nnz;
    for (let k = start[u]; k < start[u + 1]; k++) {
      const e = order[k];
      const it = log.item[e];
      if (it < 0 || it >= numItems)
        throw new RangeError(`event ${e}: item row ${it} outside the catalog (${numItems} items)`);
      const s = slot[it];
      if (s >= rowStart) w[s] += weights[e];
      else {
        slot[it] = nnz;
        items[nnz] = it;
        w[nnz] = weights[e];
        nnz++;
      }
    }
    // Compact away non-positive totals.
    let out = rowStart;
    for (let k = rowStart; k < nnz; k++) {
      slot[items[k]] = -1;
      if (w[k] > 0) {
        items[out] = items[k];
        w[out] = w[k];
        out++;
      }
    }
    nnz = out;
    userPtr[u + 1] = nnz;
  }
  const userItems = items.slice(0, nnz);
  const userWeights = w.slice(0, nnz);
  const itemPtr = new Int32Array(numItems + 1);
  for (let k = 0; k < nnz; k++) itemPtr[userItems[k] + 1]++;
  for (let i = 0; i < numItems; i++) itemPtr[i + 1] += itemPtr[i];
  const ifill = itemPtr.slice(0, numItems);
  const itemUsers = new Int32Array(nnz);
  const itemWeights = new Float32Array(nnz);
  for (let u = 0; u < numUsers; u++) {
    for (let k = userPtr[u]; k < userPtr[u + 1]; k++) {
      const p = ifill[userItems[k]]++;
      itemUsers[p] = u;
      itemWeights[p] = userWeights[k];
    }
  }
  return { numUsers, numItems, userPtr, userItems, userWeights, itemPtr, itemUsers, itemWeights };
}

/** Adds the upper triangle of FᵀF over rows [start, end) of a row-major ·×d matrix into G. */
export function gramRange(
  F: Float32Array,
  start: number,
  end: number,
  d: number,
  G: Float64Array,
): void {
  const row = new Float64Array(d);
  for (let r = start; r < end; r++) {
    const o = r * d;
    let nz = false;
    for (let j = 0; j < d; j++) {
      row[j] = F[o + j];
      if (row[j] !== 0) nz = true;
    }
    if (!nz) continue;
    for (let a = 0; a < d; a++) {
      const ra = row[a];
      if (ra === 0) continue;
      const ga = a * d;
      for (let b = a; b < d; b++) G[ga + b] += ra * row[b];
    }
  }
}

/** Copies the upper triangle of a d×d matrix onto the lower one. */
export function mirrorUpper(G: Float64Array, d: number): void {
  for (let a = 0; a < d; a++) for (let b = 0; b < a; b++) G[a * d + b] = G[b * d + a];
}

/**
 * Eigen-decomposition of a symmetric d×d matrix by cyclic Jacobi rotations (d ≤ a few
 * hundred, so O(d³) per sweep is nothing next to a half-sweep). Returns eigenvalues and
 * the eigenvectors as the columns of a row-major d×d matrix.
 */
export function symmetricEigen(
  S: Float64Array,
  d: number,
): { values: Float64Array; vectors: Float64Array } {
  const A = S.slice();
  const V = new Float64Array(d * d);
  for (let i = 0; i < d; i++) V[i * d + i] = 1;
  let total = 0;
  for (let i = 0; i < d * d; i++) total += A[i] * A[i];
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < d; p++) for (let q = p + 1; q < d; q++) off += A[p * d + q] * A[p * d + q];
    if (off <= 1e-24 * total) break;
    for (let p = 0; p < d; p++)
      for (let q = p + 1; q < d; q++) {
        const apq = A[p * d + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * d + q] - A[p * d + p]) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < d; k++) {
          const akp = A[k * d + p];
          const akq = A[k * d + q];
          A[k * d + p] = c * akp - sn * akq;
          A[k * d + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < d; k++) {
          const apk = A[p * d + k];
          const aqk = A[q * d + k];
          A[p * d + k] = c * apk - sn * aqk;
          A[q * d + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < d; k++) {
          const vkp = V[k * d + p];
          const vkq = V[k * d + q];
          V[k * d + p] = c * vkp - sn * vkq;
          V[k * d + q] = sn * vkp + c * vkq;
        }
      }
  }
  const values = new Float64Array(d);
  for (let i = 0; i < d; i++) values[i] = A[i * d + i];
  return { values, vectors: V };
}

/** Qᵀ of a row-major d×d matrix, so rotations read contiguous rows. */
export function transpose(Q: Float64Array, d: number): Float64Array {
  const QT = new Float64Array(d * d);
  for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) QT[k * d + j] = Q[j * d + k];
  return QT;
}

/** Rows [start, end) of F ← F·Q in place, given QT = Qᵀ (all-zero rows are skipped). */
export function rotateRange(
  F: Float32Array,
  start: number,
  end: number,
  d: number,
  QT: Float64Array,
): void {
  const row = new Float64Array(d);
  const d4 = d - (d % 4);
  for (let r = start; r < end; r++) {
    const o = r * d;
    let nz = false;
    for (let j = 0; j < d; j++) {
      row[j] = F[o + j];
      if (row[j] !== 0) nz = true;
    }
    if (!nz) continue;
    for (let k = 0; k < d; k++) {
      const q = k * d;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let j = 0;
      for (; j < d4; j += 4) {
        s0 += row[j] * QT[q + j];
        s1 += row[j + 1] * QT[q + j + 1];
        s2 += row[j + 2] * QT[q + j + 2];
        s3 += row[j + 3] * QT[q + j + 3];
      }
      for (; j < d; j++) s0 += row[j] * QT[q + j];
      F[o + k] = s0 + s1 + s2 + s3;
    }
  }
}

/**
 * One half-sweep: recompute every row of X against fixed Y, warm-starting CG from X's
 * current values. Rows without observations are set to zero.
 *
 * Both factor matrices are first rotated into the eigenbasis of YᵀY (X·Yᵀ, and so every
 * score, is unchanged by a common rotation). There YᵀY + λI is diagonal, so a CG step
 * costs O(|I(u)|·d) instead of O(d² + |I(u)|·d), and that diagonal plus the row's own
 * terms is a cheap, effective Jacobi preconditioner.
 */
function solveSide(
  X: Float32Array,
  Y: Float32Array,
  numRows: number,
  ptr: Int32Array,
  idx: Int32Array,
  wts: Float32Array,
  d: number,
  lambda: number,
  alpha: number,
  cgSteps: number,
  numY: number,
): void {
  const G = new Float64Array(d * d);
  gramRange(Y, 0, numY, d, G);
  mirrorUpper(G, d);
  const { values, vectors } = symmetricEigen(G, d);
  const QT = transpose(vectors, d);
  rotateRange(Y, 0, numY, d, QT);
  rotateRange(X, 0, numRows, d, QT);
  solveRange(X, Y, 0, numRows, ptr, idx, wts, d, diagonal(values, lambda), alpha, cgSteps);
}

/** diag(YᵀY + λI) in the eigenbasis (eigenvalues clamped at 0 against round-off). */
export function diagonal(values: Float64Array, lambda: number): Float64Array {
  return Float64Array.from(values, (v) => Math.max(0, v) + lambda);
}

/** Solves rows [start, end) of X (see solveSide); factors must already be rotated. */
export function solveRange(
  X: Float32Array,
  Y: Float32Array,
  start: number,
  end: number,
  ptr: Int32Array,
  idx: Int32Array,
  wts: Float32Array,
  d: number,
  diag0: Float64Array,
  alpha: number,
  cgSteps: number,
): void {
  const x = new Float64Array(d);
  const r = new Float64Array(d);
  const z = new Float64Array(d);
  const p = new Float64Array(d);
  const Ap = new Float64Array(d);
  const M = new Float64Array(d);
  const d4 = d - (d % 4);
  // out = A·v = diag0 ∘ v + Σ (c−1)(y·v) y. Dot products use four accumulators: one
  // running sum is bound by FP-add latency.
  const applyA = (v: Float64Array, out: Float64Array, a: number, b: number): void => {
    for (let j = 0; j < d; j++) out[j] = diag0[j] * v[j];
    for (let k = a; k < b; k++) {
      const o = idx[k] * d;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let j = 0;
      for (; j < d4; j += 4) {
        s0 += Y[o + j] * v[j];
        s1 += Y[o + j + 1] * v[j + 1];
        s2 += Y[o + j + 2] * v[j + 2];
        s3 += Y[o + j + 3] * v[j + 3];
      }
      for (; j < d; j++) s0 += Y[o + j] * v[j];
      const f = alpha * wts[k] * (s0 + s1 + s2 + s3);
      for (j = 0; j < d; j++) out[j] += f * Y[o + j];
    }
  };
  for (let row = start; row < end; row++) {
    const a = ptr[row];
    const b = ptr[row + 1];
    const xo = row * d;
    if (a === b) {
      X.fill(0, xo, xo + d);
      continue;
    }
    for (let j = 0; j < d; j++) {
      x[j] = X[xo + j];
      M[j] = diag0[j];
    }
    // r = b − A x with b = Σ c y; M = diag(A) for the preconditioner.
    applyA(x, Ap, a, b);
    for (let j = 0; j < d; j++) r[j] = -Ap[j];
    for (let k = a; k < b; k++) {
      const o = idx[k] * d;
      const cm1 = alpha * wts[k];
      for (let j = 0; j < d; j++) {
        const y = Y[o + j];
        r[j] += (1 + cm1) * y;
        M[j] += cm1 * y * y;
      }
    }
    let rz = 0;
    for (let j = 0; j < d; j++) {
      z[j] = r[j] / M[j];
      p[j] = z[j];
      rz += r[j] * z[j];
    }
    for (let step = 0; step < cgSteps && rz > 1e-30; step++) {
      applyA(p, Ap, a, b);
      let pAp = 0;
      for (let j = 0; j < d; j++) pAp += p[j] * Ap[j];
      if (!(pAp > 0)) break;
      const stepLen = rz / pAp;
      let rzNew = 0;
      for (let j = 0; j < d; j++) {
        x[j] += stepLen * p[j];
        r[j] -= stepLen * Ap[j];
        z[j] = r[j] / M[j];
        rzNew += r[j] * z[j];
      }
      const beta = rzNew / rz;
      for (let j = 0; j < d; j++) p[j] = z[j] + beta * p[j];
      rz = rzNew;
    }
    for (let j = 0; j < d; j++) X[xo + j] = x[j];
  }
}

/** Options with defaults applied, validated (RangeError naming the option). */
function alsParams(opts: AlsOptions): {
  d: number;
  lambda: number;
  alpha: number;
  iterations: number;
  cgSteps: number;
} {
  const d = opts.factors ?? 64;
  const lambda = opts.regularization ?? 0.05;
  const alpha = opts.alpha ?? 10;
  const iterations = opts.iterations ?? 12;
  const cgSteps = opts.cgSteps ?? 2;
  for (const [k, v] of Object.entries({ factors: d, iterations, cgSteps }))
    if (!Number.isInteger(v) || v < 1)
      throw new RangeError(`ALS option '${k}' must be a positive integer: ${v}`);
  if (!(lambda >= 0)) throw new RangeError(`ALS option 'regularization' must be >= 0: ${lambda}`);
  if (!(alpha > 0)) throw new RangeError(`ALS option 'alpha' must be > 0: ${alpha}`);
  return { d, lambda, alpha, iterations, cgSteps };
}

export function trainAls(data: Interactions, opts: AlsOptions = {}): AlsModel {
  const { d, lambda, alpha, iterations, cgSteps } = alsParams(opts);
  const t0 = performance.now();
  const rand = rng(opts.seed ?? 7);
  const init = (n: number, ptr: Int32Array): Float32Array => {
    const F = new Float32Array(n * d);
    const scale = 0.1 / Math.sqrt(d);
    for (let r = 0; r < n; r++) {
      if (ptr[r] === ptr[r + 1]) continue;
      for (let j = 0; j < d; j++) F[r * d + j] = (rand() * 2 - 1) * scale;
    }
    return F;
  };
  const U = init(data.numUsers, data.userPtr);
  const V = init(data.numItems, data.itemPtr);
  for (let it = 0; it < iterations; it++) {
    solveSide(
      U,
      V,
      data.numUsers,
      data.userPtr,
      data.userItems,
      data.userWeights,
      d,
      lambda,
      alpha,
      cgSteps,
      data.numItems,
    );
    solveSide(
      V,
      U,
      data.numItems,
      data.itemPtr,
      data.itemUsers,
      data.itemWeights,
      d,
      lambda,
      alpha,
      cgSteps,
      data.numUsers,
    );
    opts.onIteration?.(it + 1, (performance.now() - t0) / 1000);
  }
  return {
    dim: d,
    userFactors: U,
    itemFactors: V,
    seconds: (performance.now() - t0) / 1000,
    nnz: data.userItems.length,
  };
}

function shared<T extends Float32Array | Int32Array>(a: T): T {
  const Ctor = a.constructor as new (b: SharedArrayBuffer) => T;
  const out = new Ctor(new SharedArrayBuffer(a.byteLength));
  out.set(a);
  return out;
}

/** Splits rows [0, n) into k ranges of about equal cost (rows + observations). */
function splitRows(ptr: Int32Array, n: number, k: number): [number, number][] {
  const total = n + ptr[n];
  const out: [number, number][] = [];
  let start = 0;
  for (let i = 1; i <= k; i++) {
    let end = start;
    const target = (total * i) / k;
    while (end < n && end + ptr[end] < target) end++;
    if (i === k) end = n;
    out.push([start, end]);
    start = end;
  }
  return out;
}

/**
 * trainAls on `threads` worker threads (default 2) over shared memory: the Gram matrix,
 * the rotations and the row solves are split by rows; the d×d eigen-decomposition stays
 * on the calling thread. Same algorithm and initialisation as trainAls, so results match
 * it up to floating-point summation order. threads ≤ 1 runs trainAls.
 */
export async function trainAlsParallel(
  data: Interactions,
  opts: AlsOptions & { threads?: number } = {},
): Promise<AlsModel> {
  const threads = opts.threads ?? 2;
  if (threads <= 1) return trainAls(data, opts);
  const { Worker } = await import('node:worker_threads');
  const { d, lambda, alpha, iterations, cgSteps } = alsParams(opts);
  // Initialisation identical to trainAls (same PRNG stream, same skipped rows).
  const t0 = performance.now();
  const rand = rng(opts.seed ?? 7);
  const initF = (n: number, ptr: Int32Array): Float32Array => {
    const F = new Float32Array(new SharedArrayBuffer(n * d * 4));
    const scale = 0.1 / Math.sqrt(d);
    for (let r = 0; r < n; r++) {
      if (ptr[r] === ptr[r + 1]) continue;
      for (let j = 0; j < d; j++) F[r * d + j] = (rand() * 2 - 1) * scale;
    }
    return F;
  };
  const U = initF(data.numUsers, data.userPtr);
  const V = initF(data.numItems, data.itemPtr);
  const sides = [
    { F: U, ptr: shared(data.userPtr), idx: shared(data.userItems), wts: shared(data.userWeights) },
    { F: V, ptr: shared(data.itemPtr), idx: shared(data.itemUsers), wts: shared(data.itemWeights) },
  ];
  const counts = [data.numUsers, data.numItems];
  const workers = Array.from(
    { length: threads },
    () => new Worker(new URL('./als-worker.js', import.meta.url)),
  );
  const call = (w: InstanceType<typeof Worker>, msg: unknown): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const onMsg = (v: unknown): void => {
        w.off('error', onErr);
        resolve(v);
      };
      const onErr = (e: Error): void => {
        w.off('message', onMsg);
        reject(e);
      };
      w.once('message', onMsg);
      w.once('error', onErr);
      w.postMessage(msg);
    });
  try {
    await Promise.all(workers.map((w) => call(w, { op: 'init', d, sides })));
    const rangesBy = [
      splitRows(data.userPtr, data.numUsers, threads),
      splitRows(data.itemPtr, data.numItems, threads),
    ];
    const evenBy = counts.map((n) =>
      Array.from(
        { length: threads },
        (_, i) =>
          [Math.floor((n * i) / threads), Math.floor((n * (i + 1)) / threads)] as [number, number],
      ),
    );
    const half = async (x: 0 | 1): Promise<void> => {
      const y = (1 - x) as 0 | 1;
      const parts = (await Promise.all(
        workers.map((w, i) =>
          call(w, { op: 'gram', side: y, start: evenBy[y][i][0], end: evenBy[y][i][1] }),
        ),
      )) as Float64Array[];
      const G = new Float64Array(d * d);
      for (const p of parts) for (let i = 0; i < G.length; i++) G[i] += p[i];
      mirrorUpper(G, d);
      const { values, vectors } = symmetricEigen(G, d);
      const QT = transpose(vectors, d);
      await Promise.all(
        workers.map((w, i) => call(w, { op: 'rotate', ranges: [evenBy[0][i], evenBy[1][i]], QT })),
      );
      const diag0 = diagonal(values, lambda);
      await Promise.all(
        workers.map((w, i) =>
          call(w, {
            op: 'solve',
            side: x,
            start: rangesBy[x][i][0],
            end: rangesBy[x][i][1],
            diag0,
            alpha,
            cgSteps,
          }),
        ),
      );
    };
    for (let it = 0; it < iterations; it++) {
      await half(0);
      await half(1);
      opts.onIteration?.(it + 1, (performance.now() - t0) / 1000);
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  // Hand back ordinary (non-shared) arrays: callers may transfer or slice them freely.
  return {
    dim: d,
    userFactors: Float32Array.from(U),
    itemFactors: Float32Array.from(V),
    seconds: (performance.now() - t0) / 1000,
    nnz: data.userItems.length,
  };
}
