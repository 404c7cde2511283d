// The one error type the SDK throws. `code` is the server's registry code
// (src/api/errors.ts: invalid_argument, not_found, rate_limited, ...) whichever transport
// carried it, so callers branch on the same value over HTTP and gRPC.
import { ERRORS, type ErrorCode } from '../api/errors.js';

export type { ErrorCode };

export class RecserveError extends Error {
  /** The registry code. Network failures are `unavailable`; a call past its timeout is `deadline_exceeded`. */
  readonly code: ErrorCode;
  /** The request field the server named (`events[2].event_type`), when it named one. */
  readonly field: string | undefined;
  /** Which transport the last attempt used. */
  readonly transport: 'http' | 'grpc';
  /** HTTP status of the last attempt's answer, when there was one. */
  readonly httpStatus: number | undefined;
  /** True when the server (or a proxy) answered; false for network errors and client timeouts. */
  readonly fromServer: boolean;
  /** Attempts made, retries included (set by the client). */
  attempts = 1;

  constructor(
    code: ErrorCode,
    message: string,
    o: {
      field?: string | undefined;
      transport: 'http' | 'grpc';
      httpStatus?: number;
      fromServer: boolean;
      cause?: unknown;
    },
  ) {
    super(message, o.cause === undefined ? undefined : { cause: o.cause });
    this.name = 'RecserveError';
    this.code = code;
    this.field = o.field;
    this.transport = o.transport;
    this.httpStatus = o.httpStatus;
    this.fromServer = o.fromServer;
  }

  /** The gRPC status the registry gives this code. */
  get grpcStatus(): number {
    return ERRORS[this.code].grpc;
  }

  /**
   * Worth retrying (the same request, after a backoff): the server was unreachable, not
   * ready or shutting down (unavailable), shed load (rate_limited), or lost its feature store
   * for a moment (store_unavailable: feedback retried is recognised as a duplicate, never
   * counted twice). Everything else would fail the same way again, and a deadline_exceeded
   * has used the caller's whole budget.
   */
  get retryable(): boolean {
    return (
      this.code === 'unavailable' ||
      this.code === 'rate_limited' ||
      this.code === 'store_unavailable'
    );
  }
}

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, s);
}
