import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateSynthetic } from '../../src/data/synthetic.js';
import { temporalSplit } from '../../src/data/split.js';
import { EVENT_CODES } from '../../src/data/types.js';

const opts = { users: 300, items: 800, events: 12000, seed: 7 };

test('the generator is deterministic for a seed and differs across seeds', () => {
  const a = generateSynthetic(opts);
  const b = generateSynthetic(opts);
  assert.deepEqual(a.log.item, b.log.item);
  assert.deepEqual(a.log.timestamp, b.log.timestamp);
  assert.deepEqual(a.log.event, b.log.event);
  assert.deepEqual(a.items.titles, b.items.titles);
  assert.deepEqual(a.items.createdAt, b.items.createdAt);
  const c = generateSynthetic({ ...opts, seed: 8 });
  assert.notDeepEqual(a.log.item, c.log.item);
});

test('sizes, ordering and the structure models should find', () => {
  const s = generateSynthetic(opts);
  const { log, items } = s;
  assert.equal(log.length, opts.events);
  assert.equal(log.userIds.length, opts.users);
  assert.equal(items.ids.length, opts.items);
  assert.ok(log.device && log.session && log.duration, 'device, session and duration columns');
  for (let e = 1; e < log.length; e++) {
    assert.ok(log.user[e] >= log.user[e - 1], 'grouped by user');
    if (log.user[e] === log.user[e - 1])
      assert.ok(log.timestamp[e] >= log.timestamp[e - 1], 'time-ordered');
  }
  for (let e = 0; e < log.length; e++)
    assert.ok(items.createdAt[log.item[e]] <= log.timestamp[e], 'no event before its item exists');
  // Zipf: the 1% most popular items take far more than 1% of events.
  const pop = Array.from(items.popularity).sort((a, b) => b - a);
  const head = pop.slice(0, opts.items / 100).reduce((x, y) => x + y, 0);
  assert.ok(head / opts.events > 0.05, `head share ${head / opts.events}`);
  // Taste: most events fall in the user's primary or another cluster they like.
  let inPrimary = 0;
  for (let e = 0; e < log.length; e++)
    if (s.itemCluster[log.item[e]] === s.userCluster[log.user[e]]) inPrimary++;
  assert.ok(inPrimary / log.length > 0.4, `primary-cluster share ${inPrimary / log.length}`);
  // Every event type occurs; purchases are rarer than views.
  const counts = new Map<string, number>();
  for (let e = 0; e < log.length; e++)
    counts.set(EVENT_CODES[log.event[e]], (counts.get(EVENT_CODES[log.event[e]]) ?? 0) + 1);
  for (const ev of ['view', 'click', 'like', 'share', 'purchase', 'skip'])
    assert.ok((counts.get(ev) ?? 0) > 0, ev);
  assert.ok(counts.get('view')! > counts.get('purchase')!);
});

test('bad generator options are named', () => {
  assert.throws(() => generateSynthetic({ users: 0 }), /'users'/);
  assert.throws(() => generateSynthetic({ items: 1.5 }), /'items'/);
});

test("temporal split holds out each user's most recent events", () => {
  const { log } = generateSynthetic(opts);
  const { train, test: held } = temporalSplit(log, { fraction: 0.2 });
  assert.equal(train.length + held.length, log.length);
  const lastTrain = new Map<number, number>();
  for (let e = 0; e < train.length; e++)
    lastTrain.set(
      train.user[e],
      Math.max(lastTrain.get(train.user[e]) ?? -Infinity, train.timestamp[e]),
    );
  const perUser = new Map<number, number>();
  for (let e = 0; e < held.length; e++) {
    const u = held.user[e];
    assert.ok(
      held.timestamp[e] >= (lastTrain.get(u) ?? -Infinity),
      'held-out events are the latest',
    );
    perUser.set(u, (perUser.get(u) ?? 0) + 1);
  }
  assert.ok(perUser.size > opts.users * 0.9);
  assert.throws(() => temporalSplit(log, { fraction: 1.5 }), /fraction/);
});
