// The feedback ingestion path: what the HTTP and gRPC handlers call once a request has passed
// validation. The seed's pipeline, in order:
//
//   timestamp policy -> idempotency key + aggregation (FeatureStore.recordEvents, one atomic
//   step per call) -> durable log of what was accepted (EventLog, group-committed)
//   -> cache invalidation (the store drops the user's cached answers as it applies)
//
// The store is updated before the log write completes, so the next recommendation reflects
// the feedback within milliseconds; the caller's promise settles only after the log commit,
// so an acknowledged event is on disk. If the commit fails the caller gets 503: the records
// stay queued in the log and are retried, and a client retry is recognised as a duplicate
// (at-least-once, never double-counted).
import { join } from 'node:path';
import { ApiError } from '../api/errors.js';
import type {
  FeedbackEvent,
  FeedbackRequest,
  FeedbackResponse,
  NegativeFeedbackRequest,
  NegativeFeedbackResponse,
  NegativeFeedbackType,
} from '../api/types.js';
import {
  IDEMPOTENCY_TTL_MS,
  MAX_FUTURE_SKEW_MS,
  checkStoredEvent,
  type FeatureStore,
  type StoredEvent,
} from '../features/store.js';
import { EventLog, type EventLogOptions, type LogRecord } from './event-log.js';

export type NegativeAction = NegativeFeedbackResponse['action_taken'];

/** What each kind of negative feedback does (all three block the item for the user). */
export const NEGATIVE_ACTIONS: Readonly<Record<NegativeFeedbackType, NegativeAction>> = {
  not_interested: 'item_blocked',
  hide: 'item_hidden',
  report: 'item_reported',
};

export interface FeedbackIngestorOptions {
  store: FeatureStore;
  /** The durable log; null runs without one (tests, benchmarks, a Redis-backed deployment). */
  log: EventLog | null;
  /** Events further ahead of the server clock are refused. Default 5 minutes. */
  maxFutureSkewMs?: number;
  /**
   * Events older than this are refused. Default 24 h, the idempotency keys' lifetime: a retry
   * of an older event could no longer be recognised and would count twice.
   */
  maxEventAgeMs?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
}

export interface IngestResult {
  accepted: number;
  duplicates: number;
}

export interface NegativeResult {
  duplicate: boolean;
  action: NegativeAction;
}

export interface ReplayResult {
  events: number;
  negatives: number;
  /** Events the store recognised as already applied (a log replayed twice, or overlapping). */
  duplicates: number;
  badLines: number;
  ms: number;
}

export interface IngestorStats {
  accepted: number;
  duplicates: number;
  negatives: number;
  negativeDuplicates: number;
  logFailures: number;
}

export class FeedbackIngestor {
  readonly store: FeatureStore;
  readonly log: EventLog | null;
  private readonly maxFutureSkewMs: number;
  private readonly maxEventAgeMs: number;
  private readonly now: () => number;
  private readonly counters: IngestorStats = {
    accepted: 0,
    duplicates: 0,
    negatives: 0,
    negativeDuplicates: 0,
    logFailures: 0,
  };

  constructor(opts: FeedbackIngestorOptions) {
    this.store = opts.store;
    this.log = opts.log;
    this.maxFutureSkewMs = opts.maxFutureSkewMs ?? MAX_FUTURE_SKEW_MS;
    this.maxEventAgeMs = opts.maxEventAgeMs ?? IDEMPOTENCY_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  /**
   * Opens the log in `<dataDir>/events`, replays it into the store (rebuilding the embedded
   * state after a restart) and returns the ingestor with what the replay did.
   */
  static async open(
    store: FeatureStore,
    dataDir: string,
    opts: Omit<FeedbackIngestorOptions, 'store' | 'log'> &
      Pick<EventLogOptions, 'fsync' | 'maxFileBytes' | 'maxFiles' | 'maxPendingBytes'> & {
        /** Replay the log into the store first (default true; false with a shared store). */
        replay?: boolean;
      } = {},
  ): Promise<{ ingestor: FeedbackIngestor; replay: ReplayResult | null }> {
    const dir = join(dataDir, 'events');
    const replay = opts.replay === false ? null : await replayLog(store, dir);
    const log = await EventLog.open({
      dir,
      fsync: opts.fsync ?? true,
      maxFileBytes: opts.maxFileBytes,
      maxFiles: opts.maxFiles,
      maxPendingBytes: opts.maxPendingBytes,
    });
    return { ingestor: new FeedbackIngestor({ ...opts, store, log }), replay };
  }

  /**
   * Records a batch of events for one user (the pipeline's FeedbackSink.recordBatch). Returns
   * how many were applied and how many were recognised as duplicates. Throws ApiError
   * invalid_argument naming the wire field (`events[i].timestamp`, ...) for an event outside
   * the timestamp policy, before applying any of the batch; ApiError unavailable when the log
   * cannot take or commit the events.
   */
  async recordBatch(
    userId: string,
    events: readonly StoredEvent[],
    nowMs = this.now(),
  ): Promise<IngestResult> {
    if (typeof userId !== 'string' || userId.length === 0)
      throw ApiError.invalid('user_id', 'must be a non-empty string');
    if (!Array.isArray(events)) throw ApiError.invalid('events', 'must be an array');
    for (let i = 0; i < events.length; i++) this.checkEvent(events[i], `events[${i}]`, nowMs);
    if (events.length === 0) return { accepted: 0, duplicates: 0 };
    this.assertLogAccepting();

    const stored = events as StoredEvent[];
    const r = await this.store.recordEvents(userId, stored, nowMs);
    this.counters.accepted += r.accepted;
    this.counters.duplicates += r.duplicates;
    if (this.log && r.accepted > 0) {
      const records: LogRecord[] = [];
      for (let i = 0; i < stored.length; i++)
        if (r.applied[i]) records.push({ t: 'e', u: userId, rt: nowMs, ev: stored[i] });
      await this.commit(records);
    } else {
      await this.durable();
    }
    return { accepted: r.accepted, duplicates: r.duplicates };
  }

  /** Negative feedback: blocks the item for the user at once; a repeat is a duplicate. */
  async negative(
    userId: string,
    itemId: string,
    kind: NegativeFeedbackType,
    reason?: string,
    nowMs = this.now(),
  ): Promise<NegativeResult> {
    if (typeof userId !== 'string' || userId.length === 0)
      throw ApiError.invalid('user_id', 'must be a non-empty string');
    if (typeof itemId !== 'string' || itemId.length === 0)
      throw ApiError.invalid('item_id', 'must be a non-empty string');
    if (!Object.prototype.hasOwnProperty.call(NEGATIVE_ACTIONS, kind))
      throw ApiError.invalid(
        'feedback_type',
        `must be one of ${Object.keys(NEGATIVE_ACTIONS).join(', ')}`,
      );
    if (reason !== undefined && typeof reason !== 'string')
      throw ApiError.invalid('reason', 'must be a string');
    const action = NEGATIVE_ACTIONS[kind];
    this.assertLogAccepting();
    const r = await this.store.block(userId, itemId, kind, reason, nowMs);
    if (r.duplicate) {
      this.counters.negativeDuplicates++;
      await this.durable();
      return { duplicate: true, action };
    }
    this.counters.negatives++;
    if (this.log) {
      const rec: LogRecord = { t: 'n', u: userId, rt: nowMs, i: itemId, k: kind };
      if (reason !== undefined) rec.r = reason;
      await this.commit([rec]);
    }
    return { duplicate: false, action };
  }

  /** POST /v1/feedback in the wire's shape (for RecommenderService.feedback). */
  async feedback(req: FeedbackRequest): Promise<FeedbackResponse> {
    const nowMs = this.now();
    if (!Array.isArray(req.events)) throw ApiError.invalid('events', 'must be an array');
    const events = req.events.map((e, i) => fromWire(e, `events[${i}]`, nowMs));
    const r = await this.recordBatch(req.user_id, events, nowMs);
    return { status: 'accepted', events_processed: r.accepted, duplicates_ignored: r.duplicates };
  }

  /** POST /v1/feedback/negative in the wire's shape (for RecommenderService.negativeFeedback). */
  async negativeFeedback(req: NegativeFeedbackRequest): Promise<NegativeFeedbackResponse> {
    const r = await this.negative(req.user_id, req.item_id, req.feedback_type, req.reason);
    return { status: r.duplicate ? 'duplicate_ignored' : 'accepted', action_taken: r.action };
  }

  get stats(): IngestorStats {
    return { ...this.counters };
  }

  /** Flushes and closes the log (the store belongs to the caller and stays open). */
  async close(): Promise<void> {
    if (this.log) await this.log.close();
  }

  // -------------------------------------------------------------------------------------

  /** The timestamp policy (store.ts) and the shared event checks, in the wire's field names. */
  private checkEvent(e: StoredEvent, path: string, nowMs: number): void {
    if (typeof e !== 'object' || e === null) throw ApiError.invalid(path, 'must be an object');
    try {
      checkStoredEvent(e, path);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      const m = /^(events\[\d+\])\.(\w+): (.*)$/.exec(msg);
      if (m) throw ApiError.invalid(`${m[1]}.${WIRE_NAMES[m[2]] ?? m[2]}`, m[3]);
      throw ApiError.invalid(path, msg);
    }
    const ts = e.timestampMs;
    if (ts > nowMs + this.maxFutureSkewMs)
      throw ApiError.invalid(
        `${path}.timestamp`,
        `is more than ${Math.round(this.maxFutureSkewMs / 1000)} s ahead of the server clock`,
      );
    if (ts < nowMs - this.maxEventAgeMs)
      throw ApiError.invalid(
        `${path}.timestamp`,
        `is older than ${Math.round(this.maxEventAgeMs / 3600_000)} h; such events can no ` +
          'longer be deduplicated and are not accepted',
      );
  }

  /** Refuses before anything is applied when the log could not take the records. */
  private assertLogAccepting(): void {
    if (this.log && !this.log.accepting) {
      this.counters.logFailures++;
      throw new ApiError(
        'unavailable',
        'the feedback log is not accepting writes (closed or disk stalled); retry later',
      );
    }
  }

  /**
   * Before a duplicate is acknowledged: everything the log holds unwritten is written. A
   * duplicate may be the retry of a call answered 503 "applied but not yet durable", whose
   * records wait in the log for the disk; acknowledged at once, as it was, the retry told
   * the client the event was safe while a full disk still held nothing of it.
   */
  private async durable(): Promise<void> {
    const log = this.log;
    if (!log || log.idle) return;
    try {
      await log.flush();
    } catch (err) {
      this.counters.logFailures++;
      const why = err instanceof Error ? err.message : String(err);
      throw new ApiError(
        'unavailable',
        `feedback applied earlier is not yet durable (${why}); retry, retries are deduplicated`,
      );
    }
  }

  private async commit(records: LogRecord[]): Promise<void> {
    const log = this.log;
    if (!log) return;
    try {
      await log.append(records);
    } catch (err) {
      this.counters.logFailures++;
      const why = err instanceof Error ? err.message : String(err);
      // The store already holds the events and the log keeps them queued for the next write:
      // the client retries, and the retry is a duplicate.
      throw new ApiError(
        'unavailable',
        `feedback applied but not yet durable (${why}); retry, retries are deduplicated`,
      );
    }
  }
}

/** The store's field names -> the wire's, for error messages. */
const WIRE_NAMES: Readonly<Record<string, string>> = {
  itemId: 'item_id',
  event: 'event_type',
  timestampMs: 'timestamp',
  durationSeconds: 'duration_seconds',
  completionRate: 'completion_rate',
};

/**
 * A wire event (FeedbackEvent) as the store's StoredEvent; a missing timestamp is the server's
 * clock, an unparsable one an invalid_argument naming it.
 */
export function fromWire(e: FeedbackEvent, path: string, nowMs: number): StoredEvent {
  if (typeof e !== 'object' || e === null) throw ApiError.invalid(path, 'must be an object');
  let ts = nowMs;
  if (e.timestamp !== undefined) {
    ts = typeof e.timestamp === 'string' ? Date.parse(e.timestamp) : Number.NaN;
    if (!Number.isFinite(ts))
      throw ApiError.invalid(`${path}.timestamp`, 'must be an ISO-8601 date-time');
  }
  const out: StoredEvent = { itemId: e.item_id, event: e.event_type, timestampMs: ts };
  if (e.duration_seconds !== undefined) out.durationSeconds = e.duration_seconds;
  if (e.completion_rate !== undefined) out.completionRate = e.completion_rate;
  const c = e.context;
  if (c?.recommendation_id !== undefined) out.recommendationId = c.recommendation_id;
  if (c?.position !== undefined) out.position = c.position;
  if (c?.surface !== undefined) out.surface = c.surface;
  return out;
}

/** Applies every record of a log folder to a store, in log order. */
export async function replayLog(store: FeatureStore, dir: string): Promise<ReplayResult> {
  const t0 = performance.now();
  const out: ReplayResult = { events: 0, negatives: 0, duplicates: 0, badLines: 0, ms: 0 };
  // Consecutive events of one user go to the store as one batch (one round trip on Redis).
  let batchUser: string | null = null;
  let batch: StoredEvent[] = [];
  let batchNow = 0;
  const flush = async () => {
    if (batchUser === null || batch.length === 0) return;
    const r = await store.recordEvents(batchUser, batch, batchNow);
    out.events += r.accepted;
    out.duplicates += r.duplicates;
    batch = [];
  };
  const now = Date.now();
  for await (const rec of EventLog.read(dir, () => out.badLines++)) {
    if (rec.t === 'e') {
      if (rec.u !== batchUser || batch.length >= 256) {
        await flush();
        batchUser = rec.u;
      }
      try {
        checkStoredEvent(rec.ev, 'ev');
      } catch {
        out.badLines++;
        continue;
      }
      batch.push(rec.ev);
      batchNow = now;
    } else {
      await flush();
      batchUser = null;
      try {
        const r = await store.block(rec.u, rec.i, rec.k, rec.r, rec.rt);
        if (r.duplicate) out.duplicates++;
        else out.negatives++;
      } catch (err) {
        // A record no current store accepts (an unknown kind, a list already full) is
        // skipped; a store that failed (Redis unreachable) fails the replay rather than
        // losing the block: counted as a bad line, it was gone for good.
        const refused =
          err instanceof RangeError || (err instanceof ApiError && err.code === 'limit_exceeded');
        if (!refused) throw err;
        out.badLines++;
      }
    }
  }
  await flush();
  out.ms = performance.now() - t0;
  return out;
}
