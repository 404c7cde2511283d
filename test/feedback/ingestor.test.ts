// The ingestion path end to end on the real parts: MemoryFeatureStore + EventLog on disk.
// Includes a crash test: a child process ingests, is SIGKILLed, and a fresh store rebuilt
// from the log holds every event the child saw acknowledged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { ApiError } from '../../src/api/errors.js';
import type { FeedbackEvent } from '../../src/api/types.js';
import { MemoryFeatureStore } from '../../src/features/memory-store.js';
import { recsCacheKey } from '../../src/features/store.js';
import { EventLog, FeedbackIngestor } from '../../src/feedback/index.js';
import { CATALOG } from '../features/store-suite.js';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'recserve-ingest-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const NOW = Date.UTC(2026, 0, 24, 10, 31, 0);
const iso = (ms: number) => new Date(ms).toISOString();

/** The wire path (FeedbackIngestor.feedback), answered as {accepted, duplicates}. */
async function batch(ing: FeedbackIngestor, userId: string, events: FeedbackEvent[]) {
  const r = await ing.feedback({ user_id: userId, events });
  return { accepted: r.events_processed, duplicates: r.duplicates_ignored };
}

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await tempDir(t);
  const store = new MemoryFeatureStore({ itemInfo: CATALOG });
  const { ingestor, replay } = await FeedbackIngestor.open(store, dir, { now: () => NOW });
  t.after(async () => {
    await ingestor.close();
    await store.close();
  });
  return { dir, store, ingestor, replay };
}

test('a batch is applied, logged, deduplicated, and answered in the wire shape', async (t) => {
  const { dir, store, ingestor, replay } = await setup(t);
  assert.equal(replay?.events, 0);
  const req = {
    user_id: 'user_123',
    events: [
      {
        item_id: 'i456',
        event_type: 'click' as const,
        timestamp: iso(NOW),
        context: { recommendation_id: 'req_xyz789', position: 3, surface: 'home_feed' },
      },
      {
        item_id: 'i456',
        event_type: 'view' as const,
        timestamp: iso(NOW),
        duration_seconds: 120,
        completion_rate: 0.75,
      },
    ],
  };
  assert.deepEqual(await ingestor.feedback(req), {
    status: 'accepted',
    events_processed: 2,
    duplicates_ignored: 0,
  });
  // The client retries the whole batch: nothing counts twice.
  assert.deepEqual(await ingestor.feedback(req), {
    status: 'accepted',
    events_processed: 0,
    duplicates_ignored: 2,
  });
  const [s] = await store.getUsers(['user_123'], NOW);
  assert.equal(s?.interactionCount, 2);
  assert.equal(s?.activity['5m'].durationSeconds, 120);
  // Durable before the promise resolved; duplicates are not logged.
  const logged: unknown[] = [];
  for await (const r of EventLog.read(join(dir, 'events'))) logged.push(r);
  assert.equal(logged.length, 2);
  assert.deepEqual(logged[0], {
    t: 'e',
    u: 'user_123',
    rt: NOW,
    ev: {
      itemId: 'i456',
      event: 'click',
      timestampMs: NOW,
      recommendationId: 'req_xyz789',
      position: 3,
      surface: 'home_feed',
    },
  });
  assert.deepEqual(ingestor.stats, {
    accepted: 2,
    duplicates: 2,
    negatives: 0,
    negativeDuplicates: 0,
    logFailures: 0,
  });
});

test('events without a timestamp take the server clock', async (t) => {
  const { store, ingestor } = await setup(t);
  await batch(ingestor, 'u', [{ item_id: 'i1', event_type: 'view' }]);
  const [s] = await store.getUsers(['u'], NOW);
  assert.equal(s?.lastActiveMs, NOW);
});

test('the timestamp policy refuses far-future, too-old and unparsable times, applying nothing', async (t) => {
  const { store, ingestor } = await setup(t);
  const cases: [string, RegExp][] = [
    [iso(NOW + 10 * 60_000), /ahead of the server clock/],
    [iso(NOW - 25 * 3600_000), /older than 24 h/],
    ['yesterday-ish', /ISO-8601/],
  ];
  for (const [ts, why] of cases) {
    await assert.rejects(
      batch(ingestor, 'late', [
        { item_id: 'i1', event_type: 'view', timestamp: iso(NOW) },
        { item_id: 'i2', event_type: 'view', timestamp: ts },
      ]),
      (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.code, 'invalid_argument');
        assert.equal(err.field, 'events[1].timestamp');
        assert.match(err.message, why);
        return true;
      },
    );
  }
  await assert.rejects(
    batch(ingestor, 'late', [{ item_id: '', event_type: 'view' }]),
    (err: unknown) => err instanceof ApiError && err.field === 'events[0].item_id',
  );
  await assert.rejects(
    batch(ingestor, 'late', [{ item_id: 'i1', event_type: 'gaze' as 'view' }]),
    (err: unknown) => err instanceof ApiError && err.field === 'events[0].event_type',
  );
  await assert.rejects(
    batch(ingestor, '', []),
    (err: unknown) => err instanceof ApiError && err.field === 'user_id',
  );
  assert.deepEqual(await store.getUsers(['late'], NOW), [null]);
  // Within the skew: accepted, counted as now.
  const r = await batch(ingestor, 'late', [
    { item_id: 'i1', event_type: 'view', timestamp: iso(NOW + 60_000) },
    { item_id: 'i2', event_type: 'view', timestamp: iso(NOW - 23 * 3600_000) },
  ]);
  assert.equal(r.accepted, 2);
});

test('negative feedback blocks at once, maps to actions, and repeats are duplicates', async (t) => {
  const { store, ingestor } = await setup(t);
  const key = recsCacheKey('u', 'home_feed:20');
  await store.setCached(key, 'cached answer', 60_000);
  assert.deepEqual(
    await ingestor.negativeFeedback({
      user_id: 'u',
      item_id: 'i9',
      feedback_type: 'not_interested',
      reason: 'already_seen',
    }),
    { status: 'accepted', action_taken: 'item_blocked' },
  );
  assert.equal(await store.getCached(key), null, 'the cached answer is gone');
  assert.ok((await store.getUsers(['u']))[0]?.blocked.has('i9'));
  assert.deepEqual(
    await ingestor.negativeFeedback({
      user_id: 'u',
      item_id: 'i9',
      feedback_type: 'not_interested',
    }),
    { status: 'duplicate_ignored', action_taken: 'item_blocked' },
  );
  assert.deepEqual(await ingestor.negative('u', 'i8', 'hide'), {
    duplicate: false,
    action: 'item_hidden',
  });
  assert.deepEqual(await ingestor.negative('u', 'i7', 'report', 'spam'), {
    duplicate: false,
    action: 'item_reported',
  });
  assert.equal((await store.reports(10))[0].reason, 'spam');
  await assert.rejects(
    ingestor.negative('u', 'i7', 'dislike' as 'hide'),
    (err: unknown) => err instanceof ApiError && err.field === 'feedback_type',
  );
});

test('feedback invalidates the cached answer of that user only', async (t) => {
  const { store, ingestor } = await setup(t);
  await store.setCached(recsCacheKey('a', 'x'), 'A', 60_000);
  await store.setCached(recsCacheKey('b', 'x'), 'B', 60_000);
  await batch(ingestor, 'a', [{ item_id: 'i1', event_type: 'click' }]);
  assert.equal(await store.getCached(recsCacheKey('a', 'x')), null);
  assert.equal(await store.getCached(recsCacheKey('b', 'x')), 'B');
});

test('when the log cannot take writes the call fails with 503 and applies nothing', async (t) => {
  const { store, ingestor } = await setup(t);
  await ingestor.log?.close();
  await assert.rejects(
    batch(ingestor, 'u', [{ item_id: 'i1', event_type: 'view' }]),
    (err: unknown) => err instanceof ApiError && err.code === 'unavailable',
  );
  await assert.rejects(
    ingestor.negative('u', 'i1', 'hide'),
    (err: unknown) => err instanceof ApiError && err.code === 'unavailable',
  );
  assert.deepEqual(await store.getUsers(['u'], NOW), [null]);
  assert.equal(ingestor.stats.logFailures, 2);
});

test('a retry is acknowledged only once the records it repeats are on disk', async (t) => {
  const { ingestor } = await setup(t);
  const log = ingestor.log!;
  const internals = log as unknown as { fh: FileHandle };
  const path = log.stats.currentFile;
  // The disk fails (the log's file pulled from under it): the call is applied, answered 503,
  // and its records stay queued in the log.
  await internals.fh.close();
  const ev = [{ item_id: 'i1', event_type: 'purchase' as const, timestamp: iso(NOW) }];
  const unavailable = (err: unknown) => err instanceof ApiError && err.code === 'unavailable';
  await assert.rejects(batch(ingestor, 'u', ev), unavailable);
  await assert.rejects(ingestor.negative('u', 'i2', 'hide'), unavailable);
  // Retried while the disk still fails: duplicates, but not acknowledged (they were 200).
  await assert.rejects(batch(ingestor, 'u', ev), unavailable);
  await assert.rejects(ingestor.negative('u', 'i2', 'hide'), unavailable);
  // The disk is back: the retries are acknowledged as duplicates, and the records are there.
  internals.fh = await open(path, 'a');
  assert.deepEqual(await batch(ingestor, 'u', ev), { accepted: 0, duplicates: 1 });
  assert.equal((await ingestor.negative('u', 'i2', 'hide')).duplicate, true);
  const lines = (await readFile(path, 'utf8')).trim().split('\n');
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { t: string }).t),
    ['e', 'n'],
  );
});

test('a replay whose store fails stops with the error; it skips only records the store refuses', async (t) => {
  const { dir, ingestor } = await setup(t);
  await ingestor.negative('u', 'i1', 'hide');
  await ingestor.negative('u', 'i2', 'hide');
  await ingestor.close();
  // The real store, with its block failing as a store that lost its connection fails: the
  // replay must not count the record as a bad line and go on (the block was lost for good).
  class Unreachable extends MemoryFeatureStore {
    override async block(): Promise<never> {
      throw new Error('connection lost');
    }
  }
  const failing = new Unreachable({ itemInfo: CATALOG });
  t.after(() => failing.close());
  await assert.rejects(FeedbackIngestor.open(failing, dir, { now: () => NOW }), /connection lost/);
  // A store that refuses the record itself (a full list) skips it and replays the rest.
  const capped = new MemoryFeatureStore({ itemInfo: CATALOG, maxBlockedPerUser: 1 });
  t.after(() => capped.close());
  const { ingestor: again, replay } = await FeedbackIngestor.open(capped, dir, { now: () => NOW });
  t.after(() => again.close());
  assert.deepEqual([replay?.negatives, replay?.badLines], [1, 1]);
});

test('a restart replays the log: same state, and retries are still duplicates', async (t) => {
  const { dir, store, ingestor } = await setup(t);
  await batch(ingestor, 'u', [
    { item_id: 'i1', event_type: 'view', timestamp: iso(NOW - 1000) },
    { item_id: 'i2', event_type: 'like', timestamp: iso(NOW) },
  ]);
  await ingestor.negative('u', 'i3', 'hide');
  await ingestor.close();
  const before = (await store.getUsers(['u'], NOW))[0];

  const store2 = new MemoryFeatureStore({ itemInfo: CATALOG });
  t.after(() => store2.close());
  const { ingestor: again, replay } = await FeedbackIngestor.open(store2, dir, {
    now: () => NOW,
  });
  t.after(() => again.close());
  assert.equal(replay?.events, 2);
  assert.equal(replay?.negatives, 1);
  assert.equal(replay?.badLines, 0);
  const after = (await store2.getUsers(['u'], NOW))[0];
  assert.ok(before && after);
  assert.equal(after.interactionCount, before.interactionCount);
  assert.deepEqual(after.recent, before.recent);
  assert.deepEqual([...after.blocked], ['i3']);
  assert.deepEqual(after.categoryCounts.total, before.categoryCounts.total);
  const retry = await batch(again, 'u', [
    { item_id: 'i2', event_type: 'like', timestamp: iso(NOW) },
  ]);
  assert.deepEqual(retry, { accepted: 0, duplicates: 1 });
  assert.deepEqual(await again.negative('u', 'i3', 'hide'), {
    duplicate: true,
    action: 'item_hidden',
  });
});

test('concurrent batches for one user: exact counts in the store and in the log', async (t) => {
  const { dir, store, ingestor } = await setup(t);
  const calls = Array.from({ length: 50 }, (_, b) =>
    batch(ingestor, 'hot', [
      { item_id: `i${b}`, event_type: 'view', timestamp: iso(NOW - b * 1000) },
      { item_id: `i${b % 10}`, event_type: 'view', timestamp: iso(NOW - (b % 10) * 1000) },
    ]),
  );
  const rs = await Promise.all(calls);
  const accepted = rs.reduce((n, r) => n + r.accepted, 0);
  assert.equal(accepted, 50); // i0..i9 arrive twice (same key) in the first ten batches
  assert.equal((await store.getUsers(['hot'], NOW))[0]?.interactionCount, 50);
  let logged = 0;
  for await (const r of EventLog.read(join(dir, 'events'))) if (r.t === 'e') logged++;
  assert.equal(logged, 50);
});

test('an acknowledged event survives SIGKILL of the process right after', async (t) => {
  const dir = await tempDir(t);
  const here = fileURLToPath(new URL('.', import.meta.url));
  const mod = (p: string) => pathToFileURL(join(here, '../../src', p)).href;
  const script = join(dir, 'child.mjs');
  await writeFile(
    script,
    `import { MemoryFeatureStore } from ${JSON.stringify(mod('features/memory-store.js'))};
import { FeedbackIngestor } from ${JSON.stringify(mod('feedback/ingestor.js'))};
const store = new MemoryFeatureStore();
const { ingestor } = await FeedbackIngestor.open(store, process.argv[2]);
let acked = 0;
for (let i = 0; i < 40; i++) {
  await ingestor.recordBatch('u' + (i % 4), [{ itemId: 'i' + i, event: 'click', timestampMs: Date.now() }]);
  acked++;
}
process.stdout.write(String(acked) + '\\n');
process.kill(process.pid, 'SIGKILL');
`,
  );
  const out = await new Promise<{ stdout: string; signal: string | null }>((resolve) => {
    const child = spawn(process.execPath, [script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('exit', (_code, signal) => resolve({ stdout, signal }));
  });
  assert.equal(out.signal, 'SIGKILL');
  assert.equal(out.stdout.trim(), '40');
  const store = new MemoryFeatureStore();
  t.after(() => store.close());
  const { ingestor, replay } = await FeedbackIngestor.open(store, dir);
  t.after(() => ingestor.close());
  assert.equal(replay?.events, 40);
  const users = await store.getUsers(['u0', 'u1', 'u2', 'u3']);
  assert.deepEqual(
    users.map((s) => s?.interactionCount),
    [10, 10, 10, 10],
  );
});
