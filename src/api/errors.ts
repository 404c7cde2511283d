// The one registry of errors recserve returns. Each entry has a stable code (what clients
// branch on), an HTTP status and a gRPC status. Transports map an ApiError to the wire in
// exactly one place each (transport/http, transport/grpc); pipeline code only throws.

/** gRPC status codes we use (numeric values from the gRPC spec, so no grpc-js import here). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

interface ErrorSpec {
  http: number;
  grpc: GrpcStatusCode;
  /** What a caller should read into it; shown in docs and in `recserve help errors`. */
  meaning: string;
}

export const ERRORS = {
  invalid_argument: {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    meaning: 'a field is missing, of the wrong type or out of range; `field` names it',
  },
  malformed_body: {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    meaning: 'the body is not valid JSON (or FlatBuffers) for this route',
  },
  unsupported_media_type: {
    http: 415,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    meaning: 'Content-Type is neither application/json nor application/x-flatbuffers',
  },
  not_acceptable: {
    http: 406,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    meaning: 'Accept names no representation this route can produce',
  },
  payload_too_large: {
    http: 413,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    meaning: 'the body exceeds the configured limit (1 MiB by default)',
  },
  not_found: {
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    meaning: 'the named item (or route) does not exist',
  },
  method_not_allowed: {
    http: 405,
    grpc: GrpcStatus.UNIMPLEMENTED,
    meaning: 'the route exists but not for this HTTP method; the Allow header lists its methods',
  },
  limit_exceeded: {
    http: 409,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    meaning: "a per-user limit is reached (the user's blocked items, 10,000); a retry fails too",
  },
  unauthenticated: {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    meaning: 'a bearer token is required and was missing or wrong',
  },
  rate_limited: {
    http: 429,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    meaning: 'too many requests in flight; retry with backoff',
  },
  deadline_exceeded: {
    http: 504,
    grpc: GrpcStatus.DEADLINE_EXCEEDED,
    meaning: "the caller's deadline passed before the work could finish",
  },
  unavailable: {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    meaning: 'not ready (models loading) or shutting down; retry on another replica',
  },
  store_unavailable: {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    meaning:
      'the feature store (Redis) did not answer in time; nothing was recorded unless a retry says duplicate',
  },
  internal: {
    http: 500,
    grpc: GrpcStatus.INTERNAL,
    meaning: 'a bug; the request id in the log has the details',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** The error every layer throws for a caller-visible failure. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, field?: string) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.field = field;
  }

  get httpStatus(): number {
    return ERRORS[this.code].http;
  }

  get grpcStatus(): GrpcStatusCode {
    return ERRORS[this.code].grpc;
  }

  /** The JSON body shape of the REST contract: {"error": {"code", "message", "field"}}. */
  toJSON(): { error: { code: ErrorCode; message: string; field?: string } } {
    const body: { code: ErrorCode; message: string; field?: string } = {
      code: this.code,
      message: this.message,
    };
    if (this.field !== undefined) body.field = this.field;
    return { error: body };
  }

  static invalid(field: string, message: string): ApiError {
    return new ApiError('invalid_argument', `${field}: ${message}`, field);
  }
}

/** Wraps anything thrown into an ApiError, keeping ApiErrors as they are. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ApiError('internal', message);
}
