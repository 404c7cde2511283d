// The hand-written backprop must agree with finite differences, and Adam must learn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Adam, DeepWideModel, rng } from '../../src/ranker/mlp.js';

function rows(n: number, width: number, seed: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: n * width }, () => r() * 4 - 2);
}

test('gradients match central finite differences (float64)', () => {
  const model = new DeepWideModel({ deepIn: 5, wideIn: 3, hidden: [7, 4] }, 11, Float64Array);
  const n = 9;
  const deep = rows(n, 5, 1);
  const wide = rows(n, 3, 2);
  const labels = Float64Array.from({ length: n }, (_, i) => i % 2);
  model.fitNormalisation(deep, wide, n);
  // Move the wide weights and biases off zero so their gradients are exercised too.
  model.wide.set([0.3, -0.2, 0.5]);
  for (const b of model.biases) for (let i = 0; i < b.length; i++) b[i] = 0.05 * (i + 1);
  const l2 = 1e-3;
  const grads = model.zeroGrads();
  model.lossAndGrad(deep, wide, labels, n, grads, l2);
  const params = model.params();
  const eps = 1e-6;
  let checked = 0;
  let worst = 0;
  for (let p = 0; p < params.length; p++) {
    const w = params[p]!;
    const isWeight = p < params.length - 1 && p % 2 === 0;
    for (let i = 0; i < w.length; i++) {
      const keep = w[i]!;
      const scratch = model.zeroGrads();
      const penalty = (v: number) => (isWeight ? 0.5 * l2 * v * v : 0);
      w[i] = keep + eps;
      const up = model.lossAndGrad(deep, wide, labels, n, scratch) + penalty(keep + eps);
      w[i] = keep - eps;
      const down = model.lossAndGrad(deep, wide, labels, n, scratch) + penalty(keep - eps);
      w[i] = keep;
      const numeric = (up - down) / (2 * eps);
      const analytic = grads[p]![i]!;
      const err =
        Math.abs(numeric - analytic) / Math.max(1e-4, Math.abs(numeric) + Math.abs(analytic));
      worst = Math.max(worst, err);
      checked++;
    }
  }
  assert.ok(checked > 80, `checked ${checked} parameters`);
  assert.ok(worst < 1e-5, `worst relative gradient error ${worst}`);
});

test('Adam fits a non-linear (XOR-like) rule the wide part alone cannot', () => {
  const n = 512;
  const r = rng(5);
  const deep = new Float32Array(n * 2);
  const wide = new Float32Array(n * 2);
  const labels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const a = r() * 2 - 1;
    const b = r() * 2 - 1;
    deep.set([a, b], i * 2);
    wide.set([a, b], i * 2);
    labels[i] = a * b > 0 ? 1 : 0;
  }
  const model = new DeepWideModel({ deepIn: 2, wideIn: 2, hidden: [16, 8] }, 3);
  model.fitNormalisation(deep, wide, n);
  const adam = new Adam(model.params(), 1e-2);
  const grads = model.zeroGrads();
  const first = model.lossAndGrad(deep, wide, labels, n, grads);
  let last = first;
  for (let step = 0; step < 400; step++) {
    last = model.lossAndGrad(deep, wide, labels, n, grads);
    adam.step(grads);
  }
  const logits = model.forward(deep, wide, n);
  let correct = 0;
  for (let i = 0; i < n; i++) if (logits[i]! > 0 === labels[i]! > 0.5) correct++;
  assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
  assert.ok(correct / n > 0.9, `accuracy ${correct / n}`);
});
