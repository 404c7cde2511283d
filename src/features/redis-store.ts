// The FeatureStore on Redis (ioredis; a single node or a Cluster), for replicas that share
// state. Same semantics as memory-store.ts, checked by the same suite.
//
// Layout. Every key of one user carries the user's hash tag ({id}, see store.ts userTag), so
// they live in one Cluster slot and one Lua script can update them atomically:
//   <p>u:{id}:s   hash: ic (positive events), la (last active), seq (arrival counter),
//                 v (UserState.version: bumped by every applied event batch and block)
//   <p>u:{id}:r   zset: session, score = event time, member = seq|item|event code (ties by
//                 arrival, like the memory store); trimmed to RECENT_LIMIT
//   <p>u:{id}:i   hash: item -> positive count (0 = skipped only);  :il zset item -> last touch
//   <p>u:{id}:b   hash: item -> negative kind bits;  :rp set: reports not yet on the review list
//   <p>u:{id}:c   hash: creator -> count;  :cl zset creator -> last touch
//   <p>u:{id}:t   hash: category -> weighted all-time count
//   <p>u:{id}:w   hash: "window|bucket|key" -> value (ring buckets, pruned at most once per
//                 shortest bucket)
//   <p>u:{id}:k:<hash>   idempotency keys (SET PX 24 h once the event is applied, the seed's
//                        record_feedback_idempotent)
//   <p>recs:{id}:<shape> cached answers (the caller's store.ts recsCacheKey under this store's
//                        prefix; 5-byte header: tag + CRC-32) and <p>u:{id}:ci, the set of
//                        them, for invalidateUser
// Global state lives under the tag {g} (one slot): <p>g:{g}:n (item counts), trending zsets
// <p>g:{g}:tr:<window>[:c:<category>] with their frames' bases in <p>g:{g}:tb, and the review
// list <p>g:{g}:reports. Item counts and trending are updated after the user's script, for
// the events it applied, batched over trendingFlushMs: not atomically with it (they are
// aggregates, and a Cluster script cannot span slots), but never for a duplicate.
//
// getUsers runs one read script per user (one slot each), concurrently: one round trip of
// latency for the whole batch, on a Cluster too. The script returns the user's seven keys as
// one JSON string: ioredis decodes a reply element by element in JavaScript, and a user of
// 20 events is ~250 elements, which cost ~0.6 ms of client CPU per read against ~0.1 ms for
// JSON.parse of the same data (bench/README.md, 2026-12-07).
//
// Failure. Every call is bounded (timeoutMs): a Redis that is down, restarting, paused or
// unreachable turns into ApiError 'store_unavailable' (503 / UNAVAILABLE) within that bound,
// never a request held for ioredis's reconnect retries. A client this store creates does not
// queue commands for long while disconnected (maxRetriesPerRequest 1), so an outage costs no
// memory. Writes are ordered so that a call which fails part-way is safe to retry: an event's
// idempotency key is written after its aggregates (a retry re-applies it rather than calling
// it a duplicate), and a report is pushed to the review list before its pending mark in the
// user's slot is cleared (a retry of a half-done report pushes it again).
import { crc32 } from 'node:zlib';
import { Redis, Cluster, type RedisOptions } from 'ioredis';
import { ApiError } from '../api/errors.js';
import type { NegativeFeedbackType } from '../api/types.js';
import {
  EVENT_TYPE_ORDER,
  EVENT_WEIGHTS,
  IDEMPOTENCY_TTL_MS,
  MAX_BLOCKED_PER_USER,
  RECENT_LIMIT,
  TRENDING_TAU_MS,
  WINDOWS,
  blockedListFull,
  bucketIndex,
  checkStoredEvent,
  effectiveTimestamp,
  settleWithin,
  idempotencyKey,
  userOfCacheKey,
  userTag,
  type BlockResult,
  type FeatureStore,
  type ItemInfoLookup,
  type RecentInteraction,
  type RecordResult,
  type ReportRecord,
  type StoredEvent,
  type TrendingItem,
  type UserState,
  type WindowActivity,
  type WindowName,
} from './store.js';

export interface RedisStoreOptions {
  /** A connected client (Redis or Cluster), or a redis:// URL to connect to. */
  redis: Redis | Cluster | string;
  /** close() quits the client. Default: true for a URL, false for a client passed in. */
  closeClient?: boolean;
  itemInfo?: ItemInfoLookup;
  /** Prefix of every key this store writes (not of cache keys). Default 'rs:'. */
  prefix?: string;
  /** Same meaning and defaults as the memory store's options. */
  maxItemsPerUser?: number;
  maxCreatorsPerUser?: number;
  trendingGlobalSize?: number;
  trendingCategorySize?: number;
  maxReports?: number;
  maxBlockedPerUser?: number;
  /**
   * A user's keys expire this long after the user's last write (Redis's stand-in for the
   * memory store's LRU cap; the seed keeps user features 7 days). Default 30 days; 0 = never.
   */
  userTtlMs?: number;
  /** Extra ioredis options when `redis` is a URL. */
  redisOptions?: RedisOptions;
  /**
   * Bound on every call, in ms: past it the call fails with ApiError 'store_unavailable'
   * (the command may still run on Redis later; writes are idempotent, so a retry is safe).
   * Default 1000.
   */
  timeoutMs?: number;
  /**
   * Item counts and trending are sent to Redis in one script call per this many ms, with the
   * increments of every event applied meanwhile (an item's events folded into one number per
   * zset): the global keys live in one slot, so on a Cluster every replica's every event would
   * otherwise hit one node. Trending read anywhere lags by at most this much; a process that
   * dies loses at most this much of the aggregates (never of a user's state). 0 sends them
   * with each recordEvents call, before it resolves. Default 50.
   */
  trendingFlushMs?: number;
  /**
   * Told about client-level errors (connection refused or lost, a cluster node down) and
   * about writes that failed after the call had already succeeded (trending aggregates).
   * They are otherwise only counted (errorCount): ioredis would print them to stderr.
   */
  onError?: (err: Error, what: string) => void;
}

/**
 * The ioredis settings of a client this server owns, one server or each Cluster node:
 * - pending commands fail after one reconnect attempt instead of twenty, so an outage
 *   answers 503 at once and queues nothing;
 * - close() waits 200 ms, not 2 s, for a socket's 'close' before destroying it: a socket
 *   whose connection was refused never sends one, and the default kept a stopping server's
 *   process alive that long.
 */
export const SERVING_CLIENT_OPTIONS = {
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  disconnectTimeout: 200,
} as const satisfies RedisOptions;

/** Reconnects go on forever, every second at most (retryStrategy, clusterRetryStrategy). */
export function reconnectDelay(times: number): number {
  return Math.min(times * 100, 1000);
}

/** Error replies that mean "Redis cannot serve right now", not "this command is wrong". */
const TRANSIENT_REPLY = /^(LOADING|BUSY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|OOM|NOREPLICAS)\b/;

/**
 * A failure of a store call as the registry's error. Connection errors, timeouts and
 * transient error replies are 'store_unavailable'; the caller's own bad arguments (RangeError)
 * and ApiErrors pass unchanged; any other error reply (WRONGTYPE on a key something else
 * wrote, a script error) stays an internal error, because retrying will not fix it.
 */
function asStoreError(err: unknown, op: string): unknown {
  if (err instanceof ApiError || err instanceof RangeError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  if (e.name === 'ReplyError' && !TRANSIENT_REPLY.test(e.message)) return e;
  return new ApiError('store_unavailable', `feature store (redis) ${op}: ${e.message}`);
}

/** Throws the first per-command error of a pipeline/multi result (exec ignores them). */
function checkExec(res: [Error | null, unknown][] | null, op: string): unknown[] {
  if (!res) throw new ApiError('store_unavailable', `feature store (redis) ${op}: aborted`);
  for (const [err] of res) if (err) throw err;
  return res.map((x) => x[1]);
}

// Cached answers carry a 5-byte header: a tag ('S' = UTF-8 text, 'B' = bytes) and the CRC-32
// of the body. An entry that fails the check (written by something else, cut short, an older
// format) reads as a miss: a cached answer goes to the client byte for byte, so a bad one
// would be a 200 with a broken body.
const CACHE_TEXT = 0x53;
const CACHE_BYTES = 0x42;

const NEG_KIND_BIT: Readonly<Record<NegativeFeedbackType, number>> = {
  not_interested: 1,
  hide: 2,
  report: 4,
};

const SEP = '\x1f';

// Applies a batch of events to one user. KEYS: s r i il c cl t w ci, then one idempotency key
// per event. ARGV: now, idemTtl, maxItems, maxCreators, n, userTtl (0 = none), then per
// event: item, code, t,
// duration ('' = none), weight, positive (0/1), creator ('' = none), ncats, cats...
// Returns one 0/1 per event (1 = applied).
const RECORD_LUA = `
local now = tonumber(ARGV[1])
local ttl = ARGV[2]
local maxItems = tonumber(ARGV[3])
local maxCreators = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local userTtl = tonumber(ARGV[6])
local specs = { ${WINDOWS.map((w) => `{${w.bucketMs}, ${w.buckets}}`).join(', ')} }
local function lru(h, z, member, add, seq, cap)
  redis.call('HINCRBY', h, member, add)
  redis.call('ZADD', z, seq, member)
  local over = redis.call('ZCARD', z) - cap
  if over > 0 then
    local victims = redis.call('ZRANGE', z, 0, over - 1)
    for _, v in ipairs(victims) do redis.call('HDEL', h, v) end
    redis.call('ZREMRANGEBYRANK', z, 0, over - 1)
  end
end
-- Prune dead window buckets, at most once per shortest bucket (a bucket dies no more often):
-- matching every field on every write was most of the script's time. Readers skip dead
-- buckets anyway; pruning only bounds the hash.
local pruneAt = math.floor(now / specs[1][1])
if tonumber(redis.call('HGET', KEYS[1], 'wp') or '-1') < pruneAt then
  redis.call('HSET', KEYS[1], 'wp', pruneAt)
  local fields = redis.call('HKEYS', KEYS[8])
  for _, f in ipairs(fields) do
    local w, b = string.match(f, '^(%d+)|(%-?%d+)|')
    w = tonumber(w) + 1
    if tonumber(b) <= math.floor(now / specs[w][1]) - specs[w][2] then redis.call('HDEL', KEYS[8], f) end
  end
end
local out = {}
local applied = 0
local a = 7
for j = 1, n do
  local item = ARGV[a]
  local code = ARGV[a + 1]
  local t = tonumber(ARGV[a + 2])
  local dur = ARGV[a + 3]
  local weight = ARGV[a + 4]
  local positive = ARGV[a + 5] == '1'
  local creator = ARGV[a + 6]
  local ncats = tonumber(ARGV[a + 7])
  local cats = {}
  for q = 1, ncats do cats[q] = ARGV[a + 7 + q] end
  a = a + 8 + ncats
  if redis.call('EXISTS', KEYS[11 + j]) == 0 then
    applied = applied + 1
    out[j] = 1
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    local la = tonumber(redis.call('HGET', KEYS[1], 'la') or '-1')
    if t > la then redis.call('HSET', KEYS[1], 'la', string.format('%.0f', t)) end
    redis.call('ZADD', KEYS[2], t, string.format('%012d', seq) .. '${SEP}' .. item .. '${SEP}' .. code)
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -${RECENT_LIMIT + 1})
    lru(KEYS[3], KEYS[4], item, positive and 1 or 0, seq, maxItems)
    if positive then
      redis.call('HINCRBY', KEYS[1], 'ic', 1)
      for _, c in ipairs(cats) do redis.call('HINCRBYFLOAT', KEYS[7], c, weight) end
      if creator ~= '' then lru(KEYS[5], KEYS[6], creator, 1, seq, maxCreators) end
    end
    for w = 1, #specs do
      local b = math.floor(t / specs[w][1])
      if b > math.floor(now / specs[w][1]) - specs[w][2] then
        local pre = (w - 1) .. '|' .. string.format('%.0f', b) .. '|'
        redis.call('HINCRBY', KEYS[8], pre .. 'e' .. code, 1)
        if dur ~= '' then redis.call('HINCRBYFLOAT', KEYS[8], pre .. 'd', dur) end
        if positive then
          for _, c in ipairs(cats) do redis.call('HINCRBYFLOAT', KEYS[8], pre .. 'c' .. c, weight) end
        end
      end
    end
    -- Last: a script that fails above (a key of the wrong type) leaves no key, so the retry
    -- applies the event again instead of calling it a duplicate.
    redis.call('SET', KEYS[11 + j], '1', 'PX', ttl)
  else
    out[j] = 0
  end
end
if applied > 0 then
  redis.call('HSETNX', KEYS[1], 'ic', 0)
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  local cached = redis.call('SMEMBERS', KEYS[9])
  for _, k in ipairs(cached) do redis.call('DEL', k) end
  redis.call('DEL', KEYS[9])
  if userTtl > 0 then
    -- The blocks and pending reports too: an active user's blocks last as long as the rest.
    for k = 1, 8 do redis.call('PEXPIRE', KEYS[k], userTtl) end
    redis.call('PEXPIRE', KEYS[10], userTtl)
    redis.call('PEXPIRE', KEYS[11], userTtl)
  end
end
return out
`;

// Negative feedback. KEYS: s b ci rp. ARGV: item, bit, userTtl, cap, report (0/1). Returns 1
// when new, 0 when a duplicate, -1 when the item is new and the user has blocked cap items
// already, 2 when a duplicate report whose push to the review list never completed (rp, the
// user's pending reports, still holds it: the caller pushes it now).
const BLOCK_LUA = `
local bits = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local bit = tonumber(ARGV[2])
local report = ARGV[5] == '1'
if math.floor(bits / bit) % 2 == 1 then
  if report and redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return 2 end
  return 0
end
if bits == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], bits + bit)
if report then redis.call('SADD', KEYS[4], ARGV[1]) end
redis.call('HSETNX', KEYS[1], 'ic', 0)
redis.call('HINCRBY', KEYS[1], 'v', 1)
local cached = redis.call('SMEMBERS', KEYS[3])
for _, k in ipairs(cached) do redis.call('DEL', k) end
redis.call('DEL', KEYS[3])
local userTtl = tonumber(ARGV[3])
if userTtl > 0 then
  redis.call('PEXPIRE', KEYS[1], userTtl)
  redis.call('PEXPIRE', KEYS[2], userTtl)
  if report then redis.call('PEXPIRE', KEYS[4], userTtl) end
end
return 1
`;

// Trending + item counts (slot {g}), for the applied events of one flush (trendingFlushMs).
// KEYS: bases, counts, then the zsets. ARGV: L (global size), Lc (category size), nc, then
// nc x (item, count increment), then nz, then per zset: key index, tau, isCategory (0/1), m,
// then m x (item, ref, sum), where sum = the sum over that item's events of
// weight * e^((t - ref) / tau): the flusher folds an item's events into one number, and this
// script scales it into the zset's frame. Each zset keeps its own frame base (field = its key
// name) and is rebased alone, when the newest ref is 300 tau from it.
const TREND_LUA = `
local L = tonumber(ARGV[1])
local Lc = tonumber(ARGV[2])
local nc = tonumber(ARGV[3])
local a = 4
-- pcall: one value something else wrote (a count that is not a number) costs its own
-- increment, not the whole batch's.
local failed = 0
local function try(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then failed = failed + 1 end
  return r
end
for j = 1, nc do
  try('HINCRBY', KEYS[2], ARGV[a], ARGV[a + 1])
  a = a + 2
end
local nz = tonumber(ARGV[a])
a = a + 1
for z = 1, nz do
  local key = KEYS[tonumber(ARGV[a])]
  local tau = tonumber(ARGV[a + 1])
  local cap = ARGV[a + 2] == '1' and Lc or L
  local m = tonumber(ARGV[a + 3])
  a = a + 4
  local newest = tonumber(ARGV[a + 1])
  for q = 1, m do
    local r = tonumber(ARGV[a + 3 * (q - 1) + 1])
    if r > newest then newest = r end
  end
  local stored = try('HGET', KEYS[1], key)
  local base = type(stored) == 'string' and tonumber(stored) or nil
  if not base then
    base = newest
    try('HSET', KEYS[1], key, string.format('%.0f', base))
  elseif math.abs(newest - base) / tau > 300 then
    local f = math.min(math.exp(-(newest - base) / tau), math.exp(300))
    local all = try('ZRANGE', key, 0, -1, 'WITHSCORES')
    if not all.err then
      for i = 1, #all, 2 do try('ZADD', key, (tonumber(all[i + 1]) or 0) * f, all[i]) end
    end
    base = newest
    try('HSET', KEYS[1], key, string.format('%.0f', base))
  end
  for q = 1, m do
    local ref = tonumber(ARGV[a + 1])
    try('ZINCRBY', key, tonumber(ARGV[a + 2]) * math.exp((ref - base) / tau), ARGV[a])
    a = a + 3
  end
  try('ZREMRANGEBYRANK', key, 0, -(cap + 1))
end
return failed
`;

// A user's cached answer, written only if the user's state is still the version it was
// computed from. KEYS: s, the cache key, ci. ARGV: asOf, entry, ttl, index ttl. 1 = written.
const CACHE_SET_LUA = `
if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
`;

// A user's state in one reply. KEYS: s r i b c t w. ARGV: the session list's last index.
// Returns JSON [s, r, i, b, c, t, w], each the flat [field, value, ...] list of the key
// (cjson writes an empty one as {}), or nil for a user with no state (no events and no
// blocks: blocks alone are state, they must hold whatever happened to the rest).
const READ_LUA = `
if redis.call('HEXISTS', KEYS[1], 'ic') == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  return false
end
local out = {
  redis.call('HGETALL', KEYS[1]),
  redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[1]), 'WITHSCORES'),
}
for k = 3, 7 do out[k] = redis.call('HGETALL', KEYS[k]) end
return cjson.encode(out)
`;

/** Trending and item-count increments not yet sent (RedisFeatureStore.flushTrend). */
interface PendingTrend {
  counts: Map<string, number>;
  zsets: Map<
    string,
    { tau: number; category: boolean; items: Map<string, { ref: number; sum: number }> }
  >;
  /** Count and zset entries: a flush is sent at once past MAX_PENDING_TREND. */
  entries: number;
}

function emptyPending(): PendingTrend {
  return { counts: new Map(), zsets: new Map(), entries: 0 };
}

const MAX_PENDING_TREND = 4096;

/** Events per record script (recordEvents splits larger calls). */
const RECORD_CHUNK = 64;

type ScriptFn = (...args: (string | number | Buffer)[]) => Promise<unknown>;

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1)
    throw new RangeError(`RedisFeatureStore: ${name} must be a positive integer, got ${v}`);
  return v;
}

function emptyActivity(): WindowActivity {
  return {
    events: { view: 0, click: 0, like: 0, share: 0, purchase: 0, skip: 0 },
    durationSeconds: 0,
    ctr: 0,
    avgDurationSeconds: 0,
  };
}

/**
 * A number read back from Redis. Anything else wrote the key if it is not finite ("abc",
 * "inf"): such a value reads as 0, where NaN would turn every score of the user's answer
 * into null.
 */
function fin(v: string | null | undefined): number {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

/** A flat [field, value, ...] list (HGETALL's reply) as field -> number. */
function pairsToMap(h: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (let k = 0; k < h.length; k += 2) m.set(h[k], fin(h[k + 1]));
  return m;
}

/** One key's part of READ_LUA's reply: cjson writes an empty list as {}. */
function flat(v: unknown): string[] {
  return Array.isArray(v) ? (v as string[]) : [];
}

export class RedisFeatureStore implements FeatureStore {
  readonly redis: Redis | Cluster;
  private readonly owned: boolean;
  private readonly itemInfo: ItemInfoLookup;
  private readonly p: string;
  private readonly maxItemsPerUser: number;
  private readonly maxCreatorsPerUser: number;
  private readonly trendingGlobalSize: number;
  private readonly trendingCategorySize: number;
  private readonly maxReports: number;
  private readonly maxBlockedPerUser: number;
  private readonly userTtlMs: number;
  private readonly timeoutMs: number;
  private readonly trendingFlushMs: number;
  private pending: PendingTrend = emptyPending();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly onError: ((err: Error, what: string) => void) | undefined;
  private readonly clientErrorListener: (err: Error) => void;
  /** Client-level errors seen (connection refused or lost, ...), for metrics and tests. */
  errorCount = 0;
  /** Set at the first 'ready': from then on a lost connection fails calls at once. */
  private everReady = false;
  /**
   * Set when a call timed out on a connection that looks fine (a paused or overloaded
   * Redis): calls fail at once instead of each waiting timeoutMs, and one PING at a time
   * probes until Redis answers again.
   */
  private stalled = false;
  private probing = false;
  private closed = false;

  constructor(opts: RedisStoreOptions) {
    this.timeoutMs = opts.timeoutMs ?? 1000;
    if (!(Number.isInteger(this.timeoutMs) && this.timeoutMs >= 1))
      throw new RangeError(`RedisFeatureStore: timeoutMs must be a positive integer`);
    this.trendingFlushMs = opts.trendingFlushMs ?? 50;
    if (!(Number.isInteger(this.trendingFlushMs) && this.trendingFlushMs >= 0))
      throw new RangeError(`RedisFeatureStore: trendingFlushMs must be an integer >= 0`);
    this.itemInfo = opts.itemInfo ?? (() => undefined);
    this.p = opts.prefix ?? 'rs:';
    // Keys carry the user's hash tag ({id}); a brace in the prefix would become the tag.
    if (/[{}]/.test(this.p))
      throw new RangeError(`RedisFeatureStore: prefix must not contain { or }, got '${this.p}'`);
    this.maxItemsPerUser = positiveInt(opts.maxItemsPerUser, 500, 'maxItemsPerUser');
    this.maxCreatorsPerUser = positiveInt(opts.maxCreatorsPerUser, 200, 'maxCreatorsPerUser');
    this.trendingGlobalSize = positiveInt(opts.trendingGlobalSize, 1000, 'trendingGlobalSize');
    this.trendingCategorySize = positiveInt(opts.trendingCategorySize, 200, 'trendingCategorySize');
    this.maxReports = positiveInt(opts.maxReports, 10_000, 'maxReports');
    this.maxBlockedPerUser = positiveInt(
      opts.maxBlockedPerUser,
      MAX_BLOCKED_PER_USER,
      'maxBlockedPerUser',
    );
    this.userTtlMs = opts.userTtlMs ?? 30 * 86_400_000;
    if (!(Number.isInteger(this.userTtlMs) && this.userTtlMs >= 0))
      throw new RangeError(`RedisFeatureStore: userTtlMs must be an integer >= 0`);
    // Every option is checked before a client exists: a refused one leaves no connection.
    if (typeof opts.redis === 'string') {
      this.redis = new Redis(opts.redis, {
        lazyConnect: false,
        ...SERVING_CLIENT_OPTIONS,
        retryStrategy: reconnectDelay,
        ...opts.redisOptions,
      });
      this.owned = true;
    } else {
      this.redis = opts.redis;
      this.owned = opts.closeClient ?? false;
    }
    this.onError = opts.onError;
    // Without a listener ioredis prints every reconnect failure to stderr with a stack.
    this.clientErrorListener = (err: Error) => {
      this.errorCount++;
      this.onError?.(err, 'client');
    };
    this.redis.on('error', this.clientErrorListener);
    if (this.redis.status === 'ready') this.everReady = true;
    this.redis.on('ready', () => {
      this.everReady = true;
      this.stalled = false;
    });
    this.redis.defineCommand('recserveRecord', { lua: RECORD_LUA });
    this.redis.defineCommand('recserveBlock', { lua: BLOCK_LUA, numberOfKeys: 4 });
    this.redis.defineCommand('recserveTrend', { lua: TREND_LUA });
    this.redis.defineCommand('recserveCacheSet', { lua: CACHE_SET_LUA, numberOfKeys: 3 });
    this.redis.defineCommand('recserveRead', { lua: READ_LUA, numberOfKeys: 7 });
  }

  /** True while the client is connected and ready for commands. */
  get connected(): boolean {
    return this.redis.status === 'ready';
  }

  /**
   * Resolves once the client is ready (at start-up, before the server says it is ready);
   * rejects when `timeoutMs` passes first, or the client was closed.
   */
  async waitUntilConnected(timeoutMs: number): Promise<void> {
    if (this.connected) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.redis.off('ready', onReady);
        this.redis.off('end', onEnd);
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      const onEnd = () => done(new Error('the Redis client was closed'));
      const timer = setTimeout(
        () => done(new ApiError('store_unavailable', `no Redis connection after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.redis.on('ready', onReady);
      this.redis.on('end', onEnd);
    });
  }

  /**
   * The database the connection really uses, where the URL asked for one: ioredis logs a
   * SELECT past the server's `databases` and then carries on in database 0. Resolves to the
   * number in use (null where the server cannot say: CLIENT INFO needs Redis 6.2, and a
   * Cluster has database 0 only).
   */
  async databaseInUse(): Promise<number | null> {
    if (this.redis instanceof Cluster) return null;
    try {
      const info = String(await this.guard('CLIENT INFO', () => this.redis.call('CLIENT', 'INFO')));
      const m = / db=(\d+)/.exec(info);
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  }

  /**
   * The server's maxmemory-policy, or null where CONFIG is not allowed (managed services
   * often rename it). Anything but noeviction lets Redis drop idempotency keys (a retry then
   * counts twice) or a user's keys (blocks forgotten) when it is full.
   */
  async evictionPolicy(): Promise<string | null> {
    try {
      const r = (await this.guard('CONFIG GET', () =>
        this.redis.call('CONFIG', 'GET', 'maxmemory-policy'),
      )) as string[];
      return Array.isArray(r) && typeof r[1] === 'string' ? r[1] : null;
    } catch {
      return null;
    }
  }

  /** The database the URL asked for (0 when it named none). */
  get databaseAsked(): number {
    return this.redis instanceof Cluster ? 0 : (this.redis.options.db ?? 0);
  }

  /**
   * Runs one store call under the store's bound, with its failure as the registry's error.
   * The timer only decides what the caller hears: the command itself cannot be recalled.
   */
  private guard<T>(op: string, work: () => Promise<T>): Promise<T> {
    // Before the first connection, calls wait for it (up to timeoutMs): a server starting
    // beside its Redis should not fail its first requests.
    if (this.everReady && (this.stalled || this.redis.status !== 'ready')) {
      return Promise.reject(
        new ApiError(
          'store_unavailable',
          `feature store (redis) ${op}: ${this.stalled ? 'not answering' : `connection ${this.redis.status}`}`,
        ),
      );
    }
    const answer = work().catch((err: unknown) => {
      throw asStoreError(err, op);
    });
    return settleWithin(answer, this.timeoutMs, () => {
      this.stall();
      return new ApiError(
        'store_unavailable',
        `feature store (redis) ${op}: no answer within ${this.timeoutMs} ms`,
      );
    });
  }

  /** Marks the store stalled and PINGs (one at a time) until Redis answers again. */
  private stall(): void {
    // On a Cluster a timeout says one node is slow, not all of them: each call keeps its own
    // bound there instead of failing every user's at once.
    if (!this.everReady || this.closed || this.redis instanceof Cluster) return;
    this.stalled = true;
    if (this.probing) return;
    this.probing = true;
    const probe = (): void => {
      if (this.closed || !this.stalled) {
        this.probing = false;
        return;
      }
      let settled = false;
      const retry = setTimeout(() => {
        if (settled) return;
        settled = true;
        probe();
      }, this.timeoutMs);
      retry.unref();
      this.redis.ping().then(
        () => {
          if (settled) return;
          settled = true;
          clearTimeout(retry);
          this.stalled = false;
          this.probing = false;
        },
        () => {
          if (settled) return;
          settled = true;
          clearTimeout(retry);
          const again = setTimeout(probe, Math.min(this.timeoutMs, 250));
          again.unref();
        },
      );
    };
    probe();
  }

  private script(name: string): ScriptFn {
    const fn = (this.redis as unknown as Record<string, ScriptFn>)[name];
    return fn.bind(this.redis);
  }

  private uk(userId: string, part: string): string {
    return `${this.p}u:${userTag(userId)}:${part}`;
  }

  private gk(part: string): string {
    return `${this.p}g:{g}:${part}`;
  }

  getUsers(userIds: string[], nowMs = Date.now()): Promise<(UserState | null)[]> {
    return this.guard('getUsers', () => this.readUsers(userIds, nowMs));
  }

  private readUsers(userIds: string[], nowMs: number): Promise<(UserState | null)[]> {
    return Promise.all(
      userIds.map(async (id) => {
        const json = (await this.script('recserveRead')(
          ...['s', 'r', 'i', 'b', 'c', 't', 'w'].map((k) => this.uk(id, k)),
          RECENT_LIMIT - 1,
        )) as string | null;
        if (json === null) return null;
        const parts = JSON.parse(json) as unknown[];
        const [s, r, i, b, c, t, w] = Array.from({ length: 7 }, (_, k) => flat(parts[k]));
        return this.materialise(id, nowMs, pairsToMap(s), r, i, b, c, t, w);
      }),
    );
  }

  private materialise(
    userId: string,
    nowMs: number,
    s: Map<string, number>,
    r: string[],
    i: string[],
    b: string[],
    c: string[],
    t: string[],
    w: string[],
  ): UserState {
    const recent: RecentInteraction[] = [];
    for (let k = 0; k < r.length; k += 2) {
      const parts = r[k].split(SEP);
      const event = EVENT_TYPE_ORDER[Number(parts[parts.length - 1])];
      const timestampMs = Number(r[k + 1]);
      // A member this store did not write is left out, not passed on as NaN or undefined.
      if (parts.length < 3 || event === undefined || !Number.isFinite(timestampMs)) continue;
      recent.push({ itemId: parts.slice(1, -1).join(SEP), event, timestampMs });
    }
    const seen = new Set<string>();
    const itemCounts = new Map<string, number>();
    for (let k = 0; k < i.length; k += 2) {
      const id = i[k];
      seen.add(id);
      const n = fin(i[k + 1]);
      if (n > 0) itemCounts.set(id, n);
    }
    const windowCats: Map<string, number>[] = WINDOWS.map(() => new Map());
    const acts: WindowActivity[] = WINDOWS.map(emptyActivity);
    const live = WINDOWS.map((spec) => bucketIndex(nowMs, spec));
    for (let k = 0; k < w.length; k += 2) {
      const f = w[k];
      const p1 = f.indexOf('|');
      const p2 = f.indexOf('|', p1 + 1);
      const win = Number(f.slice(0, p1));
      const bucket = Number(f.slice(p1 + 1, p2));
      const key = f.slice(p2 + 1);
      const spec = WINDOWS[win];
      if (!spec || bucket <= live[win] - spec.buckets || bucket > live[win]) continue;
      const v = fin(w[k + 1]);
      if (key[0] === 'c') {
        const name = key.slice(1);
        windowCats[win].set(name, (windowCats[win].get(name) ?? 0) + v);
      } else if (key === 'd') acts[win].durationSeconds += v;
      else {
        const ev = EVENT_TYPE_ORDER[Number(key.slice(1))];
        if (ev !== undefined) acts[win].events[ev] += v;
      }
    }
    const activity = {} as Record<WindowName, WindowActivity>;
    for (let k = 0; k < WINDOWS.length; k++) {
      const act = acts[k];
      const views = Math.max(act.events.view, 1);
      act.ctr = act.events.click / views;
      act.avgDurationSeconds = act.durationSeconds / views;
      activity[WINDOWS[k].name] = act;
    }
    return {
      userId,
      version: s.get('v') ?? 0,
      interactionCount: s.get('ic') ?? 0,
      lastActiveMs: s.get('la') ?? null,
      recent,
      seen,
      blocked: new Set(b.filter((_, k) => k % 2 === 0)),
      itemCounts,
      creatorCounts: pairsToMap(c),
      categoryCounts: {
        '5m': windowCats[0],
        '1h': windowCats[1],
        '24h': windowCats[2],
        total: pairsToMap(t),
      },
      activity,
    };
  }

  async recordEvents(
    userId: string,
    events: StoredEvent[],
    nowMs = Date.now(),
  ): Promise<RecordResult> {
    if (typeof userId !== 'string' || userId.length === 0)
      throw new RangeError('userId: must be a non-empty string');
    for (let i = 0; i < events.length; i++) checkStoredEvent(events[i], `events[${i}]`);
    if (events.length === 0) return { accepted: 0, duplicates: 0, applied: [] };
    // A script holds Redis for everyone while it runs (1,000 events: 100-200 ms here, long
    // enough to time out other users' calls), so a large call goes in several. One that
    // fails part-way has its first chunks recorded, and the client's retry finds them
    // duplicates: at least once, never twice, as for any failed call.
    const applied: boolean[] = [];
    for (let at = 0; at < events.length; at += RECORD_CHUNK) {
      applied.push(...(await this.recordChunk(userId, events.slice(at, at + RECORD_CHUNK), nowMs)));
    }
    const accepted = applied.filter(Boolean).length;
    return { accepted, duplicates: events.length - accepted, applied };
  }

  /** One script call of recordEvents; its trending goes to the pending batch. */
  private async recordChunk(
    userId: string,
    events: StoredEvent[],
    nowMs: number,
  ): Promise<boolean[]> {
    const keys = ['s', 'r', 'i', 'il', 'c', 'cl', 't', 'w', 'ci', 'b', 'rp'].map((k) =>
      this.uk(userId, k),
    );
    const args: (string | number)[] = [
      nowMs,
      IDEMPOTENCY_TTL_MS,
      this.maxItemsPerUser,
      this.maxCreatorsPerUser,
      events.length,
      this.userTtlMs,
    ];
    const infos = events.map((e) => (e.event === 'skip' ? undefined : this.itemInfo(e.itemId)));
    for (let j = 0; j < events.length; j++) {
      const e = events[j];
      keys.push(this.uk(userId, 'k:' + idempotencyKey(userId, e.itemId, e.event, e.timestampMs)));
      const info = infos[j];
      const cats = info?.categories ?? [];
      args.push(
        e.itemId,
        EVENT_TYPE_ORDER.indexOf(e.event),
        effectiveTimestamp(e.timestampMs, nowMs),
        e.durationSeconds !== undefined && e.durationSeconds > 0 ? e.durationSeconds : '',
        EVENT_WEIGHTS[e.event],
        e.event === 'skip' ? 0 : 1,
        info?.creatorId ?? '',
        cats.length,
        ...cats,
      );
    }
    // The events' trending follows the script's own answer, not the caller's: a script that
    // lands after its call timed out (503) has recorded them, and the retry will only find
    // duplicates, so this is the one place their counts and trending can come from.
    let landed: Promise<void> | undefined;
    const run = this.script('recserveRecord')(keys.length, ...keys, ...args) as Promise<number[]>;
    const done = run.then((flags) => {
      const applied = flags.map((f) => f === 1);
      // Recorded: the user's state has them and a retry would be a duplicate, so a failure of
      // the global aggregates is reported (flushTrend), not thrown.
      if (applied.includes(true)) landed = this.addTrend(events, infos, applied, nowMs);
      return applied;
    });
    done.catch(() => undefined); // the caller hears of a failure through guard()
    const applied = await this.guard('recordEvents', () => done);
    await landed;
    return applied;
  }

  /** Adds applied events to the pending batch and sees that it is sent. */
  private async addTrend(
    events: StoredEvent[],
    infos: ({ categories: string[] } | undefined)[],
    applied: boolean[],
    nowMs: number,
  ): Promise<void> {
    this.trend(events, infos, applied, nowMs);
    if (this.trendingFlushMs === 0) await this.flushTrend();
    else if (this.pending.entries >= MAX_PENDING_TREND) void this.flushTrend();
    else if (this.flushTimer === null) {
      this.flushTimer = setTimeout(() => void this.flushTrend(), this.trendingFlushMs);
      this.flushTimer.unref();
    }
  }

  /**
   * Sends the pending trending and item-count increments in one script call. A failure drops
   * them (they are aggregates; retrying them would queue without bound while Redis is down)
   * and is reported to onError as 'trending'.
   */
  private async flushTrend(): Promise<void> {
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    const p = this.pending;
    if (p.entries === 0) return;
    this.pending = emptyPending();
    const keys = [this.gk('tb'), this.gk('n')];
    const args: (string | number)[] = [
      this.trendingGlobalSize,
      this.trendingCategorySize,
      p.counts.size,
    ];
    for (const [item, n] of p.counts) args.push(item, n);
    args.push(p.zsets.size);
    for (const [key, z] of p.zsets) {
      keys.push(key);
      args.push(keys.length, z.tau, z.category ? 1 : 0, z.items.size); // Lua is 1-based
      for (const [item, e] of z.items) args.push(item, e.ref, e.sum);
    }
    await this.guard('trending', async () => {
      const failed = (await this.script('recserveTrend')(keys.length, ...keys, ...args)) as number;
      if (failed > 0)
        throw new Error(`${failed} trending or item-count writes refused (a key of another type?)`);
    }).catch((err: unknown) => {
      this.errorCount++;
      this.onError?.(err instanceof Error ? err : new Error(String(err)), 'trending');
    });
  }

  /**
   * Adds the applied positive events to the pending item counts and trending increments (same
   * rules as memory): an item's events in one zset fold into one (ref, sum) pair.
   */
  private trend(
    events: StoredEvent[],
    infos: ({ categories: string[] } | undefined)[],
    applied: boolean[],
    nowMs: number,
  ): void {
    const p = this.pending;
    const add = (
      key: string,
      tau: number,
      category: boolean,
      item: string,
      w: number,
      t: number,
    ) => {
      let z = p.zsets.get(key);
      if (z === undefined) p.zsets.set(key, (z = { tau, category, items: new Map() }));
      const e = z.items.get(item);
      if (e === undefined) {
        z.items.set(item, { ref: t, sum: w });
        p.entries++;
      } else e.sum += w * Math.exp((t - e.ref) / tau);
    };
    for (let j = 0; j < events.length; j++) {
      const e = events[j];
      if (!applied[j] || e.event === 'skip') continue;
      p.counts.set(e.itemId, (p.counts.get(e.itemId) ?? 0) + 1);
      p.entries++;
      const t = effectiveTimestamp(e.timestampMs, nowMs);
      for (const w of ['1h', '24h'] as const) {
        const tau = TRENDING_TAU_MS[w];
        if (nowMs - t > tau) continue;
        add(this.gk(`tr:${w}`), tau, false, e.itemId, EVENT_WEIGHTS[e.event], t);
        for (const c of infos[j]?.categories ?? [])
          add(this.gk(`tr:${w}:c:${c}`), tau, true, e.itemId, EVENT_WEIGHTS[e.event], t);
      }
    }
  }

  async block(
    userId: string,
    itemId: string,
    kind: NegativeFeedbackType,
    reason?: string,
    nowMs = Date.now(),
  ): Promise<BlockResult> {
    if (typeof userId !== 'string' || userId.length === 0)
      throw new RangeError('userId: must be a non-empty string');
    if (typeof itemId !== 'string' || itemId.length === 0)
      throw new RangeError('itemId: must be a non-empty string');
    const bit = Object.prototype.hasOwnProperty.call(NEG_KIND_BIT, kind)
      ? NEG_KIND_BIT[kind]
      : undefined;
    if (bit === undefined)
      throw new RangeError(`kind: must be one of ${Object.keys(NEG_KIND_BIT).join(', ')}`);
    const report = kind === 'report';
    const pending = this.uk(userId, 'rp');
    const fresh = await this.guard('block', () =>
      this.script('recserveBlock')(
        this.uk(userId, 's'),
        this.uk(userId, 'b'),
        this.uk(userId, 'ci'),
        pending,
        itemId,
        bit,
        this.userTtlMs,
        this.maxBlockedPerUser,
        report ? 1 : 0,
      ),
    );
    if (fresh === -1) throw blockedListFull(this.maxBlockedPerUser);
    if (report && (fresh === 1 || fresh === 2)) {
      // The review list is global (another Cluster slot than the user's), so it cannot join
      // the script: the pending mark is cleared only once the push is in, and a retry after
      // a failure here finds the mark (2) and pushes again. At least once, never lost.
      const rec: ReportRecord = { userId, itemId, reason: reason ?? null, timestampMs: nowMs };
      await this.guard('report', async () => {
        checkExec(
          await this.redis
            .pipeline()
            .lpush(this.gk('reports'), JSON.stringify(rec))
            .ltrim(this.gk('reports'), 0, this.maxReports - 1)
            .exec(),
          'report',
        );
        await this.redis.srem(pending, itemId);
      });
    }
    return { duplicate: fresh !== 1 };
  }

  private async trendList(key: string, tau: number, k: number, nowMs: number) {
    const n = Math.max(0, Math.floor(k));
    if (n === 0) return [];
    const res = await this.guard('trending', async () =>
      checkExec(
        await this.redis
          .pipeline()
          .zrevrange(key, 0, n - 1, 'WITHSCORES')
          .hget(this.gk('tb'), key)
          .exec(),
        'trending',
      ),
    );
    const list = (res[0] ?? []) as string[];
    const base = res[1] as string | null;
    if (base === null) return [];
    const factor = Math.exp(-(nowMs - Number(base)) / tau);
    if (!Number.isFinite(factor)) return [];
    const out: TrendingItem[] = [];
    for (let i = 0; i < list.length; i += 2) {
      const score = Number(list[i + 1]) * factor;
      if (Number.isFinite(score)) out.push({ itemId: list[i], score });
    }
    return out;
  }

  async trending(window: '1h' | '24h', k: number, nowMs = Date.now()): Promise<TrendingItem[]> {
    if (window !== '1h' && window !== '24h')
      throw new RangeError(`window must be '1h' or '24h', got '${window}'`);
    return this.trendList(this.gk(`tr:${window}`), TRENDING_TAU_MS[window], k, nowMs);
  }

  async trendingInCategory(
    category: string,
    window: '1h' | '24h',
    k: number,
    nowMs = Date.now(),
  ): Promise<TrendingItem[]> {
    if (window !== '1h' && window !== '24h')
      throw new RangeError(`window must be '1h' or '24h', got '${window}'`);
    return this.trendList(this.gk(`tr:${window}:c:${category}`), TRENDING_TAU_MS[window], k, nowMs);
  }

  async itemCounts(itemIds: string[]): Promise<number[]> {
    if (itemIds.length === 0) return [];
    const vals = await this.guard('itemCounts', () => this.redis.hmget(this.gk('n'), ...itemIds));
    return vals.map(fin);
  }

  /**
   * The Redis key of a cache key: under this store's prefix, so that two deployments on one
   * Redis never answer each other's users (the key keeps its user tag, hence its slot).
   */
  private ck(key: string): string {
    return this.p + key;
  }

  async getCached(key: string): Promise<Uint8Array | string | null> {
    const buf = await this.guard('getCached', () => this.redis.getBuffer(this.ck(key)));
    if (buf === null || buf.length < 5) return null;
    const body = buf.subarray(5);
    if (buf.readUInt32BE(1) !== crc32(body)) return null;
    if (buf[0] === CACHE_TEXT) return body.toString('utf8');
    return buf[0] === CACHE_BYTES ? new Uint8Array(body) : null;
  }

  async setCached(
    key: string,
    value: Uint8Array | string,
    ttlMs: number,
    asOf?: number,
  ): Promise<void> {
    if (!(ttlMs > 0)) return;
    const body = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    const head = Buffer.allocUnsafe(5);
    head[0] = typeof value === 'string' ? CACHE_TEXT : CACHE_BYTES;
    head.writeUInt32BE(crc32(body), 1);
    const entry = Buffer.concat([head, body]);
    const user = userOfCacheKey(key);
    const rkey = this.ck(key);
    if (user === null) {
      await this.guard('setCached', () => this.redis.set(rkey, entry, 'PX', Math.ceil(ttlMs)));
      return;
    }
    const idx = this.uk(user, 'ci');
    if (asOf !== undefined) {
      await this.guard('setCached', () =>
        this.script('recserveCacheSet')(
          this.uk(user, 's'),
          rkey,
          idx,
          asOf,
          entry,
          Math.ceil(ttlMs),
          Math.max(Math.ceil(ttlMs), 60_000),
        ),
      );
      return;
    }
    await this.guard('setCached', async () =>
      checkExec(
        await this.redis
          .multi()
          .set(rkey, entry, 'PX', Math.ceil(ttlMs))
          .sadd(idx, rkey)
          .pexpire(idx, Math.max(Math.ceil(ttlMs), 60_000))
          .exec(),
        'setCached',
      ),
    );
  }

  async invalidateUser(userId: string): Promise<void> {
    const idx = this.uk(userId, 'ci');
    await this.guard('invalidateUser', async () => {
      const keys = await this.redis.smembers(idx);
      const m = this.redis.multi();
      for (const k of keys) m.del(k);
      m.del(idx);
      checkExec(await m.exec(), 'invalidateUser');
    });
  }

  async reports(limit: number): Promise<ReportRecord[]> {
    const n = Math.max(0, Math.floor(limit));
    if (n === 0) return [];
    const list = await this.guard('reports', () => this.redis.lrange(this.gk('reports'), 0, n - 1));
    const out: ReportRecord[] = [];
    // An entry something else wrote into the list is skipped, not a failed review page.
    for (const s of list) {
      try {
        const r = JSON.parse(s) as ReportRecord;
        if (r && typeof r.userId === 'string' && typeof r.itemId === 'string') out.push(r);
      } catch {
        // not ours
      }
    }
    return out;
  }

  async close(): Promise<void> {
    await this.flushTrend();
    this.closed = true;
    if (!this.owned) {
      this.redis.off('error', this.clientErrorListener);
      return;
    }
    // quit() waits for a reply that never comes from a Redis that is down; disconnect then.
    await this.guard('close', () => this.redis.quit()).catch(() => this.redis.disconnect());
  }
}
