// What RecommendationClient needs from a transport: the four calls of the REST contract,
// each with an absolute deadline. Implementations: HttpTransport (fetch; JSON or
// FlatBuffers bodies) and GrpcTransport (@grpc/grpc-js). They throw RecserveError only.
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

export interface AttemptOptions {
  /** Absolute deadline of this attempt, ms since epoch (Date.now() clock). */
  deadline: number;
  /** Aborts the attempt (the caller gave up). */
  signal?: AbortSignal | undefined;
}

export interface Transport {
  readonly kind: 'http' | 'grpc';
  recommend(req: RecommendationRequest, o: AttemptOptions): Promise<RecommendationResponse>;
  similar(req: SimilarRequest, o: AttemptOptions): Promise<SimilarResponse>;
  feedback(req: FeedbackRequest, o: AttemptOptions): Promise<FeedbackResponse>;
  negativeFeedback(
    req: NegativeFeedbackRequest,
    o: AttemptOptions,
  ): Promise<NegativeFeedbackResponse>;
  close(): void;
}
