// The same requests over HTTP JSON, HTTP FlatBuffers and gRPC return the same items and
// scores, and every error maps to the matching status on each transport. Runs against the
// real server (startServer with the demo model repository: uWebSockets.js, the built addon,
// the ONNX ranker in workers) through the SDK, as a user of recserve would call it.
// The cache is off and exploration pinned to 0 so that every transport's answer is computed
// afresh and still deterministic; the ranking timeout is long so that a busy machine never
// sends one transport down the cosine fallback and another not.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RunningServer } from '../../src/cli/serve.js';
import { RecommendationClient, RecserveError } from '../../src/sdk/index.js';
import type { RecommendationResponse, SimilarResponse } from '../../src/api/types.js';
import { startTestServer } from '../http/harness.js';
import { RecserveGrpcClient } from '../../src/transport/grpc/client.js';
import { healthCheck, waitForHealth } from './helpers.js';

let server: RunningServer;
let base: string;
let address: string;
let clients: Record<'json' | 'flatbuffers' | 'grpc', RecommendationClient>;
let users: string[];
let items: string[];

before(async () => {
  ({ server, base } = await startTestServer([
    '--cache-ttl-ms',
    '0',
    '--exploration-rate',
    '0',
    '--ranking-timeout-ms',
    '10000',
  ]));
  await server.ready;
  address = server.grpc!.address;
  const opts = { timeoutMs: 15_000, retry: { maxAttempts: 1 } };
  clients = {
    json: new RecommendationClient({ transport: 'http', baseUrl: base, ...opts }),
    flatbuffers: new RecommendationClient({
      transport: 'http',
      baseUrl: base,
      format: 'flatbuffers',
      ...opts,
    }),
    grpc: new RecommendationClient({ transport: 'grpc', address, ...opts }),
  };
  const bundle = server.registry.current()!.bundle;
  users = bundle.userIds.slice(0, 3);
  items = bundle.items.ids.slice(0, 3);
});

after(async () => {
  for (const c of Object.values(clients ?? {})) c.close();
  await server?.close();
});

/** What must agree across transports: the list, in order, with its scores and reasons. */
// The cold-start mix draws its exploration items from the server's seeded RNG, one draw per
// request, so those slots differ between any two requests; every other slot is compared.
function recKey(r: RecommendationResponse): unknown {
  return r.recommendations
    .filter((x) => x.explanation.reason !== 'exploration')
    .map((x) => [
      x.item_id,
      x.score,
      x.rank,
      x.explanation.reason,
      x.explanation.source_items,
      x.metadata.title,
      x.metadata.categories,
    ]);
}
function simKey(r: SimilarResponse): unknown {
  return [
    r.source_item,
    r.similar_items.map((x) => [
      x.item_id,
      x.similarity_score,
      x.similarity_type,
      x.common_attributes,
    ]),
  ];
}

async function errorOf(p: Promise<unknown>): Promise<RecserveError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RecserveError, String(e));
    return e;
  }
  assert.fail('expected the call to fail');
}

describe('parity over HTTP JSON, HTTP FlatBuffers and gRPC', () => {
  test('health and readiness agree', async () => {
    assert.equal((await fetch(base + '/readyz')).status, 200);
    assert.equal(await waitForHealth(address, '', 'SERVING'), 'SERVING');
    assert.equal(await healthCheck(address, 'recserve.v1.RecommendationService'), 'SERVING');
  });

  test('recommendations: same items, scores and explanations', async () => {
    const cases = [
      ...users.map((u) => ({ user: u, o: { numItems: 10 } })),
      {
        user: users[0]!,
        o: { numItems: 5, excludeItems: [items[0]!], context: { device_type: 'mobile' as const } },
      },
      { user: users[1]!, o: { numItems: 8, diversitySettings: { category_diversity: 0.5 } } },
      { user: 'never-seen-user-parity', o: { numItems: 6 } }, // cold start
    ];
    for (const { user, o } of cases) {
      const [j, f, g] = await Promise.all([
        clients.json.getRecommendations(user, o),
        clients.flatbuffers.getRecommendations(user, o),
        clients.grpc.getRecommendations(user, o),
      ]);
      assert.ok(j.recommendations.length > 0, `${user}: empty list`);
      assert.deepEqual(recKey(f), recKey(j), `${user}: FlatBuffers differs from JSON`);
      assert.deepEqual(recKey(g), recKey(j), `${user}: gRPC differs from JSON`);
      assert.equal(f.metadata.model_version, j.metadata.model_version);
      assert.equal(g.metadata.model_version, j.metadata.model_version);
      assert.equal(g.metadata.cold_start, j.metadata.cold_start);
      assert.equal(f.metadata.cold_start, j.metadata.cold_start);
      assert.deepEqual(g.metadata.retrieval_sources, j.metadata.retrieval_sources);
      assert.deepEqual(f.metadata.retrieval_sources, j.metadata.retrieval_sources);
      assert.equal(typeof g.metadata.latency_ms.total, 'number');
    }
  });

  test('similar items: same items and scores', async () => {
    for (const item of items) {
      for (const similarityType of ['content', 'collaborative', 'hybrid'] as const) {
        const o = { numItems: 7, similarityType };
        const [j, f, g] = await Promise.all([
          clients.json.getSimilarItems(item, o),
          clients.flatbuffers.getSimilarItems(item, o),
          clients.grpc.getSimilarItems(item, o),
        ]);
        assert.ok(j.similar_items.length > 0);
        assert.deepEqual(simKey(f), simKey(j), `${item} ${similarityType}: FlatBuffers`);
        assert.deepEqual(simKey(g), simKey(j), `${item} ${similarityType}: gRPC`);
      }
    }
  });

  test('errors carry the same code, field and matching status on every transport', async () => {
    const expectAll = async (
      name: string,
      call: (c: RecommendationClient) => Promise<unknown>,
      code: string,
      field: string | undefined,
      http: number,
      grpcStatus: number,
    ): Promise<void> => {
      for (const [kind, c] of Object.entries(clients)) {
        const e = await errorOf(call(c));
        assert.equal(e.code, code, `${name} over ${kind}: ${e.message}`);
        assert.equal(e.field, field, `${name} over ${kind}`);
        assert.equal(e.fromServer, true, `${name} over ${kind}`);
        assert.equal(e.grpcStatus, grpcStatus);
        if (kind !== 'grpc') assert.equal(e.httpStatus, http, `${name} over ${kind}`);
      }
    };
    const S = grpc.status;
    await expectAll(
      'num_items 0',
      (c) => c.getRecommendations(users[0]!, { numItems: 0 }),
      'invalid_argument',
      'num_items',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'num_items 501',
      (c) => c.getRecommendations(users[0]!, { numItems: 501 }),
      'invalid_argument',
      'num_items',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'bad device',
      (c) => c.getRecommendations(users[0]!, { context: { device_type: 'toaster' as 'tv' } }),
      'invalid_argument',
      'context.device_type',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'bad filter',
      (c) => c.getRecommendations(users[0]!, { filters: { min_quality_score: 1.5 } }),
      'invalid_argument',
      'filters.min_quality_score',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'unknown item',
      (c) => c.getSimilarItems('no-such-item-xyz'),
      'not_found',
      'item_id',
      404,
      S.NOT_FOUND,
    );
    await expectAll(
      'bad similarity',
      (c) => c.getSimilarItems(items[0]!, { similarityType: 'vibes' as 'content' }),
      'invalid_argument',
      'similarity_type',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'bad event',
      (c) =>
        c.recordInteractions(users[0]!, [{ item_id: items[0]!, event_type: 'teleport' as 'view' }]),
      'invalid_argument',
      'events[0].event_type',
      400,
      S.INVALID_ARGUMENT,
    );
    await expectAll(
      'bad negative',
      (c) => c.recordNegativeFeedback(users[0]!, items[0]!, 'meh' as 'hide'),
      'invalid_argument',
      'feedback_type',
      400,
      S.INVALID_ARGUMENT,
    );
    // Too large: 413 over HTTP, RESOURCE_EXHAUSTED over gRPC (grpc-js's own limit, so the
    // gRPC error is identified by status: the server never decoded the message).
    const huge = Array.from({ length: 700 }, (_, i) => `x${i}_${'y'.repeat(2000)}`);
    for (const [kind, c] of Object.entries(clients)) {
      const e = await errorOf(c.getRecommendations(users[0]!, { excludeItems: huge }));
      assert.equal(e.code, 'payload_too_large', `${kind}: ${e.message}`);
      assert.equal(e.grpcStatus, S.RESOURCE_EXHAUSTED);
      if (kind !== 'grpc') assert.equal(e.httpStatus, 413);
    }
  });

  test('a FlatBuffers body that is not one is malformed_body (400), and feedback is JSON only', async () => {
    const r = await fetch(base + '/v1/recommendations', {
      method: 'POST',
      headers: { 'content-type': 'application/x-flatbuffers' },
      body: JSON.stringify({ user_id: 'u' }),
    });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'malformed_body');
    const fb = await fetch(base + '/v1/feedback', {
      method: 'POST',
      headers: { 'content-type': 'application/x-flatbuffers' },
      body: new Uint8Array(16),
    });
    assert.equal(fb.status, 415);
    const acc = await fetch(base + '/v1/similar', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/x-flatbuffers' },
      body: JSON.stringify({ item_id: items[0] }),
    });
    assert.equal(acc.status, 200);
    assert.equal(acc.headers.get('content-type'), 'application/x-flatbuffers');
  });

  test('a body cut short or with a string that is not UTF-8 is malformed_body on both', async () => {
    const grpcRaw = (bytes: Buffer): Promise<grpc.ServiceError | null> => {
      const c = new grpc.Client(address, grpc.credentials.createInsecure());
      return new Promise((resolve) => {
        c.makeUnaryRequest<Buffer, Buffer>(
          '/recserve.v1.RecommendationService/GetRecommendations',
          (b) => b,
          (b) => b,
          bytes,
          (err) => {
            c.close();
            resolve(err);
          },
        );
      });
    };
    // The same user_id bytes in a JSON body and in a protobuf message.
    const cases: [string, Buffer, Buffer][] = [
      [
        'not UTF-8',
        Buffer.from('0a02fffe', 'hex'),
        Buffer.from('{"user_id":"\xff\xfe"}', 'latin1'),
      ],
      ['cut short', Buffer.from('0a5061', 'hex'), Buffer.from('{"user_id":"a')],
    ];
    for (const [name, message, json] of cases) {
      const r = await fetch(base + '/v1/recommendations', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: json,
      });
      assert.equal(r.status, 400, name);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'malformed_body');
      const e = await grpcRaw(message);
      assert.equal(e?.code, grpc.status.INVALID_ARGUMENT, name);
      assert.equal(e.metadata.get('recserve-error-code')[0], 'malformed_body', name);
      assert.equal(e.metadata.get('recserve-error-field')[0], 'user_id', name);
    }
  });

  test('a deadline that cannot be met is deadline_exceeded on every transport', async () => {
    for (const [kind, c] of Object.entries(clients)) {
      const e = await errorOf(c.getRecommendations(users[2]!, { numItems: 50, timeoutMs: 1 }));
      assert.equal(e.code, 'deadline_exceeded', `${kind}: ${e.message}`);
    }
  });

  test('feedback over gRPC changes the next answer and duplicates are ignored', async () => {
    const user = users[2]!;
    const first = await clients.grpc.getRecommendations(user, { numItems: 5 });
    const top = first.recommendations[0]!.item_id;
    const neg = await clients.grpc.recordNegativeFeedback(user, top, 'not_interested');
    assert.equal(neg.status, 'accepted');
    const after = await clients.json.getRecommendations(user, { numItems: 20 });
    assert.ok(!after.recommendations.some((x) => x.item_id === top), 'blocked item came back');

    const ts = new Date().toISOString();
    const events = [
      { item_id: items[1]!, event_type: 'click' as const, timestamp: ts },
      { item_id: items[2]!, event_type: 'view' as const, timestamp: ts, duration_seconds: 30 },
    ];
    const a = await clients.grpc.recordInteractions(user, events);
    assert.deepEqual(a, { status: 'accepted', events_processed: 2, duplicates_ignored: 0 });
    const b = await clients.json.recordInteractions(user, events);
    assert.deepEqual(b, { status: 'accepted', events_processed: 0, duplicates_ignored: 2 });
  });

  test('StreamFeedback records batches from many users and counts duplicates', async () => {
    const g = (clients.grpc.transport as unknown as { client: RecserveGrpcClient }).client;
    const ts = new Date(Date.now() - 5000).toISOString();
    const batches = users.map((u, i) => ({
      user_id: u,
      events: [{ item_id: items[i]!, event_type: 'like' as const, timestamp: ts }],
    }));
    const r1 = await g.streamFeedback([...batches, batches[0]!]);
    assert.deepEqual(r1, { status: 'accepted', events_processed: 3, duplicates_ignored: 1 });
  });
});

describe('readiness and draining, on the real server', () => {
  test('not ready is unavailable on every transport (503 / UNAVAILABLE), and retried', async () => {
    const { server: s2, base: b2 } = await startTestServer([
      '--models',
      '/nonexistent-models',
      // Polling off: start-up gives up (polling on, it would watch for a version).
      '--model-poll-ms',
      '0',
    ]);
    try {
      await assert.rejects(s2.ready);
      assert.equal(await waitForHealth(s2.grpc!.address, '', 'NOT_SERVING'), 'NOT_SERVING');
      const opts = { timeoutMs: 5000, retry: { maxAttempts: 2, baseDelayMs: 1 } };
      for (const c of [
        new RecommendationClient({ transport: 'http', baseUrl: b2, ...opts }),
        new RecommendationClient({
          transport: 'http',
          baseUrl: b2,
          format: 'flatbuffers',
          ...opts,
        }),
        new RecommendationClient({ transport: 'grpc', address: s2.grpc!.address, ...opts }),
      ]) {
        const e = await errorOf(c.getRecommendations('u'));
        assert.equal(e.code, 'unavailable', `${c.transport.kind}: ${e.message}`);
        assert.equal(e.fromServer, true);
        assert.equal(e.grpcStatus, grpc.status.UNAVAILABLE);
        if (c.transport.kind === 'http') assert.equal(e.httpStatus, 503);
        assert.equal(e.attempts, 2);
        c.close();
      }
    } finally {
      await s2.close();
    }
  });

  test('close() drains an open gRPC stream: it finishes and is counted', async () => {
    const g = new RecserveGrpcClient(address);
    const ts = new Date().toISOString();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* batches(): AsyncGenerator<{
      user_id: string;
      events: { item_id: string; event_type: 'view'; timestamp: string }[];
    }> {
      yield {
        user_id: users[0]!,
        events: [{ item_id: items[0]!, event_type: 'view', timestamp: ts }],
      };
      await gate; // the server starts closing while the stream is open
      yield {
        user_id: users[1]!,
        events: [{ item_id: items[1]!, event_type: 'view', timestamp: ts }],
      };
    }
    const streamed = g.streamFeedback(batches());
    await new Promise((r) => setTimeout(r, 100));
    const closing = server.close();
    await new Promise((r) => setTimeout(r, 100));
    release();
    assert.deepEqual(await streamed, {
      status: 'accepted',
      events_processed: 2,
      duplicates_ignored: 0,
    });
    await closing;
    g.close();
  });
});
