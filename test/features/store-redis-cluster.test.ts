// The shared FeatureStore suite on a real three-node Redis Cluster (started here on free
// loopback ports, no persistence, torn down afterwards): proves every multi-key operation
// stays inside one slot ({user} and {g} hash tags), with no CROSSSLOT error.
import { after, test } from 'node:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { storeSuite } from './store-suite.js';

function freePort(port = 0): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(-1));
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      const got = typeof addr === 'object' && addr ? addr.port : -1;
      srv.close(() => resolve(got));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hasRedis =
  spawnSync('redis-server', ['--version']).status === 0 &&
  spawnSync('redis-cli', ['--version']).status === 0;

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
  for (const port of ports)
    execFileSync('redis-server', [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      join(dir, `nodes-${port}.conf`),
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--daemonize',
      'yes',
    ]);
  const nodes = ports.map(
    (port) => new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 }),
  );
  after(async () => {
    for (const n of nodes) {
      await n.call('SHUTDOWN', 'NOSAVE').catch(() => undefined);
      n.disconnect();
    }
    rmSync(dir, { recursive: true, force: true });
  });
  for (const n of nodes)
    for (let i = 0; ; i++) {
      try {
        await n.connect();
        await n.ping();
        break;
      } catch (err) {
        if (i > 50) throw err;
        n.disconnect();
        await sleep(100);
      }
    }
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
  storeSuite('redis cluster', (itemInfo) => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: ports[0] }]);
    clients.push(cluster);
    return new RedisFeatureStore({ redis: cluster, itemInfo, prefix: 'c:' });
  });
}
