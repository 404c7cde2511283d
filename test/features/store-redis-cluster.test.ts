// The shared FeatureStore suite on a real three-node Redis Cluster (started here on free
// loopback ports, no persistence, torn down afterwards): proves every multi-key operation
// stays inside one slot ({user} and {g} hash tags), with no CROSSSLOT error.
import { after, test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { storeSuite } from './store-suite.js';
import assert from 'node:assert/strict';
import { freePort, hasRedisServer, startRedisServer } from '../support/redis-server.js';
import { post, startTestServer, type Json } from '../http/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hasRedis = hasRedisServer(true);

if (!hasRedis) {
  test('redis cluster store suite', { skip: 'redis-server/redis-cli not installed' }, () => {});
} else {
  const dir = mkdtempSync(join(tmpdir(), 'recserve-cluster-'));
  const ports: number[] = [];
  // Cluster nodes also listen on port + 10000 (the bus): pick ports whose bus port is free too.
  while (ports.length < 3) {
    const p = await freePort();
    if (p > 0 && p < 55_000 && !ports.includes(p) && (await freePort(p + 10_000)) > 0)
      ports.push(p);
  }
  const servers = await Promise.all(
    ports.map((port) =>
      startRedisServer({
        port,
        args: [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--dir',
          dir,
        ],
      }),
    ),
  );
  const nodes = servers.map((s) => s.admin);
  after(async () => {
    for (const s of servers) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  execFileSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; ; i++) {
    const info = (await nodes[0].call('CLUSTER', 'INFO')) as string;
    if (info.includes('cluster_state:ok')) break;
    if (i > 100) throw new Error('the test cluster did not become ready');
    await sleep(100);
  }

  const clients: Cluster[] = [];
  after(async () => {
    for (const c of clients) await c.quit().catch(() => undefined);
  });
  storeSuite('redis cluster', (itemInfo, limits) => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: ports[0] }]);
    clients.push(cluster);
    return new RedisFeatureStore({
      redis: cluster,
      itemInfo,
      prefix: 'c:',
      trendingFlushMs: 0,
      ...limits,
    });
  });

  test('recserve serve --redis-cluster-nodes: feedback and answers through the Cluster', async () => {
    const { server, base } = await startTestServer([
      '--store',
      'redis',
      '--redis-cluster-nodes',
      ports.map((p) => `127.0.0.1:${p}`).join(','),
      '--redis-prefix',
      'srv:',
    ]);
    try {
      await server.ready;
      const rz = (await (await fetch(base + '/readyz')).json()) as Json;
      assert.deepEqual(rz, { status: 'ready', store: { backend: 'redis', connected: true } });
      const user = server.registry.current()!.bundle.userIds[5]!;
      const first = await post(base, '/v1/recommendations', { user_id: user, num_items: 10 });
      assert.equal(first.status, 200);
      const top: string = first.json.recommendations[0].item_id;
      const fb = await post(base, '/v1/feedback', {
        user_id: user,
        events: [{ item_id: top, event_type: 'like', timestamp: new Date().toISOString() }],
      });
      assert.deepEqual([fb.status, fb.json.events_processed], [200, 1]);
      const neg = await post(base, '/v1/feedback/negative', {
        user_id: user,
        item_id: first.json.recommendations[1].item_id,
        feedback_type: 'hide',
      });
      assert.equal(neg.status, 200);
      const next = await post(base, '/v1/recommendations', { user_id: user, num_items: 10 });
      assert.equal(next.status, 200);
      const ids = next.json.recommendations.map((r: Json) => r.item_id);
      assert.ok(!ids.includes(first.json.recommendations[1].item_id), 'hidden item came back');
      // The user's keys landed in the Cluster (one slot), under the configured prefix.
      let found = 0;
      for (const n of nodes) found += (await n.keys(`srv:u:{${user}}:*`)).length;
      assert.ok(found >= 5, `found ${found} keys of the user`);
    } finally {
      await server.close();
    }
  });
}
