// The durable event log on the real file system: group commit, order, rotation, retention,
// torn lines after a crash, close, and a failing disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { EventLog, EventLogUnavailableError, type LogRecord } from '../../src/feedback/index.js';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'recserve-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function rec(u: string, i: number): LogRecord {
  return { t: 'e', u, rt: 1000 + i, ev: { itemId: `i${i}`, event: 'view', timestampMs: 1000 + i } };
}

async function readAll(dir: string): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  for await (const r of EventLog.read(dir)) out.push(r);
  return out;
}

test('appends resolve once on disk; concurrent appends share writes and keep their order', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir });
  const n = 200;
  await Promise.all(Array.from({ length: n }, (_, i) => log.append([rec('u', i)])));
  // Durable as soon as the promises resolved: the file holds every line now.
  const text = await readFile(log.stats.currentFile, 'utf8');
  assert.equal(text.trim().split('\n').length, n);
  const s = log.stats;
  assert.equal(s.appendedRecords, n);
  assert.ok(s.writes < n / 4, `group commit: ${s.writes} writes for ${n} appends`);
  const back = await readAll(dir);
  assert.deepEqual(
    back.map((r) => (r.t === 'e' ? r.ev.itemId : '')),
    Array.from({ length: n }, (_, i) => `i${i}`),
  );
  await log.close();
  assert.throws(() => log.append([rec('u', 1)]), EventLogUnavailableError);
  assert.equal(log.accepting, false);
});

test('files rotate by size, the oldest beyond maxFiles are deleted, reading spans files', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir, maxFileBytes: 2000, maxFiles: 3, fsync: false });
  for (let i = 0; i < 100; i++) await log.append([rec('u', i)]);
  await log.close();
  const files = (await readdir(dir)).sort();
  assert.equal(files.length, 3);
  assert.match(files[0], /^events-\d{8}\.jsonl$/);
  const back = await readAll(dir);
  // The newest records survive, in order, with no gap inside what is kept.
  const ids = back.map((r) => (r.t === 'e' ? Number(r.ev.itemId.slice(1)) : -1));
  assert.equal(ids[ids.length - 1], 99);
  for (let i = 1; i < ids.length; i++) assert.equal(ids[i], ids[i - 1] + 1);
  assert.ok(ids.length < 100);
});

test('a torn last line is skipped on read and the log continues in a new file', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir });
  await log.append([rec('u', 1), rec('u', 2)]);
  await log.close();
  const first = (await readdir(dir))[0];
  await appendFile(join(dir, first), '{"t":"e","u":"u","rt":3,"ev":{"itemId":"i3"'); // crash
  await writeFile(join(dir, 'notes.txt'), 'not a log file');
  const again = await EventLog.open({ dir });
  assert.notEqual(again.stats.currentFile, join(dir, first));
  await again.append([rec('u', 4)]);
  await again.close();
  let bad = 0;
  const back: LogRecord[] = [];
  for await (const r of EventLog.read(dir, () => bad++)) back.push(r);
  assert.deepEqual(
    back.map((r) => (r.t === 'e' ? r.ev.itemId : '')),
    ['i1', 'i2', 'i4'],
  );
  assert.equal(bad, 1);
});

test('lines no record can be are skipped and counted: an empty user, a line of megabytes', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir });
  await log.append([rec('u', 1)]);
  await log.close();
  const file = join(dir, (await readdir(dir))[0]!);
  // Valid JSON with an empty user (the store refused it, and with it the whole replay), a
  // 3 MiB line (readline held any line whole: past ~512 MB it threw), a record with CRLF.
  await appendFile(
    file,
    '{"t":"e","u":"","rt":1,"ev":{"itemId":"i9","event":"click","timestampMs":1}}\n' +
      '{"t":"n","u":"u","rt":1,"i":"","k":"hide"}\n' +
      '{"t":"e","u":"' +
      'x'.repeat(3 << 20) +
      '"}\n' +
      JSON.stringify(rec('u', 2)) +
      '\r\n',
  );
  let bad = 0;
  const back: LogRecord[] = [];
  for await (const r of EventLog.read(dir, () => bad++)) back.push(r);
  assert.deepEqual(
    back.map((r) => (r.t === 'e' ? r.ev.itemId : '')),
    ['i1', 'i2'],
  );
  assert.equal(bad, 3);
});

test('a failing write rejects its appends, keeps the records queued, and close reports it', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir });
  await log.append([rec('u', 1)]);
  // Pull the file out from under the log: the next write fails with EBADF.
  await (log as unknown as { fh: FileHandle }).fh.close();
  await assert.rejects(log.append([rec('u', 2)]), /EBADF|closed/i);
  assert.equal(log.stats.writeErrors, 1);
  assert.ok(log.stats.pendingBytes > 0, 'the failed record is kept for a retry');
  await assert.rejects(log.close());
});

test('reading a folder that does not exist yields nothing', async () => {
  assert.deepEqual(await readAll(join(tmpdir(), 'recserve-no-such-dir-' + process.pid)), []);
});

test('beyond maxPendingBytes appends are refused at once until the disk catches up', async (t) => {
  const dir = await tempDir(t);
  const log = await EventLog.open({ dir, maxPendingBytes: 10 });
  const first = log.append([rec('u', 1)]); // ~90 bytes queued: over the limit from now on
  assert.equal(log.accepting, false);
  assert.throws(() => log.append([rec('u', 2)]), EventLogUnavailableError);
  await first;
  assert.equal(log.accepting, true);
  await log.append([rec('u', 3)]);
  await log.close();
  assert.deepEqual(
    (await readAll(dir)).map((r) => (r.t === 'e' ? r.ev.itemId : '')),
    ['i1', 'i3'],
  );
});
