// `recserve serve --store redis`: real servers on real ports sharing one real redis-server.
// Replicas see each other's feedback at once; a Redis that goes away, pauses or is not there
// yet turns into clear, bounded answers (503 store_unavailable for feedback, a degraded 503
// list for recommendations, /readyz waiting_for), and everything comes back with it.
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RunningServer } from '../../src/cli/serve.js';
import { RecommendationClient } from '../../src/sdk/client.js';
import { RecserveError } from '../../src/sdk/errors.js';
import { freePort, hasRedisServer, startRedisServer } from '../support/redis-server.js';
import { post, startTestServer, until, type Json } from './harness.js';

const hasRedis = hasRedisServer();

async function readyz(base: string): Promise<{ status: number; json: Json }> {
  const r = await fetch(base + '/readyz');
  return { status: r.status, json: await r.json() };
}

const like = (user: string, item: string) => ({
  user_id: user,
  events: [{ item_id: item, event_type: 'like', timestamp: new Date().toISOString() }],
});

if (!hasRedis) {
  test('serve on redis', { skip: 'redis-server is not installed (scripts/setup.sh installs it)' });
} else {
  const redisPort = await freePort();
  let redis = await startRedisServer({ port: redisPort });
  const url = `redis://127.0.0.1:${redisPort}`;
  const servers: RunningServer[] = [];
  let a = '';
  let b = '';
  let user = '';

  before(async () => {
    for (const prefix of ['r1:', 'r1:']) {
      const s = await startTestServer([
        '--store',
        'redis',
        '--redis-url',
        url,
        '--redis-prefix',
        prefix,
        '--redis-timeout-ms',
        '300',
      ]);
      servers.push(s.server);
      await s.server.ready;
      if (a === '') a = s.base;
      else b = s.base;
    }
    user = servers[0]!.registry.current()!.bundle.userIds[3]!;
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await redis.stop();
  });

  test('two replicas on one Redis: feedback on one changes the next answer of the other', async () => {
    const ready = await readyz(a);
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.json, { status: 'ready', store: { backend: 'redis', connected: true } });
    const first = await post(b, '/v1/recommendations', { user_id: user, num_items: 10 });
    assert.equal(first.status, 200);
    const top: string = first.json.recommendations[0].item_id;
    // Cached on b now (in Redis); the block on a must drop that entry too.
    assert.equal(
      (await post(b, '/v1/recommendations', { user_id: user, num_items: 10 })).json.metadata
        .cache_hit,
      true,
    );
    const neg = await post(a, '/v1/feedback/negative', {
      user_id: user,
      item_id: top,
      feedback_type: 'not_interested',
    });
    assert.equal(neg.status, 200, JSON.stringify(neg.json));
    const next = await post(b, '/v1/recommendations', { user_id: user, num_items: 10 });
    assert.equal(next.status, 200);
    assert.equal(next.json.metadata.cache_hit, undefined);
    const ids = next.json.recommendations.map((r: Json) => r.item_id);
    assert.ok(!ids.includes(top), `${top} blocked on a, still recommended by b`);
    // A duplicate sent to the other replica is recognised as one.
    const fresh = `fresh-${Date.now()}`;
    const ev = like(fresh, first.json.recommendations[1].item_id);
    const once = await post(a, '/v1/feedback', ev);
    assert.deepEqual([once.json.events_processed, once.json.duplicates_ignored], [1, 0]);
    const dup = await post(b, '/v1/feedback', ev);
    assert.equal(dup.status, 200);
    assert.deepEqual([dup.json.events_processed, dup.json.duplicates_ignored], [0, 1]);
    const metrics = await (await fetch(a + '/metrics')).text();
    assert.match(metrics, /recserve_store_connected\{backend="redis"\} 1/);
  });

  test('keys of another type in Redis: no request fails; trending and the cache are skipped', async () => {
    const admin = redis.admin;
    await admin.set('r1:g:{g}:tr:1h', 'not a zset');
    await admin.set('r1:g:{g}:tr:24h', 'not a zset');
    const u2 = servers[0]!.registry.current()!.bundle.userIds[4]!;
    try {
      for (const who of [user, u2, `cold-${Date.now()}`]) {
        const r = await post(a, '/v1/recommendations', { user_id: who, num_items: 5 });
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.equal(r.json.metadata.degraded, undefined);
        assert.equal(r.json.recommendations.length, 5);
      }
      // A user's own key of another type: that user's answer is degraded, not a 500.
      // (`user` has state from the first test; 7 items: no cached answer of that shape.)
      await admin.set(`r1:u:{${user}}:i`, 'not a hash');
      const d = await post(b, '/v1/recommendations', { user_id: user, num_items: 7 });
      assert.equal(d.status, 503, JSON.stringify(d.json));
      assert.equal(d.json.metadata.degraded, 'store_unavailable');
      assert.equal(d.json.recommendations.length, 7);
    } finally {
      await admin.del('r1:g:{g}:tr:1h', 'r1:g:{g}:tr:24h', `r1:u:{${user}}:i`);
    }
  });

  test('Redis down: feedback is a quick 503 store_unavailable, recommendations a degraded 503 list; both recover', async () => {
    await redis.stop();
    await until('the client to notice', 5000, async () =>
      servers[0]!.service.storeHealth()?.connected === false ? true : undefined,
    );
    const t0 = Date.now();
    const fb = await post(a, '/v1/feedback', like(user, 'anything'));
    assert.equal(fb.status, 503);
    assert.equal(fb.json.error.code, 'store_unavailable');
    assert.ok(Date.now() - t0 < 1000, `feedback took ${Date.now() - t0} ms`);
    const r = await fetch(a + '/v1/recommendations', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, num_items: 10 }),
    });
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('retry-after'), '1');
    const body = (await r.json()) as Json;
    assert.equal(body.metadata.degraded, 'store_unavailable');
    assert.equal(body.recommendations.length, 10);
    // /v1/similar with a user cannot honour the user's blocks: 503; without one it answers.
    const itemId: string = body.recommendations[0].item_id;
    const sim = await post(a, '/v1/similar', { item_id: itemId, user_id: user, num_items: 5 });
    assert.equal(sim.status, 503);
    assert.equal(sim.json.error.code, 'store_unavailable');
    const anon = await post(a, '/v1/similar', { item_id: itemId, num_items: 5 });
    assert.equal(anon.status, 200);
    assert.equal(anon.json.similar_items.length, 5);
    // Still ready: every replica shares the store, so unready would take them all out.
    const rz = await readyz(a);
    assert.equal(rz.status, 200);
    assert.deepEqual(rz.json.store, { backend: 'redis', connected: false });
    assert.match(
      await (await fetch(a + '/metrics')).text(),
      /recserve_degraded_total\{reason="store_unavailable"\} [1-9]/,
    );

    // Through the SDK, on every transport: the degraded list is an answer, not an error;
    // feedback is the retryable store_unavailable.
    const address = servers[0]!.grpc!.address;
    const clients = [
      new RecommendationClient({ transport: 'http', baseUrl: a }),
      new RecommendationClient({ transport: 'http', baseUrl: a, format: 'flatbuffers' }),
      new RecommendationClient({ transport: 'grpc', address }),
    ];
    try {
      for (const c of clients) {
        const got = await c.getRecommendations(user, { numItems: 5 });
        assert.equal(got.metadata.degraded, 'store_unavailable', c.transport.kind);
        assert.equal(got.recommendations.length, 5);
        await assert.rejects(c.recordInteraction(user, 'x', 'like'), (err: unknown) => {
          assert.ok(err instanceof RecserveError);
          assert.equal(err.code, 'store_unavailable');
          assert.equal(err.retryable, true);
          return true;
        });
      }
    } finally {
      for (const c of clients) c.transport.close();
    }

    redis = await startRedisServer({ port: redisPort });
    const back = await until('feedback to be accepted again', 10_000, async () => {
      const x = await post(a, '/v1/feedback', like(user, 'after-restart'));
      return x.status === 200 ? x : undefined;
    });
    assert.equal(back.status, 200);
    const ok = await post(b, '/v1/recommendations', { user_id: user, num_items: 10 });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.metadata.degraded, undefined);
  });

  test('a paused Redis: the first call waits the bound, later ones fail at once, then it recovers', async () => {
    const info = await redis.admin.info('server');
    const pid = Number(/process_id:(\d+)/.exec(info)![1]);
    process.kill(pid, 'SIGSTOP');
    try {
      let t0 = Date.now();
      const first = await post(a, '/v1/feedback', like(user, 'paused-1'));
      const firstMs = Date.now() - t0;
      assert.equal(first.status, 503);
      assert.equal(first.json.error.code, 'store_unavailable');
      assert.ok(firstMs >= 250 && firstMs < 1500, `first call ${firstMs} ms`);
      t0 = Date.now();
      const second = await post(a, '/v1/feedback', like(user, 'paused-2'));
      assert.equal(second.status, 503);
      assert.ok(Date.now() - t0 < 150, `second call ${Date.now() - t0} ms: the store should know`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const back = await until('the paused Redis to be used again', 5000, async () => {
      const x = await post(a, '/v1/feedback', like(user, 'resumed'));
      return x.status === 200 ? x : undefined;
    });
    assert.equal(back.status, 200);
  });

  test("a slow Redis: the caller's deadline bounds the store's reads, the answer comes degraded in time", async () => {
    const info = await redis.admin.info('server');
    const pid = Number(/process_id:(\d+)/.exec(info)![1]);
    const u = servers[0]!.registry.current()!.bundle.userIds[6]!;
    process.kill(pid, 'SIGSTOP');
    let ms = 0;
    let r: Response;
    try {
      const t0 = Date.now();
      r = await fetch(a + '/v1/recommendations', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-timeout-ms': '120' },
        body: JSON.stringify({ user_id: u, num_items: 5 }),
      });
      ms = Date.now() - t0;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const body = (await r.json()) as Json;
    assert.equal(r.status, 503, JSON.stringify(body));
    assert.equal(body.metadata.degraded, 'store_unavailable');
    // Half of the 120 ms for the store, then the pipeline: well inside the store's own 300.
    assert.ok(ms < 250, `answered after ${ms} ms`);
    await until('Redis to be used again', 5000, async () => {
      const x = await post(a, '/v1/feedback', like(u, 'after-slow'));
      return x.status === 200 ? x : undefined;
    });
  });

  test('--redis-cluster-nodes naming a plain Redis fails start-up, saying so', async () => {
    const s = await startTestServer([
      '--store',
      'redis',
      '--redis-cluster-nodes',
      `127.0.0.1:${redisPort}`,
    ]);
    try {
      const msg = new RegExp(`127\\.0\\.0\\.1:${redisPort} is not a Cluster node.*--redis-url`);
      await assert.rejects(s.server.ready, msg);
      const r = await readyz(s.base);
      assert.equal(r.status, 503);
      assert.equal(r.json.status, 'failed');
      assert.match(r.json.reason, msg);
    } finally {
      await s.server.close();
    }
  });

  test('--redis-cluster-nodes naming a Redis that asks for a password fails start-up, saying so', async () => {
    const port = await freePort();
    const child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--requirepass', 'secret'],
      { stdio: 'ignore' },
    );
    try {
      const s = await startTestServer([
        '--store',
        'redis',
        '--redis-cluster-nodes',
        `127.0.0.1:${port}`,
      ]);
      try {
        await assert.rejects(
          s.server.ready,
          new RegExp(
            `127\\.0\\.0\\.1:${port} asks for a password, which --redis-cluster-nodes cannot give`,
          ),
        );
      } finally {
        await s.server.close();
      }
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a database the Redis server does not have fails start-up, saying which', async () => {
    const s = await startTestServer(['--store', 'redis', '--redis-url', `${url}/99`]);
    try {
      await assert.rejects(s.server.ready, /database 99 is out of range/);
      const r = await readyz(s.base);
      assert.equal(r.status, 503);
      assert.equal(r.json.status, 'failed');
      assert.match(r.json.reason, /database 99 is out of range/);
    } finally {
      await s.server.close();
    }
  });

  test('a server still waiting for Redis stops at once', async () => {
    const s = await startTestServer([
      '--store',
      'redis',
      '--redis-url',
      `redis://127.0.0.1:${await freePort()}`,
    ]);
    await until('/readyz to wait for Redis', 20_000, async () =>
      (await readyz(s.base)).json.waiting_for ? true : undefined,
    );
    const t0 = Date.now();
    await s.server.close();
    assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`);
    await assert.rejects(s.server.ready, /stopped before the feature store answered/);
  });

  test('start-up waits for a Redis that is not there yet, saying so on /readyz', async () => {
    const port = await freePort();
    const s = await startTestServer([
      '--store',
      'redis',
      '--redis-url',
      `redis://127.0.0.1:${port}`,
    ]);
    let late: Awaited<ReturnType<typeof startRedisServer>> | undefined;
    try {
      const waiting = await until('/readyz to name Redis', 20_000, async () => {
        const r = await readyz(s.base);
        return r.json.waiting_for ? r : undefined;
      });
      assert.equal(waiting.status, 503);
      assert.equal(waiting.json.status, 'not_ready');
      assert.match(waiting.json.waiting_for, new RegExp(`redis at redis://127.0.0.1:${port}`));
      late = await startRedisServer({ port });
      await s.server.ready;
      assert.equal((await readyz(s.base)).status, 200);
      const r = await post(s.base, '/v1/recommendations', { user_id: user });
      assert.equal(r.status, 200);
    } finally {
      await s.server.close();
      await late?.stop();
    }
  });
}
