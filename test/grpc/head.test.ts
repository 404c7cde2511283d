// The hand-written GetRecommendations encoding (head.ts: item list and head) must be byte for byte what protobufjs
// writes for the same response, over the shapes that change its layout: absent and present
// optional fields, false booleans, negative and fractional int32 counts, non-ASCII and long
// strings, empty maps and metadata longer than one varint byte of length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Recommendation, RecommendationResponse } from '../../src/api/types.js';
import {
  recommendationHeadToWire,
  recommendationResponseToWire,
  recommendationsToWire,
} from '../../src/transport/grpc/convert.js';
import { encodeRecommendationHead, encodeRecommendations } from '../../src/transport/grpc/head.js';
import { serverServiceDefinition, serviceDefinition } from '../../src/transport/grpc/proto.js';

const def = serviceDefinition().GetRecommendations!;
const serialize = def.responseSerialize as (v: unknown) => Buffer;
const deserialize = def.responseDeserialize as (b: Buffer) => Record<string, unknown>;

function response(meta: Partial<RecommendationResponse['metadata']>, id = 'req_1') {
  return {
    request_id: id,
    recommendations: [],
    metadata: {
      model_version: 'recserve-v1',
      experiment_id: null,
      variant: null,
      retrieval_sources: {},
      latency_ms: { total: 0, retrieval: 0, ranking: 0, feature_fetch: 0 },
      ...meta,
    },
  } as RecommendationResponse;
}

const cases: [string, RecommendationResponse][] = [
  [
    'plain cache hit',
    response({
      cache_hit: true,
      latency_ms: { total: 0.12, retrieval: 0, ranking: 0, feature_fetch: 0.01 },
    }),
  ],
  [
    'experiment, variant, every flag false',
    response({
      experiment_id: 'exp-7',
      variant: 'treatment',
      cold_start: false,
      cache_hit: false,
      ranking_fallback: false,
    }),
  ],
  [
    'a degraded answer (the feature store did not answer)',
    response({ cold_start: true, degraded: 'store_unavailable' }),
  ],
  [
    'negative and fractional counts',
    response({
      retrieval_sources: {
        collaborative: 120,
        trending: -3,
        content: 2.7,
        big: 2 ** 31 - 1,
        small: -(2 ** 31),
      },
    }),
  ],
  [
    'non-ASCII and long strings',
    response({ model_version: 'modèle-β-✓', variant: 'x'.repeat(300) }, 'ид-😀'),
  ],
  [
    'extra stages, no maps',
    response({
      retrieval_sources: {},
      latency_ms: {
        total: 5,
        retrieval: 1,
        ranking: 2,
        feature_fetch: 0.5,
        rerank: 0.25,
        cache: 1e-9,
      },
    }),
  ],
];

for (const [name, res] of cases) {
  test(`head bytes equal protobufjs's: ${name}`, () => {
    const tail = serialize({ recommendations: [{ item_id: 'i1', score: 0.5, rank: 1 }] });
    const ours = encodeRecommendationHead(res, tail);
    const head = serialize(recommendationHeadToWire(res));
    assert.deepEqual(ours, Buffer.concat([head, tail]));
    const back = deserialize(ours);
    assert.equal(back.request_id, res.request_id);
    assert.equal((back.recommendations as unknown[]).length, 1);
  });
}

const item = (over: Partial<Recommendation>): Recommendation => ({
  item_id: 'item_1',
  score: 0.8125,
  rank: 1,
  explanation: { reason: 'collaborative', source_items: [] },
  metadata: {},
  ...over,
});

const itemCases: [string, Recommendation[]][] = [
  ['no items', []],
  [
    'typed metadata, sources, open attributes of every JSON type',
    [
      item({
        explanation: { reason: 'similar_to_recent', source_items: ['a', 'b'] },
        metadata: {
          title: 'Película – 東京',
          categories: ['action', 'drama'],
          creator_id: 'c9',
          year: 2021,
          tags: ['x', 'y'],
          quality: 0.5,
          kids: false,
          note: 'plain',
          nested: { a: 1 },
        },
      }),
      item({ item_id: 'item_2', score: 0, rank: 2, metadata: { categories: [] } }),
    ],
  ],
  [
    'empty strings, negative rank, long title, many items',
    Array.from({ length: 60 }, (_, i) =>
      item({
        item_id: i === 0 ? '' : `item_${i}`,
        rank: i === 1 ? -5 : i + 1,
        score: 1 / (i + 1),
        explanation: { reason: '' as never, source_items: [] },
        metadata: { title: 't'.repeat(i * 5) },
      }),
    ),
  ],
];

for (const [name, recs] of itemCases) {
  test(`item bytes equal protobufjs's: ${name}`, () => {
    const ours = encodeRecommendations(recs);
    assert.deepEqual(ours, serialize({ recommendations: recommendationsToWire(recs) }));
  });
}

// The head goes first (before the items, unlike protobufjs's field order): equal decodes.
test('the server serializer answers fresh and cached responses as protobufjs would', () => {
  const ser = serverServiceDefinition().GetRecommendations!.responseSerialize as (
    v: unknown,
  ) => Buffer;
  const recs = itemCases[1]![1];
  for (const cache_hit of [false, true, true]) {
    const res = response({ cache_hit });
    res.recommendations = recs;
    assert.deepEqual(
      deserialize(ser(res)),
      deserialize(serialize(recommendationResponseToWire(res))),
    );
  }
});
