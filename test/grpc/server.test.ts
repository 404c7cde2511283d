// Transport-level behaviour of the gRPC front end, against a real grpc-js server on an
// ephemeral port and a real client: status mapping of every registry error, deadlines,
// message size limits, health, reflection, client-streamed feedback and draining. The
// pipeline is a scripted stand-in here; test/grpc/parity.test.ts runs the real one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { ApiError, ERRORS, type ErrorCode } from '../../src/api/errors.js';
import type { FeedbackRequest } from '../../src/api/types.js';
import { startGrpcServer, type GrpcServerHandle } from '../../src/transport/grpc/server.js';
import { RecserveGrpcClient } from '../../src/transport/grpc/client.js';
import { ERROR_CODE_KEY, ERROR_FIELD_KEY } from '../../src/transport/grpc/status.js';
import { serviceClientConstructor, serviceDefinition } from '../../src/transport/grpc/proto.js';
import { ScriptedService, healthCheck, reflect, sleep, waitForHealth } from './helpers.js';

const svc = new ScriptedService();
let server: GrpcServerHandle;
let client: RecserveGrpcClient;

before(async () => {
  server = await startGrpcServer(svc, { port: 0, healthPollMs: 20 });
  client = new RecserveGrpcClient(server.address);
});
after(async () => {
  client.close();
  await server.close(1000);
});

/** Raw call through a plain generated client: the status and trailers as they arrive. */
function rawCall(
  method: string,
  req: unknown,
  deadline?: number,
): Promise<grpc.ServiceError | unknown> {
  const Ctor = serviceClientConstructor();
  const c = new Ctor(server.address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const fn = (c as unknown as Record<string, (...a: unknown[]) => unknown>)[method].bind(c);
    fn(req, new grpc.Metadata(), deadline ? { deadline } : {}, (err: unknown, res: unknown) => {
      c.close();
      resolve(err ?? res);
    });
  });
}

test('unary RPCs carry the JSON contract both ways', async () => {
  svc.behaviour = undefined;
  const res = await client.getRecommendations({
    user_id: 'u1',
    num_items: 3,
    context: { device_type: 'mobile', location: { country: 'US' } },
    filters: { categories: ['action'], min_quality_score: 0 },
  });
  assert.equal(res.recommendations.length, 3);
  assert.deepEqual(res.recommendations[0], {
    item_id: 'item_0',
    score: 1,
    rank: 1,
    explanation: { reason: 'similar_to_recent', source_items: ['item_9'] },
    // Open metadata keys travel as strings in `attributes` (JSON-encoded when not strings).
    metadata: { title: 'Title 0', categories: ['action'], creator_id: 'c1', year: '2020' },
  });
  assert.equal(res.metadata.experiment_id, null);
  assert.equal(res.metadata.variant, 'control');
  assert.equal(res.metadata.cache_hit, false);
  assert.deepEqual(res.metadata.retrieval_sources, { collaborative: 3, trending: 0 });
  assert.equal(res.metadata.latency_ms.rerank, 0.25);
  // What the pipeline received: validated, defaults applied, min_quality_score 0 kept.
  const seen = svc.calls.at(-1)!.req as Record<string, unknown>;
  assert.deepEqual(seen, {
    user_id: 'u1',
    request_type: 'home_feed',
    num_items: 3,
    context: { device_type: 'mobile', location: { country: 'US' } },
    filters: { categories: ['action'], min_quality_score: 0 },
  });

  const sim = await client.getSimilarItems({ item_id: 'item_1' });
  assert.equal(sim.source_item, 'item_1');
  assert.deepEqual(sim.similar_items[1], {
    item_id: 'item_8',
    similarity_score: 0,
    similarity_type: 'content',
    common_attributes: [],
  });
  assert.deepEqual(svc.calls.at(-1)!.req, {
    item_id: 'item_1',
    num_items: 20,
    similarity_type: 'hybrid',
  });

  const neg = await client.recordNegativeFeedback({
    user_id: 'u1',
    item_id: 'i',
    feedback_type: 'hide',
  });
  assert.deepEqual(neg, { status: 'accepted', action_taken: 'item_blocked' });
});

test('a cached answer (its item list encoded once, then reused) decodes like a fresh one', async () => {
  svc.behaviour = undefined;
  const fresh = await client.getRecommendations({ user_id: 'u', num_items: 4 });
  svc.cachedAnswer = await svc.recommend({ user_id: 'u', num_items: 4 });
  try {
    for (let i = 0; i < 3; i++) {
      const hit = await client.getRecommendations({ user_id: 'u', num_items: 4 });
      assert.deepEqual(hit.recommendations, fresh.recommendations);
      assert.equal(hit.metadata.cache_hit, true);
      assert.equal(hit.request_id, `req_${svc.calls.length}`);
      assert.equal(hit.metadata.variant, 'control');
      assert.equal(hit.metadata.experiment_id, null);
    }
  } finally {
    svc.cachedAnswer = undefined;
  }
});

test('bad input is INVALID_ARGUMENT naming the field, as over HTTP', async () => {
  const cases: [unknown, string][] = [
    [{ user_id: 'u', num_items: 0 }, 'num_items'], // present zero is not "absent"
    [{ user_id: 'u', num_items: 501 }, 'num_items'],
    [{ num_items: 5 }, 'user_id'],
    [{ user_id: 'u', context: { device_type: 'fridge' } }, 'context.device_type'],
    [{ user_id: 'u', filters: { min_quality_score: 2 } }, 'filters.min_quality_score'],
    [{ user_id: 'u', context: { timestamp: 'yesterday' } }, 'context.timestamp'],
  ];
  for (const [req, field] of cases) {
    const err = (await rawCall('GetRecommendations', req)) as grpc.ServiceError;
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, JSON.stringify(req));
    assert.equal(err.metadata.get(ERROR_FIELD_KEY)[0], field);
    assert.equal(err.metadata.get(ERROR_CODE_KEY)[0], 'invalid_argument');
    assert.match(err.details, new RegExp(`^${field.replace(/[.[\]]/g, '\\$&')}: `));
  }
  const fb = (await rawCall('RecordFeedback', {
    user_id: 'u',
    events: [
      { item_id: 'a', event_type: 'view' },
      { item_id: 'b', event_type: 'teleport' },
    ],
  })) as grpc.ServiceError;
  assert.equal(fb.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(fb.metadata.get(ERROR_FIELD_KEY)[0], 'events[1].event_type');
});

test('every registry error maps to its gRPC status, code and field in one place', async () => {
  for (const code of Object.keys(ERRORS) as ErrorCode[]) {
    svc.behaviour = async () => {
      throw new ApiError(code, `scripted ${code}`, code === 'invalid_argument' ? 'x.y' : undefined);
    };
    const err = (await rawCall('GetSimilarItems', { item_id: 'i' })) as grpc.ServiceError;
    assert.equal(err.code, ERRORS[code].grpc, code);
    assert.equal(err.details, `scripted ${code}`);
    assert.equal(err.metadata.get(ERROR_CODE_KEY)[0], code);
    // The typed client turns it back into the same registry error.
    await assert.rejects(client.getSimilarItems({ item_id: 'i' }), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.code, code);
      if (code === 'invalid_argument') assert.equal(e.field, 'x.y');
      return true;
    });
  }
  // A non-ApiError thrown by the pipeline is INTERNAL, never a crash.
  svc.behaviour = async () => {
    throw new TypeError('boom');
  };
  const err = (await rawCall('GetRecommendations', { user_id: 'u' })) as grpc.ServiceError;
  assert.equal(err.code, grpc.status.INTERNAL);
  svc.behaviour = undefined;
});

test("the client's deadline reaches the pipeline, and a passed deadline stops the call", async () => {
  svc.behaviour = undefined;
  const deadline = Date.now() + 5000;
  await client.getRecommendations({ user_id: 'u' }, { deadline });
  const got = svc.calls.at(-1)!.opts!.deadline!;
  // grpc-timeout travels as a relative duration: allow for the time on the wire.
  assert.ok(Math.abs(got - deadline) < 1000, `deadline ${got} vs ${deadline}`);
  assert.ok(svc.calls.at(-1)!.opts!.signal instanceof AbortSignal);

  let signal: AbortSignal | undefined;
  svc.behaviour = async (_m, opts) => {
    signal = opts?.signal;
    await sleep(2000);
  };
  const t0 = Date.now();
  await assert.rejects(
    client.getRecommendations({ user_id: 'u' }, { deadline: Date.now() + 100 }),
    (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.code, 'deadline_exceeded');
      return true;
    },
  );
  // Far below the pipeline's 2 s: the client stopped at its deadline (slack for a busy box).
  assert.ok(Date.now() - t0 < 1500, 'the client gave up at its deadline');
  for (let i = 0; i < 100 && !signal?.aborted; i++) await sleep(10);
  assert.equal(signal?.aborted, true, 'the pipeline was told the caller went away');
  svc.behaviour = undefined;
});

test('oversized messages are rejected cleanly and the server keeps serving', async () => {
  const big = Array.from({ length: 600 }, (_, i) => `item_${i}_${'x'.repeat(2000)}`);
  const err = (await rawCall('GetRecommendations', {
    user_id: 'u',
    exclude_items: big,
  })) as grpc.ServiceError;
  assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
  const ok = await client.getRecommendations({ user_id: 'u', num_items: 1 });
  assert.equal(ok.recommendations.length, 1);
});

test('health follows readiness; reflection lists the services', async () => {
  assert.equal(await healthCheck(server.address, ''), 'SERVING');
  assert.equal(await healthCheck(server.address, 'recserve.v1.RecommendationService'), 'SERVING');
  svc.isReady = false;
  assert.equal(await waitForHealth(server.address, '', 'NOT_SERVING'), 'NOT_SERVING');
  svc.isReady = true;
  assert.equal(await waitForHealth(server.address, '', 'SERVING'), 'SERVING');

  const list = await reflect(server.address, { list_services: '' });
  const names = (list.list_services_response as { service: { name: string }[] }).service.map(
    (s) => s.name,
  );
  assert.ok(names.includes('recserve.v1.RecommendationService'), names.join());
  assert.ok(names.includes('grpc.health.v1.Health'), names.join());
  const file = await reflect(server.address, {
    file_containing_symbol: 'recserve.v1.RecommendationService',
  });
  const protos = (file.file_descriptor_response as { file_descriptor_proto: Buffer[] })
    .file_descriptor_proto;
  assert.ok(protos.length >= 1);
  assert.ok(Buffer.concat(protos).includes('GetRecommendations'));
});

test('streamed feedback is recorded in order, counted, and duplicates ignored', async () => {
  svc.behaviour = undefined;
  const before = svc.calls.length;
  const batches = Array.from({ length: 50 }, (_, i) => ({
    user_id: `s${i % 5}`,
    events: [
      { item_id: `i${i}`, event_type: 'view' as const, timestamp: '2026-01-24T10:00:00Z' },
      { item_id: `i${i}`, event_type: 'click' as const, timestamp: '2026-01-24T10:00:00Z' },
    ],
  }));
  // The last 10 batches repeat earlier ones: same idempotency key, ignored.
  const res = await client.streamFeedback([...batches, ...batches.slice(0, 10)]);
  assert.deepEqual(res, { status: 'accepted', events_processed: 100, duplicates_ignored: 20 });
  const order = svc.calls
    .slice(before)
    .map((c) => (c.req as { events: { item_id: string }[] }).events[0].item_id);
  assert.deepEqual(
    order.slice(0, 50),
    batches.map((b) => b.events[0].item_id),
  );

  // A bad message fails the stream naming the field; the messages before it stay recorded.
  await assert.rejects(
    client.streamFeedback([
      { user_id: 'z', events: [{ item_id: 'ok', event_type: 'like' }] },
      { user_id: 'z', events: [{ item_id: 'bad', event_type: 'nope' as 'like' }] },
    ]),
    (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.code, 'invalid_argument');
      assert.equal(e.field, 'events[0].event_type');
      assert.match(e.message, /^message 1: /);
      return true;
    },
  );
  assert.equal((svc.calls.at(-1)!.req as { user_id: string }).user_id, 'z');
});

test('a streamed message that is not a FeedbackRequest fails the stream as malformed_body', async () => {
  svc.behaviour = undefined;
  // Raw bytes on the stream (grpc-js carries StreamFeedback, not the fast path): a good
  // batch, then one whose user_id is not UTF-8, which protobufjs would read as U+FFFD.
  const good = serviceDefinition().StreamFeedback!.requestSerialize({
    user_id: 'raw',
    events: [{ item_id: 'ok', event_type: 'view' }],
  }) as Buffer;
  const bad = Buffer.from('0a02fffe', 'hex');
  const c = new grpc.Client(server.address, grpc.credentials.createInsecure());
  const err = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = c.makeClientStreamRequest<Buffer, Buffer>(
      serviceDefinition().StreamFeedback!.path,
      (b) => b,
      (b) => b,
      new grpc.Metadata(),
      {},
      (e) => resolve(e),
    );
    call.write(good);
    call.write(bad);
    call.end();
  });
  c.close();
  assert.equal(err?.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(err.metadata.get(ERROR_CODE_KEY)[0], 'malformed_body');
  assert.equal(err.metadata.get(ERROR_FIELD_KEY)[0], 'user_id');
  assert.match(err.details, /^message 1: .*user_id: is not valid UTF-8/);
  assert.equal((svc.calls.at(-1)!.req as { user_id: string }).user_id, 'raw');
});

test('close drains in-flight calls within its bound and refuses new ones', async () => {
  const s2 = new ScriptedService();
  const srv = await startGrpcServer(s2, { port: 0 });
  const c = new RecserveGrpcClient(srv.address);
  await c.getSimilarItems({ item_id: 'warm' });
  s2.behaviour = async () => sleep(200);
  const inflight = c.getSimilarItems({ item_id: 'slow' });
  await sleep(50);
  assert.equal(srv.inFlight(), 1);
  const closing = srv.close(2000);
  await assert.rejects(c.getSimilarItems({ item_id: 'late' }, { deadline: Date.now() + 500 }));
  assert.equal((await inflight).source_item, 'slow', 'the in-flight call finished');
  await closing;
  c.close();

  // A call that never finishes is cut off at the bound.
  const s3 = new ScriptedService();
  const srv3 = await startGrpcServer(s3, { port: 0 });
  const c3 = new RecserveGrpcClient(srv3.address);
  s3.behaviour = () => new Promise(() => {});
  const stuck = c3.getSimilarItems({ item_id: 'stuck' }).then(
    () => 'answered',
    (e: unknown) => (e instanceof ApiError ? e.code : String(e)),
  );
  await sleep(50);
  const t0 = Date.now();
  await srv3.close(150);
  assert.ok(Date.now() - t0 < 3000, 'close() returned at its bound, not when the call ended');
  // Answered UNAVAILABLE (retry on another replica), not left hanging.
  assert.equal(await stuck, 'unavailable');
  c3.close();
});

test('a stream cut by the drain bound is answered UNAVAILABLE and records nothing after', async () => {
  const s4 = new ScriptedService();
  const srv4 = await startGrpcServer(s4, { port: 0 });
  const c4 = new RecserveGrpcClient(srv4.address);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  async function* batches(): AsyncGenerator<FeedbackRequest> {
    yield { user_id: 'd', events: [{ item_id: 'first', event_type: 'view' }] };
    await gate;
    yield { user_id: 'd', events: [{ item_id: 'late', event_type: 'view' }] };
  }
  const streamed = c4.streamFeedback(batches()).then(
    () => 'answered',
    (e: unknown) => (e instanceof ApiError ? e.code : String(e)),
  );
  await sleep(100);
  await srv4.close(100); // the stream stays open past the bound
  release();
  assert.equal(await streamed, 'unavailable');
  const items = s4.calls.map((c) => (c.req as FeedbackRequest).events[0]!.item_id);
  assert.deepEqual(items, ['first']);
  c4.close();
});

test('max concurrent streams bounds the calls one connection has in the server at once', async () => {
  const s5 = new ScriptedService();
  const srv5 = await startGrpcServer(s5, { port: 0, maxConcurrentStreams: 2 });
  const c5 = new RecserveGrpcClient(srv5.address);
  await c5.getSimilarItems({ item_id: 'warm' });
  let now = 0;
  let peak = 0;
  s5.behaviour = async () => {
    peak = Math.max(peak, ++now);
    await sleep(150);
    now--;
  };
  const all = await Promise.all(
    Array.from({ length: 6 }, (_, i) => c5.getSimilarItems({ item_id: `i${i}` })),
  );
  assert.equal(all.length, 6, 'every call was answered (the rest waited, none failed)');
  assert.equal(peak, 2);
  c5.close();
  await srv5.close(500);
});
