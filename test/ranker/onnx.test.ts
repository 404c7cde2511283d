// The exported ONNX graph must compute what the trainer's own forward pass computes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { DeepWideModel, rng } from '../../src/ranker/mlp.js';
import { exportDeepWide } from '../../src/ranker/onnx.js';

function randomRows(n: number, width: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n * width }, () => (r() * 2 - 1) * scale);
}

test('onnxruntime output matches DeepWideModel.forward within 1e-4', async () => {
  const model = new DeepWideModel({ deepIn: 20, wideIn: 6, hidden: [16, 8] }, 3);
  const n = 300;
  const deep = randomRows(n, 20, 1, 3);
  const wide = randomRows(n, 6, 2, 5);
  // Non-trivial normalisation and wide weights so every exported node matters.
  model.fitNormalisation(deep, wide, n);
  model.wide.set(randomRows(1, 6, 4));
  for (const b of model.biases) b.set(randomRows(1, b.length, 5, 0.3));
  const expected = model.forward(deep, wide, n);
  const session = await ort.InferenceSession.create(exportDeepWide(model));
  try {
    for (const batch of [1, 7, n]) {
      const out = await session.run({
        deep: new ort.Tensor('float32', deep.subarray(0, batch * 20), [batch, 20]),
        wide: new ort.Tensor('float32', wide.subarray(0, batch * 6), [batch, 6]),
      });
      const got = out.logit!.data as Float32Array;
      assert.deepEqual(out.logit!.dims, [batch]);
      let maxDiff = 0;
      for (let i = 0; i < batch; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i]! - expected[i]!));
      assert.ok(maxDiff < 1e-4, `batch ${batch}: max |onnx - forward| = ${maxDiff}`);
    }
  } finally {
    await session.release();
  }
});
