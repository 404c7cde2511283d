// The shared FeatureStore suite on a real Redis: a redis-server started on a free loopback
// port for this file only (no persistence), stopped afterwards.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { storeSuite } from './store-suite.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const hasRedis = spawnSync('redis-server', ['--version']).status === 0;

if (!hasRedis) {
  test(
    'redis store suite',
    { skip: 'redis-server is not installed (scripts/setup.sh installs it)' },
    () => {},
  );
} else {
  const port = await freePort();
  execFileSync('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'yes',
  ]);
  // Wait until it answers.
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  for (let i = 0; ; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch (err) {
      if (i > 50) throw err;
      probe.disconnect();
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  after(async () => {
    await probe.call('SHUTDOWN', 'NOSAVE').catch(() => undefined);
    probe.disconnect();
  });

  test("redis: a user's keys expire userTtlMs after the last write", async () => {
    const store = new RedisFeatureStore({
      redis: `redis://127.0.0.1:${port}`,
      prefix: 'ttl:',
      userTtlMs: 60_000,
    });
    try {
      await store.recordEvents('u1', [{ itemId: 'i1', event: 'view', timestampMs: Date.now() }]);
      await store.block('u2', 'i1', 'hide');
      for (const key of ['ttl:u:{u1}:s', 'ttl:u:{u1}:r', 'ttl:u:{u1}:w', 'ttl:u:{u2}:b']) {
        const ttl = await probe.pttl(key);
        assert.ok(ttl > 0 && ttl <= 60_000, `${key} pttl ${ttl}`);
      }
    } finally {
      await store.close();
    }
  });

  storeSuite(
    'redis',
    (itemInfo) =>
      new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, itemInfo, prefix: 't:' }),
  );
}
