// gRPC calls in /metrics: the counter by method and status code and the latency histogram by
// method, recorded by a real grpc-js server for real calls (successes and failures alike).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Metrics } from '../../src/observability/metrics.js';
import { startGrpcServer } from '../../src/transport/grpc/server.js';
import { RecserveGrpcClient } from '../../src/transport/grpc/client.js';
import { serviceClientConstructor } from '../../src/transport/grpc/proto.js';
import { ERROR_CODE_KEY, ERROR_FIELD_KEY } from '../../src/transport/grpc/status.js';
import { ScriptedService } from './helpers.js';

test('gRPC calls are counted by method and code, and timed by method', async () => {
  const metrics = new Metrics();
  const server = await startGrpcServer(new ScriptedService(), { port: 0, metrics });
  const client = new RecserveGrpcClient(server.address);
  try {
    await client.getRecommendations({ user_id: 'u1', num_items: 3 });
    await client.getRecommendations({ user_id: 'u2', num_items: 3 });
    await assert.rejects(client.getRecommendations({ user_id: 'u3', num_items: 0 }));
    await client.getSimilarItems({ item_id: 'i1' });
    const ok = { method: 'GetRecommendations', code: 'OK' };
    assert.equal(metrics.grpcRequests.get(ok), 2);
    assert.equal(
      metrics.grpcRequests.get({ method: 'GetRecommendations', code: 'INVALID_ARGUMENT' }),
      1,
    );
    assert.equal(metrics.grpcRequests.get({ method: 'GetSimilarItems', code: 'OK' }), 1);
    const text = metrics.render();
    assert.match(text, /recserve_grpc_requests_total\{method="GetRecommendations",code="OK"\} 2/);
    assert.match(
      text,
      /recserve_grpc_request_duration_seconds_count\{method="GetRecommendations"\} 3/,
    );
    assert.match(
      text,
      /recserve_grpc_request_duration_seconds_count\{method="GetSimilarItems"\} 1/,
    );
  } finally {
    client.close();
    await server.close(1000);
    metrics.close();
  }
});

test('a successful call carries no recserve-error-* trailers', async () => {
  const server = await startGrpcServer(new ScriptedService(), { port: 0 });
  const Ctor = serviceClientConstructor();
  const c = new Ctor(server.address, grpc.credentials.createInsecure());
  try {
    const trailers = await new Promise<grpc.Metadata>((resolve, reject) => {
      const fn = (
        c as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>
      ).GetRecommendations!.bind(c);
      const call = fn({ user_id: 'u', num_items: 2 }, new grpc.Metadata(), {}, (err: unknown) => {
        if (err) reject(err as Error);
      });
      call.on('status', (s: grpc.StatusObject) => resolve(s.metadata));
    });
    assert.deepEqual(trailers.get(ERROR_CODE_KEY), []);
    assert.deepEqual(trailers.get(ERROR_FIELD_KEY), []);
  } finally {
    c.close();
    await server.close(1000);
  }
});
