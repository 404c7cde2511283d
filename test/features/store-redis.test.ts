// The shared FeatureStore suite on a real Redis: a redis-server started on a free loopback
// port for this file only (no persistence), stopped afterwards.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { storeSuite } from './store-suite.js';
import { hasRedisServer, startRedisServer } from '../support/redis-server.js';

const hasRedis = hasRedisServer();

if (!hasRedis) {
  test(
    'redis store suite',
    { skip: 'redis-server is not installed (scripts/setup.sh installs it)' },
    () => {},
  );
} else {
  const server = await startRedisServer();
  const { port, admin: probe } = server;
  after(() => server.stop());

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
    (itemInfo, limits) =>
      new RedisFeatureStore({
        redis: `redis://127.0.0.1:${port}`,
        itemInfo,
        prefix: 't:',
        ...limits,
      }),
  );
}
