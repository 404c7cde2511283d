// The SDK's own behaviour (retries, backoff, timeouts, typed errors, batching), over BOTH
// real front ends (the uWebSockets.js HTTP server and the grpc-js server) on ephemeral
// ports. The pipeline behind them is the scripted stand-in of test/grpc/helpers.ts, because
// what is under test is the client: transient failures and slowness are scripted.
// End-to-end results against the real pipeline are in test/grpc/parity.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createServer } from 'node:net';
import { ApiError } from '../../src/api/errors.js';
import { logger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { RecommendationClient, RecserveError, MAX_EVENTS_PER_CALL } from '../../src/sdk/index.js';
import { startGrpcServer, type GrpcServerHandle } from '../../src/transport/grpc/server.js';
import { startHttpServer, type HttpServer } from '../../src/transport/http/server.js';
import { ScriptedService, sleep } from '../grpc/helpers.js';

const svc = new ScriptedService();
let http: HttpServer;
let grpcServer: GrpcServerHandle;
const metrics = new Metrics();

before(async () => {
  http = await startHttpServer(svc, {
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: 1024 * 1024,
    metrics,
    log: logger(),
  });
  grpcServer = await startGrpcServer(svc, { port: 0 });
});
after(async () => {
  await Promise.all([http.close(500), grpcServer.close(500)]);
  metrics.close();
});

type Kind = 'http-json' | 'http-flatbuffers' | 'grpc';
const KINDS: Kind[] = ['http-json', 'http-flatbuffers', 'grpc'];

function client(
  kind: Kind,
  extra: Partial<{ timeoutMs: number; retry: object }> = {},
): RecommendationClient {
  const common = { random: () => 0.5, ...extra };
  if (kind === 'grpc')
    return new RecommendationClient({ transport: 'grpc', address: grpcServer.address, ...common });
  return new RecommendationClient({
    transport: 'http',
    baseUrl: `http://127.0.0.1:${http.port}`,
    format: kind === 'http-flatbuffers' ? 'flatbuffers' : 'json',
    ...common,
  });
}

/** Fails the first `n` pipeline calls with `code`, then answers normally. */
function failFirst(n: number, code: ApiError['code']): void {
  let left = n;
  svc.behaviour = async () => {
    if (left-- > 0) throw new ApiError(code, `scripted ${code}`);
  };
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

for (const kind of KINDS) {
  describe(`over ${kind}`, () => {
    test('reads are retried on unavailable / rate_limited, then succeed', async () => {
      const c = client(kind);
      failFirst(2, 'unavailable');
      const before = svc.calls.length;
      const r = await c.getRecommendations('u1', { numItems: 3 });
      assert.equal(r.recommendations.length, 3);
      assert.equal(svc.calls.length - before, 3, 'two failures, one success');
      failFirst(1, 'rate_limited');
      assert.equal((await c.getSimilarItems('i1')).source_item, 'i1');
      svc.behaviour = undefined;
      c.close();
    });

    test('gives up after maxAttempts with the server code, attempts counted', async () => {
      const c = client(kind, { retry: { maxAttempts: 3, baseDelayMs: 1 } });
      failFirst(10, 'unavailable');
      const e = await errorOf(c.getRecommendations('u1'));
      assert.equal(e.code, 'unavailable');
      assert.equal(e.attempts, 3);
      assert.equal(e.fromServer, true);
      assert.equal(e.transport, kind === 'grpc' ? 'grpc' : 'http');
      if (kind !== 'grpc') assert.equal(e.httpStatus, 503);
      svc.behaviour = undefined;
      c.close();
    });

    test('errors that would repeat are not retried, and name the field', async () => {
      const c = client(kind);
      const before = svc.calls.length;
      const e = await errorOf(c.getRecommendations('u1', { numItems: 0 }));
      assert.equal(e.code, 'invalid_argument');
      assert.equal(e.field, 'num_items');
      assert.equal(e.attempts, 1);
      assert.equal(e.retryable, false);
      assert.equal(svc.calls.length, before, 'rejected before the pipeline');
      failFirst(5, 'not_found');
      const nf = await errorOf(c.getSimilarItems('nope'));
      assert.equal(nf.code, 'not_found');
      assert.equal(nf.attempts, 1);
      svc.behaviour = undefined;
      c.close();
    });

    test('the per-call timeout bounds the call and reaches the server as its deadline', async () => {
      const c = client(kind, { timeoutMs: 2000 });
      svc.behaviour = undefined;
      const t0 = Date.now();
      await c.getSimilarItems('i1');
      const seen = svc.calls.at(-1)!.opts!.deadline!;
      assert.ok(seen > t0 + 1000 && seen <= t0 + 2100, `server deadline ${seen - t0} ms ahead`);

      svc.behaviour = async () => sleep(2000);
      const t1 = Date.now();
      const e = await errorOf(c.getSimilarItems('i1', { timeoutMs: 100 }));
      assert.equal(e.code, 'deadline_exceeded');
      // Far below the server's 2 s (slack for a busy machine).
      assert.ok(Date.now() - t1 < 1500, `gave up after ${Date.now() - t1} ms`);
      svc.behaviour = undefined;
      c.close();
    });

    test('feedback retries carry the same timestamps, so the server dedupes them', async () => {
      const c = client(kind);
      failFirst(1, 'unavailable');
      const before = svc.calls.length;
      await c.recordInteraction('u-fb', 'i1', 'click', { durationSeconds: 3 });
      const attempts = svc.calls
        .slice(before)
        .map((x) => x.req as { events: { timestamp?: string }[] });
      assert.equal(attempts.length, 2);
      const ts = attempts[0]!.events[0]!.timestamp;
      assert.ok(ts && !Number.isNaN(Date.parse(ts)), 'the SDK stamped the event');
      assert.equal(attempts[1]!.events[0]!.timestamp, ts);
      svc.behaviour = undefined;
      const neg = await c.recordNegativeFeedback('u-fb', 'i1', 'hide', { reason: 'seen it' });
      assert.equal(neg.action_taken, 'item_blocked');
      c.close();
    });
  });
}

test('recordInteractions splits batches over the server limit and sums the totals', async () => {
  const c = client('grpc');
  svc.behaviour = undefined;
  const before = svc.calls.length;
  const ts = '2026-01-24T10:00:00Z';
  const events = Array.from({ length: MAX_EVENTS_PER_CALL + 5 }, (_, i) => ({
    item_id: `b${i}`,
    event_type: 'view' as const,
    timestamp: ts,
  }));
  const r = await c.recordInteractions('u-batch', events);
  assert.deepEqual(r, {
    status: 'accepted',
    events_processed: MAX_EVENTS_PER_CALL + 5,
    duplicates_ignored: 0,
  });
  assert.deepEqual(
    svc.calls.slice(before).map((x) => (x.req as { events: unknown[] }).events.length),
    [MAX_EVENTS_PER_CALL, 5],
  );
  c.close();
});

test('an unreachable server is unavailable (not from the server), retried, on both transports', async () => {
  // A port that was free a moment ago: nothing listens there.
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const opts = { timeoutMs: 3000, retry: { maxAttempts: 2, baseDelayMs: 1 }, random: () => 0 };
  for (const c of [
    new RecommendationClient({ transport: 'http', baseUrl: `http://127.0.0.1:${port}`, ...opts }),
    new RecommendationClient({ transport: 'grpc', address: `127.0.0.1:${port}`, ...opts }),
  ]) {
    const e = await errorOf(c.getRecommendations('u'));
    assert.equal(e.code, 'unavailable', e.message);
    assert.equal(e.fromServer, false);
    assert.equal(e.attempts, 2);
    c.close();
  }
});

test('backoff sleeps within the jitter ceiling and never past the budget', async () => {
  const c = new RecommendationClient({
    transport: 'grpc',
    address: grpcServer.address,
    timeoutMs: 300,
    retry: { maxAttempts: 50, baseDelayMs: 100, maxDelayMs: 1000 },
    random: () => 1, // always the ceiling: 100, 200, 400 ... ms
  });
  failFirst(100, 'unavailable');
  const t0 = Date.now();
  const e = await errorOf(c.getRecommendations('u'));
  const took = Date.now() - t0;
  // 100 + 200 fits only partly in 300 ms: two attempts, then the next sleep would overrun.
  assert.equal(e.code, 'unavailable');
  assert.equal(e.attempts, 2);
  // The attempt count is the proof; the clock only confirms the first sleep happened.
  assert.ok(took >= 95, `took ${took} ms`);
  svc.behaviour = undefined;
  c.close();
});
