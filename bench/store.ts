// FeatureStore and feedback ingestion benchmark (embedded backend).
//
//   node --expose-gc dist/bench/store.js [--users N] [--events-per-user E] [--quick] [--json]
//                                        [--redis auto|redis://host:port]
//
// Measures, in one run: heap bytes per user after loading N users with E events each (the
// figure that says whether a million users fit), events/s applied by recordEvents (batches of
// 1 and 10), getUsers latency (one user, and batches of 8), trending() latency, and the
// ingestion path with the durable log (fdatasync group commit) under concurrency. With
// --redis, the same load, reads and one-event writes against RedisFeatureStore too ('auto'
// starts a private redis-server on a free loopback port and stops it after), with 32
// requests in flight.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { MemoryFeatureStore } from '../src/features/memory-store.js';
import { RedisFeatureStore } from '../src/features/redis-store.js';
import type { FeatureStore, ItemInfo, StoredEvent } from '../src/features/store.js';
import { FeedbackIngestor } from '../src/feedback/index.js';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { Rng } from './lib/rng.js';
import { nowMs, percentile } from './lib/stats.js';
import { printTable, type Cell } from './lib/table.js';
import { startRedisServer, type RedisServerHandle } from '../test/support/redis-server.js';

const args = parseBenchArgs();
const users = numberOption(args, 'users', args.quick ? 20_000 : 200_000);
const perUser = numberOption(args, 'events-per-user', 20);
const numItems = numberOption(args, 'items', 100_000);
const EVENTS: StoredEvent['event'][] = ['view', 'view', 'view', 'click', 'click', 'like', 'skip'];

// A synthetic catalog: 30 categories, 5,000 creators, popularity skewed (squared uniform).
const itemIds = Array.from({ length: numItems }, (_, i) => `item_${i}`);
const infos: ItemInfo[] = itemIds.map((_, i) => ({
  categories: [`cat_${i % 30}`, ...(i % 7 === 0 ? [`cat_${(i * 7) % 30}`] : [])],
  creatorId: `creator_${i % 5000}`,
}));
const infoIndex = new Map(itemIds.map((id, i) => [id, infos[i]]));
const rng = new Rng(7);
const pickItem = () => itemIds[Math.floor(rng.next() ** 2 * numItems)];

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function heapUsed(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const rows: Cell[][] = [];
const out: Record<string, number | string | boolean> = {
  users,
  eventsPerUser: perUser,
  items: numItems,
  gcExposed: typeof (globalThis as { gc?: unknown }).gc === 'function',
};

async function main(): Promise<void> {
  const now = Date.now();
  const store = new MemoryFeatureStore({ itemInfo: (id) => infoIndex.get(id) });

  // 1. Load: N users × E events, batches of 10, events spread over the last 20 hours.
  const heap0 = heapUsed();
  let t0 = nowMs();
  let applied = 0;
  for (let u = 0; u < users; u++) {
    const uid = `user_${u}`;
    for (let b = 0; b < perUser; b += 10) {
      const batch: StoredEvent[] = [];
      for (let j = b; j < Math.min(perUser, b + 10); j++)
        batch.push({
          itemId: pickItem(),
          event: EVENTS[rng.int(EVENTS.length)],
          timestampMs: now - Math.floor(rng.next() * 20 * 3600_000),
          durationSeconds: 30,
        });
      applied += (await store.recordEvents(uid, batch, now)).accepted;
    }
  }
  const loadMs = nowMs() - t0;
  const heap1 = heapUsed();
  const bytesPerUser = (heap1 - heap0) / users;
  out.loadEventsPerSec = (applied / loadMs) * 1000;
  out.bytesPerUser = bytesPerUser;
  out.projectedGiBFor1MUsers = (bytesPerUser * 1e6) / 2 ** 30;
  rows.push(['load: recordEvents, batches of 10', out.loadEventsPerSec as number, 'events/s']);
  rows.push(['heap bytes per user', bytesPerUser, `${perUser} events each`]);
  rows.push(['projected heap, 1M users', out.projectedGiBFor1MUsers as number, 'GiB']);
  // The same users a day later, once the idle compactor has passed (windows and keys expired).
  store.compactIdle(now + 2 * 86_400_000);
  const idleBytes = (heapUsed() - heap0) / users;
  out.idleBytesPerUser = idleBytes;
  rows.push(['heap bytes per user, idle > 1 day', idleBytes, 'after compaction']);

  // 2. Hot writes (users are idle-compacted by now: this includes re-growing their arrays): single-event batches on random existing users.
  const hotN = args.quick ? 20_000 : 100_000;
  t0 = nowMs();
  for (let i = 0; i < hotN; i++)
    await store.recordEvents(
      `user_${rng.int(users)}`,
      [{ itemId: pickItem(), event: 'click', timestampMs: now + i }],
      now + i,
    );
  out.singleEventsPerSec = (hotN / (nowMs() - t0)) * 1000;
  rows.push(['recordEvents, 1 event per call', out.singleEventsPerSec as number, 'events/s']);

  // 3. Reads.
  const reads = args.quick ? 5_000 : 20_000;
  const lat: number[] = [];
  for (let i = 0; i < reads; i++) {
    const t = nowMs();
    await store.getUsers([`user_${rng.int(users)}`], now);
    lat.push((nowMs() - t) * 1000);
  }
  out.getUsers1P50Us = percentile(lat, 50);
  out.getUsers1P99Us = percentile(lat, 99);
  rows.push(['getUsers(1 user) p50', out.getUsers1P50Us as number, 'µs']);
  rows.push(['getUsers(1 user) p99', out.getUsers1P99Us as number, 'µs']);
  const lat8: number[] = [];
  for (let i = 0; i < reads / 8; i++) {
    const ids = Array.from({ length: 8 }, () => `user_${rng.int(users)}`);
    const t = nowMs();
    await store.getUsers(ids, now);
    lat8.push((nowMs() - t) * 1000);
  }
  out.getUsers8P50Us = percentile(lat8, 50);
  rows.push(['getUsers(8 users) p50', out.getUsers8P50Us as number, 'µs']);
  const latT: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const t = nowMs();
    await store.trending('1h', 100, now);
    latT.push((nowMs() - t) * 1000);
  }
  out.trending100P50Us = percentile(latT, 50);
  rows.push(['trending(1h, k=100) p50', out.trending100P50Us as number, 'µs']);
  await store.close();

  // 4. The ingestion path with the durable log: C concurrent clients, batches of 5.
  const dir = await mkdtemp(join(tmpdir(), 'recserve-bench-log-'));
  try {
    const s2 = new MemoryFeatureStore({ itemInfo: (id) => infoIndex.get(id) });
    const { ingestor } = await FeedbackIngestor.open(s2, dir, { replay: false });
    const total = args.quick ? 20_000 : 100_000;
    const clients = 64;
    let sent = 0;
    const ackLat: number[] = [];
    t0 = nowMs();
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        while (sent < total) {
          sent += 5;
          const batch: StoredEvent[] = [];
          for (let j = 0; j < 5; j++)
            batch.push({ itemId: pickItem(), event: 'view', timestampMs: Date.now() - j });
          const t = nowMs();
          await ingestor.recordBatch(`user_${c}_${rng.int(1000)}`, batch);
          ackLat.push(nowMs() - t);
        }
      }),
    );
    const ms = nowMs() - t0;
    const logStats = ingestor.log?.stats;
    await ingestor.close();
    await s2.close();
    // Restart: rebuild a fresh store from the log just written.
    const s3 = new MemoryFeatureStore({ itemInfo: (id) => infoIndex.get(id) });
    const reopened = await FeedbackIngestor.open(s3, dir);
    await reopened.ingestor.close();
    await s3.close();
    const rp = reopened.replay;
    out.replayEventsPerSec = rp ? (rp.events / rp.ms) * 1000 : 0;
    out.ingestEventsPerSec = (ingestor.stats.accepted / ms) * 1000;
    out.ingestAckP50Ms = percentile(ackLat, 50);
    out.ingestAckP99Ms = percentile(ackLat, 99);
    out.logWrites = logStats?.writes ?? 0;
    out.recordsPerWrite = logStats ? logStats.appendedRecords / Math.max(1, logStats.writes) : 0;
    rows.push(['ingest + fdatasync log, 64 clients', out.ingestEventsPerSec as number, 'events/s']);
    rows.push(['  ack latency p50', out.ingestAckP50Ms as number, 'ms']);
    rows.push(['  ack latency p99', out.ingestAckP99Ms as number, 'ms']);
    rows.push(['  records per group commit', out.recordsPerWrite as number, 'records']);
    rows.push([
      'replay of that log into a new store',
      out.replayEventsPerSec as number,
      'events/s',
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const redisOpt = args.options.get('redis');
  if (redisOpt) await benchRedis(redisOpt, now);

  if (args.json) console.log(JSON.stringify(out));
  else {
    console.log(
      `FeatureStore (memory): ${users} users × ${perUser} events, ${numItems} items` +
        (out.gcExposed ? '' : '  [run with --expose-gc for exact heap figures]'),
    );
    printTable(['measure', 'value', 'unit'], rows);
  }
}

/** Runs `n` tasks with `conc` in flight; returns per-task latencies (ms) and the wall time. */
async function inFlight(
  n: number,
  conc: number,
  task: (i: number) => Promise<unknown>,
): Promise<{ lat: number[]; ms: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = nowMs();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < n) {
        const i = next++;
        const t = nowMs();
        await task(i);
        lat.push(nowMs() - t);
      }
    }),
  );
  return { lat, ms: nowMs() - t0 };
}

async function benchRedis(opt: string, now: number): Promise<void> {
  let url = opt;
  let local: RedisServerHandle | null = null;
  if (opt === 'auto' || opt === 'true') {
    local = await startRedisServer();
    url = local.url;
  }
  const probe = local?.admin ?? new Redis(url);
  const usedMemory = async () =>
    Number(/used_memory:(\d+)/.exec((await probe.info('memory')) ?? '')?.[1] ?? NaN);
  const store: FeatureStore = new RedisFeatureStore({
    redis: url,
    itemInfo: (id) => infoIndex.get(id),
    prefix: `bench${process.pid}:`,
  });
  try {
    const rUsers = Math.min(users, args.quick ? 2000 : 20_000);
    const mem0 = await usedMemory();
    const batches = (rUsers * perUser) / 10;
    const load = await inFlight(batches, 32, (i) => {
      const batch: StoredEvent[] = [];
      for (let j = 0; j < 10; j++)
        batch.push({
          itemId: pickItem(),
          event: EVENTS[rng.int(EVENTS.length)],
          timestampMs: now - Math.floor(rng.next() * 20 * 3600_000),
          durationSeconds: 30,
        });
      return store.recordEvents(`user_${i % rUsers}`, batch, now);
    });
    const mem1 = await usedMemory();
    out.redisUsers = rUsers;
    out.redisLoadEventsPerSec = ((batches * 10) / load.ms) * 1000;
    out.redisBytesPerUser = (mem1 - mem0) / rUsers;
    rows.push(['redis: recordEvents, batches of 10', out.redisLoadEventsPerSec, 'events/s']);
    rows.push(['redis: used_memory per user', out.redisBytesPerUser, `${rUsers} users`]);
    const reads = args.quick ? 2000 : 10_000;
    const seq = await inFlight(reads, 1, () => store.getUsers([`user_${rng.int(rUsers)}`], now));
    out.redisGetUsers1P50Ms = percentile(seq.lat, 50);
    out.redisGetUsers1P99Ms = percentile(seq.lat, 99);
    rows.push(['redis: getUsers(1 user) p50, 1 in flight', out.redisGetUsers1P50Ms, 'ms']);
    rows.push(['redis: getUsers(1 user) p99, 1 in flight', out.redisGetUsers1P99Ms, 'ms']);
    const par = await inFlight(reads, 32, () => store.getUsers([`user_${rng.int(rUsers)}`], now));
    out.redisGetUsersPerSec = (reads / par.ms) * 1000;
    out.redisGetUsers32P99Ms = percentile(par.lat, 99);
    rows.push(['redis: getUsers/s, 32 in flight', out.redisGetUsersPerSec, 'reads/s']);
    rows.push(['redis: getUsers p99, 32 in flight', out.redisGetUsers32P99Ms, 'ms']);
    // One event per call, as /v1/feedback usually sends: the Redis CPU of one record script.
    const single = await inFlight(reads, 32, (i) =>
      store.recordEvents(`user_${rng.int(rUsers)}`, [
        { itemId: pickItem(), event: 'like', timestampMs: now - i, durationSeconds: 30 },
      ]),
    );
    out.redisRecord1PerSec = (reads / single.ms) * 1000;
    rows.push(['redis: recordEvents, 1 event, 32 in flight', out.redisRecord1PerSec, 'events/s']);
    const tr = await inFlight(2000, 1, () => store.trending('1h', 100, now));
    out.redisTrending100P50Ms = percentile(tr.lat, 50);
    rows.push(['redis: trending(1h, k=100) p50', out.redisTrending100P50Ms, 'ms']);
  } finally {
    await store.close();
    if (local) await local.stop();
    probe.disconnect();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
