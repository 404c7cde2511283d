// The recommendation cache's hot path. The store (memory or Redis) holds each answer as a
// JSON string and stays the source of truth (TTL, invalidation on feedback). This module
// keeps, per key, the parsed answer and its pre-encoded recommendations next to the exact
// string it came from: when the store hands back that same string, a hit costs neither
// JSON.parse nor JSON.stringify of the item list — only the small per-request metadata is
// encoded. A different string (another replica wrote it, or it expired and was recomputed)
// is parsed once and replaces the entry. Entries are made on the first hit, not on write:
// most writes under uncached traffic are never read again, and parsing them eagerly would
// only feed the garbage collector.
import type { RecommendationResponse } from '../api/types.js';

/**
 * A response may carry its JSON encoding (a string, its UTF-8 bytes, or a function that
 * makes them on demand) under this symbol; the HTTP JSON codec sends it as is. Other codecs
 * (FlatBuffers, gRPC) ignore it and encode the object's fields. Symbol.for: the codec reads
 * it without importing the pipeline.
 */
export const PRE_ENCODED_JSON: unique symbol = Symbol.for('recserve.preEncodedJson') as never;

interface HotEntry {
  raw: string;
  resp: RecommendationResponse;
  /**
   * `{"request_id":` and the id are written per request; this is everything between them and
   * the latency, already UTF-8: a hit copies these bytes instead of building and encoding a
   * multi-kilobyte string again.
   */
  middle: Buffer;
  /** The stored metadata without latency_ms / cache_hit, and its keys in order. */
  meta: Record<string, unknown>;
  metaKeys: string[];
}

function entryOf(raw: string): HotEntry {
  const resp = JSON.parse(raw) as RecommendationResponse;
  const { latency_ms: _latency, cache_hit: _hit, ...meta } = resp.metadata;
  const metaJson = JSON.stringify(meta);
  // The metadata object minus its closing brace; cache_hit and latency_ms are appended.
  const metaOpen = metaJson.length > 2 ? metaJson.slice(0, -1) + ',' : '{';
  return {
    raw,
    resp,
    meta,
    metaKeys: Object.keys(meta),
    middle: Buffer.from(
      `,"recommendations":${JSON.stringify(resp.recommendations)},"metadata":${metaOpen}"cache_hit":true,"latency_ms":`,
    ),
  };
}

export class HotAnswers {
  private readonly entries = new Map<string, HotEntry>();

  constructor(private readonly maxEntries = 10_000) {}

  /** The cached answer for `raw` (the store's value), re-stamped for this request. */
  answer(
    key: string,
    raw: string,
    requestId: string,
    latency: RecommendationResponse['metadata']['latency_ms'],
  ): RecommendationResponse {
    let e = this.entries.get(key);
    if (!e || e.raw !== raw) {
      e = entryOf(raw);
      this.entries.delete(key);
      this.entries.set(key, e);
      if (this.entries.size > this.maxEntries) {
        this.entries.delete(this.entries.keys().next().value as string);
      }
    }
    // Copied key by key: an object spread with extra properties cost ~1 µs per hit.
    const metadata: Record<string, unknown> = {};
    for (let i = 0; i < e.metaKeys.length; i++) {
      const k = e.metaKeys[i]!;
      metadata[k] = e.meta[k];
    }
    metadata.cache_hit = true;
    metadata.latency_ms = latency;
    const out: RecommendationResponse = {
      request_id: requestId,
      recommendations: e.resp.recommendations,
      metadata: metadata as unknown as RecommendationResponse['metadata'],
    };
    // The bytes are built only if the HTTP JSON codec asks: gRPC and FlatBuffers answers
    // encode the object, and building ~1-2 KB per hit for them was pure garbage.
    Object.defineProperty(out, PRE_ENCODED_JSON, {
      value: () => encodeHit(e, requestId, latency),
      enumerable: false,
    });
    return out;
  }
}

/** A hit's JSON as UTF-8: the id and latency written around a memcpy of the entry's middle. */
function encodeHit(
  e: HotEntry,
  requestId: string,
  latency: RecommendationResponse['metadata']['latency_ms'],
): Uint8Array {
  const head = `{"request_id":${JSON.stringify(requestId)}`;
  const tail = `${latencyJson(latency)}}}`;
  const headBytes = Buffer.byteLength(head);
  // One buffer (small ones come from Node's pool), filled by two short writes and a memcpy.
  const bytes = Buffer.allocUnsafe(headBytes + e.middle.length + Buffer.byteLength(tail));
  bytes.write(head, 0);
  e.middle.copy(bytes, headBytes);
  bytes.write(tail, headBytes + e.middle.length);
  return bytes;
}

/** JSON of a flat record of numbers (latency_ms) without the generic serialiser. */
function latencyJson(l: Record<string, number>): string {
  let out = '{';
  for (const k in l) {
    const v = l[k]!;
    // Keys are our own stage names (no escaping needed); non-finite numbers are null in JSON.
    out += `${out.length > 1 ? ',' : ''}"${k}":${Number.isFinite(v) ? v : 'null'}`;
  }
  return out + '}';
}
