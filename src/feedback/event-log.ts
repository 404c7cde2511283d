// The durable feedback log of the embedded mode: append-only JSON Lines files in one folder,
// written with group commit and rotated by size. Every event the store accepts is appended
// here, and an append's promise settles only once its bytes are on disk (fdatasync), so an
// acknowledged event survives a crash; on start the ingestor replays the folder into a fresh
// store. (With Redis no log is written: the state is Redis's own, made durable by its
// persistence; a Redis Stream of events for consumers is not built yet.)
//
// Group commit without timers: the first append after an idle period schedules a write on
// setImmediate; appends that arrive while a write (and its fdatasync) is in flight wait and
// go out together in the next one, so the batch size grows with the disk's latency by itself
// and nothing keeps the process alive when idle.
import { mkdir, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { NegativeFeedbackType } from '../api/types.js';
import type { StoredEvent } from '../features/store.js';

/** An accepted event ('e') or negative feedback ('n'); rt = server receive time, ms. */
export type LogRecord =
  | { t: 'e'; u: string; rt: number; ev: StoredEvent }
  | { t: 'n'; u: string; rt: number; i: string; k: NegativeFeedbackType; r?: string };

export interface EventLogOptions {
  /** Folder of the log files; created when missing. */
  dir: string;
  /** A file is closed and a new one started once it reaches this size. Default 64 MiB. */
  maxFileBytes?: number;
  /** Files kept; the oldest are deleted beyond it (that is the retention). Default 16. */
  maxFiles?: number;
  /** fdatasync each group before its appends resolve. Default true; false trusts the OS cache. */
  fsync?: boolean;
  /** Bytes waiting to be written beyond which append() refuses (disk stalled). Default 64 MiB. */
  maxPendingBytes?: number;
}

/** Thrown by append() when the log cannot take more (writes failing or far behind). */
export class EventLogUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EventLogUnavailableError';
  }
}

const FILE_RE = /^events-(\d{8})\.jsonl$/;
const fileName = (seq: number): string => `events-${String(seq).padStart(8, '0')}.jsonl`;

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface EventLogStats {
  appendedRecords: number;
  writes: number;
  bytesWritten: number;
  pendingBytes: number;
  writeErrors: number;
  currentFile: string;
}

export class EventLog {
  private fh: FileHandle;
  private seq: number;
  private size: number;
  private readonly maxFileBytes: number;
  private readonly maxFiles: number;
  private readonly fsync: boolean;
  private readonly maxPendingBytes: number;

  private pending: string[] = [];
  private pendingBytes = 0;
  private waiters: Waiter[] = [];
  private writing: Promise<void> | null = null;
  private scheduled = false;
  private closed = false;
  private lastError: Error | null = null;
  private readonly counters = { appendedRecords: 0, writes: 0, bytesWritten: 0, writeErrors: 0 };

  private constructor(
    readonly dir: string,
    fh: FileHandle,
    seq: number,
    size: number,
    opts: EventLogOptions,
  ) {
    this.fh = fh;
    this.seq = seq;
    this.size = size;
    this.maxFileBytes = opts.maxFileBytes ?? 64 * 1024 * 1024;
    this.maxFiles = opts.maxFiles ?? 16;
    this.fsync = opts.fsync ?? true;
    this.maxPendingBytes = opts.maxPendingBytes ?? 64 * 1024 * 1024;
    if (!(this.maxFileBytes > 0)) throw new RangeError('maxFileBytes: must be > 0');
    if (!(Number.isInteger(this.maxFiles) && this.maxFiles >= 1))
      throw new RangeError('maxFiles: must be an integer >= 1');
  }

  /** Opens (creating) the folder and continues its newest file, or starts a new one. */
  static async open(opts: EventLogOptions): Promise<EventLog> {
    await mkdir(opts.dir, { recursive: true });
    const files = await listLogFiles(opts.dir);
    let seq = files.length ? files[files.length - 1].seq : 1;
    let size = 0;
    if (files.length) {
      const path = join(opts.dir, fileName(seq));
      size = (await stat(path)).size;
      // A crash mid-write leaves a torn last line; appending after it would glue the next
      // record to it and lose both, so such a file is left as it is and a new one started.
      if (size > 0 && !(await endsWithNewline(path, size))) {
        seq++;
        size = 0;
      }
    }
    const fh = await open(join(opts.dir, fileName(seq)), 'a');
    return new EventLog(opts.dir, fh, seq, size, opts);
  }

  /**
   * Queues records (synchronously: order of append calls is the order in the file) and
   * resolves once they are written and, with fsync, on disk. Throws EventLogUnavailableError
   * without queueing anything when the log is closed or too far behind.
   */
  append(records: readonly LogRecord[]): Promise<void> {
    if (this.closed) throw new EventLogUnavailableError('event log is closed');
    if (this.pendingBytes > this.maxPendingBytes)
      throw new EventLogUnavailableError(
        `event log has ${this.pendingBytes} bytes unwritten` +
          (this.lastError ? ` (last write failed: ${this.lastError.message})` : ''),
      );
    if (records.length === 0) return Promise.resolve();
    let chunk = '';
    for (const r of records) chunk += JSON.stringify(r) + '\n';
    this.pending.push(chunk);
    this.pendingBytes += Buffer.byteLength(chunk);
    this.counters.appendedRecords += records.length;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.schedule();
    return done;
  }

  /** Nothing appended is waiting to be written or being written. */
  get idle(): boolean {
    return this.writing === null && this.pending.length === 0;
  }

  /** False when append() would refuse: closed, or too many bytes unwritten. */
  get accepting(): boolean {
    return !this.closed && this.pendingBytes <= this.maxPendingBytes;
  }

  /** Resolves once everything appended so far is written (or rejects with the write error). */
  async flush(): Promise<void> {
    while (this.writing || this.pending.length) {
      if (!this.writing) this.startWrite();
      await this.writing;
      if (this.lastError && this.pending.length) throw this.lastError;
    }
  }

  /** Flushes, then closes the file. Appends after close() throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.fh.close();
    }
  }

  get stats(): EventLogStats {
    return {
      ...this.counters,
      pendingBytes: this.pendingBytes,
      currentFile: join(this.dir, fileName(this.seq)),
    };
  }

  /** Every record in the folder, oldest file first; torn or corrupt lines are counted, skipped. */
  static async *read(
    dir: string,
    onBadLine?: (file: string, line: number) => void,
  ): AsyncGenerator<LogRecord> {
    for (const f of await listLogFiles(dir)) {
      const path = join(dir, f.name);
      let n = 0;
      for await (const line of readLines(path)) {
        n++;
        if (line === null) {
          onBadLine?.(path, n); // longer than any record: skipped unheld
          continue;
        }
        if (line.length === 0) continue;
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          onBadLine?.(path, n);
          continue;
        }
        if (isLogRecord(rec)) yield rec;
        else onBadLine?.(path, n);
      }
    }
  }

  // -------------------------------------------------------------------------------------

  private schedule(): void {
    if (this.scheduled || this.writing) return;
    this.scheduled = true;
    // setImmediate, not a timer: appends made in this turn of the event loop join the group.
    setImmediate(() => {
      this.scheduled = false;
      if (!this.writing && this.pending.length) this.startWrite();
    });
  }

  private startWrite(): void {
    const data = this.pending.join('');
    const bytes = this.pendingBytes;
    const waiters = this.waiters;
    this.pending = [];
    this.pendingBytes = 0;
    this.waiters = [];
    this.writing = this.writeGroup(data, bytes, waiters).finally(() => {
      this.writing = null;
      // Whatever arrived meanwhile goes out next. After a failure nothing is rescheduled
      // here (a dead disk would make that a busy loop): the next append or flush retries.
      if (this.pending.length && !this.closed && !this.lastError) this.schedule();
    });
  }

  private async writeGroup(data: string, bytes: number, waiters: Waiter[]): Promise<void> {
    try {
      const buf = Buffer.from(data);
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
      if (this.fsync) await this.fh.datasync();
      this.size += bytes;
      this.counters.writes++;
      this.counters.bytesWritten += bytes;
      this.lastError = null;
      for (const w of waiters) w.resolve();
    } catch (err) {
      // Keep the records (in front of newer ones) for the next attempt; the callers learn
      // of the failure and may retry: the store's idempotency keys make retries harmless.
      const e = err instanceof Error ? err : new Error(String(err));
      this.lastError = e;
      this.counters.writeErrors++;
      this.pending.unshift(data);
      this.pendingBytes += bytes;
      for (const w of waiters) w.reject(e);
      return;
    }
    if (this.size >= this.maxFileBytes) {
      // Outside the try above: those records are on disk, a failed rotation must not requeue
      // them. The next write goes to the old file again and rotation is retried after it.
      await this.rotate().catch((err: unknown) => {
        this.lastError = err instanceof Error ? err : new Error(String(err));
        this.counters.writeErrors++;
      });
    }
  }

  private async rotate(): Promise<void> {
    const next = await open(join(this.dir, fileName(this.seq + 1)), 'a');
    const old = this.fh;
    this.fh = next;
    this.seq++;
    this.size = 0;
    await old.close();
    const files = await listLogFiles(this.dir);
    for (const f of files.slice(0, Math.max(0, files.length - this.maxFiles)))
      await unlink(join(this.dir, f.name)).catch(() => undefined);
  }
}

async function listLogFiles(dir: string): Promise<{ name: string; seq: number }[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: { name: string; seq: number }[] = [];
  for (const name of names) {
    const m = FILE_RE.exec(name);
    if (m) out.push({ name, seq: Number(m[1]) });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

async function endsWithNewline(path: string, size: number): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, size - 1);
    return b[0] === 0x0a;
  } finally {
    await fh.close();
  }
}

/**
 * A record's line is a few hundred characters (ids and a reason are capped by the API); a
 * line past this is not one, and is skipped without being held whole. readline held it whole: a
 * 600 MB line (no newline in it) threw "Invalid string length" out of the replay, on every
 * start.
 */
const MAX_LINE_CHARS = 1 << 20;

/** The lines of a file, or null for a line over MAX_LINE_CHARS (skipped unheld). */
async function* readLines(path: string): AsyncGenerator<string | null> {
  // Decoded by the stream (a character split between chunks is joined there).
  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 16 });
  let head = ''; // the start of a line that began in an earlier chunk
  let tooLong = false;
  for await (const chunk of stream as AsyncIterable<string>) {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', from);
      if (nl < 0) {
        if (!tooLong && head.length + chunk.length - from > MAX_LINE_CHARS) {
          tooLong = true;
          head = '';
        } else if (!tooLong) {
          head += chunk.slice(from);
        }
        break;
      }
      if (tooLong || head.length + nl - from > MAX_LINE_CHARS) yield null;
      else yield head.length > 0 ? head + chunk.slice(from, nl) : chunk.slice(from, nl);
      head = '';
      tooLong = false;
      from = nl + 1;
    }
  }
  if (tooLong) yield null;
  else if (head.length > 0) yield head;
}

function isLogRecord(v: unknown): v is LogRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  // An empty user or item is no record the API accepts; the store would refuse it, and the
  // replay with it (one such line kept the server from ever turning ready).
  if (typeof r.u !== 'string' || r.u.length === 0 || typeof r.rt !== 'number') return false;
  if (r.t === 'e') {
    const ev = r.ev as Record<string, unknown> | null;
    return (
      typeof ev === 'object' &&
      ev !== null &&
      typeof ev.itemId === 'string' &&
      typeof ev.event === 'string' &&
      typeof ev.timestampMs === 'number'
    );
  }
  return r.t === 'n' && typeof r.i === 'string' && r.i.length > 0 && typeof r.k === 'string';
}
