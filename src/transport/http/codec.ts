// Body codecs of the HTTP front end. A codec turns request bytes into the raw JSON-shaped
// object that api/validate.ts checks, and a typed response back into bytes. JSON is built in;
// other representations (application/x-flatbuffers) register here without touching the
// server adapter. Error bodies are always JSON (the REST contract's error shape).
import { ApiError } from '../../api/errors.js';
import { flatbuffersCodec } from '../flatbuffers/http-codec.js';

/** The routes that carry a body, named the same way in every codec. */
export type Route = 'recommendations' | 'similar' | 'feedback' | 'negative_feedback';

export interface Codec {
  /** Media type without parameters, lower case, e.g. "application/json". */
  readonly mediaType: string;
  /** Routes this codec can decode and encode; the rest fall back to 415 / 406. */
  supports(route: Route): boolean;
  /** Bytes → raw object for validation. Throws ApiError('malformed_body', ...) on bad bytes. */
  decode(route: Route, bytes: Uint8Array): unknown;
  /** A validated response object → bytes (or a string, sent as UTF-8). */
  encode(route: Route, value: unknown): Uint8Array | string;
}

/** Same registry symbol as pipeline/cache.ts PRE_ENCODED_JSON (no import across layers). */
const PRE_ENCODED_JSON = Symbol.for('recserve.preEncodedJson');

const utf8 = new TextDecoder('utf-8', { fatal: true });

export const jsonCodec: Codec = {
  mediaType: 'application/json',
  supports: () => true,
  decode(_route, bytes) {
    if (bytes.length === 0) throw new ApiError('malformed_body', 'request body is empty');
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw new ApiError('malformed_body', 'request body is not valid UTF-8');
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new ApiError(
        'malformed_body',
        `request body is not valid JSON: ${(err as Error).message}`,
      );
    }
  },
  encode(_route, value) {
    // A cached answer arrives already encoded (pipeline/cache.ts): send it as it is.
    let pre = (value as Record<symbol, unknown> | null)?.[PRE_ENCODED_JSON];
    // A cache hit defers building its bytes until a JSON encoder asks (pipeline/cache.ts).
    if (typeof pre === 'function') pre = (pre as () => unknown)();
    return typeof pre === 'string' || pre instanceof Uint8Array ? pre : JSON.stringify(value);
  },
};

function mediaTypeOf(header: string): string {
  const semi = header.indexOf(';');
  return (semi >= 0 ? header.slice(0, semi) : header).trim().toLowerCase();
}

/** Content negotiation over the registered codecs. */
export class CodecRegistry {
  private readonly codecs = new Map<string, Codec>();

  // application/x-flatbuffers (proto/recserve.fbs) on recommendations and similar.
  constructor(codecs: Codec[] = [jsonCodec, flatbuffersCodec]) {
    for (const c of codecs) this.register(c);
  }

  register(codec: Codec): void {
    this.codecs.set(codec.mediaType, codec);
  }

  /** Empty Content-Type means JSON (curl without -H, most quick clients). */
  forContentType(route: Route, contentType: string): Codec {
    const type = contentType === '' ? 'application/json' : mediaTypeOf(contentType);
    const codec = this.codecs.get(type);
    if (!codec || !codec.supports(route)) {
      throw new ApiError(
        'unsupported_media_type',
        `Content-Type '${type}' is not accepted on this route; use ${this.listFor(route)}`,
      );
    }
    return codec;
  }

  /** Picks the first acceptable registered type in the Accept header's order; JSON for any. */
  forAccept(route: Route, accept: string): Codec {
    if (accept === '') return jsonCodec;
    for (const part of accept.split(',')) {
      const type = mediaTypeOf(part);
      if (type === '*/*' || type === 'application/*') return jsonCodec;
      const codec = this.codecs.get(type);
      if (codec && codec.supports(route)) return codec;
    }
    throw new ApiError(
      'not_acceptable',
      `Accept '${accept}' names nothing this route produces; use ${this.listFor(route)}`,
    );
  }

  decode(route: Route, bytes: Uint8Array, contentType: string): unknown {
    return this.forContentType(route, contentType).decode(route, bytes);
  }

  encode(
    route: Route,
    value: unknown,
    accept: string,
  ): { body: Uint8Array | string; contentType: string } {
    const codec = this.forAccept(route, accept);
    return { body: codec.encode(route, value), contentType: codec.mediaType };
  }

  private listFor(route: Route): string {
    return [...this.codecs.values()]
      .filter((c) => c.supports(route))
      .map((c) => c.mediaType)
      .join(' or ');
  }
}
