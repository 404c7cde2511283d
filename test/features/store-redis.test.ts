// The shared FeatureStore suite on a real Redis: a redis-server started on a free loopback
// port for this file only (no persistence), stopped afterwards.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/api/errors.js';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { recsCacheKey } from '../../src/features/store.js';
import { openFeatureStore } from '../../src/features/open-store.js';
import { loadConfig } from '../../src/config/index.js';
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

  test('redis: a cached answer that fails its check reads as a miss, never as bytes', async () => {
    const store = new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, prefix: 'cc:' });
    try {
      const key = recsCacheKey('cu1', 'shape');
      await store.setCached(key, '{"recommendations":[]}', 60_000);
      assert.equal(await store.getCached(key), '{"recommendations":[]}');
      // Under the store's prefix: two deployments on one Redis never share answers.
      assert.equal(await probe.exists(key), 0);
      const raw = (await probe.getBuffer('cc:' + key))!;
      // One changed byte of the body, the body cut short, text written by something else.
      const flipped = Buffer.from(raw);
      flipped[flipped.length - 2] ^= 0x20;
      for (const bad of [flipped, raw.subarray(0, raw.length - 3), Buffer.from('s{"a":1}')]) {
        await probe.set('cc:' + key, bad, 'PX', 60_000);
        assert.equal(await store.getCached(key), null);
      }
      await store.setCached(key, new Uint8Array([1, 2, 3]), 60_000);
      assert.deepEqual(await store.getCached(key), new Uint8Array([1, 2, 3]));
    } finally {
      await store.close();
    }
  });

  test('redis: values something else wrote read as 0 or are left out, never NaN', async () => {
    const store = new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, prefix: 'nan:' });
    try {
      const now = Date.now();
      await store.recordEvents('nu', [{ itemId: 'i1', event: 'like', timestampMs: now }], now);
      await probe.hset('nan:u:{nu}:s', 'ic', 'abc');
      await probe.hset('nan:u:{nu}:i', 'i2', 'inf');
      await probe.zadd('nan:u:{nu}:r', now, 'garbage');
      const [st] = await store.getUsers(['nu'], now);
      assert.equal(st!.interactionCount, 0);
      assert.equal(st!.itemCounts.get('i1'), 1);
      assert.equal(st!.itemCounts.has('i2'), false);
      assert.deepEqual(
        st!.recent.map((r) => r.itemId),
        ['i1'],
      );
      // A bad item count costs its own increment, not the other items' in the same flush.
      await probe.hset('nan:g:{g}:n', 'bad', 'abc');
      const errors: string[] = [];
      const s2 = new RedisFeatureStore({
        redis: `redis://127.0.0.1:${port}`,
        prefix: 'nan:',
        trendingFlushMs: 0,
        onError: (err, what) => errors.push(`${what}: ${err.message}`),
      });
      try {
        await s2.recordEvents('nv', [
          { itemId: 'bad', event: 'like', timestampMs: now },
          { itemId: 'good', event: 'like', timestampMs: now },
        ]);
        assert.deepEqual(await s2.itemCounts(['bad', 'good']), [0, 1]);
        assert.ok((await s2.trending('1h', 10)).some((t) => t.itemId === 'good'));
        assert.match(errors.join('\n'), /trending: 1 trending or item-count writes refused/);
      } finally {
        await s2.close();
      }
    } finally {
      await store.close();
    }
  });

  test("redis: an active user's blocks live as long as the rest; blocks alone are state", async () => {
    const store = new RedisFeatureStore({
      redis: `redis://127.0.0.1:${port}`,
      prefix: 'bt:',
      userTtlMs: 60_000,
    });
    try {
      await store.block('bu', 'x', 'hide');
      await probe.pexpire('bt:u:{bu}:b', 5_000);
      await store.recordEvents('bu', [{ itemId: 'y', event: 'view', timestampMs: Date.now() }]);
      assert.ok((await probe.pttl('bt:u:{bu}:b')) > 5_000, 'events did not refresh the blocks');
      // The rest gone (evicted, expired): the blocks still hold.
      await probe.del('bt:u:{bu}:s', 'bt:u:{bu}:r', 'bt:u:{bu}:i');
      const [st] = await store.getUsers(['bu']);
      assert.ok(st, 'a user with blocks only read as unknown');
      assert.deepEqual([...st.blocked], ['x']);
    } finally {
      await store.close();
    }
  });

  test('redis: a maxmemory-policy that may evict keys is warned about', async () => {
    const lru = await startRedisServer({ args: ['--maxmemory-policy', 'allkeys-lru'] });
    const opened = [
      openFeatureStore(
        loadConfig(['--store', 'redis', '--redis-url', lru.url]),
        () => undefined,
        () => undefined,
      ),
      openFeatureStore(
        loadConfig(['--store', 'redis', '--redis-url', `redis://127.0.0.1:${port}`]),
        () => undefined,
        () => undefined,
      ),
    ];
    try {
      for (const o of opened) await o.waitUntilConnected(5000);
      assert.match((await opened[0]!.warnings()).join(), /maxmemory-policy is allkeys-lru/);
      assert.deepEqual(await opened[1]!.warnings(), []);
    } finally {
      for (const o of opened) await o.store.close();
      await lru.stop();
    }
  });

  test('redis: an event whose call timed out but landed still counts in trending, once', async () => {
    const own = await startRedisServer();
    const pid = Number(/process_id:(\d+)/.exec(await own.admin.info('server'))![1]);
    const store = new RedisFeatureStore({ redis: own.url, timeoutMs: 200, trendingFlushMs: 0 });
    try {
      await store.waitUntilConnected(5000);
      const ev = { itemId: 'late', event: 'like' as const, timestampMs: Date.now() };
      process.kill(pid, 'SIGSTOP');
      try {
        await assert.rejects(store.recordEvents('lt', [ev]), /no answer within 200 ms/);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      let counts = [0];
      for (let i = 0; i < 40 && counts[0] === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        counts = await store.itemCounts(['late']).catch(() => [0]);
      }
      assert.deepEqual(counts, [1]);
      assert.deepEqual((await store.recordEvents('lt', [ev])).applied, [false]);
      assert.deepEqual(await store.itemCounts(['late']), [1]);
      assert.ok((await store.trending('1h', 5)).some((t) => t.itemId === 'late'));
    } finally {
      await store.close();
      await own.stop();
    }
  });

  test('redis: a large call goes in several scripts and stays exact across them', async () => {
    const store = new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, prefix: 'lg:' });
    try {
      const now = Date.now();
      const evs = Array.from({ length: 200 }, (_, j) => ({
        itemId: `i${j % 150}`,
        event: 'view' as const,
        // Events 150..199 repeat 0..49 exactly (same bucket): duplicates across chunks.
        timestampMs: now - 60_000 + (j % 150) * 1000,
      }));
      const r = await store.recordEvents('lu', evs, now);
      assert.equal(r.accepted, 150);
      assert.deepEqual(
        r.applied.map((x, j) => (x ? -1 : j)).filter((j) => j >= 0),
        Array.from({ length: 50 }, (_, j) => 150 + j),
      );
      const [st] = await store.getUsers(['lu'], now);
      assert.equal(st!.interactionCount, 150);
      assert.equal(st!.recent.length, 100);
    } finally {
      await store.close();
    }
  });

  test('redis: an event whose script failed part-way is applied by the retry, not a duplicate', async () => {
    const store = new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, prefix: 'pf:' });
    try {
      const now = Date.now();
      const ev = { itemId: 'i9', event: 'view' as const, timestampMs: now };
      // The window hash as a string: the script fails at its first window write, after the
      // session and item writes it already made.
      await probe.set('pf:u:{pu}:w', 'not a hash');
      await assert.rejects(store.recordEvents('pu', [ev], now));
      await probe.del('pf:u:{pu}:w');
      const r = await store.recordEvents('pu', [ev], now);
      assert.deepEqual(r.applied, [true]);
      const again = await store.recordEvents('pu', [ev], now);
      assert.deepEqual(again.applied, [false]);
      const [st] = await store.getUsers(['pu'], now);
      assert.equal(st!.activity['5m'].events.view, 1);
    } finally {
      await store.close();
    }
  });

  test('redis: a report whose push to the review list failed is pushed by the retry', async () => {
    const store = new RedisFeatureStore({ redis: `redis://127.0.0.1:${port}`, prefix: 'rp:' });
    try {
      await probe.set('rp:g:{g}:reports', 'not a list');
      await assert.rejects(store.block('ru', 'bad-item', 'report', 'spam'));
      await probe.del('rp:g:{g}:reports');
      // The block itself is in, so the retry is a duplicate, but the report is not lost.
      assert.deepEqual(await store.block('ru', 'bad-item', 'report', 'spam'), { duplicate: true });
      const reports = await store.reports(10);
      assert.deepEqual(
        reports.map((r) => [r.userId, r.itemId, r.reason]),
        [['ru', 'bad-item', 'spam']],
      );
      // Once pushed, a further retry pushes nothing.
      await store.block('ru', 'bad-item', 'report', 'spam');
      assert.equal((await store.reports(10)).length, 1);
    } finally {
      await store.close();
    }
  });

  test('redis: a stopped Redis fails calls within timeoutMs as store_unavailable', async () => {
    const own = await startRedisServer();
    const errors: string[] = [];
    const store = new RedisFeatureStore({
      redis: own.url,
      prefix: 'down:',
      timeoutMs: 300,
      onError: (err, what) => errors.push(`${what}: ${err.message}`),
    });
    try {
      await store.waitUntilConnected(5000);
      await store.recordEvents('d1', [{ itemId: 'x', event: 'like', timestampMs: Date.now() }]);
      await own.stop();
      for (const call of [
        () => store.getUsers(['d1']),
        () => store.recordEvents('d1', [{ itemId: 'y', event: 'like', timestampMs: Date.now() }]),
        () => store.block('d1', 'y', 'hide'),
        () => store.trending('1h', 5),
        () => store.getCached(recsCacheKey('d1', 's')),
      ]) {
        const t0 = Date.now();
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof ApiError, String(err));
          assert.equal(err.code, 'store_unavailable');
          return true;
        });
        assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
      }
      assert.equal(store.connected, false);
      // The reconnect attempts' refusals reach onError (not stderr).
      const refused = () => errors.some((e) => /^client: .*ECONNREFUSED/.test(e));
      for (let i = 0; i < 60 && !refused(); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(store.errorCount > 0 && refused(), errors.join('\n'));
    } finally {
      await store.close();
    }
  });

  test('redis: batched trending (trendingFlushMs) lands as the unbatched store ranks it', async () => {
    const info = (id: string) => ({
      categories: [`cat${Number(id.slice(4)) % 3}`],
      creatorId: null,
    });
    const now = Date.now();
    const mk = (prefix: string, trendingFlushMs: number) =>
      new RedisFeatureStore({
        redis: `redis://127.0.0.1:${port}`,
        prefix,
        itemInfo: info,
        trendingFlushMs,
      });
    const batched = mk('tb1:', 300);
    const direct = mk('tb2:', 0);
    try {
      const kinds = ['view', 'click', 'like', 'share', 'purchase', 'skip'] as const;
      for (let u = 0; u < 40; u++) {
        const evs = Array.from({ length: 5 }, (_, j) => ({
          itemId: `item${(u * 7 + j * 3) % 23}`,
          event: kinds[(u + j) % kinds.length]!,
          timestampMs: now - ((u * 5 + j) % 50) * 60_000,
        }));
        for (const st of [batched, direct]) await st.recordEvents(`user${u}`, evs, now);
      }
      // Not sent yet: one flush, 300 ms after the first event, carries all of them.
      assert.deepEqual(await batched.trending('24h', 5, now), []);
      await new Promise((r) => setTimeout(r, 450));
      for (const [w, cat] of [
        ['1h', null],
        ['24h', null],
        ['24h', 'cat1'],
      ] as const) {
        const a = cat
          ? await batched.trendingInCategory(cat, w, 30, now)
          : await batched.trending(w, 30, now);
        const b = cat
          ? await direct.trendingInCategory(cat, w, 30, now)
          : await direct.trending(w, 30, now);
        assert.ok(b.length > 5, `${w} ${cat}: ${b.length}`);
        assert.deepEqual(a.map((x) => x.itemId).sort(), b.map((x) => x.itemId).sort());
        for (const x of a) {
          const y = b.find((z) => z.itemId === x.itemId)!;
          assert.ok(
            Math.abs(x.score - y.score) <= 1e-9 * y.score,
            `${x.itemId} ${x.score} ${y.score}`,
          );
        }
      }
      const items = Array.from({ length: 23 }, (_, i) => `item${i}`);
      assert.deepEqual(await batched.itemCounts(items), await direct.itemCounts(items));
    } finally {
      await batched.close();
      await direct.close();
    }
  });

  test('redis: a trending flush that fails is reported to onError, and the events stay recorded', async () => {
    const own = await startRedisServer();
    const errors: string[] = [];
    const store = new RedisFeatureStore({
      redis: own.url,
      prefix: 'tf:',
      trendingFlushMs: 60_000,
      onError: (err, what) => errors.push(`${what}: ${err.message}`),
    });
    try {
      const r = await store.recordEvents('tf1', [
        { itemId: 'x', event: 'like', timestampMs: Date.now() },
      ]);
      assert.deepEqual(r.applied, [true]);
      assert.equal((await store.getUsers(['tf1']))[0]!.interactionCount, 1);
      await own.stop();
    } finally {
      await store.close(); // flushes: Redis is gone
    }
    assert.ok(
      errors.some((e) => e.startsWith('trending: ')),
      errors.join('\n'),
    );
  });

  storeSuite(
    'redis',
    (itemInfo, limits) =>
      new RedisFeatureStore({
        redis: `redis://127.0.0.1:${port}`,
        itemInfo,
        prefix: 't:',
        // The contract reads trending right after a write; batching has its own test.
        trendingFlushMs: 0,
        ...limits,
      }),
  );
}
