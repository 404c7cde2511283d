// The online feature store: per-user state (session, seen/blocked items, counters, windowed
// category aggregates), global item counters and trending, and the recommendation cache.
//
// One interface, several backends (memory-store.ts is the embedded default; a Redis backend
// slots in behind the same interface). It is asynchronous and shaped for Redis: every read
// the pipeline makes per request is ONE batched call (getUsers), so a networked backend costs
// one round trip. Item ids are the external string ids: they survive model swaps, where
// bundle row numbers do not.
//
// This file also holds the maths every backend must agree on (idempotency keys, event
// weights, window buckets, timestamp policy, cache-key layout), so that two backends given the
// same events produce the same state and pass the same test suite.
import { createHash } from 'node:crypto';
import { ApiError } from '../api/errors.js';
import type { EventType, NegativeFeedbackType } from '../api/types.js';

export interface RecentInteraction {
  itemId: string;
  event: EventType;
  timestampMs: number;
}

export type WindowName = '5m' | '1h' | '24h';

/** Activity counters over one window (the seed's agg:{user}:{window} hash). */
export interface WindowActivity {
  /** Events per type inside the window (skips included). */
  events: Record<EventType, number>;
  /** Sum of duration_seconds reported with events in the window. */
  durationSeconds: number;
  /** clicks / max(views, 1), as the seed's compute_derived_features. */
  ctr: number;
  /** durationSeconds / max(views, 1). */
  avgDurationSeconds: number;
}

/**
 * A snapshot of one user's state, as of the read. Treat it as read-only: a backend may hand
 * the same objects to concurrent readers.
 */
export interface UserState {
  userId: string;
  /**
   * Changes whenever the user's state does (events applied, a block). An answer computed
   * from this read is cached with it (setCached's `asOf`), so a replica cannot cache an
   * answer that feedback applied meanwhile, on any replica, has already made stale.
   */
  version: number;
  /** Positive events (view, click, like, share, purchase) ever recorded for the user. */
  interactionCount: number;
  /** Timestamp of the newest event of any type (skips included); null when none. */
  lastActiveMs: number | null;
  /**
   * The seed's session list: newest first (by event timestamp), at most RECENT_LIMIT. It holds
   * every event type, skips included; filter on `event` (isPositive) when seeding "similar to
   * recent" so a skipped item does not attract look-alikes.
   */
  recent: RecentInteraction[];
  /** Items the user has had any event on (skips included): drop them from candidates. */
  seen: Set<string>;
  /** Items the user gave negative feedback on: never recommend them again. */
  blocked: Set<string>;
  /** Item -> positive interactions by this user (items with only skips are absent). */
  itemCounts: Map<string, number>;
  /** Creator -> positive interactions by this user with that creator's items. */
  creatorCounts: Map<string, number>;
  /** Category -> weighted positive interactions, over sliding windows and all time. */
  categoryCounts: {
    '5m': Map<string, number>;
    '1h': Map<string, number>;
    '24h': Map<string, number>;
    total: Map<string, number>;
  };
  /** Per-window activity counters (views, clicks, ..., ctr, average duration). */
  activity: Record<WindowName, WindowActivity>;
}

/** What the store needs to know about an item to aggregate by category and creator. */
export interface ItemInfo {
  categories: string[];
  creatorId: string | null;
}

export type ItemInfoLookup = (itemId: string) => ItemInfo | undefined;

/** One positive or skip event, already validated, timestamps in ms since epoch. */
export interface StoredEvent {
  itemId: string;
  event: EventType;
  timestampMs: number;
  durationSeconds?: number;
  completionRate?: number;
  recommendationId?: string;
  position?: number;
  surface?: string;
}

export interface RecordResult {
  accepted: number;
  duplicates: number;
  /** Per input event: true when applied, false when recognised as a duplicate. */
  applied: boolean[];
}

export interface BlockResult {
  /** True when this (user, item, kind) was already recorded; nothing changed. */
  duplicate: boolean;
}

export interface TrendingItem {
  itemId: string;
  score: number;
}

export interface FeatureStore {
  /** Users' states in one round trip; null for a user the store has never seen. */
  getUsers(userIds: string[], nowMs?: number): Promise<(UserState | null)[]>;
  /**
   * Applies events to the session, seen set, counters, windows, item counters and trending.
   * Events whose idempotency key (idempotencyKey below) was recorded in the last 24 h are
   * ignored and counted as duplicates, within a batch too. Concurrent calls for one user never
   * lose updates.
   */
  recordEvents(userId: string, events: StoredEvent[], nowMs?: number): Promise<RecordResult>;
  /**
   * Negative feedback: the item is blocked for that user from this call on, for good. A new
   * item past the user's cap (maxBlockedPerUser) is refused with blockedListFull rather
   * than made room for: dropping an old block would bring a hidden item back unasked.
   * Another kind on an item already blocked takes no room and is always accepted.
   */
  block(
    userId: string,
    itemId: string,
    kind: NegativeFeedbackType,
    reason?: string,
    nowMs?: number,
  ): Promise<BlockResult>;
  /** Globally trending items, highest time-decayed score first. */
  trending(window: '1h' | '24h', k: number, nowMs?: number): Promise<TrendingItem[]>;
  /** Trending restricted to items of one category (the seed's trending:category:{id}). */
  trendingInCategory(
    category: string,
    window: '1h' | '24h',
    k: number,
    nowMs?: number,
  ): Promise<TrendingItem[]>;
  /** Positive interactions recorded per item since the store started (0 when unknown). */
  itemCounts(itemIds: string[]): Promise<number[]>;
  /** Recommendation cache. Build user-scoped keys with recsCacheKey so invalidateUser works. */
  getCached(key: string): Promise<Uint8Array | string | null>;
  setCached(
    key: string,
    value: Uint8Array | string,
    ttlMs: number,
    /**
     * For a user's key (recsCacheKey): the UserState.version the answer was computed from,
     * 0 for a user the read found no state for. The entry is not written when the user's
     * state has changed since: feedback landed between the read and this write.
     */
    asOf?: number,
  ): Promise<void>;
  /** Drops every cached entry whose key recsCacheKey built for this user. */
  invalidateUser(userId: string): Promise<void>;
  /** Items reported (feedback_type 'report'), newest first, for review. */
  reports(limit: number): Promise<ReportRecord[]>;
  close(): Promise<void>;
}

export interface ReportRecord {
  userId: string;
  itemId: string;
  reason: string | null;
  timestampMs: number;
}

// ---------------------------------------------------------------------------------------
// Event semantics shared by every backend.

/** Items one user may block (both backends' default maxBlockedPerUser). */
export const MAX_BLOCKED_PER_USER = 10_000;

/** The refusal of a new block past the cap, the same from every backend. */
export function blockedListFull(cap: number): ApiError {
  return new ApiError(
    'limit_exceeded',
    `the user has blocked ${cap} items, the most kept per user; earlier blocks stay in force`,
  );
}

/**
 * `p`'s outcome, or `late()`'s error once `ms` pass first. The work itself cannot be
 * recalled: only the caller stops waiting for it. Both bounds on store calls use this: the
 * Redis store's own (RedisFeatureStore timeoutMs) and a request's deadline (the pipeline).
 */
export function settleWithin<T>(p: Promise<T>, ms: number, late: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(late()), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** The session list length (the seed's LTRIM 0 99). */
export const RECENT_LIMIT = 100;

export const POSITIVE_EVENTS: readonly EventType[] = ['view', 'click', 'like', 'share', 'purchase'];

/** True for events that express interest; 'skip' is a weak negative and is not. */
export function isPositive(event: EventType): boolean {
  return event !== 'skip';
}

/**
 * Strength of each event as evidence of interest: used for category affinity and trending.
 * Ordered by the effort the user spent; a skip carries none (it is recorded in the session,
 * the seen set and the window counters, but never adds affinity or trending score).
 */
export const EVENT_WEIGHTS: Readonly<Record<EventType, number>> = {
  view: 1,
  click: 2,
  like: 3,
  share: 4,
  purchase: 5,
  skip: 0,
};

/** Stable small codes for event types, for compact storage (index into EVENT_TYPE_ORDER). */
export const EVENT_TYPE_ORDER: readonly EventType[] = [
  'view',
  'click',
  'like',
  'share',
  'purchase',
  'skip',
];

// ---------------------------------------------------------------------------------------
// Idempotency: the seed's hash(user_id + item_id + event_type + timestamp_bucket), 24 h TTL.

/** Events of one (user, item, type) inside the same bucket are one event. */
export const IDEMPOTENCY_BUCKET_MS = 1000;
export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;

/**
 * The idempotency key of an event: hex of the first 128 bits of SHA-256 over the fields,
 * separated by a byte no id contains in practice (NUL), so ("ab","c") and ("a","bc") differ.
 */
export function idempotencyKey(
  userId: string,
  itemId: string,
  event: EventType,
  timestampMs: number,
): string {
  const bucket = Math.floor(timestampMs / IDEMPOTENCY_BUCKET_MS);
  return createHash('sha256')
    .update(`${userId}\0${itemId}\0${event}\0${bucket}`)
    .digest('hex')
    .slice(0, 32);
}

/** The same key folded to a 52-bit integer, for backends that index keys in a number Map. */
export function idempotencyKey52(
  userId: string,
  itemId: string,
  event: EventType,
  timestampMs: number,
): number {
  return parseInt(idempotencyKey(userId, itemId, event, timestampMs).slice(0, 13), 16);
}

// ---------------------------------------------------------------------------------------
// Windows: sliding windows approximated by ring buckets, so they decay by reading the clock,
// with no timers. A window's sum covers the buckets whose index lies in
// (nowBucket - buckets, nowBucket]: the error at the window's trailing edge is at most one
// bucket (6 % of the 5 m window, 8 % of 1 h, 4 % of 24 h).

export interface WindowSpec {
  name: WindowName;
  lengthMs: number;
  bucketMs: number;
  buckets: number;
}

export const WINDOWS: readonly WindowSpec[] = [
  { name: '5m', lengthMs: 5 * 60_000, bucketMs: 20_000, buckets: 15 },
  { name: '1h', lengthMs: 3600_000, bucketMs: 5 * 60_000, buckets: 12 },
  { name: '24h', lengthMs: 24 * 3600_000, bucketMs: 3600_000, buckets: 24 },
];

export function bucketIndex(timestampMs: number, spec: WindowSpec): number {
  return Math.floor(timestampMs / spec.bucketMs);
}

/** True when a bucket still counts towards the window read at nowMs. */
export function bucketLive(bucket: number, nowMs: number, spec: WindowSpec): boolean {
  const now = bucketIndex(nowMs, spec);
  return bucket > now - spec.buckets && bucket <= now;
}

// ---------------------------------------------------------------------------------------
// Timestamps. Events carry the client's clock. Policy, shared by every backend:
//  - more than MAX_FUTURE_SKEW_MS ahead of the server: rejected by the ingestor (a clock that
//    wrong is a bug; accepting it would pin the item in every window until that time comes);
//  - ahead by less than that: stored as happening now (clamped) so windows never hold future
//    buckets, while the idempotency key keeps the client's timestamp (retries still match);
//  - older than IDEMPOTENCY_TTL_MS: rejected by the ingestor, because a retry of such an
//    event could no longer be recognised and would count twice;
//  - older than a window: applied to the session, seen set and all-time counters, but not to
//    the windows or trending it has fallen out of.

export const MAX_FUTURE_SKEW_MS = 5 * 60_000;

/** The time an event is aggregated at: the client's, clamped to the server's now. */
export function effectiveTimestamp(timestampMs: number, nowMs: number): number {
  return timestampMs > nowMs ? nowMs : timestampMs;
}

// ---------------------------------------------------------------------------------------
// Trending: exponentially time-decayed sums of event weights, score(t) = sum w·exp(-(t-ti)/tau).
// The decay constant is the window's length (an event an hour old counts 37 % in '1h').

export const TRENDING_TAU_MS: Readonly<Record<'1h' | '24h', number>> = {
  '1h': 3600_000,
  '24h': 24 * 3600_000,
};

/** The seed's apply_time_decay: weight·exp(-lambda·days), lambda 0.01 per day by default. */
export function applyTimeDecay(
  weight: number,
  timestampMs: number,
  nowMs: number,
  lambdaPerDay = 0.01,
): number {
  const days = Math.max(0, nowMs - timestampMs) / 86_400_000;
  return weight * Math.exp(-lambdaPerDay * days);
}

// ---------------------------------------------------------------------------------------
// Key layout. User-scoped keys carry the user id inside {...}: Redis Cluster hashes only the
// part inside the first braces, so all of one user's keys land in one slot (multi-key Lua and
// MULTI work), and the memory store finds the user of a cache key without a side table
// lookup. The id is URI-encoded so a '}' or ':' in it cannot end the tag early.

export function userTag(userId: string): string {
  return `{${encodeURIComponent(userId)}}`;
}

/**
 * The cache key for a user's recommendations: `shape` is whatever makes two answers differ
 * (request type, num_items, filters, ...). invalidateUser(userId) drops all of them.
 */
export function recsCacheKey(userId: string, shape: string): string {
  return `recs:${userTag(userId)}:${shape}`;
}

/** The user id inside a key built by recsCacheKey, or null for any other key. */
export function userOfCacheKey(key: string): string | null {
  if (!key.startsWith('recs:{')) return null;
  const end = key.indexOf('}', 6);
  if (end < 0) return null;
  try {
    return decodeURIComponent(key.slice(6, end));
  } catch {
    return null;
  }
}

/**
 * Checks one event the way every backend must before applying it; throws a RangeError whose
 * message starts with the field's path (`events[3].event: ...`). The HTTP and gRPC layers
 * validate first, so this guards direct callers (replay, tests, other front ends).
 */
export function checkStoredEvent(e: StoredEvent, path: string): void {
  if (typeof e.itemId !== 'string' || e.itemId.length === 0)
    throw new RangeError(`${path}.itemId: must be a non-empty string`);
  if (!isEventType(e.event))
    throw new RangeError(`${path}.event: must be one of ${EVENT_TYPE_ORDER.join(', ')}`);
  if (typeof e.timestampMs !== 'number' || !Number.isFinite(e.timestampMs))
    throw new RangeError(`${path}.timestampMs: must be a finite number of ms since epoch`);
  if (e.durationSeconds !== undefined && !(e.durationSeconds >= 0 && e.durationSeconds < 1e9))
    throw new RangeError(`${path}.durationSeconds: must be a number >= 0`);
  if (e.completionRate !== undefined && !(e.completionRate >= 0 && e.completionRate <= 1))
    throw new RangeError(`${path}.completionRate: must be in 0..1`);
}

function isEventType(event: unknown): event is EventType {
  return typeof event === 'string' && Object.prototype.hasOwnProperty.call(EVENT_WEIGHTS, event);
}
