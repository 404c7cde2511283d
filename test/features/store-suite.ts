// The backend-agnostic FeatureStore suite: every backend (memory, Redis, ...) runs it, and a
// backend that passes it can replace another without the pipeline noticing. Times are passed
// explicitly (nowMs) so window and decay behaviour is tested without sleeping.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/api/errors.js';
import {
  IDEMPOTENCY_BUCKET_MS,
  RECENT_LIMIT,
  recsCacheKey,
  type FeatureStore,
  type ItemInfo,
  type ItemInfoLookup,
  type StoredEvent,
} from '../../src/features/store.js';

/** A small catalog: item i{n} is in category c{n % 3} (and 'all'), by creator k{n % 2}. */
export const CATALOG: ItemInfoLookup = (id) => {
  const m = /^i(\d+)$/.exec(id);
  if (!m) return undefined;
  const n = Number(m[1]);
  const info: ItemInfo = { categories: [`c${n % 3}`, 'all'], creatorId: `k${n % 2}` };
  return info;
};

/** Caps every backend takes, set low where a test needs to reach one. */
export interface StoreLimits {
  maxBlockedPerUser?: number;
}

export type MakeStore = (
  itemInfo: ItemInfoLookup,
  limits?: StoreLimits,
) => Promise<FeatureStore> | FeatureStore;

const T0 = Date.UTC(2026, 0, 24, 10, 0, 0);
const MIN = 60_000;
const HOUR = 3600_000;

function ev(itemId: string, event: StoredEvent['event'], timestampMs: number): StoredEvent {
  return { itemId, event, timestampMs };
}

let seq = 0;
/** A user id no other test uses, so tests stay independent on a shared backend. */
function uid(tag: string): string {
  return `u-${tag}-${process.pid}-${++seq}`;
}

export function storeSuite(name: string, makeStore: MakeStore): void {
  describe(`FeatureStore contract: ${name}`, () => {
    let store: FeatureStore;

    test('set up', async () => {
      store = await makeStore(CATALOG);
    });

    test('an unknown user reads as null, in request order among known ones', async () => {
      const a = uid('known');
      await store.recordEvents(a, [ev('i1', 'view', T0)], T0);
      const got = await store.getUsers([uid('nobody'), a, uid('nobody2')], T0);
      assert.equal(got.length, 3);
      assert.equal(got[0], null);
      assert.equal(got[1]?.userId, a);
      assert.equal(got[2], null);
    });

    test('positive events update session, seen, counts, categories, creators, activity', async () => {
      const u = uid('pos');
      const r = await store.recordEvents(
        u,
        [
          { ...ev('i1', 'view', T0), durationSeconds: 120, completionRate: 0.75 },
          ev('i1', 'click', T0 + 1000),
          ev('i2', 'like', T0 + 2000),
        ],
        T0 + 3000,
      );
      assert.deepEqual([r.accepted, r.duplicates], [3, 0]);
      assert.deepEqual(r.applied, [true, true, true]);
      const [s] = await store.getUsers([u], T0 + 3000);
      assert.ok(s);
      assert.equal(s.interactionCount, 3);
      assert.equal(s.lastActiveMs, T0 + 2000);
      assert.deepEqual(
        s.recent.map((x) => [x.itemId, x.event, x.timestampMs]),
        [
          ['i2', 'like', T0 + 2000],
          ['i1', 'click', T0 + 1000],
          ['i1', 'view', T0],
        ],
      );
      assert.deepEqual([...s.seen].sort(), ['i1', 'i2']);
      assert.equal(s.blocked.size, 0);
      assert.equal(s.itemCounts.get('i1'), 2);
      assert.equal(s.itemCounts.get('i2'), 1);
      assert.equal(s.creatorCounts.get('k1'), 2);
      assert.equal(s.creatorCounts.get('k0'), 1);
      // weights: view 1 + click 2 on i1 (c1), like 3 on i2 (c2)
      for (const w of ['5m', '1h', '24h', 'total'] as const) {
        assert.equal(s.categoryCounts[w].get('c1'), 3, w);
        assert.equal(s.categoryCounts[w].get('c2'), 3, w);
        assert.equal(s.categoryCounts[w].get('all'), 6, w);
        assert.equal(s.categoryCounts[w].has('c0'), false, w);
      }
      for (const w of ['5m', '1h', '24h'] as const) {
        assert.equal(s.activity[w].events.view, 1);
        assert.equal(s.activity[w].events.click, 1);
        assert.equal(s.activity[w].events.like, 1);
        assert.equal(s.activity[w].durationSeconds, 120);
        assert.equal(s.activity[w].ctr, 1);
        assert.equal(s.activity[w].avgDurationSeconds, 120);
      }
    });

    test('a skip is recorded and seen, but adds no affinity, count or trending', async () => {
      const u = uid('skip');
      const item = 'i900';
      await store.recordEvents(u, [ev(item, 'skip', T0)], T0);
      const [s] = await store.getUsers([u], T0);
      assert.ok(s);
      assert.equal(s.interactionCount, 0);
      assert.equal(s.lastActiveMs, T0);
      assert.deepEqual(
        s.recent.map((x) => x.event),
        ['skip'],
      );
      assert.ok(s.seen.has(item));
      assert.equal(s.itemCounts.has(item), false);
      assert.equal(s.categoryCounts.total.size, 0);
      assert.equal(s.categoryCounts['5m'].size, 0);
      assert.equal(s.creatorCounts.size, 0);
      assert.equal(s.activity['5m'].events.skip, 1);
      assert.deepEqual(await store.itemCounts([item]), [0]);
      const top = await store.trending('1h', 1000, T0);
      assert.equal(
        top.some((t) => t.itemId === item),
        false,
      );
    });

    test('a repeated event (same idempotency key) is a duplicate, in a batch and across calls', async () => {
      const u = uid('dup');
      const r1 = await store.recordEvents(
        u,
        [ev('i3', 'view', T0), ev('i3', 'view', T0 + 10)], // same 1 s bucket
        T0,
      );
      assert.deepEqual([r1.accepted, r1.duplicates], [1, 1]);
      assert.deepEqual(r1.applied, [true, false]);
      const r2 = await store.recordEvents(
        u,
        [
          ev('i3', 'view', T0), // retry
          ev('i3', 'click', T0), // other type
          ev('i3', 'view', T0 + IDEMPOTENCY_BUCKET_MS), // next bucket
        ],
        T0 + 5000,
      );
      assert.deepEqual(r2.applied, [false, true, true]);
      // Another user's identical event is not a duplicate.
      const r3 = await store.recordEvents(uid('dup-other'), [ev('i3', 'view', T0)], T0);
      assert.equal(r3.accepted, 1);
      const [s] = await store.getUsers([u], T0 + 5000);
      assert.equal(s?.interactionCount, 3);
      assert.equal(s?.itemCounts.get('i3'), 3);
      assert.equal(s?.recent.length, 3);
    });

    test('distinct events are never taken for duplicates; every retry is', async () => {
      const u = uid('distinct');
      const now = Date.UTC(2026, 11, 7, 12, 0, 0);
      // Two views the memory store's former 33-bit key hash gave the same key: the second was
      // answered as a duplicate and lost.
      const pair = [
        ev('i20', 'view', Date.UTC(2026, 11, 7, 11, 32, 43)),
        ev('i10314', 'view', Date.UTC(2026, 11, 7, 9, 13, 22)),
      ];
      assert.deepEqual((await store.recordEvents(u, pair, now)).applied, [true, true]);
      // 600 items x 2 types x 3 seconds, in batches of 200, then all of them again.
      const events: StoredEvent[] = [];
      for (let i = 0; i < 600; i++)
        for (const type of ['click', 'like'] as const)
          for (let s = 0; s < 3; s++)
            events.push(ev(`i${1000 + i}`, type, now - (i * 7 + s) * 1000));
      const record = async () => {
        let accepted = 0;
        for (let i = 0; i < events.length; i += 200)
          accepted += (await store.recordEvents(u, events.slice(i, i + 200), now)).accepted;
        return accepted;
      };
      assert.equal(await record(), events.length);
      assert.equal(await record(), 0);
      assert.equal((await store.recordEvents(u, pair, now)).accepted, 0);
    });

    test('windows slide: 5 m, 1 h and 24 h forget in turn, the total keeps', async () => {
      const u = uid('win');
      await store.recordEvents(u, [ev('i4', 'view', T0)], T0); // c1
      const at = async (now: number) => {
        const [s] = await store.getUsers([u], now);
        assert.ok(s);
        return ['5m', '1h', '24h', 'total'].map((w) => s.categoryCounts[w as '5m'].get('c1') ?? 0);
      };
      assert.deepEqual(await at(T0 + MIN), [1, 1, 1, 1]);
      assert.deepEqual(await at(T0 + 7 * MIN), [0, 1, 1, 1]);
      assert.deepEqual(await at(T0 + 2 * HOUR), [0, 0, 1, 1]);
      assert.deepEqual(await at(T0 + 26 * HOUR), [0, 0, 0, 1]);
      const [s] = await store.getUsers([u], T0 + 26 * HOUR);
      assert.equal(s?.activity['24h'].events.view, 0);
      assert.equal(s?.interactionCount, 1);
    });

    test('a late event lands only in the windows it still belongs to', async () => {
      const u = uid('late');
      const now = T0 + 10 * HOUR;
      await store.recordEvents(u, [ev('i5', 'view', now - 2 * HOUR)], now); // c2
      await store.recordEvents(u, [ev('i7', 'view', now - 30 * MIN)], now); // c1
      const [s] = await store.getUsers([u], now);
      assert.ok(s);
      assert.equal(s.categoryCounts['5m'].size, 0);
      assert.equal(s.categoryCounts['1h'].get('c1'), 1);
      assert.equal(s.categoryCounts['1h'].has('c2'), false);
      assert.equal(s.categoryCounts['24h'].get('c2'), 1);
      assert.equal(s.categoryCounts.total.get('c2'), 1);
      // The session is ordered by event time, not arrival.
      assert.deepEqual(
        s.recent.map((x) => x.itemId),
        ['i7', 'i5'],
      );
    });

    test('an event slightly in the future counts as now', async () => {
      const u = uid('future');
      await store.recordEvents(u, [ev('i8', 'view', T0 + 60_000)], T0);
      const [s] = await store.getUsers([u], T0);
      assert.equal(s?.lastActiveMs, T0);
      assert.equal(s?.categoryCounts['5m'].get('c2'), 1);
    });

    test('the session keeps the newest RECENT_LIMIT events', async () => {
      const u = uid('cap');
      const events: StoredEvent[] = [];
      for (let i = 0; i < RECENT_LIMIT + 20; i++) events.push(ev(`i${i}`, 'view', T0 + i * 1000));
      const r = await store.recordEvents(u, events, T0 + 200_000);
      assert.equal(r.accepted, RECENT_LIMIT + 20);
      const [s] = await store.getUsers([u], T0 + 200_000);
      assert.ok(s);
      assert.equal(s.recent.length, RECENT_LIMIT);
      assert.equal(s.recent[0].itemId, `i${RECENT_LIMIT + 19}`);
      assert.equal(s.recent[RECENT_LIMIT - 1].itemId, 'i20');
      assert.equal(s.interactionCount, RECENT_LIMIT + 20);
    });

    test('negative feedback blocks at once; a repeat is a duplicate; reports are kept', async () => {
      const u = uid('neg');
      assert.deepEqual(await store.block(u, 'i10', 'not_interested'), { duplicate: false });
      let [s] = await store.getUsers([u]);
      assert.ok(s?.blocked.has('i10'));
      assert.deepEqual(await store.block(u, 'i10', 'not_interested'), { duplicate: true });
      // A report on an already hidden item is new information (it goes to review).
      assert.deepEqual(await store.block(u, 'i11', 'hide'), { duplicate: false });
      assert.deepEqual(await store.block(u, 'i11', 'report', 'spam'), { duplicate: false });
      assert.deepEqual(await store.block(u, 'i11', 'report', 'spam'), { duplicate: true });
      [s] = await store.getUsers([u]);
      assert.deepEqual([...(s?.blocked ?? [])].sort(), ['i10', 'i11']);
      const reports = await store.reports(1000);
      const mine = reports.filter((r) => r.userId === u);
      assert.equal(mine.length, 1);
      assert.equal(mine[0].itemId, 'i11');
      assert.equal(mine[0].reason, 'spam');
    });

    test('trending ranks by decayed event weight, globally and per category', async () => {
      const now = T0 + 3 * HOUR;
      // Item ids unique to this test so other tests' events do not interfere.
      const a = 'i3001'; // c1
      const b = 'i3002'; // c2
      const c = 'i3004'; // c1
      await store.recordEvents(uid('tr1'), [ev(a, 'purchase', now), ev(b, 'view', now)], now);
      await store.recordEvents(uid('tr2'), [ev(a, 'view', now), ev(c, 'click', now)], now);
      const top = await store.trending('1h', 1000, now);
      const rank = (id: string) => top.findIndex((t) => t.itemId === id);
      assert.ok(rank(a) >= 0 && rank(c) >= 0 && rank(b) >= 0);
      assert.ok(rank(a) < rank(c) && rank(c) < rank(b));
      const score = (id: string) => top[rank(id)].score;
      assert.ok(Math.abs(score(a) - 6) < 1e-6, `score ${score(a)}`);
      for (let i = 1; i < top.length; i++) assert.ok(top[i - 1].score >= top[i].score);
      // One hour later the 1 h list has decayed by e, the 24 h list barely.
      const later1h = await store.trending('1h', 1000, now + HOUR);
      const sA = later1h.find((t) => t.itemId === a)?.score ?? 0;
      assert.ok(Math.abs(sA - 6 / Math.E) < 1e-6, `decayed ${sA}`);
      const later24 = await store.trending('24h', 1000, now + HOUR);
      const sA24 = later24.find((t) => t.itemId === a)?.score ?? 0;
      assert.ok(Math.abs(sA24 - 6 * Math.exp(-1 / 24)) < 1e-6, `decayed24 ${sA24}`);
      const inC1 = await store.trendingInCategory('c1', '1h', 1000, now);
      assert.ok(inC1.some((t) => t.itemId === a) && inC1.some((t) => t.itemId === c));
      assert.equal(
        inC1.some((t) => t.itemId === b),
        false,
      );
      assert.deepEqual(await store.trendingInCategory('no-such-category', '1h', 5, now), []);
      assert.equal((await store.trending('24h', 2, now)).length, 2);
      assert.deepEqual(await store.trending('1h', 0, now), []);
      await assert.rejects(store.trending('7d' as '1h', 5, now), /window/);
    });

    test('trending survives weeks of clock: old scores fade, new events rank, order holds', async () => {
      const early = T0 + 5 * HOUR;
      const late = early + 40 * 24 * HOUR; // 960 tau of the 1 h list: its frame must move
      await store.recordEvents(uid('weeks1'), [ev('i5001', 'purchase', early)], early);
      await store.recordEvents(uid('weeks2'), [ev('i5002', 'view', late)], late);
      await store.recordEvents(uid('weeks3'), [ev('i5003', 'click', late)], late);
      const top = await store.trending('1h', 1000, late);
      assert.deepEqual(
        top.slice(0, 2).map((t) => t.itemId),
        ['i5003', 'i5002'],
      );
      assert.ok(Math.abs(top[0].score - 2) < 1e-9, `score ${top[0].score}`);
      for (const t of top) assert.ok(Number.isFinite(t.score) && t.score >= 0);
      const old = top.find((t) => t.itemId === 'i5001');
      assert.ok(old === undefined || old.score < 1e-9);
    });

    test('item counters count positive interactions across users', async () => {
      const id = 'i4001';
      await store.recordEvents(uid('ic1'), [ev(id, 'view', T0), ev(id, 'skip', T0 + 5000)], T0);
      await store.recordEvents(uid('ic2'), [ev(id, 'share', T0)], T0);
      assert.deepEqual(await store.itemCounts([id, 'never-seen']), [2, 0]);
    });

    test('concurrent batches for one user lose no update', async () => {
      const u = uid('conc');
      const batches = Array.from({ length: 40 }, (_, b) =>
        store.recordEvents(
          u,
          [ev(`i${b}`, 'view', T0 + b * 1000), ev(`i${b}`, 'click', T0 + b * 1000)],
          T0 + 60_000,
        ),
      );
      const rs = await Promise.all(batches);
      assert.equal(
        rs.reduce((n, r) => n + r.accepted, 0),
        80,
      );
      const [s] = await store.getUsers([u], T0 + 60_000);
      assert.equal(s?.interactionCount, 80);
      assert.equal(s?.activity['5m'].events.click, 40);
      // The same batch sent twice at once: exactly one copy is applied.
      const w = uid('conc-dup');
      const same = [ev('i1', 'view', T0), ev('i2', 'view', T0)];
      const [x, y] = await Promise.all([
        store.recordEvents(w, same, T0),
        store.recordEvents(w, same, T0),
      ]);
      assert.equal(x.accepted + y.accepted, 2);
      assert.equal(x.duplicates + y.duplicates, 2);
    });

    test('an answer computed before feedback is not cached after it (setCached asOf)', async () => {
      const u = uid('asof');
      const k = recsCacheKey(u, 'home_feed:20');
      const [none] = await store.getUsers([u]);
      assert.equal(none, null);
      // Read (no state: version 0), feedback lands, then the write of the stale answer.
      await store.recordEvents(u, [ev('i1', 'like', Date.now())]);
      await store.setCached(k, 'stale', 60_000, 0);
      assert.equal(await store.getCached(k), null);
      const [s1] = await store.getUsers([u]);
      await store.setCached(k, 'fresh', 60_000, s1!.version);
      assert.equal(await store.getCached(k), 'fresh');
      // A block changes the version too; a duplicate event does not.
      await store.recordEvents(u, [ev('i1', 'like', Date.now() - 5000)]);
      await store.recordEvents(u, [ev('i1', 'like', Date.now() - 5000)]);
      const [s2] = await store.getUsers([u]);
      assert.notEqual(s2!.version, s1!.version);
      await store.block(u, 'i3', 'hide');
      const [s3] = await store.getUsers([u]);
      assert.notEqual(s3!.version, s2!.version);
      await store.setCached(k, 'stale again', 60_000, s2!.version);
      assert.equal(await store.getCached(k), null);
      await store.block(u, 'i3', 'hide');
      const [s4] = await store.getUsers([u]);
      assert.equal(s4!.version, s3!.version);
      await store.setCached(k, 'current', 60_000, s4!.version);
      assert.equal(await store.getCached(k), 'current');
      // A written entry is still dropped by the next feedback.
      await store.recordEvents(u, [ev('i4', 'view', Date.now())]);
      assert.equal(await store.getCached(k), null);
    });

    test('the cache: get/set, TTL, copies, invalidation by user and by feedback', async () => {
      const u = uid('cache');
      const k1 = recsCacheKey(u, 'home_feed:20');
      const k2 = recsCacheKey(u, 'similar:10');
      const other = recsCacheKey(uid('cache-other'), 'home_feed:20');
      const buf = new Uint8Array([1, 2, 3]);
      await store.setCached(k1, buf, 60_000);
      buf[0] = 99; // the store kept its own copy
      await store.setCached(k2, 'json', 60_000);
      await store.setCached(other, 'x', 60_000);
      await store.setCached('global:key', 'g', 60_000);
      assert.deepEqual([...((await store.getCached(k1)) as Uint8Array)], [1, 2, 3]);
      assert.equal(await store.getCached(k2), 'json');
      await store.invalidateUser(u);
      assert.equal(await store.getCached(k1), null);
      assert.equal(await store.getCached(k2), null);
      assert.equal(await store.getCached(other), 'x');
      assert.equal(await store.getCached('global:key'), 'g');
      // Feedback through the store drops the user's cached answers too.
      await store.setCached(k1, 'again', 60_000);
      await store.recordEvents(u, [ev('i1', 'view', Date.now())]);
      assert.equal(await store.getCached(k1), null);
      await store.setCached(k1, 'again', 60_000);
      await store.block(u, 'i2', 'hide');
      assert.equal(await store.getCached(k1), null);
      // A duplicate changes nothing and keeps the cache.
      await store.setCached(k1, 'kept', 60_000);
      await store.block(u, 'i2', 'hide');
      assert.equal(await store.getCached(k1), 'kept');
      // TTL
      await store.setCached('short', 'v', 30);
      await new Promise((r) => setTimeout(r, 60));
      assert.equal(await store.getCached('short'), null);
      // A user id with braces and colons cannot escape its tag.
      const odd = 'we}ird:{id';
      await store.setCached(recsCacheKey(odd, 'a'), 'v', 60_000);
      await store.setCached(recsCacheKey('we', 'a'), 'w', 60_000);
      await store.invalidateUser(odd);
      assert.equal(await store.getCached(recsCacheKey(odd, 'a')), null);
      assert.equal(await store.getCached(recsCacheKey('we', 'a')), 'w');
    });

    test('bad input is refused with an error naming the field', async () => {
      const u = uid('bad');
      await assert.rejects(
        store.recordEvents(u, [ev('i1', 'view', T0), ev('i1', 'stare' as 'view', T0)], T0),
        /events\[1\]\.event/,
      );
      await assert.rejects(
        store.recordEvents(u, [ev('i1', 'view', Number.NaN)], T0),
        /events\[0\]\.timestampMs/,
      );
      await assert.rejects(store.recordEvents(u, [ev('', 'view', T0)], T0), /events\[0\]\.itemId/);
      await assert.rejects(store.recordEvents('', [ev('i1', 'view', T0)], T0), /userId/);
      await assert.rejects(store.block(u, 'i1', 'dislike' as 'hide'), /kind/);
      // Nothing of the refused batch was applied.
      assert.deepEqual(await store.getUsers([u], T0), [null]);
    });

    test('past maxBlockedPerUser a new block is refused and every earlier block stays', async () => {
      const capped = await makeStore(CATALOG, { maxBlockedPerUser: 3 });
      try {
        const u = uid('cap');
        // An id outside the catalog takes room like any other (the store cannot know
        // whether a later model will have it).
        for (const id of ['i1', 'i2', 'not-in-catalog'])
          assert.deepEqual(await capped.block(u, id, 'hide'), { duplicate: false });
        await assert.rejects(
          capped.block(u, 'i4', 'not_interested'),
          (e: unknown) => e instanceof ApiError && e.code === 'limit_exceeded',
        );
        // Neither a repeat nor another kind on a blocked item needs room.
        assert.deepEqual(await capped.block(u, 'i1', 'hide'), { duplicate: true });
        assert.deepEqual(await capped.block(u, 'i2', 'not_interested'), { duplicate: false });
        const [s] = await capped.getUsers([u]);
        assert.deepEqual([...(s?.blocked ?? [])].sort(), ['i1', 'i2', 'not-in-catalog']);
      } finally {
        await capped.close();
      }
    });

    test('tear down', async () => {
      await store.close();
    });
  });
}
