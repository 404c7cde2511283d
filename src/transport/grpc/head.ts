// GetRecommendations responses written by hand: the item list (once per cache entry on a
// cache hit, once per answer otherwise) and the per-request head (request_id and
// ResponseMetadata) written straight into one buffer in front of the list's bytes.
//
// Why by hand: protobufjs first builds message objects from plain ones (fromObject, after
// convert.ts built the wire-shaped objects), then its Writer records a linked list of ops
// and copies them out, and Buffer.concat copies the head once more in front of the list.
// Sizing first and writing once costs a fraction of that (bench:grpc's payload table:
// the `protobuf` row is this encoder). The bytes are exactly what protobufjs writes
// (fields in number order, map entries with key and value, int32 as a sign-extended
// varint, empty repeated fields left out), which test/grpc/head.test.ts checks against
// protobufjs itself; decoding is untouched (clients use protobufjs or any other stack).
//
// Field numbers: proto/recserve/v1/recommendation.proto, RecommendationResponse and
// ResponseMetadata. Change them together.
import type { Recommendation, RecommendationResponse } from '../../api/types.js';

type Meta = RecommendationResponse['metadata'];

// Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
const TAG_REQUEST_ID = (1 << 3) | 2;
const TAG_METADATA = (3 << 3) | 2;
const TAG_MODEL_VERSION = (1 << 3) | 2;
const TAG_EXPERIMENT_ID = (2 << 3) | 2;
const TAG_VARIANT = (3 << 3) | 2;
const TAG_RETRIEVAL_SOURCES = (4 << 3) | 2;
const TAG_LATENCY_MS = (5 << 3) | 2;
const TAG_COLD_START = (6 << 3) | 0;
const TAG_CACHE_HIT = (7 << 3) | 0;
const TAG_RANKING_FALLBACK = (8 << 3) | 0;
const TAG_DEGRADED = (9 << 3) | 2;
const TAG_KEY = (1 << 3) | 2;
const TAG_INT_VALUE = (2 << 3) | 0;
const TAG_DOUBLE_VALUE = (2 << 3) | 1;

/** Bytes of a varint holding the unsigned 32-bit value v. */
function varintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

/** Bytes of an int32 field value: negative numbers take 10 (sign-extended to 64 bits). */
function int32Size(v: number): number {
  return v < 0 ? 10 : varintSize(v);
}

/**
 * UTF-8 length of s. The head's strings are short and ASCII (ids, stage and source names):
 * a JS loop over them beats a call into C++ (Buffer.byteLength / buf.write) per string.
 */
function utf8Length(s: string): number {
  if (s.length > 64) return Buffer.byteLength(s);
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return Buffer.byteLength(s);
  return s.length;
}

function strSize(s: string): number {
  const n = utf8Length(s);
  return 1 + varintSize(n) + n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v > 0x7f) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[pos++] = v;
  return pos;
}

function writeInt32(buf: Buffer, pos: number, v: number): number {
  if (v >= 0) return writeVarint(buf, pos, v);
  // Two's complement over 64 bits: the low 32 bits, then all ones above them.
  let lo = v >>> 0;
  for (let i = 0; i < 4; i++) {
    buf[pos++] = (lo & 0x7f) | 0x80;
    lo >>>= 7;
  }
  buf[pos++] = (lo & 0x0f) | 0x70 | 0x80; // bits 28..31, then 32..34 set
  for (let i = 0; i < 4; i++) buf[pos++] = 0xff;
  buf[pos++] = 0x01;
  return pos;
}

function writeStr(buf: Buffer, pos: number, tag: number, s: string): number {
  buf[pos++] = tag;
  const n = utf8Length(s);
  pos = writeVarint(buf, pos, n);
  if (n !== s.length) return pos + buf.write(s, pos, 'utf8');
  for (let i = 0; i < n; i++) buf[pos++] = s.charCodeAt(i);
  return pos;
}

// Maps are walked with for-in (own enumerable keys of plain objects, in Object.entries'
// order) rather than Object.entries: no pair arrays per call on the cache-hit path.
const NO_MAP: Record<string, number> = {};

function entrySize(key: string, valueSize: number): number {
  const body = strSize(key) + 1 + valueSize;
  return 1 + varintSize(body) + body;
}

// Recommendation (field 2 of the response) and its sub-messages.
const TAG_RECOMMENDATION = (2 << 3) | 2;
const TAG_ITEM_ID = (1 << 3) | 2;
const TAG_SCORE = (2 << 3) | 1;
const TAG_RANK = (3 << 3) | 0;
const TAG_EXPLANATION = (4 << 3) | 2;
const TAG_ITEM_METADATA = (5 << 3) | 2;
const TAG_REASON = (1 << 3) | 2;
const TAG_SOURCE_ITEM = (2 << 3) | 2;
const TAG_TITLE = (1 << 3) | 2;
const TAG_CATEGORY = (2 << 3) | 2;
const TAG_CREATOR_ID = (3 << 3) | 2;
const TAG_ATTRIBUTE = (4 << 3) | 2;
const TAG_STRING_VALUE = (2 << 3) | 2;

const TYPED_METADATA = new Set(['title', 'categories', 'creator_id']);

/** Sizes found by the first pass, so the second writes without measuring again. */
interface ItemPlan {
  explanation: number;
  metadata: number;
  total: number;
  /** metadata keys beyond the typed ones, values as strings (as convert.ts maps them). */
  attributes: [string, string][] | undefined;
}

function planItem(x: Recommendation): ItemPlan {
  let explanation = -1;
  const ex = x.explanation;
  if (ex != null) {
    explanation = 0;
    if (ex.reason != null) explanation += strSize(String(ex.reason));
    if (ex.source_items) for (const s of ex.source_items) explanation += strSize(String(s));
  }
  let metadata = 0;
  let attributes: [string, string][] | undefined;
  const m = x.metadata;
  if (m) {
    if (typeof m.title === 'string') metadata += strSize(m.title);
    if (Array.isArray(m.categories)) for (const c of m.categories) metadata += strSize(String(c));
    if (typeof m.creator_id === 'string') metadata += strSize(m.creator_id);
    for (const k in m) {
      const v = m[k];
      if (v === undefined || TYPED_METADATA.has(k)) continue;
      const sv = typeof v === 'string' ? v : JSON.stringify(v);
      (attributes ??= []).push([k, sv]);
      const body = strSize(k) + strSize(sv);
      metadata += 1 + varintSize(body) + body;
    }
  }
  let total = 1 + varintSize(metadata) + metadata;
  if (x.item_id != null) total += strSize(String(x.item_id));
  if (x.score != null) total += 9;
  if (x.rank != null) total += 1 + int32Size(x.rank | 0);
  if (explanation >= 0) total += 1 + varintSize(explanation) + explanation;
  return { explanation, metadata, total, attributes };
}

/**
 * The item list as field-2 entries of a RecommendationResponse (what protobufjs writes for
 * `{ recommendations: recommendationsToWire(recs) }`), without building the wire objects.
 */
export function encodeRecommendations(recs: readonly Recommendation[]): Buffer {
  const plans = new Array<ItemPlan>(recs.length);
  let size = 0;
  for (let i = 0; i < recs.length; i++) {
    const p = planItem(recs[i]!);
    plans[i] = p;
    size += 1 + varintSize(p.total) + p.total;
  }
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  for (let i = 0; i < recs.length; i++) {
    const x = recs[i]!;
    const p = plans[i]!;
    buf[pos++] = TAG_RECOMMENDATION;
    pos = writeVarint(buf, pos, p.total);
    if (x.item_id != null) pos = writeStr(buf, pos, TAG_ITEM_ID, String(x.item_id));
    if (x.score != null) {
      buf[pos++] = TAG_SCORE;
      pos = buf.writeDoubleLE(Number(x.score), pos);
    }
    if (x.rank != null) {
      buf[pos++] = TAG_RANK;
      pos = writeInt32(buf, pos, x.rank | 0);
    }
    const ex = x.explanation;
    if (p.explanation >= 0) {
      buf[pos++] = TAG_EXPLANATION;
      pos = writeVarint(buf, pos, p.explanation);
      if (ex.reason != null) pos = writeStr(buf, pos, TAG_REASON, String(ex.reason));
      if (ex.source_items) {
        for (const s of ex.source_items) pos = writeStr(buf, pos, TAG_SOURCE_ITEM, String(s));
      }
    }
    buf[pos++] = TAG_ITEM_METADATA;
    pos = writeVarint(buf, pos, p.metadata);
    const m = x.metadata;
    if (m) {
      if (typeof m.title === 'string') pos = writeStr(buf, pos, TAG_TITLE, m.title);
      if (Array.isArray(m.categories)) {
        for (const c of m.categories) pos = writeStr(buf, pos, TAG_CATEGORY, String(c));
      }
      if (typeof m.creator_id === 'string') pos = writeStr(buf, pos, TAG_CREATOR_ID, m.creator_id);
      if (p.attributes) {
        for (const [k, v] of p.attributes) {
          buf[pos++] = TAG_ATTRIBUTE;
          pos = writeVarint(buf, pos, strSize(k) + strSize(v));
          pos = writeStr(buf, pos, TAG_KEY, k);
          pos = writeStr(buf, pos, TAG_STRING_VALUE, v);
        }
      }
    }
  }
  return buf;
}

/**
 * request_id + metadata of `res`, followed by `tail` (the encoded item list: field 2
 * entries), as one RecommendationResponse message, after `gap` bytes left unwritten at the
 * front (the fast path writes its gRPC frame prefix there instead of copying the message).
 */
export function encodeRecommendationHead(
  res: RecommendationResponse,
  tail: Uint8Array,
  gap = 0,
): Buffer {
  const md: Meta = res.metadata;
  // protobufjs (int32) truncates as `| 0` does; the sizes below must see the same values.
  const sources = md.retrieval_sources ?? NO_MAP;
  const latency = (md.latency_ms as Record<string, number> | undefined) ?? NO_MAP;

  let mdSize = 0;
  if (md.model_version != null) mdSize += strSize(md.model_version);
  if (md.experiment_id != null) mdSize += strSize(md.experiment_id);
  if (md.variant != null) mdSize += strSize(md.variant);
  for (const k in sources) mdSize += entrySize(k, int32Size(sources[k]! | 0));
  for (const k in latency) mdSize += entrySize(k, 8);
  if (md.cold_start != null) mdSize += 2;
  if (md.cache_hit != null) mdSize += 2;
  if (md.ranking_fallback != null) mdSize += 2;
  if (md.degraded != null) mdSize += strSize(md.degraded);

  const headSize =
    (res.request_id != null ? strSize(res.request_id) : 0) + 1 + varintSize(mdSize) + mdSize;
  const buf = Buffer.allocUnsafe(gap + headSize + tail.length);
  let pos = gap;
  if (res.request_id != null) pos = writeStr(buf, pos, TAG_REQUEST_ID, res.request_id);
  buf[pos++] = TAG_METADATA;
  pos = writeVarint(buf, pos, mdSize);
  if (md.model_version != null) pos = writeStr(buf, pos, TAG_MODEL_VERSION, md.model_version);
  if (md.experiment_id != null) pos = writeStr(buf, pos, TAG_EXPERIMENT_ID, md.experiment_id);
  if (md.variant != null) pos = writeStr(buf, pos, TAG_VARIANT, md.variant);
  for (const k in sources) {
    const v = sources[k]! | 0;
    buf[pos++] = TAG_RETRIEVAL_SOURCES;
    pos = writeVarint(buf, pos, strSize(k) + 1 + int32Size(v));
    pos = writeStr(buf, pos, TAG_KEY, k);
    buf[pos++] = TAG_INT_VALUE;
    pos = writeInt32(buf, pos, v);
  }
  for (const k in latency) {
    const v = latency[k];
    buf[pos++] = TAG_LATENCY_MS;
    pos = writeVarint(buf, pos, strSize(k) + 1 + 8);
    pos = writeStr(buf, pos, TAG_KEY, k);
    buf[pos++] = TAG_DOUBLE_VALUE;
    pos = buf.writeDoubleLE(Number(v), pos);
  }
  if (md.cold_start != null) {
    buf[pos++] = TAG_COLD_START;
    buf[pos++] = md.cold_start ? 1 : 0;
  }
  if (md.cache_hit != null) {
    buf[pos++] = TAG_CACHE_HIT;
    buf[pos++] = md.cache_hit ? 1 : 0;
  }
  if (md.ranking_fallback != null) {
    buf[pos++] = TAG_RANKING_FALLBACK;
    buf[pos++] = md.ranking_fallback ? 1 : 0;
  }
  if (md.degraded != null) pos = writeStr(buf, pos, TAG_DEGRADED, md.degraded);
  buf.set(tail, pos);
  return buf;
}
