import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DataError, parseCsvLine } from '../../src/data/csv.js';
import { loadFiles, loadInteractions, loadItems } from '../../src/data/loaders.js';
import { hasMovieLens, loadMovieLens, yearFromTitle } from '../../src/data/movielens.js';
import { EVENT_CODES } from '../../src/data/types.js';

const dir = mkdtempSync(join(tmpdir(), 'recserve-loaders-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(name: string, text: string): string {
  const p = join(dir, `${n++}-${name}`);
  writeFileSync(p, text);
  return p;
}

async function rejectsAt(
  p: Promise<unknown>,
  path: string,
  line: number,
  fieldWords: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected DataError, got ${String(e)}`);
    assert.equal(e.file, path);
    assert.equal(e.line, line);
    assert.match(
      e.message,
      new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${line}: `),
    );
    assert.match(e.message, fieldWords);
    return true;
  });
}

test('parseCsvLine handles quotes, doubled quotes, empty and trailing fields', () => {
  assert.deepEqual(parseCsvLine('a,"b,c","say ""hi""",,'), ['a', 'b,c', 'say "hi"', '', '']);
  assert.deepEqual(parseCsvLine('1,"Toy Story (1995)",Comedy'), [
    '1',
    'Toy Story (1995)',
    'Comedy',
  ]);
  assert.throws(() => parseCsvLine('a,"open'), /unterminated/);
});

test('interactions CSV: events, timestamps in s/ms/ISO, context device, duplicates counted', async () => {
  const p = file(
    'events.csv',
    [
      'user_id,item_id,event_type,timestamp,weight,duration,context',
      'u1,i1,view,1700000000,,30,"{""device_type"":""mobile""}"',
      'u1,i2,purchase,1700000100000,,,',
      'u2,i1,like,2023-11-14T22:13:20Z,2.5,,',
      'u1,i1,view,1700000000,,30,', // exact repeat of line 2 → duplicate
      '',
    ].join('\n'),
  );
  const { log, items, stats } = await loadInteractions(p);
  assert.equal(stats.records, 4);
  assert.equal(stats.events, 3);
  assert.equal(stats.duplicates, 1);
  assert.deepEqual(log.userIds, ['u1', 'u2']);
  assert.deepEqual(items.ids, ['i1', 'i2']);
  // Sorted by (user, time).
  assert.deepEqual(Array.from(log.user), [0, 0, 1]);
  assert.deepEqual(Array.from(log.timestamp), [1700000000000, 1700000100000, 1700000000000]);
  assert.equal(EVENT_CODES[log.event[1]], 'purchase');
  assert.equal(log.weight[2], 2.5);
  assert.ok(Number.isNaN(log.weight[0]));
  assert.equal(log.duration?.[0], 30);
  assert.equal(log.device?.[0], 0); // mobile
  assert.deepEqual(Array.from(items.popularity), [2, 1]);
});

test('interactions JSONL with ratings, and an items file: unknown items counted, not fatal', async () => {
  const itemsPath = file(
    'items.jsonl',
    [
      '{"item_id":"a","title":"Alpha","categories":["x","y"],"creator_id":"c1","created_at":"2024-01-01T00:00:00Z","quality":0.9}',
      '{"item_id":"b","title":"Beta","categories":"y|z"}',
      '{"item_id":"a","title":"Dup"}',
    ].join('\n'),
  );
  const evPath = file(
    'ratings.jsonl',
    [
      '{"userId":"1","itemId":"a","rating":4.5,"timestamp":1000000000}',
      '{"userId":"1","itemId":"zzz","rating":3,"timestamp":1000000001}',
      '{"userId":"2","itemId":"b","rating":5,"timestamp":1000000002}',
    ].join('\n'),
  );
  const r = await loadFiles(evPath, itemsPath);
  assert.equal(r.itemStats?.duplicates, 1);
  assert.equal(r.items.ids.length, 2);
  assert.equal(r.items.titles[0], 'Alpha');
  assert.deepEqual(
    Array.from(r.items.categories[1], (c) => r.items.categoryNames[c]),
    ['y', 'z'],
  );
  assert.equal(r.items.createdAt[0], Date.UTC(2024, 0, 1));
  assert.ok(Math.abs(r.items.quality[0] - 0.9) < 1e-6);
  assert.equal(r.items.quality[1], 0.5);
  assert.equal(r.stats.unknownItems, 1);
  assert.equal(r.log.length, 2);
  assert.equal(EVENT_CODES[r.log.event[0]], 'rating');
  assert.equal(r.log.rating[0], 4.5);
});

test('bad interaction files fail with file, line and field', async () => {
  const header = 'user_id,item_id,event_type,timestamp\n';
  let p = file('bad-ts.csv', header + 'u,i,view,1700000000\nu,i,view,yesterday\n');
  await rejectsAt(loadInteractions(p), p, 3, /'timestamp'/);
  p = file('bad-ev.csv', header + 'u,i,watch,1700000000\n');
  await rejectsAt(loadInteractions(p), p, 2, /'event_type'.*watch/);
  p = file('bad-cols.csv', header + 'u,i,view\n');
  await rejectsAt(loadInteractions(p), p, 2, /expected 4 fields/);
  p = file('no-user.csv', 'item_id,event_type,timestamp\ni,view,1\n');
  await rejectsAt(loadInteractions(p), p, 2, /missing column 'user_id'/);
  p = file('empty-user.csv', header + ',i,view,1700000000\n');
  await rejectsAt(loadInteractions(p), p, 2, /'user_id' is missing/);
  p = file('bad-weight.csv', 'user_id,item_id,event_type,timestamp,weight\nu,i,view,1,-1\n');
  await rejectsAt(loadInteractions(p), p, 2, /'weight' is negative/);
  p = file(
    'bad-device.csv',
    'user_id,item_id,event_type,timestamp,context\nu,i,view,1,"{""device_type"":""fridge""}"\n',
  );
  await rejectsAt(loadInteractions(p), p, 2, /context.device_type/);
  p = file('quote.csv', header + 'u,"i,view,1\n');
  await rejectsAt(loadInteractions(p), p, 2, /unterminated/);
  p = file('bad.jsonl', '{"user_id":"u","item_id":"i","event_type":"view","timestamp":1}\n{oops\n');
  await rejectsAt(loadInteractions(p), p, 2, /invalid JSON/);
  p = file('arr.jsonl', '[1,2]\n');
  await rejectsAt(loadInteractions(p), p, 1, /JSON object/);
  const missing = join(dir, 'nope.csv');
  await assert.rejects(
    loadInteractions(missing),
    (e: unknown) => e instanceof DataError && /nope\.csv: file not found/.test(e.message),
  );
});

test('bad item files fail with file, line and field', async () => {
  let p = file('items-q.csv', 'item_id,title,quality\na,A,0.5\nb,B,7\n');
  await rejectsAt(loadItems(p), p, 3, /'quality' must be within 0..1/);
  p = file('items-c.csv', 'item_id,created_at\na,not-a-date\n');
  await rejectsAt(loadItems(p), p, 2, /'created_at'/);
  p = file('items-id.csv', 'title\nA\n');
  await rejectsAt(loadItems(p), p, 2, /missing column 'item_id'/);
});

test('yearFromTitle reads the release year MovieLens puts in titles', () => {
  assert.equal(yearFromTitle('Toy Story (1995)'), 1995);
  assert.equal(yearFromTitle('Babylon 5 (1994-1998) '), 1994);
  assert.equal(yearFromTitle('Untitled'), undefined);
});

const mlDir = resolve('..', 'shared', 'datasets', 'ml-latest-small');
test(
  'MovieLens adapter on ml-latest-small',
  { skip: !hasMovieLens(mlDir) && 'ml-latest-small not present' },
  async () => {
    const ml = await loadMovieLens(mlDir);
    assert.equal(ml.items.ids.length, 9742);
    assert.equal(ml.log.userIds.length >= 610, true);
    assert.ok(ml.log.length >= 100000);
    assert.equal(ml.stats.events + ml.stats.unknownItems + ml.stats.duplicates, ml.stats.records);
    const toy = ml.items.index.get('1')!;
    assert.equal(ml.items.createdAt[toy], Date.UTC(1995, 0, 1));
    const genres = Array.from(ml.items.categories[toy], (c) => ml.items.categoryNames[c]);
    assert.deepEqual(genres, ['Adventure', 'Animation', 'Children', 'Comedy', 'Fantasy']);
    assert.ok(!ml.items.categoryNames.includes('(no genres listed)'));
  },
);
