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

function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERRORS, s);
}

/**
 * The client side of the same mapping: a failed call → the registry's error. The trailer
 * names the code when the server is recserve; otherwise (a proxy, grpc-js's own limits and
 * deadline handling) the status code decides.
 */
export function fromServiceError(err: ServiceError): ApiError {
  const trailer = err.metadata?.get(ERROR_CODE_KEY)[0];
  const field = err.metadata?.get(ERROR_FIELD_KEY)[0];
  const details = err.details || err.message;
  if (typeof trailer === 'string' && isErrorCode(trailer)) {
    return new ApiError(trailer, details, typeof field === 'string' ? field : undefined);
  }
  return new ApiError(codeForStatus(err.code), details);
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
