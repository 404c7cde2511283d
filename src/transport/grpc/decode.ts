// The server's request decoder: protobuf bytes → the JSON contract's object, driven by the
// message descriptors of the loaded .proto, checking every byte it reads.
//
// Why not protobufjs's decoder (what grpc-js would call): it is lenient where recserve must
// not be, and it throws where recserve must answer.
// - It reads a string whose declared length runs past the message as the bytes that are
//   there (`0a 50 61` is user "a"), and decodes invalid UTF-8 to U+FFFD, so different raw ids
//   collapse into one. HTTP refuses both (malformed_body); so does this decoder.
// - It reads a field by its number whatever the wire type says (num_items sent
//   length-delimited is read as a varint, and what follows as garbage).
// - It throws on bad bytes, which grpc-js answers INTERNAL "Error deserializing request",
//   without the recserve-error-* trailers. This decoder never throws (see requestDecoder).
//
// What it yields for valid bytes is what protobufjs's decode + toObject yield under
// LOADER_OPTIONS (proto.ts): fields as named in the .proto, absent fields absent, int32 as
// numbers, repeated fields only when present (test/grpc/decode.test.ts compares the two).
// One deliberate difference: a message field sent twice is merged, as the protobuf spec
// says, where protobufjs keeps the last one.
//
// It is one pass, like protobufjs's, and builds the plain object directly instead of a
// message instance then copied by toObject; the UTF-8 check runs over the string fields'
// bytes only, and ASCII (what ids are) is checked by a byte loop, not a decoder call.
import type { PackageDefinition } from '@grpc/proto-loader';
import { ApiError, toApiError } from '../../api/errors.js';

/** What a field holds, so what reads it. */
const STRING = 0;
const INT32 = 1;
const DOUBLE = 2;
const MESSAGE = 3;
type Kind = typeof STRING | typeof INT32 | typeof DOUBLE | typeof MESSAGE;

/** Wire types (the protobuf encoding spec). */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

const WIRE_NAMES = ['varint', 'i64', 'length-delimited', 'start-group', 'end-group', 'i32'];

interface FieldSpec {
  readonly name: string;
  readonly kind: Kind;
  readonly repeated: boolean;
  /** The wire type this field's values must arrive with. */
  readonly wireType: number;
  readonly message: MessageSpec | undefined;
}

interface MessageSpec {
  readonly name: string;
  /** Indexed by field number; holes for numbers the message does not use. */
  readonly fields: (FieldSpec | undefined)[];
}

/**
 * As protobuf's C++ and protobufjs: messages (and unknown groups) nested deeper than this
 * are refused. Today's requests nest 3 deep; the bound keeps a recursive message, should
 * one be added, from taking the stack.
 */
const MAX_DEPTH = 100;

type Obj = Record<string, unknown>;

/**
 * A malformed message: `field` is the path of the field being read, relative to the message
 * being decoded; each enclosing message prefixes its own part as the error passes through.
 */
class Malformed {
  constructor(
    readonly what: string,
    public field: string | undefined,
  ) {}
}

/**
 * Strings are decoded by hand only while ASCII; the rest goes through the WHATWG decoder,
 * which refuses what is not UTF-8 (surrogates spelled in UTF-8 included). ignoreBOM keeps a
 * leading U+FEFF in the string, as protobufjs does, instead of dropping it.
 */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class WireReader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  /** A tag or a length: at most 5 bytes, at most 2^32 - 1. */
  uint32(end: number, field: string | undefined): number {
    const buf = this.buf;
    let pos = this.pos;
    // Nearly every tag and length is one byte.
    if (pos < end && buf[pos]! < 0x80) {
      this.pos = pos + 1;
      return buf[pos]!;
    }
    let v = 0;
    for (let scale = 1; scale <= 2 ** 28; scale *= 128) {
      if (pos >= end) throw new Malformed('a varint runs past the end of the message', field);
      const b = buf[pos++]!;
      v += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (v > 0xffffffff) break;
        this.pos = pos;
        return v;
      }
    }
    throw new Malformed('a tag or length is longer than 32 bits', field);
  }

  /** A length, checked to fit before `end`: the end of the value it announces. */
  limit(end: number, field: string | undefined): number {
    const n = this.uint32(end, field);
    const left = end - this.pos;
    if (n > left) {
      throw new Malformed(`its ${n} bytes run past the end of the message (${left} left)`, field);
    }
    return this.pos + n;
  }

  /**
   * An int32 as protobuf reads it: a varint of up to 10 bytes (negative values are sent
   * sign-extended to 64 bits), of which the low 32 bits are the value.
   */
  int32(end: number, field: string | undefined): number {
    const buf = this.buf;
    let pos = this.pos;
    let v = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (pos >= end) throw new Malformed('the varint runs past the end of the message', field);
      const b = buf[pos++]!;
      // Bits from the 5th byte on fall off the 32-bit value (<< is modulo 32 bits).
      if (shift < 32) v |= (b & 0x7f) << shift;
      if (b < 0x80) {
        this.pos = pos;
        return v;
      }
    }
    throw new Malformed('a varint is longer than 10 bytes', field);
  }

  /** Advances past `n` fixed-size bytes that must lie before `end`; returns where they start. */
  take(n: number, end: number, field: string | undefined): number {
    const start = this.pos;
    if (n > end - start) {
      throw new Malformed(`needs ${n} bytes, ${end - start} are left in the message`, field);
    }
    this.pos = start + n;
    return start;
  }

  string(end: number, field: string): string {
    const stop = this.limit(end, field);
    const start = this.pos;
    this.pos = stop;
    const buf = this.buf;
    for (let i = start; i < stop; i++) {
      if (buf[i]! >= 0x80) {
        try {
          return utf8.decode(buf.subarray(start, stop));
        } catch {
          throw new Malformed('is not valid UTF-8', field);
        }
      }
    }
    return buf.toString('latin1', start, stop);
  }

  /** Skips the value of an unknown field: `tag` was just read. */
  skip(tag: number, end: number, field: string | undefined): void {
    switch (tag & 7) {
      case VARINT:
        this.int32(end, field);
        return;
      case I64:
        this.take(8, end, field);
        return;
      case LEN:
        this.pos = this.limit(end, field);
        return;
      case I32:
        this.take(4, end, field);
        return;
      case SGROUP:
        this.skipGroup(tag >>> 3, end, field);
        return;
      case EGROUP:
        throw new Malformed(`an end-group (field ${tag >>> 3}) closes no group`, field);
      default:
        throw new Malformed(`wire type ${tag & 7} does not exist (field ${tag >>> 3})`, field);
    }
  }

  /** Skips a group (and the groups in it) whose start tag for `number` was just read. */
  private skipGroup(number: number, end: number, field: string | undefined): void {
    const open = [number];
    while (open.length > 0) {
      const tag = this.uint32(end, field);
      if (tag >>> 3 === 0) throw new Malformed('field number 0 does not exist', field);
      const wt = tag & 7;
      if (wt === SGROUP) {
        if (open.length >= MAX_DEPTH) {
          throw new Malformed(`unknown groups are nested deeper than ${MAX_DEPTH}`, field);
        }
        open.push(tag >>> 3);
      } else if (wt === EGROUP) {
        const top = open.pop()!;
        if (tag >>> 3 !== top) {
          throw new Malformed(`an end-group (field ${tag >>> 3}) closes group ${top}`, field);
        }
      } else this.skip(tag, end, field);
    }
  }
}

/** Decodes the fields of `spec` from r.pos up to `end` into `out`, `depth` messages down. */
function decodeFields(
  r: WireReader,
  spec: MessageSpec,
  end: number,
  out: Obj,
  depth: number,
): void {
  const fields = spec.fields;
  while (r.pos < end) {
    const tag = r.uint32(end, undefined);
    const number = tag >>> 3;
    if (number === 0) throw new Malformed('field number 0 does not exist', undefined);
    const f = number < fields.length ? fields[number] : undefined;
    if (f === undefined) {
      r.skip(tag, end, undefined);
      continue;
    }
    const name = f.name;
    if ((tag & 7) !== f.wireType) {
      throw new Malformed(
        `sent as ${WIRE_NAMES[tag & 7] ?? `wire type ${tag & 7}`}, ` +
          `but the field is ${WIRE_NAMES[f.wireType]}`,
        name,
      );
    }
    let value: unknown;
    switch (f.kind) {
      case STRING:
        value = r.string(end, name);
        break;
      case INT32:
        value = r.int32(end, name);
        break;
      case DOUBLE:
        value = r.buf.readDoubleLE(r.take(8, end, name));
        break;
      case MESSAGE: {
        const stop = r.limit(end, name);
        if (depth >= MAX_DEPTH) {
          throw new Malformed(`messages are nested deeper than ${MAX_DEPTH}`, name);
        }
        // A message field sent twice merges into one (the spec); a repeated one appends.
        const target: Obj = f.repeated ? {} : ((out[name] as Obj | undefined) ?? {});
        try {
          decodeFields(r, f.message!, stop, target, depth + 1);
        } catch (e) {
          if (e instanceof Malformed) {
            const index = (out[name] as unknown[] | undefined)?.length ?? 0;
            const at = f.repeated ? `${name}[${index}]` : name;
            e.field = e.field === undefined ? at : `${at}.${e.field}`;
          }
          throw e;
        }
        value = target;
        break;
      }
    }
    if (f.repeated) {
      const list = out[name] as unknown[] | undefined;
      if (list === undefined) out[name] = [value];
      else list.push(value);
    } else out[name] = value;
  }
}

/** What a decoder built from the .proto needs of proto-loader's descriptor objects. */
interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

const KINDS: Record<string, [Kind, number] | undefined> = {
  TYPE_STRING: [STRING, LEN],
  TYPE_INT32: [INT32, VARINT],
  TYPE_DOUBLE: [DOUBLE, I64],
  TYPE_MESSAGE: [MESSAGE, LEN],
};

/** The spec of message `fullName` (and of the messages it holds), from the package. */
function messageSpec(
  pkg: PackageDefinition,
  fullName: string,
  built = new Map<string, MessageSpec>(),
): MessageSpec {
  const known = built.get(fullName);
  if (known) return known;
  const def = pkg[fullName] as { type?: { field?: FieldDescriptor[] } } | undefined;
  const descriptors = def?.type?.field;
  if (!descriptors) throw new Error(`decode.ts: no message ${fullName} in the package`);
  const spec: MessageSpec = { name: fullName, fields: [] };
  built.set(fullName, spec);
  const prefix = fullName.slice(0, fullName.lastIndexOf('.') + 1);
  for (const d of descriptors) {
    const kind = KINDS[d.type];
    const repeated = d.label === 'LABEL_REPEATED';
    // Other types (and packed repeated numbers) are not in any request yet: refuse at
    // start-up, naming what to add here, rather than decode them wrongly.
    if (!kind || (repeated && kind[0] !== STRING && kind[0] !== MESSAGE)) {
      throw new Error(
        `decode.ts cannot decode ${fullName}.${d.name} (${d.label} ${d.type}): add it there`,
      );
    }
    let message: MessageSpec | undefined;
    if (kind[0] === MESSAGE) {
      // proto-loader names types relative to the package ("FeedbackEvent") or in full.
      const ref = d.typeName.replace(/^\./, '');
      message = messageSpec(pkg, pkg[ref] ? ref : prefix + ref, built);
    }
    spec.fields[d.number] = { name: d.name, kind: kind[0], repeated, wireType: kind[1], message };
  }
  return spec;
}

/**
 * The request deserializer of message `fullName` ("recserve.v1.FeedbackRequest"). It never
 * throws: bytes that are not that message decode to an ApiError (malformed_body, naming the
 * field when there is one), which the handlers answer as they answer a validation error.
 * grpc-js would answer a throw INTERNAL, without recserve's trailers.
 */
export function requestDecoder(
  pkg: PackageDefinition,
  fullName: string,
): (message: Buffer) => Obj | ApiError {
  const spec = messageSpec(pkg, fullName);
  const shortName = fullName.slice(fullName.lastIndexOf('.') + 1);
  return (message) => {
    try {
      const out: Obj = {};
      decodeFields(new WireReader(message), spec, message.length, out, 0);
      return out;
    } catch (e) {
      if (!(e instanceof Malformed)) return toApiError(e);
      const where = e.field === undefined ? '' : `${e.field}: `;
      return new ApiError('malformed_body', `not a valid ${shortName}: ${where}${e.what}`, e.field);
    }
  };
}
