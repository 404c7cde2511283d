// gRPC transport: recserve.v1.RecommendationService through the typed grpc-js client of
// transport/grpc (the only code that touches grpc-js). The attempt's deadline becomes the
// call's gRPC deadline, which the server hands to the pipeline.
import { ApiError } from '../api/errors.js';
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
import { RecserveGrpcClient, type GrpcClientOptions } from '../transport/grpc/client.js';
import { GrpcCallError } from '../transport/grpc/status.js';
import { RecserveError } from './errors.js';
import type { AttemptOptions, Transport } from './transport.js';

export interface GrpcTransportOptions extends GrpcClientOptions {
  /** host:port, e.g. 127.0.0.1:50051. */
  address: string;
}

function wrap(err: unknown): RecserveError {
  if (err instanceof RecserveError) return err;
  if (err instanceof ApiError) {
    return new RecserveError(err.code, err.message, {
      field: err.field,
      transport: 'grpc',
      fromServer: err instanceof GrpcCallError ? err.fromServer : true,
      cause: err,
    });
  }
  return new RecserveError('internal', String(err), {
    transport: 'grpc',
    fromServer: false,
    cause: err,
  });
}

export class GrpcTransport implements Transport {
  readonly kind = 'grpc' as const;
  readonly client: RecserveGrpcClient;

  constructor(o: GrpcTransportOptions) {
    this.client = new RecserveGrpcClient(o.address, o);
  }

  recommend(req: RecommendationRequest, o: AttemptOptions): Promise<RecommendationResponse> {
    return this.client.getRecommendations(req, o).catch((e: unknown) => Promise.reject(wrap(e)));
  }

  similar(req: SimilarRequest, o: AttemptOptions): Promise<SimilarResponse> {
    return this.client.getSimilarItems(req, o).catch((e: unknown) => Promise.reject(wrap(e)));
  }

  feedback(req: FeedbackRequest, o: AttemptOptions): Promise<FeedbackResponse> {
    return this.client.recordFeedback(req, o).catch((e: unknown) => Promise.reject(wrap(e)));
  }

  negativeFeedback(
    req: NegativeFeedbackRequest,
    o: AttemptOptions,
  ): Promise<NegativeFeedbackResponse> {
    return this.client
      .recordNegativeFeedback(req, o)
      .catch((e: unknown) => Promise.reject(wrap(e)));
  }

  close(): void {
    this.client.close();
  }
}
