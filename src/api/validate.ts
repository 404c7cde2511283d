// Raw decoded input (JSON.parse output, or a gRPC message converted to the same JSON shape)
// → the typed requests of api/types.ts. Every transport runs these same functions, so HTTP
// JSON, HTTP FlatBuffers and gRPC reject the same input with the same `field`.
//
// Rules: wrong types, out-of-range numbers, unknown enum values, empty ids, over-long lists
// and strings that are not well-formed Unicode are ApiError.invalid(field, ...) with `field`
// as a dotted path ("context.device_type", "events[2].event_type"). Unknown keys are
// ignored (forward compatibility: a newer client may send fields this server does not know).
// The returned objects are fresh copies holding only the known keys, so callers can never
// see extra data.
import { ApiError } from './errors.js';
import {
  DEVICE_TYPES,
  EVENT_TYPES,
  NEGATIVE_FEEDBACK_TYPES,
  REQUEST_TYPES,
  SIMILARITY_TYPES,
  type DeviceType,
  type EventType,
  type FeedbackEvent,
  type FeedbackRequest,
  type NegativeFeedbackRequest,
  type NegativeFeedbackType,
  type RecommendationRequest,
  type RequestContext,
  type RequestType,
  type SimilarRequest,
  type SimilarityType,
} from './types.js';

/** Limits of the contract; exported so docs, tests and other transports quote the same numbers. */
export const LIMITS = {
  /** num_items range (the 1..500). */
  minItems: 1,
  maxItems: 500,
  defaultItems: 20,
  /** Longest id (user, item, session) accepted; longer is certainly not an id. */
  maxIdLength: 256,
  /** Longest exclude_items / filters.categories list. */
  maxListLength: 1000,
  /** Most events in one POST /v1/feedback. */
  maxEvents: 1000,
  /** Longest free-text field (platform, reason, surface). */
  maxTextLength: 1024,
} as const;

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function requireObject(v: unknown, field: string): Obj {
  if (!isObject(v)) {
    throw ApiError.invalid(field || 'body', `must be an object, got ${typeName(v)}`);
  }
  return v;
}

function optObject(o: Obj, key: string, path: string): Obj | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  return requireObject(v, path);
}

/**
 * JSON's \uD800 escapes can carry a lone UTF-16 surrogate, which no UTF-8 store, log or key
 * can hold: encodeURIComponent (the store's user key) throws on it, Redis would store U+FFFD
 * instead, so such an id would be accepted by one route and a 500 on the next. gRPC and
 * FlatBuffers decode UTF-8 and never produce one; JSON is refused here, for every string.
 */
function wellFormed(v: string, field: string): string {
  // String.prototype.isWellFormed is in Node 20 but not in the ES2022 lib we compile against.
  if (!(v as unknown as { isWellFormed(): boolean }).isWellFormed()) {
    throw ApiError.invalid(field, 'must be well-formed Unicode (a lone UTF-16 surrogate is not)');
  }
  return v;
}

function idString(v: unknown, field: string): string {
  if (typeof v !== 'string') throw ApiError.invalid(field, `must be a string, got ${typeName(v)}`);
  if (v.length === 0) throw ApiError.invalid(field, 'must not be empty');
  if (v.length > LIMITS.maxIdLength) {
    throw ApiError.invalid(field, `must be at most ${LIMITS.maxIdLength} characters`);
  }
  return wellFormed(v, field);
}

function reqId(o: Obj, key: string, path: string): string {
  if (o[key] === undefined || o[key] === null) throw ApiError.invalid(path, 'is required');
  return idString(o[key], path);
}

function optId(o: Obj, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  return idString(v, path);
}

function optText(o: Obj, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw ApiError.invalid(path, `must be a string, got ${typeName(v)}`);
  if (v.length > LIMITS.maxTextLength) {
    throw ApiError.invalid(path, `must be at most ${LIMITS.maxTextLength} characters`);
  }
  return wellFormed(v, path);
}

function optNumber(
  o: Obj,
  key: string,
  path: string,
  min: number,
  max: number,
  integer = false,
): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw ApiError.invalid(path, `must be a finite number, got ${typeName(v)}`);
  }
  if (integer && !Number.isInteger(v)) throw ApiError.invalid(path, 'must be an integer');
  if (v < min || v > max) throw ApiError.invalid(path, `must be between ${min} and ${max}`);
  return v;
}

function optEnum<T extends string>(
  o: Obj,
  key: string,
  path: string,
  allowed: readonly T[],
): T | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw ApiError.invalid(path, `must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

function reqEnum<T extends string>(o: Obj, key: string, path: string, allowed: readonly T[]): T {
  if (o[key] === undefined || o[key] === null) throw ApiError.invalid(path, 'is required');
  return optEnum(o, key, path, allowed) as T;
}

function optIdList(o: Obj, key: string, path: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw ApiError.invalid(path, `must be an array, got ${typeName(v)}`);
  if (v.length > LIMITS.maxListLength) {
    throw ApiError.invalid(path, `must have at most ${LIMITS.maxListLength} entries`);
  }
  return v.map((x, i) => idString(x, `${path}[${i}]`));
}

/**
 * An ISO-8601 (RFC 3339) date-time with its offset: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or
 * ±HH:MM, a date that exists. Returned as given. Date.parse alone took "1" as a year, read a
 * time with no offset in the server's zone, rolled 2026-02-30 over to March 2, and took
 * free text after a date ("2026-12-07 10:00 GMT+0000 (hi)").
 */
const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

function optTimestamp(o: Obj, key: string, path: string): string | undefined {
  const v = optText(o, key, path);
  if (v === undefined) return undefined;
  const m = DATE_TIME.exec(v);
  const [y, mo, d, h, mi, s, oh, om] = (m ?? []).slice(1).map((x) => (x === undefined ? 0 : +x));
  const day = new Date(Date.UTC(y!, mo! - 1, d!));
  if (
    !m ||
    day.getUTCFullYear() !== y ||
    day.getUTCMonth() !== mo! - 1 ||
    day.getUTCDate() !== d ||
    h! > 23 ||
    mi! > 59 ||
    s! > 59 ||
    oh! > 23 ||
    om! > 59
  ) {
    throw ApiError.invalid(
      path,
      'must be an ISO-8601 date-time with its offset, e.g. 2026-01-24T10:30:00Z',
    );
  }
  return v;
}

function context(o: Obj): RequestContext | undefined {
  const c = optObject(o, 'context', 'context');
  if (!c) return undefined;
  const out: RequestContext = {};
  const device = optEnum<DeviceType>(c, 'device_type', 'context.device_type', DEVICE_TYPES);
  if (device !== undefined) out.device_type = device;
  const platform = optText(c, 'platform', 'context.platform');
  if (platform !== undefined) out.platform = platform;
  const ts = optTimestamp(c, 'timestamp', 'context.timestamp');
  if (ts !== undefined) out.timestamp = ts;
  const loc = optObject(c, 'location', 'context.location');
  if (loc) {
    out.location = {};
    const country = optText(loc, 'country', 'context.location.country');
    if (country !== undefined) out.location.country = country;
    const region = optText(loc, 'region', 'context.location.region');
    if (region !== undefined) out.location.region = region;
  }
  const session = optId(c, 'session_id', 'context.session_id');
  if (session !== undefined) out.session_id = session;
  return out;
}

function numItems(o: Obj): number {
  return (
    optNumber(o, 'num_items', 'num_items', LIMITS.minItems, LIMITS.maxItems, true) ??
    LIMITS.defaultItems
  );
}

/** POST /v1/recommendations. num_items defaults to 20, request_type to home_feed. */
export function validateRecommendationRequest(raw: unknown): RecommendationRequest {
  const o = requireObject(raw, 'body');
  const out: RecommendationRequest = {
    user_id: reqId(o, 'user_id', 'user_id'),
    request_type:
      optEnum<RequestType>(o, 'request_type', 'request_type', REQUEST_TYPES) ?? 'home_feed',
    num_items: numItems(o),
  };
  const ctx = context(o);
  if (ctx) out.context = ctx;
  const exclude = optIdList(o, 'exclude_items', 'exclude_items');
  if (exclude) out.exclude_items = exclude;
  const f = optObject(o, 'filters', 'filters');
  if (f) {
    out.filters = {};
    const cats = optIdList(f, 'categories', 'filters.categories');
    if (cats) out.filters.categories = cats;
    const q = optNumber(f, 'min_quality_score', 'filters.min_quality_score', 0, 1);
    if (q !== undefined) out.filters.min_quality_score = q;
  }
  const d = optObject(o, 'diversity_settings', 'diversity_settings');
  if (d) {
    out.diversity_settings = {};
    const cd = optNumber(d, 'category_diversity', 'diversity_settings.category_diversity', 0, 1);
    if (cd !== undefined) out.diversity_settings.category_diversity = cd;
    const cr = optNumber(d, 'creator_diversity', 'diversity_settings.creator_diversity', 0, 1);
    if (cr !== undefined) out.diversity_settings.creator_diversity = cr;
  }
  return out;
}

/** POST /v1/similar. similarity_type defaults to hybrid, num_items to 20. */
export function validateSimilarRequest(raw: unknown): SimilarRequest {
  const o = requireObject(raw, 'body');
  const out: SimilarRequest = {
    item_id: reqId(o, 'item_id', 'item_id'),
    num_items: numItems(o),
    similarity_type:
      optEnum<SimilarityType>(o, 'similarity_type', 'similarity_type', SIMILARITY_TYPES) ??
      'hybrid',
  };
  const user = optId(o, 'user_id', 'user_id');
  if (user !== undefined) out.user_id = user;
  const exclude = optIdList(o, 'exclude_items', 'exclude_items');
  if (exclude) out.exclude_items = exclude;
  return out;
}

function feedbackEvent(raw: unknown, path: string): FeedbackEvent {
  const e = requireObject(raw, path);
  const out: FeedbackEvent = {
    item_id: reqId(e, 'item_id', `${path}.item_id`),
    event_type: reqEnum<EventType>(e, 'event_type', `${path}.event_type`, EVENT_TYPES),
  };
  const ts = optTimestamp(e, 'timestamp', `${path}.timestamp`);
  if (ts !== undefined) out.timestamp = ts;
  // A week of watching in one event is certainly a client bug, not a measurement.
  const dur = optNumber(e, 'duration_seconds', `${path}.duration_seconds`, 0, 7 * 86400);
  if (dur !== undefined) out.duration_seconds = dur;
  const cr = optNumber(e, 'completion_rate', `${path}.completion_rate`, 0, 1);
  if (cr !== undefined) out.completion_rate = cr;
  const c = optObject(e, 'context', `${path}.context`);
  if (c) {
    out.context = {};
    const rid = optId(c, 'recommendation_id', `${path}.context.recommendation_id`);
    if (rid !== undefined) out.context.recommendation_id = rid;
    const pos = optNumber(c, 'position', `${path}.context.position`, 0, 100_000, true);
    if (pos !== undefined) out.context.position = pos;
    const surface = optText(c, 'surface', `${path}.context.surface`);
    if (surface !== undefined) out.context.surface = surface;
  }
  return out;
}

/** POST /v1/feedback: 1..1000 events for one user. */
export function validateFeedbackRequest(raw: unknown): FeedbackRequest {
  const o = requireObject(raw, 'body');
  const user_id = reqId(o, 'user_id', 'user_id');
  const events = o.events;
  if (events === undefined || events === null) throw ApiError.invalid('events', 'is required');
  if (!Array.isArray(events)) {
    throw ApiError.invalid('events', `must be an array, got ${typeName(events)}`);
  }
  if (events.length === 0) throw ApiError.invalid('events', 'must not be empty');
  if (events.length > LIMITS.maxEvents) {
    throw ApiError.invalid('events', `must have at most ${LIMITS.maxEvents} entries`);
  }
  return { user_id, events: events.map((e, i) => feedbackEvent(e, `events[${i}]`)) };
}

/** POST /v1/feedback/negative. */
export function validateNegativeFeedbackRequest(raw: unknown): NegativeFeedbackRequest {
  const o = requireObject(raw, 'body');
  const out: NegativeFeedbackRequest = {
    user_id: reqId(o, 'user_id', 'user_id'),
    item_id: reqId(o, 'item_id', 'item_id'),
    feedback_type: reqEnum<NegativeFeedbackType>(
      o,
      'feedback_type',
      'feedback_type',
      NEGATIVE_FEEDBACK_TYPES,
    ),
  };
  const reason = optText(o, 'reason', 'reason');
  if (reason !== undefined) out.reason = reason;
  return out;
}
