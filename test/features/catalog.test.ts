// Each registered feature computes what its doc line says, for a hand-made context.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FEATURES,
  FRESHNESS_HALF_LIFE_DAYS,
  UnknownFeatureError,
  describeFeatures,
  resolveFeature,
  type UserFeatureView,
} from '../../src/features/catalog.js';
import { requestContext, setCandidate } from '../../src/features/assemble.js';
import type { ItemCatalog } from '../../src/models/bundle.js';

const DAY = 86_400_000;
const now = Date.UTC(2025, 5, 4, 18, 0, 0); // a Wednesday, 18:00 UTC
const dim = 3;
const items: ItemCatalog = {
  ids: ['i0', 'i1', 'i2'],
  index: new Map(),
  titles: ['', '', ''],
  categoryNames: ['a', 'b', 'c'],
  categories: [Uint16Array.of(0, 2), Uint16Array.of(1), new Uint16Array(0)],
  creatorIds: ['alice', 'bob', ''],
  createdAt: Float64Array.of(now - 30 * DAY, now - 2 * DAY, NaN),
  quality: Float32Array.of(0.8, 0.1, NaN),
  popularity: Float32Array.of(99, 0, 7),
};
const itemEmbeddings = Float32Array.of(1, 2, 2, 0, 0, 0, 3, 0, 4);
const user: UserFeatureView = {
  embedding: Float32Array.of(2, 0, 1),
  categoryAffinity: Float32Array.of(0.5, 0.2, 0.1),
  itemCounts: new Map([[0, 3]]),
  creatorCounts: new Map([['alice', 7]]),
  interactionCount: 12,
  recentItems: Int32Array.of(2, 1),
};

function compute(name: string, item: number, device: 'tv' | null = 'tv'): number[] {
  const ctx = requestContext({ dim, items, itemEmbeddings }, user, {
    timestampMs: now,
    device: device ?? undefined,
  });
  setCandidate(ctx, item, item === 1 ? 0.25 : NaN);
  const def = resolveFeature(name, dim);
  const out = new Float32Array(def.width(dim));
  def.compute(ctx, out, 0);
  return Array.from(out);
}

function close(actual: number[], expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((v, i) =>
    assert.ok(Math.abs(v - expected[i]!) < 1e-5, `${what}: ${actual} vs ${expected}`),
  );
}

test('embedding, similarity and retrieval features', () => {
  close(compute('user_emb', 0), [2, 0, 1], 'user_emb');
  close(compute('item_emb', 2), [3, 0, 4], 'item_emb');
  close(compute('item_emb[2]', 0), [2], 'item_emb[2]');
  close(compute('user_item_product', 0), [2, 0, 2], 'user_item_product');
  close(compute('dot', 0), [4], 'dot');
  close(compute('cosine', 0), [4 / (3 * Math.sqrt(5))], 'cosine');
  close(compute('cosine', 1), [0], 'cosine of a zero vector');
  close(compute('item_norm', 2), [5], 'item_norm');
  close(compute('retrieval_score', 1), [0.25], 'given retrieval score');
  close(compute('retrieval_score', 0), [4], 'retrieval score falls back to dot');
  // Recent items are 2 (unit (0.6, 0, 0.8)) and 1 (zero vector, skipped).
  close(compute('recent_sim_max', 0), [(0.6 + 1.6) / 3], 'recent_sim_max');
  close(compute('recent_sim_mean', 2), [1], 'recent_sim_mean of the item itself');
  close(compute('recent3_sim_max', 0), [(0.6 + 1.6) / 3], 'recent3_sim_max');
  // Of the recent items only item 1 has a known age (2 days).
  close(compute('recent_age_gap', 0), [Math.log1p(30) - Math.log1p(2)], 'recent_age_gap');
});

test('item features: popularity, freshness, age, quality', () => {
  close(compute('item_log_popularity', 0), [Math.log(100)], 'popularity');
  close(compute('item_freshness', 0), [Math.pow(0.5, 30 / FRESHNESS_HALF_LIFE_DAYS)], 'fresh 0');
  close(compute('item_freshness', 1), [Math.pow(0.5, 2 / FRESHNESS_HALF_LIFE_DAYS)], 'fresh 1');
  close(compute('item_log_age_days', 1), [Math.log1p(2)], 'age');
  close(compute('item_log_age_days', 2), [Math.log1p(365)], 'unknown age reads as a year');
  close(compute('item_quality', 0), [0.8], 'quality');
  close(compute('item_quality', 2), [0.5], 'unknown quality reads as 0.5');
});

test('user-item features: affinity, previous interactions', () => {
  close(compute('category_affinity', 0), [0.6], 'affinity sum');
  close(compute('category_affinity_max', 0), [0.5], 'affinity max');
  close(compute('category_affinity', 2), [0], 'no categories');
  close(compute('user_item_prev', 0), [Math.log1p(3)], 'item prev');
  close(compute('user_item_prev', 1), [0], 'item never seen');
  close(compute('user_creator_prev', 0), [Math.log1p(7)], 'creator prev');
  close(compute('user_creator_prev', 2), [0], 'no creator');
  close(compute('user_log_interactions', 0), [Math.log1p(12)], 'activity');
  close(compute('cross_affinity_popularity', 0), [0.6 * Math.log(100)], 'cross');
  close(compute('cross_dot_affinity', 0), [4 * 0.6], 'cross dot affinity');
});

test('context features: cyclical time and device one-hot', () => {
  close(compute('hour_sin', 0), [Math.sin((2 * Math.PI * 18) / 24)], 'hour_sin');
  close(compute('hour_cos', 0), [Math.cos((2 * Math.PI * 18) / 24)], 'hour_cos');
  close(compute('weekday_sin', 0), [Math.sin((2 * Math.PI * 3) / 7)], 'weekday_sin');
  close(compute('weekday_cos', 0), [Math.cos((2 * Math.PI * 3) / 7)], 'weekday_cos');
  close(compute('device', 0), [0, 0, 0, 1, 0], 'device one-hot');
  close(compute('device', 0, null), [0, 0, 0, 0, 0], 'unknown device');
  close(compute('device_tv', 0), [1], 'device_tv');
  close(compute('device_mobile', 0), [0], 'device_mobile');
});

test('every registered feature is documented and finite on this context', () => {
  assert.equal(describeFeatures().length, FEATURES.size + 1);
  for (const [name, def] of FEATURES) {
    assert.ok(def.doc.length > 10, `${name} has a doc line`);
    for (let item = 0; item < 3; item++) {
      for (const v of compute(name, item)) assert.ok(Number.isFinite(v), `${name}(${item}) = ${v}`);
    }
  }
});

test('unknown or out-of-range names throw UnknownFeatureError naming the feature', () => {
  assert.throws(
    () => resolveFeature('user_age', dim),
    (e: unknown) =>
      e instanceof UnknownFeatureError && e.feature === 'user_age' && /user_age/.test(e.message),
  );
  assert.throws(() => resolveFeature('item_emb[3]', dim), /item_emb\[3\].*out of range/);
  assert.throws(() => resolveFeature('dot[0]', dim), UnknownFeatureError);
});
