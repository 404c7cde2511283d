// FlatBuffers ↔ the JSON contract's objects, driven by the table descriptors of schema.ts.
//
// Decoding yields exactly the object JSON.parse would have produced for the same request
// (absent fields absent, snake_case names), so the HTTP front end runs the same validation
// on it. Decoding never trusts the bytes: the file identifier must match, and every offset,
// string and vector is bounds-checked against the buffer, so a truncated or hostile body is
// a malformed_body error, never a garbage read or a huge allocation.
//
// Encoding takes the contract's objects; a value the schema cannot carry (a string where an
// int goes, 2.5 items) is an invalid_argument error naming the field.
import { Builder, ByteBuffer } from 'flatbuffers';
import { ApiError } from '../../api/errors.js';
import type {
  RecommendationRequest,
  RecommendationResponse,
  SimilarRequest,
  SimilarResponse,
} from '../../api/types.js';
import * as S from './schema.js';
import type { FieldDesc, TableDesc } from './schema.js';

type Obj = Record<string, unknown>;

// ---- encode ---------------------------------------------------------------------------

function bad(path: string, message: string): ApiError {
  return ApiError.invalid(path, message);
}

// Builder.createString allocates a fresh Uint8Array per string (TextEncoder.encode); encoding
// into one scratch buffer and handing the builder a view of it halves the cost of a
// response, which is mostly short strings.
const encoder = new TextEncoder();
const scratch = new Uint8Array(16 * 1024);

function putString(b: Builder, s: string): number {
  if (s.length * 3 > scratch.length) return b.createString(s);
  const { written } = encoder.encodeInto(s, scratch);
  return b.createString(scratch.subarray(0, written));
}

function encodeStrings(b: Builder, v: unknown, path: string): number {
  if (!Array.isArray(v)) throw bad(path, 'must be an array');
  const offs = v.map((s, i) => {
    if (typeof s !== 'string') throw bad(`${path}[${i}]`, 'must be a string');
    return putString(b, s);
  });
  return offsetVector(b, offs);
}

function offsetVector(b: Builder, offs: number[]): number {
  b.startVector(4, offs.length, 4);
  for (let i = offs.length - 1; i >= 0; i--) b.addOffset(offs[i]!);
  return b.endVector();
}

function encodeMap(
  b: Builder,
  entries: [string, unknown][],
  kind: 'string' | 'double',
  path: string,
): number {
  const desc = kind === 'string' ? S.StringEntry : S.NumberEntry;
  const offs = entries.map(([k, v]) => {
    let value: unknown = v;
    if (kind === 'string' && typeof v !== 'string') value = JSON.stringify(v);
    return encodeTable(b, desc, { key: k, value }, `${path}.${k}`);
  });
  return offsetVector(b, offs);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Field names of each table, for collecting a `rest` map's keys (built once per table). */
const knownNames = new WeakMap<TableDesc, Set<string>>();
function namesOf(desc: TableDesc): Set<string> {
  let s = knownNames.get(desc);
  if (!s) knownNames.set(desc, (s = new Set(desc.fields.map((f) => f.name))));
  return s;
}

// Paths ("recommendations[3].metadata.title") are only built when a value is refused: on
// the hot path (encoding a server response) no string is made that is not written.
const at = (path: string, name: string): string => (path ? `${path}.${name}` : name);

/**
 * Encodes `obj` as table `desc`. `preset` gives offsets of children already in the buffer
 * (by slot); those fields of `obj` are not looked at.
 */
function encodeTable(
  b: Builder,
  desc: TableDesc,
  obj: unknown,
  path: string,
  preset?: readonly (number | undefined)[],
): number {
  if (!isObj(obj)) throw bad(path || 'body', 'must be an object');
  const fields = desc.fields;
  // Children first: FlatBuffers builds back to front, so no table may be open meanwhile.
  const offs: number[] = [];
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const pre = preset?.[i];
    if (pre !== undefined) {
      offs.push(pre);
      continue;
    }
    const v = obj[f.name];
    const ty = f.type;
    let off = 0;
    if (f.rest) {
      const known = namesOf(desc);
      const entries: [string, unknown][] = [];
      for (const k in obj) {
        if (!known.has(k) && obj[k] !== undefined) entries.push([k, obj[k]]);
      }
      if (isObj(v)) entries.push(...Object.entries(v));
      if (entries.length > 0)
        off = encodeMap(b, entries, (ty as { map: 'string' }).map, at(path, f.name));
    } else if (v !== undefined && v !== null) {
      if (ty === 'string') {
        if (typeof v !== 'string') throw bad(at(path, f.name), 'must be a string');
        off = putString(b, v);
      } else if (ty === 'strings') {
        off = encodeStrings(b, v, at(path, f.name));
      } else if (typeof ty === 'object') {
        if ('table' in ty) off = encodeTable(b, ty.table, v, at(path, f.name));
        else if ('tables' in ty) {
          if (!Array.isArray(v)) throw bad(at(path, f.name), 'must be an array');
          const list = new Array<number>(v.length);
          for (let j = 0; j < v.length; j++) {
            list[j] = encodeTable(b, ty.tables, v[j], `${at(path, f.name)}[${j}]`);
          }
          off = offsetVector(b, list);
        } else {
          if (!isObj(v)) throw bad(at(path, f.name), 'must be an object');
          off = encodeMap(b, Object.entries(v), ty.map, at(path, f.name));
        }
      }
    }
    offs.push(off);
  }
  b.startObject(fields.length);
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (offs[i] !== 0) {
      b.addFieldOffset(i, offs[i]!, 0);
      continue;
    }
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    // `= null` scalars are always written when present; others skip their default (0).
    const dflt = f.optional ? null : 0;
    if (f.type === 'int') {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) {
        throw bad(at(path, f.name), 'must be an integer');
      }
      b.addFieldInt32(i, v, dflt);
    } else if (f.type === 'double') {
      if (typeof v !== 'number') throw bad(at(path, f.name), 'must be a number');
      b.addFieldFloat64(i, v, dflt);
    } else if (f.type === 'bool') {
      if (typeof v !== 'boolean') throw bad(at(path, f.name), 'must be a boolean');
      b.addFieldInt8(i, v ? 1 : 0, dflt);
    }
  }
  return b.endObject();
}

function encodeRoot(desc: TableDesc, value: unknown, sizeHint: number): Uint8Array {
  const b = new Builder(sizeHint);
  const root = encodeTable(b, desc, value, '');
  b.finish(root, S.FILE_IDENTIFIER);
  return b.asUint8Array();
}

// ---- decode ---------------------------------------------------------------------------

class Reader {
  readonly bb: ByteBuffer;
  readonly cap: number;
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(bytes: Uint8Array) {
    this.bb = new ByteBuffer(bytes);
    this.cap = bytes.length;
  }

  check(pos: number, size: number, what: string): void {
    if (!(pos >= 0 && pos + size <= this.cap)) {
      throw new ApiError('malformed_body', `FlatBuffers body is truncated or corrupt (${what})`);
    }
  }

  /** Field slot i of the table at `pos` → absolute position of its value, or 0 if absent. */
  field(pos: number, i: number): number {
    this.check(pos, 4, 'table');
    const vtable = pos - this.bb.readInt32(pos);
    this.check(vtable, 4, 'vtable');
    const vtSize = this.bb.readUint16(vtable);
    const slot = 4 + 2 * i;
    if (slot >= vtSize) return 0;
    this.check(vtable, vtSize, 'vtable');
    const off = this.bb.readUint16(vtable + slot);
    return off === 0 ? 0 : pos + off;
  }

  indirect(at: number): number {
    this.check(at, 4, 'offset');
    return at + this.bb.readUint32(at);
  }

  string(at: number): string {
    const start = this.indirect(at);
    this.check(start, 4, 'string');
    const len = this.bb.readUint32(start);
    this.check(start + 4, len, 'string');
    try {
      return this.utf8.decode(this.bb.bytes().subarray(start + 4, start + 4 + len));
    } catch {
      throw new ApiError('malformed_body', 'FlatBuffers body holds a string that is not UTF-8');
    }
  }

  /** Vector at `at` → [first element position, length], elements 4-byte offsets. */
  vector(at: number): [number, number] {
    const start = this.indirect(at);
    this.check(start, 4, 'vector');
    const len = this.bb.readUint32(start);
    this.check(start + 4, len * 4, 'vector');
    return [start + 4, len];
  }
}

function decodeTable(r: Reader, desc: TableDesc, pos: number): Obj {
  const out: Obj = {};
  const fields = desc.fields;
  for (let i = 0; i < fields.length; i++) {
    const f: FieldDesc = fields[i]!;
    const at = r.field(pos, i);
    const ty = f.type;
    if (at === 0) {
      if (f.nullable) out[f.name] = null;
      else if (!f.optional && (ty === 'int' || ty === 'double')) out[f.name] = 0;
      else if (!f.optional && ty === 'bool') out[f.name] = false;
      continue;
    }
    if (ty === 'string') out[f.name] = r.string(at);
    else if (ty === 'int') {
      r.check(at, 4, f.name);
      out[f.name] = r.bb.readInt32(at);
    } else if (ty === 'double') {
      r.check(at, 8, f.name);
      out[f.name] = r.bb.readFloat64(at);
    } else if (ty === 'bool') {
      r.check(at, 1, f.name);
      out[f.name] = r.bb.readInt8(at) !== 0;
    } else if (ty === 'strings') {
      const [start, n] = r.vector(at);
      const list = new Array<string>(n);
      for (let j = 0; j < n; j++) list[j] = r.string(start + 4 * j);
      out[f.name] = list;
    } else if ('table' in ty) {
      out[f.name] = decodeTable(r, ty.table, r.indirect(at));
    } else if ('tables' in ty) {
      const [start, n] = r.vector(at);
      const list = new Array<Obj>(n);
      for (let j = 0; j < n; j++) list[j] = decodeTable(r, ty.tables, r.indirect(start + 4 * j));
      out[f.name] = list;
    } else {
      const [start, n] = r.vector(at);
      const entryDesc = ty.map === 'string' ? S.StringEntry : S.NumberEntry;
      const map: Obj = f.rest ? out : {};
      for (let j = 0; j < n; j++) {
        const e = decodeTable(r, entryDesc, r.indirect(start + 4 * j));
        if (typeof e.key === 'string') map[e.key] = e.value;
      }
      if (!f.rest) out[f.name] = map;
    }
  }
  return out;
}

function decodeRoot(desc: TableDesc, bytes: Uint8Array): Obj {
  if (bytes.length < 8) {
    throw new ApiError('malformed_body', 'FlatBuffers body is too short to hold a table');
  }
  const r = new Reader(bytes);
  if (!r.bb.__has_identifier(S.FILE_IDENTIFIER)) {
    throw new ApiError(
      'malformed_body',
      `body is not a recserve FlatBuffer (file identifier '${S.FILE_IDENTIFIER}' missing)`,
    );
  }
  return decodeTable(r, desc, r.indirect(0));
}

// ---- the four payloads ----------------------------------------------------------------

export function encodeRecommendationRequest(req: RecommendationRequest): Uint8Array {
  return encodeRoot(S.RecommendationRequest, req, 256);
}
/** Raw, JSON-shaped: run api/validate.ts on it as on a JSON body. */
export function decodeRecommendationRequest(bytes: Uint8Array): unknown {
  return decodeRoot(S.RecommendationRequest, bytes);
}

// ---- cached answers: the item list encoded once ---------------------------------------
//
// A cache hit shares its item list (the same array) with every other hit on that entry
// (pipeline/cache.ts), and the list is nearly all of a response's bytes. FlatBuffers
// addresses everything relative to the END of the buffer and builds back to front, so a
// subtree built first is a byte suffix that stays valid when copied to the end of another
// builder: the list is encoded once per cache entry and each hit builds only the head
// (request id, metadata) in front of a copy of it. This reaches into Builder's fields
// (bb, space, minalign: stable across flatbuffers releases, but not public API), so it is
// checked once and the plain encoder is used if they are not there.

interface BuilderInternals {
  bb: ByteBuffer;
  space: number;
  minalign: number;
}

interface EncodedItems {
  /** The builder's bytes from `space` to the end: the list and everything it points at. */
  tail: Uint8Array;
  /** The list vector's offset (from the end of the buffer). */
  offset: number;
  minalign: number;
}

const RECS_SLOT = S.RecommendationResponse.fields.findIndex((f) => f.name === 'recommendations');
const encodedItems = new WeakMap<object, EncodedItems>();

function internals(b: Builder): BuilderInternals | undefined {
  const x = b as unknown as Partial<BuilderInternals>;
  return x.bb instanceof ByteBuffer && typeof x.space === 'number' && typeof x.minalign === 'number'
    ? (x as BuilderInternals)
    : undefined;
}

/** Whether this flatbuffers release has the Builder fields the splice needs (tests check it). */
export function splicesCachedItems(): boolean {
  return internals(new Builder(16)) !== undefined;
}

function itemsOf(res: RecommendationResponse): EncodedItems | undefined {
  let e = encodedItems.get(res.recommendations);
  if (e) return e;
  const b = new Builder(128 * (res.recommendations.length + 1));
  const desc = (S.RecommendationResponse.fields[RECS_SLOT]!.type as { tables: TableDesc }).tables;
  const offs = res.recommendations.map((x, j) => encodeTable(b, desc, x, `recommendations[${j}]`));
  const offset = offsetVector(b, offs);
  const bi = internals(b);
  if (!bi) return undefined;
  e = { tail: bi.bb.bytes().slice(bi.space), offset, minalign: bi.minalign };
  encodedItems.set(res.recommendations, e);
  return e;
}

export function encodeRecommendationResponse(res: RecommendationResponse): Uint8Array {
  const items = res.metadata?.cache_hit === true ? itemsOf(res) : undefined;
  if (!items) {
    return encodeRoot(S.RecommendationResponse, res, 128 * (res.recommendations.length + 2));
  }
  const b = new Builder(items.tail.length + 512);
  const bi = internals(b)!;
  const cap = bi.bb.capacity();
  bi.bb.bytes().set(items.tail, cap - items.tail.length);
  bi.space = cap - items.tail.length;
  bi.minalign = Math.max(bi.minalign, items.minalign);
  const preset: (number | undefined)[] = [];
  preset[RECS_SLOT] = items.offset;
  b.finish(encodeTable(b, S.RecommendationResponse, res, '', preset), S.FILE_IDENTIFIER);
  return b.asUint8Array();
}
export function decodeRecommendationResponse(bytes: Uint8Array): RecommendationResponse {
  return decodeRoot(S.RecommendationResponse, bytes) as unknown as RecommendationResponse;
}

export function encodeSimilarRequest(req: SimilarRequest): Uint8Array {
  return encodeRoot(S.SimilarRequest, req, 256);
}
export function decodeSimilarRequest(bytes: Uint8Array): unknown {
  return decodeRoot(S.SimilarRequest, bytes);
}

export function encodeSimilarResponse(res: SimilarResponse): Uint8Array {
  return encodeRoot(S.SimilarResponse, res, 96 * (res.similar_items.length + 2));
}
export function decodeSimilarResponse(bytes: Uint8Array): SimilarResponse {
  return decodeRoot(S.SimilarResponse, bytes) as unknown as SimilarResponse;
}
