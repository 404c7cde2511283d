// HTTP transport: fetch (Node ≥ 18's undici) against the REST contract. Recommendations and
// similar items can travel as FlatBuffers (`format: 'flatbuffers'`: both the request body
// and the Accept header); feedback is always JSON, the only form the server takes there.
// The remaining time to the deadline goes to the server in `x-timeout-ms`, so the pipeline
// sees the caller's deadline exactly as it does over gRPC.
import type {
  FeedbackRequest,
  FeedbackResponse,
  NegativeFeedbackRequest,
  NegativeFeedbackResponse,
  RecommendationRequest,
  RecommendationResponse,
  SimilarRequest,
  SimilarResponse,
} from '../api/types.js';
import {
  decodeRecommendationResponse,
  decodeSimilarResponse,
  encodeRecommendationRequest,
  encodeSimilarRequest,
} from '../transport/flatbuffers/codec.js';
import { ApiError } from '../api/errors.js';
import { RecserveError, isErrorCode } from './errors.js';
import type { AttemptOptions, Transport } from './transport.js';

export const FLATBUFFERS = 'application/x-flatbuffers';

export interface HttpTransportOptions {
  /** e.g. http://127.0.0.1:8080 (no trailing path). */
  baseUrl: string;
  /** Body format for recommendations and similar items. Default 'json'. */
  format?: 'json' | 'flatbuffers';
  /** Sent as `Authorization: Bearer <apiKey>` when given. */
  apiKey?: string;
  /** Injected fetch (tests, custom agents). Default globalThis.fetch. */
  fetch?: typeof fetch;
}

function httpStatusCode(status: number): RecserveError['code'] {
  if (status === 400) return 'invalid_argument';
  if (status === 401) return 'unauthenticated';
  if (status === 404) return 'not_found';
  if (status === 405) return 'method_not_allowed';
  if (status === 406) return 'not_acceptable';
  if (status === 409) return 'limit_exceeded';
  if (status === 413) return 'payload_too_large';
  if (status === 415) return 'unsupported_media_type';
  if (status === 429) return 'rate_limited';
  if (status === 502 || status === 503) return 'unavailable';
  if (status === 504) return 'deadline_exceeded';
  return 'internal';
}

export class HttpTransport implements Transport {
  readonly kind = 'http' as const;
  private readonly base: string;
  private readonly format: 'json' | 'flatbuffers';
  private readonly fetch: typeof fetch;
  private readonly auth: string | undefined;

  constructor(o: HttpTransportOptions) {
    this.base = o.baseUrl.replace(/\/+$/, '');
    this.format = o.format ?? 'json';
    this.fetch = o.fetch ?? globalThis.fetch;
    this.auth = o.apiKey === undefined ? undefined : `Bearer ${o.apiKey}`;
  }

  async recommend(req: RecommendationRequest, o: AttemptOptions): Promise<RecommendationResponse> {
    if (this.format === 'flatbuffers') {
      const bytes = await this.post(
        '/v1/recommendations',
        encodeFb(() => encodeRecommendationRequest(req)),
        FLATBUFFERS,
        o,
        true,
      );
      return decodeFb(() => decodeRecommendationResponse(bytes));
    }
    return json(
      await this.post('/v1/recommendations', JSON.stringify(req), 'application/json', o, true),
    );
  }

  async similar(req: SimilarRequest, o: AttemptOptions): Promise<SimilarResponse> {
    if (this.format === 'flatbuffers') {
      const bytes = await this.post(
        '/v1/similar',
        encodeFb(() => encodeSimilarRequest(req)),
        FLATBUFFERS,
        o,
      );
      return decodeFb(() => decodeSimilarResponse(bytes));
    }
    return json(await this.post('/v1/similar', JSON.stringify(req), 'application/json', o));
  }

  async feedback(req: FeedbackRequest, o: AttemptOptions): Promise<FeedbackResponse> {
    return json(await this.post('/v1/feedback', JSON.stringify(req), 'application/json', o));
  }

  async negativeFeedback(
    req: NegativeFeedbackRequest,
    o: AttemptOptions,
  ): Promise<NegativeFeedbackResponse> {
    return json(
      await this.post('/v1/feedback/negative', JSON.stringify(req), 'application/json', o),
    );
  }

  close(): void {
    // fetch keeps no per-client state to release.
  }

  /**
   * One POST; the body bytes on 200, a RecserveError otherwise. With `degradedOk`, a 503 that
   * carries an answer rather than an error body (the server's fallback list when its feature
   * store is down, metadata.degraded set) is an answer too: a retry would get the same.
   */
  private async post(
    path: string,
    body: string | Uint8Array,
    type: string,
    o: AttemptOptions,
    degradedOk = false,
  ): Promise<Uint8Array> {
    const remaining = Math.floor(o.deadline - Date.now());
    if (remaining <= 0) throw timeoutError();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), remaining);
    const onAbort = (): void => ac.abort();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const headers: Record<string, string> = {
      'content-type': type,
      accept: type,
      'x-timeout-ms': String(remaining),
    };
    if (this.auth) headers.authorization = this.auth;
    try {
      let res: Response;
      try {
        res = await this.fetch(this.base + path, {
          method: 'POST',
          headers,
          body,
          signal: ac.signal,
        });
      } catch (err) {
        if (ac.signal.aborted && !o.signal?.aborted) throw timeoutError();
        if (o.signal?.aborted) {
          throw new RecserveError('unavailable', 'call aborted by the caller', {
            transport: 'http',
            fromServer: false,
            cause: err,
          });
        }
        throw new RecserveError('unavailable', `cannot reach ${this.base}: ${causeText(err)}`, {
          transport: 'http',
          fromServer: false,
          cause: err,
        });
      }
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        if (ac.signal.aborted && !o.signal?.aborted) throw timeoutError();
        throw new RecserveError('unavailable', `response cut off: ${causeText(err)}`, {
          transport: 'http',
          fromServer: false,
          cause: err,
        });
      }
      if (res.status === 200) return bytes;
      if (degradedOk && res.status === 503 && isAnswer(res.headers.get('content-type'), bytes)) {
        return bytes;
      }
      throw errorFromBody(res.status, bytes);
    } finally {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    }
  }
}

function causeText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

function timeoutError(): RecserveError {
  return new RecserveError('deadline_exceeded', 'the call timed out on the client', {
    transport: 'http',
    fromServer: false,
  });
}

/** True for a body that is an answer (FlatBuffers, or JSON without the error envelope). */
function isAnswer(contentType: string | null, bytes: Uint8Array): boolean {
  if (contentType === FLATBUFFERS) return true;
  if (contentType !== 'application/json') return false;
  try {
    const body = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown> | null;
    return body !== null && typeof body === 'object' && Array.isArray(body.recommendations);
  } catch {
    return false;
  }
}

/** The REST error body {"error": {code, message, field}}, or the status alone (a proxy). */
function errorFromBody(status: number, bytes: Uint8Array): RecserveError {
  try {
    const body = JSON.parse(new TextDecoder().decode(bytes)) as {
      error?: { code?: unknown; message?: unknown; field?: unknown };
    };
    const e = body.error;
    if (e && isErrorCode(e.code)) {
      return new RecserveError(e.code, String(e.message ?? e.code), {
        field: typeof e.field === 'string' ? e.field : undefined,
        transport: 'http',
        httpStatus: status,
        fromServer: true,
      });
    }
  } catch {
    // not JSON: fall through to the status
  }
  return new RecserveError(httpStatusCode(status), `HTTP ${status}`, {
    transport: 'http',
    httpStatus: status,
    fromServer: true,
  });
}

function json<T>(bytes: Uint8Array): T {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as T;
  } catch (err) {
    throw new RecserveError('internal', `server sent a body that is not JSON: ${causeText(err)}`, {
      transport: 'http',
      fromServer: true,
    });
  }
}

/** Client-side encoding: a value FlatBuffers cannot carry is the caller's invalid_argument. */
function encodeFb(f: () => Uint8Array): Uint8Array {
  try {
    return f();
  } catch (err) {
    if (err instanceof ApiError) {
      throw new RecserveError(err.code, err.message, {
        field: err.field,
        transport: 'http',
        fromServer: false,
      });
    }
    throw err;
  }
}

function decodeFb<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new RecserveError(
      'internal',
      `server sent a FlatBuffer we cannot read: ${causeText(err)}`,
      {
        transport: 'http',
        fromServer: true,
      },
    );
  }
}
