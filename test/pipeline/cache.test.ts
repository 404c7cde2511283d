// The cached-answer fast path (pipeline/cache.ts): the bytes it pre-encodes must be exactly
// the JSON of the answer object it returns, for every request that hits the same entry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HotAnswers, PRE_ENCODED_JSON } from '../../src/pipeline/cache.js';
import type { RecommendationResponse } from '../../src/api/types.js';

const stored: RecommendationResponse = {
  request_id: 'req_original',
  recommendations: [
    {
      item_id: 'i"1',
      score: 0.5,
      rank: 1,
      explanation: { reason: 'collaborative', source_items: [] },
      metadata: { title: 'Ünïcode \u2028 title', categories: ['a'], creator_id: 'c' },
    },
  ],
  metadata: {
    model_version: 'recserve-v1',
    experiment_id: null,
    variant: null,
    retrieval_sources: { collaborative: 1 },
    latency_ms: { total: 12.5, retrieval: 7, ranking: 5, feature_fetch: 0.01 },
    cold_start: false,
  },
};

test('a hit is re-stamped with its own request id and latency, and its JSON matches it', () => {
  const hot = new HotAnswers();
  const raw = JSON.stringify(stored);
  for (const [id, total] of [
    ['req_a', 0.03],
    ['req_b', 1e-7],
    ['req_c', NaN],
  ] as const) {
    const latency = { total, retrieval: 0, ranking: 0, feature_fetch: 0, cache: total };
    const resp = hot.answer('k', raw, id, latency);
    const encode = (resp as unknown as Record<symbol, () => Uint8Array>)[PRE_ENCODED_JSON]!;
    assert.equal(typeof encode, 'function');
    const bytes = encode();
    assert.ok(bytes instanceof Uint8Array);
    const parsed = JSON.parse(Buffer.from(bytes).toString('utf8')) as RecommendationResponse;
    assert.deepEqual(parsed, JSON.parse(JSON.stringify(resp)));
    assert.equal(parsed.request_id, id);
    assert.equal(parsed.metadata.cache_hit, true);
    assert.deepEqual(parsed.recommendations, stored.recommendations);
    // Non-finite numbers encode as null, as JSON.stringify does.
    assert.equal(parsed.metadata.latency_ms.total, Number.isFinite(total) ? total : null);
  }
});

test('a changed stored value replaces the entry', () => {
  const hot = new HotAnswers();
  hot.answer('k', JSON.stringify(stored), 'req_1', {
    total: 1,
    retrieval: 0,
    ranking: 0,
    feature_fetch: 0,
  });
  const other = { ...stored, recommendations: [] };
  const r = hot.answer('k', JSON.stringify(other), 'req_2', {
    total: 1,
    retrieval: 0,
    ranking: 0,
    feature_fetch: 0,
  });
  assert.deepEqual(r.recommendations, []);
});
