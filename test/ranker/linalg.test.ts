// The CG fold-in solves the implicit-ALS normal equations it documents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { foldInCG, gram } from '../../src/ranker/linalg.js';
import { rng } from '../../src/ranker/mlp.js';

test('foldInCG with d steps solves (YᵀY + Σ(c−1)yyᵀ + λI) x = Σ c·y', () => {
  const d = 6;
  const n = 40;
  const r = rng(9);
  const y = Float32Array.from({ length: n * d }, () => r() * 2 - 1);
  const yty = gram(y, d);
  const items = Int32Array.of(3, 17, 17, 28);
  const weights = Float32Array.of(1, 0.5, 2, 0.25);
  const alpha = 4;
  const lambda = 0.3;
  const x = new Float32Array(d);
  foldInCG(y, d, yty, items, weights, alpha, lambda, x, 3 * d);
  // Residual of the normal equations, computed directly in float64.
  const a = Float64Array.from(yty);
  const b = new Float64Array(d);
  for (let i = 0; i < d; i++) a[i * d + i]! += lambda;
  items.forEach((it, k) => {
    const c = 1 + alpha * weights[k]!;
    for (let i = 0; i < d; i++) {
      b[i]! += c * y[it * d + i]!;
      for (let j = 0; j < d; j++) a[i * d + j]! += (c - 1) * y[it * d + i]! * y[it * d + j]!;
    }
  });
  let worst = 0;
  for (let i = 0; i < d; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += a[i * d + j]! * x[j]!;
    worst = Math.max(worst, Math.abs(s - b[i]!));
  }
  assert.ok(worst < 1e-4, `max residual ${worst}`);
  // Warm-started from the solution, more steps leave it where it is.
  const again = Float32Array.from(x);
  foldInCG(y, d, yty, items, weights, alpha, lambda, again, 5);
  for (let i = 0; i < d; i++) assert.ok(Math.abs(again[i]! - x[i]!) < 1e-4);
});
