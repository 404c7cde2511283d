// ApiError → gRPC status: the ONE place the gRPC front end maps errors (the HTTP adapter has
// its own one place). The status code comes from the registry (ApiError.grpcStatus); the
// registry's stable code and the offending field travel in trailing metadata, so a client
// can tell rate_limited from payload_too_large although both are RESOURCE_EXHAUSTED.
import { Metadata, status as Status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { ApiError, ERRORS, toApiError, type ErrorCode } from '../../api/errors.js';

/** Trailer carrying ApiError.code (invalid_argument, not_found, ...). */
export const ERROR_CODE_KEY = 'recserve-error-code';
/** Trailer carrying ApiError.field when the error names one ("events[2].event_type"). */
export const ERROR_FIELD_KEY = 'recserve-error-field';

/** What a handler passes to its callback (or emits) for any thrown value. */
export function toStatus(err: unknown): Partial<StatusObject> {
  const api = toApiError(err);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_KEY, api.code);
  if (api.field !== undefined) metadata.set(ERROR_FIELD_KEY, api.field);
  return { code: api.grpcStatus, details: api.message, metadata };
}

/** A failed call as the registry's error, plus what the wire said. */
export class GrpcCallError extends ApiError {
  /** The gRPC status code received. */
  readonly grpcCode: number;
  /** True when recserve answered (its trailer is there); false for grpc-js's own errors. */
  readonly fromServer: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    field: string | undefined,
    grpcCode: number,
    fromServer: boolean,
  ) {
    super(code, message, field);
    this.grpcCode = grpcCode;
    this.fromServer = fromServer;
  }
}

function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, s);
}

/**
 * The client side of the same mapping: a failed call → the registry's error. The trailer
 * names the code when the server is recserve; otherwise (a proxy, grpc-js's own limits and
 * deadline handling) the status code decides.
 */
export function fromServiceError(err: ServiceError): GrpcCallError {
  const trailer = err.metadata?.get(ERROR_CODE_KEY)[0];
  const field = err.metadata?.get(ERROR_FIELD_KEY)[0];
  const details = err.details || err.message;
  if (typeof trailer === 'string' && isErrorCode(trailer)) {
    const f = typeof field === 'string' ? field : undefined;
    return new GrpcCallError(trailer, details, f, err.code, true);
  }
  return new GrpcCallError(codeForStatus(err.code), details, undefined, err.code, false);
}

function codeForStatus(code: Status): ErrorCode {
  switch (code) {
    case Status.INVALID_ARGUMENT:
      return 'invalid_argument';
    case Status.NOT_FOUND:
      return 'not_found';
    case Status.UNAUTHENTICATED:
      return 'unauthenticated';
    // grpc-js itself answers RESOURCE_EXHAUSTED for a message over the size limit.
    case Status.RESOURCE_EXHAUSTED:
      return 'payload_too_large';
    case Status.DEADLINE_EXCEEDED:
      return 'deadline_exceeded';
    // CANCELLED here means the channel went away under the call: as retryable as UNAVAILABLE.
    case Status.UNAVAILABLE:
    case Status.CANCELLED:
      return 'unavailable';
    default:
      return 'internal';
  }
}
