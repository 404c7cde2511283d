// The server's strict request decoder (decode.ts) against protobufjs, the decoder it replaces:
// for valid bytes both must yield the same object (absent fields absent, negative int32s,
// non-ASCII strings, a leading BOM, unknown fields of every wire type skipped); for bytes
// that are not the message it must answer malformed_body and never throw, which grpc-js
// would turn into INTERNAL. The answers on the wire are in fast.test.ts and server.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/api/errors.js';
import { serverServiceDefinition, serviceDefinition } from '../../src/transport/grpc/proto.js';

const lenient = serviceDefinition();
const strict = serverServiceDefinition();

type Decode = (b: Buffer) => unknown;

/** protobufjs's decoder (what grpc-js would call) and the server's, for one method. */
function decoders(method: string): [Decode, Decode] {
  return [
    lenient[method]!.requestDeserialize as Decode,
    strict[method]!.requestDeserialize as Decode,
  ];
}

/** Bytes written as spaced hex, as protobuf dumps show them. */
function hex(s: string): Buffer {
  return Buffer.from(s.replace(/ /g, ''), 'hex');
}

function encode(method: string, req: unknown): Buffer {
  return (lenient[method]!.requestSerialize as (v: unknown) => Buffer)(req);
}

const valid: [string, unknown][] = [
  ['GetRecommendations', { user_id: 'u1' }],
  ['GetRecommendations', {}],
  [
    'GetRecommendations',
    {
      user_id: 'user_123',
      request_type: 'home_feed',
      num_items: 20,
      context: {
        device_type: 'mobile',
        platform: '',
        timestamp: '2026-01-24T10:00:00Z',
        location: { country: 'US', region: 'CA' },
        session_id: 's',
      },
      exclude_items: ['a', '', 'é', '😀', '\ufeffbom'],
      filters: { categories: ['action'], min_quality_score: 0 },
      diversity_settings: { category_diversity: 0.5, creator_diversity: -1.25 },
    },
  ],
  ['GetRecommendations', { user_id: 'x'.repeat(300), num_items: -7, context: {} }],
  ['GetRecommendations', { user_id: 'u', num_items: 2 ** 31 - 1, filters: {} }],
  ['GetSimilarItems', { item_id: 'item_1', user_id: '', num_items: 0, similarity_type: 'hybrid' }],
  [
    'RecordFeedback',
    {
      user_id: 'u1',
      events: [
        { item_id: 'a', event_type: 'view', duration_seconds: 12.5, completion_rate: 1 },
        { item_id: 'b', event_type: 'click', timestamp: '2026-01-24T10:00:00Z' },
        { item_id: 'c', event_type: 'like', context: { recommendation_id: 'r', position: -1 } },
        {},
      ],
    },
  ],
  ['RecordNegativeFeedback', { user_id: 'u1', item_id: 'i', feedback_type: 'hide', reason: 'ü' }],
];

test('valid requests decode to what protobufjs decodes', () => {
  for (const [method, req] of valid) {
    const [pbjs, ours] = decoders(method);
    const bytes = encode(method, req);
    assert.deepEqual(ours(bytes), pbjs(bytes), `${method} ${JSON.stringify(req)}`);
  }
});

test('unknown fields of every wire type are skipped, as protobufjs skips them', () => {
  const [pbjs, ours] = decoders('GetRecommendations');
  const known = encode('GetRecommendations', { user_id: 'u1', num_items: 3 });
  const unknown = hex(
    [
      'f8 06 96 01', // field 111, varint
      'f9 06 01 02 03 04 05 06 07 08', // i64
      'fa 06 03 61 62 63', // length-delimited
      'fd 06 01 02 03 04', // i32
      'fb 06 08 01 fb 06 fc 06 fc 06', // a group holding a varint and a group
    ].join(' '),
  );
  for (const bytes of [Buffer.concat([unknown, known]), Buffer.concat([known, unknown])]) {
    assert.deepEqual(ours(bytes), { user_id: 'u1', num_items: 3 });
    assert.deepEqual(ours(bytes), pbjs(bytes));
  }
});

test('an int32 sent as a 64-bit varint keeps its low 32 bits, as protobufjs reads it', () => {
  const [pbjs, ours] = decoders('GetRecommendations');
  for (const varint of [
    '20 ff ff ff ff ff ff ff ff ff 01', // -1
    '20 85 80 80 80 10', // 2^32 + 5
    '20 80 80 80 80 08', // 2^31
  ]) {
    const bytes = hex(varint);
    assert.deepEqual(ours(bytes), pbjs(bytes), varint);
  }
});

test('a message field sent twice is merged, as the protobuf spec says', () => {
  const [, ours] = decoders('GetRecommendations');
  const a = encode('GetRecommendations', { context: { device_type: 'tv' } });
  const b = encode('GetRecommendations', { context: { platform: 'ios' } });
  assert.deepEqual(ours(Buffer.concat([a, b])), {
    context: { device_type: 'tv', platform: 'ios' },
  });
});

test('no bytes make it throw: every refusal is malformed_body', () => {
  // Valid requests with bytes flipped, cut or inserted, plus noise; a fixed seed keeps any
  // failure reproducible.
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    const [method, req] = valid[rand(valid.length)]!;
    const [, ours] = decoders(method);
    const bytes = Buffer.from(encode(method, req));
    const mutated =
      i % 4 === 0
        ? Buffer.from(Array.from({ length: rand(40) }, () => rand(256)))
        : i % 4 === 1
          ? bytes.subarray(0, rand(bytes.length + 1))
          : Buffer.concat([bytes.subarray(0, rand(bytes.length + 1)), Buffer.from([rand(256)])]);
    if (i % 4 === 3 && mutated.length > 0) mutated[rand(mutated.length)] = rand(256);
    const out = ours(mutated);
    if (out instanceof ApiError) {
      assert.equal(out.code, 'malformed_body', `${mutated.toString('hex')}: ${out.message}`);
      refused++;
    } else assert.equal(typeof out, 'object');
  }
  assert.ok(refused > 1000, `only ${refused} of 20000 mangled requests were refused`);
});
