// `recserve serve` as a child process: it logs where it listens, turns ready, and on SIGTERM
// finishes the requests already in flight, then exits 0.
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { startBenchServer } from '../../bench/lib/server.js';
import { loadNative } from '../../src/retrieval/native.js';
import { ExactIndex } from '../../src/retrieval/exact.js';
import { ensureTestModels, post, startTestServer } from './harness.js';
import { hasRedisServer, startRedisServer } from '../support/redis-server.js';

function request(
  agent: http.Agent,
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('SIGTERM drains in-flight requests and exits 0', async () => {
  // Resolves once the server logs that it is ready (bench/lib/server.ts).
  const { child, port, logs: lines } = await startBenchServer(ensureTestModels());
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  // Open 8 connections first, so the requests below travel on accepted sockets.
  await Promise.all(Array.from({ length: 8 }, () => request(agent, port, 'GET', '/healthz')));
  const pending = Array.from({ length: 8 }, (_, i) =>
    request(
      agent,
      port,
      'POST',
      '/v1/recommendations',
      JSON.stringify({ user_id: `drain-user-${i}`, num_items: 100 }),
    ),
  );
  await new Promise((res) => setImmediate(res));
  child.kill('SIGTERM');
  const results = await Promise.all(pending);
  for (const r of results) assert.equal(r.status, 200, r.body);
  assert.equal(await exited, 0);
  agent.destroy();
  assert.ok(lines.some((l) => l.msg === 'stopping: draining in-flight requests'));
  assert.ok(lines.some((l) => l.msg === 'stopped'));
  // The ready line says what the engines chose on this host.
  const ready = lines.find((l) => l.msg === 'model loaded and warm: ready') as
    | {
        exact: { kernel: string; backend: string; screen: string };
        hnsw: { metric: string; items: number };
        ranker: { workers: number; maxBatchRows: number };
      }
    | undefined;
  assert.ok(ready, 'ready line logged');
  assert.equal(ready.exact.kernel, loadNative().exactKernel);
  // The server's default 'auto' screen: int8 exactly where a bare index gets it.
  assert.equal(ready.exact.screen, ExactIndex.create({ dim: 8 }).screen);
  assert.ok(['cpu', 'cuda'].includes(ready.exact.backend));
  // The test bundle's graph is by cosine, over every item.
  assert.equal(ready.hnsw.metric, 'cosine');
  assert.ok(ready.hnsw.items > 0);
  assert.ok(
    ready.ranker.workers >= 1 && ready.ranker.maxBatchRows >= 1,
    JSON.stringify(ready.ranker),
  );
});

test('a drain answers the last request in flight before it closes the connections', async () => {
  // The last response of a drain used to be lost: the app closed its sockets from inside
  // the corked write that finished it. In process, so the close can be timed to a request
  // the server holds.
  let exercised = 0;
  for (let k = 0; k < 5; k++) {
    const { server, base } = await startTestServer();
    await server.ready;
    const user = server.registry.current()!.bundle.userIds[k]!;
    let settled = false;
    const answer = post(base, '/v1/recommendations', {
      user_id: user,
      exclude_items: [`drain-${k}`],
    }).finally(() => (settled = true));
    while (server.http.inFlight() === 0 && !settled) await new Promise((r) => setImmediate(r));
    if (!settled) exercised++;
    await server.close();
    const r = await answer;
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.ok(r.json.recommendations.length > 0);
  }
  assert.ok(exercised > 0, 'no request was in flight when a drain began');
});

test('SIGTERM with its Redis gone: the process exits at once, not seconds later', async (t) => {
  if (!hasRedisServer()) return t.skip('redis-server is not installed');
  const redis = await startRedisServer();
  const server = await startBenchServer(ensureTestModels(), [
    '--no-grpc',
    '--store',
    'redis',
    '--redis-url',
    redis.url,
  ]);
  await redis.stop();
  // Let the client see the loss and start reconnecting.
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  const exited = new Promise<number | null>((r) => server.child.once('exit', r));
  server.child.kill('SIGTERM');
  assert.equal(await exited, 0);
  // ioredis waited 2 s (its disconnectTimeout) for a refused socket to close.
  assert.ok(Date.now() - t0 < 1500, `exited ${Date.now() - t0} ms after SIGTERM`);
});
