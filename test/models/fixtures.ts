// A small bundle's artifacts (3 items, 2 users, dim 2) for the model tests: every part a
// version can hold, so that a test can write it and spoil one part.
import { CatalogBuilder } from '../../src/data/log.js';
import type { BundleArtifacts } from '../../src/models/repository.js';

export function artifacts(name = 'demo'): BundleArtifacts {
  const c = new CatalogBuilder();
  c.add('a', 'Alpha', ['x'], 'c1', Date.UTC(2024, 0, 1), 0.25);
  c.add('b', 'Beta', ['x', 'y'], 'c2', NaN, 0.75);
  c.add('c', 'Gamma', [], '', Date.UTC(2024, 5, 1), 0.5);
  const items = c.finish();
  items.popularity = Float32Array.of(3, 2, 0);
  return {
    name,
    dim: 2,
    items,
    itemEmbeddings: Float32Array.of(1, 0, 0, 1, 0.5, 0.5),
    userIds: ['u1', 'u2'],
    userEmbeddings: Float32Array.of(0.1, 0.2, 0.3, 0.4),
    coldUserEmbedding: Float32Array.of(0.2, 0.3),
    content: { dim: 2, features: ['bias', 'cat:x'], weights: Float32Array.of(0, 0, 1, 1) },
    ranker: {
      onnx: Uint8Array.of(1, 2, 3),
      inputs: [{ name: 'deep', features: ['dot', 'item_quality'] }],
      output: 'logit',
      outputKind: 'logit',
    },
    metrics: { als_ndcg10: 0.5 },
    training: { source: 'test' },
  };
}
