// A ranker exported by another tool loads when its config maps its inputs to known
// features; mismatches fail at load time with errors that name the culprit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assembleRankerInput } from '../../src/features/assemble.js';
import { UnknownFeatureError, type UserFeatureView } from '../../src/features/catalog.js';
import type { ItemCatalog } from '../../src/models/bundle.js';
import { encodeModel, floatTensor, floatValueInfo, node } from '../../src/ranker/onnx.js';
import { RankerSession } from '../../src/ranker/session.js';

const dim = 2;
const items: ItemCatalog = {
  ids: ['a', 'b', 'c'],
  index: new Map([
    ['a', 0],
    ['b', 1],
    ['c', 2],
  ]),
  titles: ['A', 'B', 'C'],
  categoryNames: ['x', 'y'],
  categories: [Uint16Array.of(0), Uint16Array.of(1), Uint16Array.of(0, 1)],
  creatorIds: ['p', 'q', 'p'],
  createdAt: Float64Array.of(0, 0, 0),
  quality: Float32Array.of(0.2, 0.5, 0.9),
  popularity: Float32Array.of(10, 100, 0),
};
const itemEmbeddings = Float32Array.of(1, 0, 0, 1, 0.5, 0.5);
const user: UserFeatureView = {
  embedding: Float32Array.of(2, 1),
  categoryAffinity: Float32Array.of(0.75, 0.25),
  itemCounts: new Map(),
  creatorCounts: new Map([['p', 3]]),
  interactionCount: 4,
};
const FEATURES = ['dot', 'item_log_popularity', 'category_affinity', 'item_quality'];
const W = [0.5, -0.25, 2, 1];
const B = -0.3;

/** Logistic regression "from another tool": one input, a Sigmoid probability of shape [N, 1]. */
function foreignModel(inputName: string, width: number): Uint8Array {
  return encodeModel({
    name: 'foreign',
    nodes: [
      node('MatMul', [inputName, 'w'], ['z0']),
      node('Add', ['z0', 'b'], ['z']),
      node('Sigmoid', ['z'], ['probability']),
    ],
    initializers: [floatTensor('w', [width, 1], W.slice(0, width)), floatTensor('b', [1], [B])],
    inputs: [floatValueInfo(inputName, ['N', width])],
    outputs: [floatValueInfo('probability', ['N', 1])],
  });
}

test('a differently-structured model scores through its config mapping', async () => {
  const config = {
    inputs: [{ name: 'input_features', features: FEATURES }],
    output: 'probability',
    outputKind: 'probability' as const,
  };
  const session = await RankerSession.create(foreignModel('input_features', 4), config, dim);
  try {
    const candidates = Int32Array.of(0, 1, 2);
    const inputs = assembleRankerInput(
      config.inputs,
      { dim, items, itemEmbeddings },
      user,
      { timestampMs: Date.UTC(2025, 0, 1), device: 'mobile' },
      candidates,
    );
    assert.deepEqual(Object.keys(inputs), ['input_features']);
    const scores = await session.score(inputs);
    // The same rule by hand: features of each item, then the logistic function.
    const expectedFeatures = [
      [2, Math.log1p(10), 0.75, 0.2],
      [1, Math.log1p(100), 0.25, 0.5],
      [1.5, 0, 1, 0.9],
    ];
    assert.equal(scores.length, 3);
    expectedFeatures.forEach((f, i) => {
      const z = f.reduce((s, v, k) => s + v * W[k]!, B);
      assert.ok(Math.abs(scores[i]! - 1 / (1 + Math.exp(-z))) < 1e-5, `item ${i}: ${scores[i]}`);
    });
    // Probabilities are passed through unchanged by scoreRaw as well.
    const raw = await session.scoreRaw(inputs);
    assert.deepEqual(Array.from(raw), Array.from(scores));
    assert.equal((await session.score({ input_features: new Float32Array(0) })).length, 0);
  } finally {
    await session.release();
  }
});

test('load-time errors name the feature, input or output at fault', async () => {
  const model = foreignModel('input_features', 4);
  const base = { output: 'probability', outputKind: 'probability' as const };
  await assert.rejects(
    RankerSession.create(
      model,
      {
        ...base,
        inputs: [{ name: 'input_features', features: ['dot', 'no_such_thing', 'a', 'b'] }],
      },
      dim,
    ),
    (err: unknown) =>
      err instanceof UnknownFeatureError &&
      err.feature === 'no_such_thing' &&
      /no_such_thing/.test(err.message),
  );
  await assert.rejects(
    RankerSession.create(
      model,
      { ...base, inputs: [{ name: 'features', features: FEATURES }] },
      dim,
    ),
    /ranker input 'features': the model has no such input/,
  );
  await assert.rejects(
    RankerSession.create(
      model,
      { ...base, inputs: [{ name: 'input_features', features: ['dot', 'item_quality'] }] },
      dim,
    ),
    /'input_features': the model expects 4 floats per row, its features make 2/,
  );
  await assert.rejects(
    RankerSession.create(
      model,
      { ...base, output: 'score', inputs: [{ name: 'input_features', features: FEATURES }] },
      dim,
    ),
    /ranker output 'score'/,
  );
  await assert.rejects(
    RankerSession.create(
      model,
      {
        ...base,
        inputs: [{ name: 'input_features', features: ['user_emb[5]', 'dot', 'dot', 'dot'] }],
      },
      dim,
    ),
    /user_emb\[5\].*out of range/,
  );
});

test('scoring rejects inputs of the wrong shape, naming the input', async () => {
  const config = {
    inputs: [{ name: 'input_features', features: FEATURES }],
    output: 'probability',
    outputKind: 'probability' as const,
  };
  const session = await RankerSession.create(foreignModel('input_features', 4), config, dim);
  try {
    await assert.rejects(session.score({}), /ranker input 'input_features': missing/);
    await assert.rejects(
      session.score({ input_features: new Float32Array(6) }),
      /not a multiple of width 4/,
    );
  } finally {
    await session.release();
  }
});
