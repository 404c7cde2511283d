// The per-request part of a GetRecommendations answer (request_id and ResponseMetadata),
// written straight into the wire buffer in front of the item list's pre-encoded bytes.
//
// Why by hand: on a cache hit the item list is already encoded (proto.ts), so this head is
// the only serialization left per call, and protobufjs spends ~6 µs on it (fromObject builds
// message objects, the Writer a linked list of ops, then Buffer.concat copies the result
// once more behind the item list). Sizing first and writing once into one buffer costs
// about a fifth of that. The bytes are the same as protobufjs writes (fields in number
// order, map entries with key and value, int32 as a sign-extended varint), which
// test/grpc/head.test.ts checks against protobufjs itself.
//
// Field numbers: proto/recserve/v1/recommendation.proto, RecommendationResponse and
// ResponseMetadata. Change them together.
import type { RecommendationResponse } from '../../api/types.js';

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

function mapEntries(m: Record<string, number> | undefined): [string, number][] {
  return m ? Object.entries(m) : [];
}

function entrySize(key: string, valueSize: number): number {
  const body = strSize(key) + 1 + valueSize;
  return 1 + varintSize(body) + body;
}

/**
 * request_id + metadata of `res`, followed by `tail` (the encoded item list: field 2
 * entries), as one RecommendationResponse message.
 */
export function encodeRecommendationHead(res: RecommendationResponse, tail: Uint8Array): Buffer {
  const md: Meta = res.metadata;
  // protobufjs (int32) truncates as `| 0` does; the sizes below must see the same values.
  const sources = mapEntries(md.retrieval_sources).map(([k, v]): [string, number] => [k, v | 0]);
  const latency = mapEntries(md.latency_ms as Record<string, number>);

  let mdSize = 0;
  if (md.model_version != null) mdSize += strSize(md.model_version);
  if (md.experiment_id != null) mdSize += strSize(md.experiment_id);
  if (md.variant != null) mdSize += strSize(md.variant);
  for (const [k, v] of sources) mdSize += entrySize(k, int32Size(v));
  for (const [k] of latency) mdSize += entrySize(k, 8);
  if (md.cold_start != null) mdSize += 2;
  if (md.cache_hit != null) mdSize += 2;
  if (md.ranking_fallback != null) mdSize += 2;

  const headSize =
    (res.request_id != null ? strSize(res.request_id) : 0) + 1 + varintSize(mdSize) + mdSize;
  const buf = Buffer.allocUnsafe(headSize + tail.length);
  let pos = 0;
  if (res.request_id != null) pos = writeStr(buf, pos, TAG_REQUEST_ID, res.request_id);
  buf[pos++] = TAG_METADATA;
  pos = writeVarint(buf, pos, mdSize);
  if (md.model_version != null) pos = writeStr(buf, pos, TAG_MODEL_VERSION, md.model_version);
  if (md.experiment_id != null) pos = writeStr(buf, pos, TAG_EXPERIMENT_ID, md.experiment_id);
  if (md.variant != null) pos = writeStr(buf, pos, TAG_VARIANT, md.variant);
  for (const [k, v] of sources) {
    buf[pos++] = TAG_RETRIEVAL_SOURCES;
    pos = writeVarint(buf, pos, strSize(k) + 1 + int32Size(v));
    pos = writeStr(buf, pos, TAG_KEY, k);
    buf[pos++] = TAG_INT_VALUE;
    pos = writeInt32(buf, pos, v);
  }
  for (const [k, v] of latency) {
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
  buf.set(tail, pos);
  return buf;
}
