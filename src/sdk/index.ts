// The recserve TypeScript SDK: `new RecommendationClient({ transport: 'http', baseUrl })` or
// `new RecommendationClient({ transport: 'grpc', address })`, the same methods either way.
export {
  RecommendationClient,
  DEFAULT_RETRY,
  MAX_EVENTS_PER_CALL,
  type ClientOptions,
  type CallSettings,
  type RetryPolicy,
  type GetRecommendationsOptions,
  type GetSimilarItemsOptions,
  type RecordInteractionOptions,
} from './client.js';
export { RecserveError, type ErrorCode } from './errors.js';
export { HttpTransport, type HttpTransportOptions } from './http.js';
export { GrpcTransport, type GrpcTransportOptions } from './grpc.js';
export type { Transport, AttemptOptions } from './transport.js';
export type * from '../api/types.js';
