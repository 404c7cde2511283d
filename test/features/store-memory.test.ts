// The shared FeatureStore suite on the embedded backend, plus what only it promises: the caps
// that bound its memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryFeatureStore } from '../../src/features/memory-store.js';
import { recsCacheKey } from '../../src/features/store.js';
import { storeSuite } from './store-suite.js';

storeSuite('memory', (itemInfo, limits) => new MemoryFeatureStore({ itemInfo, ...limits }));

const T0 = Date.UTC(2026, 0, 24, 10, 0, 0);

test('memory: beyond maxUsers the least recently written user is dropped', async () => {
  const store = new MemoryFeatureStore({ maxUsers: 3 });
  for (const u of ['a', 'b', 'c'])
    await store.recordEvents(u, [{ itemId: 'x', event: 'view', timestampMs: T0 }], T0);
  // Writing to 'a' makes 'b' the least recently written.
  await store.recordEvents('a', [{ itemId: 'y', event: 'view', timestampMs: T0 }], T0);
  await store.recordEvents('d', [{ itemId: 'x', event: 'view', timestampMs: T0 }], T0);
  const got = await store.getUsers(['a', 'b', 'c', 'd'], T0);
  assert.deepEqual(
    got.map((s) => s?.userId ?? null),
    ['a', null, 'c', 'd'],
  );
  assert.equal(store.userCount, 3);
  assert.deepEqual(store.stats, {
    users: 3,
    items: 2,
    categories: 0,
    creators: 0,
    cacheEntries: 0,
    cacheBytes: 0,
    reports: 0,
  });
  await store.close();
});

test('memory: idempotency keys last 24 h, for a user with few keys and one with many', async () => {
  // Up to 256 keys a user they are scanned; past that a Set answers too, dropped again when
  // the keys expire. Both must hold the same keys for the same time.
  const store = new MemoryFeatureStore({});
  const HOUR = 3600_000;
  for (const count of [40, 1500]) {
    const u = `idem-${count}`;
    const events = Array.from({ length: count }, (_, i) => ({
      itemId: `i${i % 300}`,
      event: 'view' as const,
      timestampMs: T0 - i * 1000,
    }));
    assert.equal((await store.recordEvents(u, events, T0)).accepted, count);
    assert.equal((await store.recordEvents(u, events, T0 + 23 * HOUR)).accepted, 0, `${count}`);
    // A day and an hour on, the keys have expired: the same events count again.
    assert.equal((await store.recordEvents(u, events, T0 + 26 * HOUR)).accepted, count);
    assert.equal((await store.recordEvents(u, events, T0 + 27 * HOUR)).accepted, 0, `${count}`);
    // One event a key, after the keys of the others expired.
    const one = [{ itemId: 'i7', event: 'like' as const, timestampMs: T0 + 60 * HOUR }];
    assert.equal((await store.recordEvents(u, one, T0 + 60 * HOUR)).accepted, 1);
    assert.equal((await store.recordEvents(u, one, T0 + 60 * HOUR)).accepted, 0);
  }
  await store.close();
});

test('memory: per-user item memory keeps the most recently touched items', async () => {
  const store = new MemoryFeatureStore({ maxItemsPerUser: 5 });
  const events = Array.from({ length: 8 }, (_, i) => ({
    itemId: `i${i}`,
    event: 'view' as const,
    timestampMs: T0 + i * 1000,
  }));
  await store.recordEvents('u', events, T0 + 10_000);
  // i0..i2 are gone; touching i3 makes it the most recent, so i8 pushes out i4 instead.
  await store.recordEvents(
    'u',
    [
      { itemId: 'i3', event: 'like', timestampMs: T0 + 9000 },
      { itemId: 'i8', event: 'view', timestampMs: T0 + 9500 },
    ],
    T0 + 10_000,
  );
  const [s] = await store.getUsers(['u'], T0 + 10_000);
  assert.deepEqual([...(s?.seen ?? [])].sort(), ['i3', 'i5', 'i6', 'i7', 'i8']);
  assert.equal(s?.itemCounts.get('i3'), 2);
  await store.close();
});

test('memory: the cache evicts least recently used entries beyond its caps', async () => {
  const store = new MemoryFeatureStore({ maxCacheEntries: 2, maxCacheBytes: 100 });
  await store.setCached(recsCacheKey('u1', 'a'), 'x', 60_000);
  await store.setCached(recsCacheKey('u2', 'a'), 'y', 60_000);
  await store.getCached(recsCacheKey('u1', 'a')); // u1 is now the most recently used
  await store.setCached(recsCacheKey('u3', 'a'), 'z', 60_000);
  assert.equal(await store.getCached(recsCacheKey('u1', 'a')), 'x');
  assert.equal(await store.getCached(recsCacheKey('u2', 'a')), null);
  // 60 characters = 120 bytes: over the byte cap, never stored.
  await store.setCached('big', 'b'.repeat(60), 60_000);
  assert.equal(await store.getCached('big'), null);
  await store.setCached('b1', new Uint8Array(60), 60_000);
  await store.setCached('b2', new Uint8Array(60), 60_000);
  assert.equal(await store.getCached('b1'), null);
  assert.ok(await store.getCached('b2'));
  await store.close();
  await assert.rejects(store.getUsers(['u1']), /after close/);
});

test('memory: trending keeps an exact top list as scores grow', async () => {
  const store = new MemoryFeatureStore({ trendingGlobalSize: 3 });
  const counts = [5, 1, 4, 2, 7, 3];
  let u = 0;
  for (let i = 0; i < counts.length; i++)
    for (let n = 0; n < counts[i]; n++)
      await store.recordEvents(
        `u${u++}`,
        [{ itemId: `t${i}`, event: 'view', timestampMs: T0 }],
        T0,
      );
  const top = await store.trending('1h', 10, T0);
  assert.deepEqual(
    top.map((t) => [t.itemId, Math.round(t.score)]),
    [
      ['t4', 7],
      ['t0', 5],
      ['t2', 4],
    ],
  );
  // t1 overtakes everyone from outside the list.
  for (let n = 0; n < 10; n++)
    await store.recordEvents(`v${n}`, [{ itemId: 't1', event: 'view', timestampMs: T0 }], T0);
  assert.deepEqual(
    (await store.trending('1h', 10, T0)).map((t) => t.itemId),
    ['t1', 't4', 't0'],
  );
  // Days later the 1 h scores have decayed to nothing but the order is kept; new events
  // (which move the frame) still rank correctly.
  const later = T0 + 40 * 24 * 3600_000;
  await store.recordEvents('w', [{ itemId: 't3', event: 'view', timestampMs: later }], later);
  const after = await store.trending('1h', 10, later);
  assert.equal(after[0].itemId, 't3');
  assert.ok(Math.abs(after[0].score - 1) < 1e-9);
  await store.close();
});

test('memory: the idle compactor trims users idle for a day and keeps their history', async () => {
  const store = new MemoryFeatureStore({
    itemInfo: (id) => ({ categories: [`c${id.length}`], creatorId: 'k' }),
  });
  const events = Array.from({ length: 30 }, (_, i) => ({
    itemId: `i${i}`,
    event: 'click' as const,
    timestampMs: T0 + i * 1000,
    durationSeconds: 5,
  }));
  await store.recordEvents('idle', events, T0 + 60_000);
  const before = (await store.getUsers(['idle'], T0 + 60_000))[0];
  const later = T0 + 3 * 86_400_000;
  // Writes by other users advance the compactor; compactIdle runs it to the end.
  await store.recordEvents('busy', [{ itemId: 'x', event: 'view', timestampMs: later }], later);
  store.compactIdle(later);
  const after = (await store.getUsers(['idle'], later))[0];
  assert.ok(before && after);
  assert.deepEqual(after.recent, before.recent);
  assert.deepEqual(after.itemCounts, before.itemCounts);
  assert.deepEqual(after.categoryCounts.total, before.categoryCounts.total);
  assert.deepEqual(after.creatorCounts, before.creatorCounts);
  assert.equal(after.interactionCount, 30);
  assert.equal(after.categoryCounts['24h'].size, 0);
  assert.equal(after.activity['24h'].events.click, 0);
  // A compacted user takes writes as before.
  await store.recordEvents('idle', [{ itemId: 'new', event: 'like', timestampMs: later }], later);
  const again = (await store.getUsers(['idle'], later))[0];
  assert.equal(again?.interactionCount, 31);
  assert.equal(again?.categoryCounts['5m'].get('c3'), 3);
  await store.close();
});

test('memory: eviction keeps exact least-recently-written order over many writes', async () => {
  // A reference LRU (an array) against the store, through thousands of mixed writes: the
  // store's eviction cursor must pick the same victim every time.
  const cap = 50;
  const store = new MemoryFeatureStore({ maxUsers: cap });
  const ref: string[] = [];
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 16807) % 2147483647;
    return seed % n;
  };
  for (let k = 0; k < 5000; k++) {
    const id = rand(3) === 0 ? `new${k}` : `u${rand(120)}`;
    await store.recordEvents(id, [{ itemId: 'x', event: 'view', timestampMs: T0 + k }], T0 + k);
    const at = ref.indexOf(id);
    if (at >= 0) ref.splice(at, 1);
    else if (ref.length >= cap) ref.shift();
    ref.push(id);
  }
  assert.equal(store.userCount, cap);
  const got = await store.getUsers(ref, T0 + 5000);
  assert.ok(got.every((s) => s !== null));
  const gone = await store.getUsers(['u0', 'u1', 'u2', 'u3'].filter((u) => !ref.includes(u)));
  assert.ok(gone.every((s) => s === null));
  await store.close();
});

test('memory: trending top lists equal a brute-force ranking of decayed sums', async () => {
  const size = 20;
  const store = new MemoryFeatureStore({
    trendingGlobalSize: size,
    trendingCategorySize: 10,
    itemInfo: (id) => ({ categories: [`c${Number(id.slice(1)) % 4}`], creatorId: null }),
  });
  const kinds = ['view', 'click', 'like', 'share', 'purchase'] as const;
  const sums = new Map<string, number>();
  let seed = 99;
  const rand = (n: number) => {
    seed = (seed * 16807) % 2147483647;
    return seed % n;
  };
  const tau = 3600_000;
  const end = T0 + 3000 * 1000;
  for (let k = 0; k < 3000; k++) {
    // Skewed popularity, one event a second, over 50 minutes.
    const item = `i${Math.min(rand(200), rand(200))}`;
    const event = kinds[rand(5)];
    const t = T0 + k * 1000;
    await store.recordEvents(`u${k}`, [{ itemId: item, event, timestampMs: t }], t);
    const w = { view: 1, click: 2, like: 3, share: 4, purchase: 5 }[event];
    sums.set(item, (sums.get(item) ?? 0) + w * Math.exp(-(end - t) / tau));
  }
  const want = [...sums].sort((a, b) => b[1] - a[1]);
  const got = await store.trending('1h', size, end);
  assert.deepEqual(
    got.map((g) => g.itemId),
    want.slice(0, size).map(([id]) => id),
  );
  for (const g of got) assert.ok(Math.abs(g.score - (sums.get(g.itemId) ?? 0)) < 1e-9 * g.score);
  const c1 = await store.trendingInCategory('c1', '1h', 10, end);
  assert.deepEqual(
    c1.map((g) => g.itemId),
    want
      .filter(([id]) => Number(id.slice(1)) % 4 === 1)
      .slice(0, 10)
      .map(([id]) => id),
  );
  await store.close();
});
