// A small Deep & Wide network, trained with hand-written backprop over typed arrays.
//
//   logit = deep(norm(x_deep)) + wide · norm(x_wide)
//   deep  = ReLU MLP (hidden sizes configurable) ending in one linear unit
//
// Inputs are standardised with per-column mean / inverse std fixed before training (from the
// training examples) and exported as Sub/Mul nodes, so the ONNX graph is self-contained and
// the server feeds raw features. Weights are stored [in × out] row-major, which is exactly
// ONNX Gemm's B with transB = 0: export is a copy.
//
// Why hand-written: no JS training library that works offline here is worth its weight for a
// ~25k-parameter MLP; a gradient check (test/ranker/mlp.test.ts) keeps this honest.

export type FArray = Float32Array | Float64Array;
type FArrayCtor = Float32ArrayConstructor | Float64ArrayConstructor;

export interface DeepWideShape {
  deepIn: number;
  wideIn: number;
  /** Hidden layer sizes of the deep part, e.g. [128, 64]. */
  hidden: number[];
}

/** Deterministic PRNG (mulberry32) so training is reproducible from a seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Numerically stable log(1 + e^z). */
function softplus(z: number): number {
  return z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

export function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** out[n×o] = x[n×i] · W[i×o] + b[o] (ReLU when relu). */
function dense(
  x: FArray,
  n: number,
  i: number,
  w: FArray,
  b: FArray,
  o: number,
  out: FArray,
  relu: boolean,
): void {
  for (let r = 0; r < n; r++) {
    const orow = r * o;
    for (let j = 0; j < o; j++) out[orow + j] = b[j]!;
    const xrow = r * i;
    for (let k = 0; k < i; k++) {
      const xv = x[xrow + k]!;
      if (xv === 0) continue;
      const wrow = k * o;
      for (let j = 0; j < o; j++) out[orow + j]! += xv * w[wrow + j]!;
    }
    if (relu) for (let j = 0; j < o; j++) if (out[orow + j]! < 0) out[orow + j] = 0;
  }
}

export class DeepWideModel {
  readonly shape: DeepWideShape;
  readonly ctor: FArrayCtor;
  deepMean: FArray;
  deepInvStd: FArray;
  wideMean: FArray;
  wideInvStd: FArray;
  /** Deep layer weights [in × out] and biases, hidden layers then the 1-unit output. */
  readonly weights: FArray[] = [];
  readonly biases: FArray[] = [];
  /** Wide weights [wideIn]; its bias is folded into the deep output bias. */
  readonly wide: FArray;

  constructor(shape: DeepWideShape, seed = 1, ctor: FArrayCtor = Float32Array) {
    if (shape.deepIn <= 0) throw new Error('DeepWideModel: deepIn must be positive');
    this.shape = { ...shape, hidden: [...shape.hidden] };
    this.ctor = ctor;
    const rand = rng(seed);
    const sizes = [shape.deepIn, ...shape.hidden, 1];
    for (let l = 0; l + 1 < sizes.length; l++) {
      const fanIn = sizes[l]!;
      const fanOut = sizes[l + 1]!;
      const w = new ctor(fanIn * fanOut);
      // He initialisation for ReLU layers; the output layer starts small.
      const scale = l + 2 < sizes.length ? Math.sqrt(2 / fanIn) : Math.sqrt(1 / fanIn) * 0.1;
      for (let k = 0; k < w.length; k++) w[k] = gaussian(rand) * scale;
      this.weights.push(w);
      this.biases.push(new ctor(fanOut));
    }
    this.wide = new ctor(shape.wideIn);
    this.deepMean = new ctor(shape.deepIn);
    this.deepInvStd = new ctor(shape.deepIn).fill(1);
    this.wideMean = new ctor(shape.wideIn);
    this.wideInvStd = new ctor(shape.wideIn).fill(1);
  }

  /** All trainable arrays, in a fixed order (Adam state and gradients mirror it). */
  params(): FArray[] {
    const p: FArray[] = [];
    for (let l = 0; l < this.weights.length; l++) p.push(this.weights[l]!, this.biases[l]!);
    p.push(this.wide);
    return p;
  }

  /** Sets the standardisation from example rows (columns with ~zero spread keep scale 1). */
  fitNormalisation(deep: FArray, wide: FArray, n: number): void {
    const fit = (x: FArray, cols: number, mean: FArray, inv: FArray) => {
      for (let c = 0; c < cols; c++) {
        let s = 0;
        let ss = 0;
        for (let r = 0; r < n; r++) {
          const v = x[r * cols + c]!;
          s += v;
          ss += v * v;
        }
        const m = n > 0 ? s / n : 0;
        const variance = n > 0 ? Math.max(0, ss / n - m * m) : 0;
        mean[c] = m;
        inv[c] = variance > 1e-12 ? 1 / Math.sqrt(variance) : 1;
      }
    };
    fit(deep, this.shape.deepIn, this.deepMean, this.deepInvStd);
    fit(wide, this.shape.wideIn, this.wideMean, this.wideInvStd);
  }

  private normalise(x: FArray, n: number, cols: number, mean: FArray, inv: FArray): FArray {
    const z = new this.ctor(n * cols);
    for (let r = 0; r < n; r++) {
      const o = r * cols;
      for (let c = 0; c < cols; c++) z[o + c] = (x[o + c]! - mean[c]!) * inv[c]!;
    }
    return z;
  }

  /** Logits for n rows; keeps the activations when `cache` is given (for backward). */
  forward(deep: FArray, wide: FArray, n: number, cache?: ForwardCache): FArray {
    const { deepIn, wideIn, hidden } = this.shape;
    let a = this.normalise(deep, n, deepIn, this.deepMean, this.deepInvStd);
    const zw = this.normalise(wide, n, wideIn, this.wideMean, this.wideInvStd);
    const acts: FArray[] = [a];
    const sizes = [deepIn, ...hidden, 1];
    for (let l = 0; l < this.weights.length; l++) {
      const out = new this.ctor(n * sizes[l + 1]!);
      dense(
        a,
        n,
        sizes[l]!,
        this.weights[l]!,
        this.biases[l]!,
        sizes[l + 1]!,
        out,
        l + 1 < this.weights.length,
      );
      a = out;
      acts.push(a);
    }
    const logits = a;
    for (let r = 0; r < n; r++) {
      let s = 0;
      for (let c = 0; c < wideIn; c++) s += zw[r * wideIn + c]! * this.wide[c]!;
      logits[r]! += s;
    }
    if (cache) {
      cache.acts = acts;
      cache.wideIn = zw;
      cache.n = n;
    }
    return logits;
  }

  /**
   * Mean binary cross-entropy (with logits) over the rows, and its gradient into `grads`
   * (same layout as params(), overwritten). `l2` adds l2·w to the deep weights' gradient.
   */
  lossAndGrad(
    deep: FArray,
    wide: FArray,
    labels: ArrayLike<number>,
    n: number,
    grads: FArray[],
    l2 = 0,
  ): number {
    const cache: ForwardCache = { acts: [], wideIn: new this.ctor(0), n: 0 };
    const logits = this.forward(deep, wide, n, cache);
    const { deepIn, wideIn, hidden } = this.shape;
    const sizes = [deepIn, ...hidden, 1];
    let loss = 0;
    let delta: FArray = new this.ctor(n);
    for (let r = 0; r < n; r++) {
      const z = logits[r]!;
      const y = labels[r]!;
      loss += softplus(z) - y * z;
      delta[r] = (sigmoid(z) - y) / n;
    }
    for (const g of grads) g.fill(0);
    const L = this.weights.length;
    // Wide part: d/dw_c = Σ_r delta_r · zw[r,c].
    const gw = grads[2 * L]!;
    for (let r = 0; r < n; r++) {
      const d = delta[r]!;
      for (let c = 0; c < wideIn; c++) gw[c]! += d * cache.wideIn[r * wideIn + c]!;
    }
    for (let l = L - 1; l >= 0; l--) {
      const inN = sizes[l]!;
      const outN = sizes[l + 1]!;
      const x = cache.acts[l]!;
      const w = this.weights[l]!;
      const gW = grads[2 * l]!;
      const gb = grads[2 * l + 1]!;
      for (let r = 0; r < n; r++) {
        const drow = r * outN;
        const xrow = r * inN;
        for (let j = 0; j < outN; j++) gb[j]! += delta[drow + j]!;
        for (let k = 0; k < inN; k++) {
          const xv = x[xrow + k]!;
          if (xv === 0) continue;
          const grow = k * outN;
          for (let j = 0; j < outN; j++) gW[grow + j]! += xv * delta[drow + j]!;
        }
      }
      if (l2 > 0) for (let k = 0; k < w.length; k++) gW[k]! += l2 * w[k]!;
      if (l === 0) break;
      // Back through W and the ReLU of the previous layer (x > 0 exactly where ReLU passed).
      const prev = new this.ctor(n * inN);
      for (let r = 0; r < n; r++) {
        const drow = r * outN;
        const prow = r * inN;
        for (let k = 0; k < inN; k++) {
          if (x[prow + k]! <= 0) continue;
          const wrow = k * outN;
          let s = 0;
          for (let j = 0; j < outN; j++) s += w[wrow + j]! * delta[drow + j]!;
          prev[prow + k] = s;
        }
      }
      delta = prev;
    }
    return loss / n;
  }

  /** Zeroed arrays shaped like params(). */
  zeroGrads(): FArray[] {
    return this.params().map((p) => new this.ctor(p.length));
  }
}

interface ForwardCache {
  acts: FArray[];
  wideIn: FArray;
  n: number;
}

/** Adam (Kingma & Ba) over a list of parameter arrays. */
export class Adam {
  private readonly m: Float64Array[];
  private readonly v: Float64Array[];
  private t = 0;

  constructor(
    private readonly params: FArray[],
    public lr = 2e-3,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly eps = 1e-8,
  ) {
    this.m = params.map((p) => new Float64Array(p.length));
    this.v = params.map((p) => new Float64Array(p.length));
  }

  step(grads: FArray[]): void {
    this.t++;
    const c1 = 1 - Math.pow(this.beta1, this.t);
    const c2 = 1 - Math.pow(this.beta2, this.t);
    for (let p = 0; p < this.params.length; p++) {
      const w = this.params[p]!;
      const g = grads[p]!;
      const m = this.m[p]!;
      const v = this.v[p]!;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i]!;
        m[i] = this.beta1 * m[i]! + (1 - this.beta1) * gi;
        v[i] = this.beta2 * v[i]! + (1 - this.beta2) * gi * gi;
        w[i]! -= (this.lr * (m[i]! / c1)) / (Math.sqrt(v[i]! / c2) + this.eps);
      }
    }
  }
}
