// The hand-written GetRecommendations head (head.ts) must be byte for byte what protobufjs
// writes for the same response, over the shapes that change its layout: absent and present
// optional fields, false booleans, negative and fractional int32 counts, non-ASCII and long
// strings, empty maps and metadata longer than one varint byte of length.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RecommendationResponse } from '../../src/api/types.js';
import { recommendationHeadToWire } from '../../src/transport/grpc/convert.js';
import { encodeRecommendationHead } from '../../src/transport/grpc/head.js';
import { serviceDefinition } from '../../src/transport/grpc/proto.js';

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
