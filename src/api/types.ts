// The wire contract of the REST API (snake_case, as the design seed's API Design), shared
// by every front end: HTTP JSON, HTTP FlatBuffers and gRPC all decode into these shapes,
// call the same RecommenderService, and encode its answers. Validation that turns raw
// input into these types lives in api/validate.ts.

export type DeviceType = 'mobile' | 'desktop' | 'tablet' | 'tv' | 'other';
export type RequestType = 'home_feed' | 'similar' | 'continue_watching';
export type SimilarityType = 'content' | 'collaborative' | 'hybrid';
export type EventType = 'view' | 'click' | 'like' | 'share' | 'purchase' | 'skip';
export type NegativeFeedbackType = 'not_interested' | 'hide' | 'report';

export const DEVICE_TYPES: readonly DeviceType[] = ['mobile', 'desktop', 'tablet', 'tv', 'other'];
export const REQUEST_TYPES: readonly RequestType[] = ['home_feed', 'similar', 'continue_watching'];
export const SIMILARITY_TYPES: readonly SimilarityType[] = ['content', 'collaborative', 'hybrid'];
export const EVENT_TYPES: readonly EventType[] = [
  'view',
  'click',
  'like',
  'share',
  'purchase',
  'skip',
];
export const NEGATIVE_FEEDBACK_TYPES: readonly NegativeFeedbackType[] = [
  'not_interested',
  'hide',
  'report',
];

export interface RequestContext {
  device_type?: DeviceType;
  platform?: string;
  /** ISO-8601; the server's clock when absent. */
  timestamp?: string;
  location?: { country?: string; region?: string };
  session_id?: string;
}

export interface RecommendationRequest {
  user_id: string;
  context?: RequestContext;
  request_type?: RequestType; // default home_feed
  num_items?: number; // 1..500, default 20
  exclude_items?: string[];
  filters?: { categories?: string[]; min_quality_score?: number };
  diversity_settings?: { category_diversity?: number; creator_diversity?: number };
}

export type ExplanationReason =
  | 'collaborative'
  | 'similar_to_recent'
  | 'trending'
  | 'popular_in_category'
  | 'popular'
  | 'exploration'
  | 'cold_start'
  /** request_type continue_watching: the item is one the user started; source_items = [it]. */
  | 'continue_watching';

export interface Recommendation {
  item_id: string;
  score: number;
  rank: number; // 1-based
  explanation: { reason: ExplanationReason; source_items: string[] };
  metadata: { title?: string; categories?: string[]; creator_id?: string; [k: string]: unknown };
}

export interface LatencyBreakdown {
  total: number;
  retrieval: number;
  ranking: number;
  feature_fetch: number;
  [stage: string]: number;
}

export interface RecommendationResponse {
  request_id: string;
  recommendations: Recommendation[];
  metadata: {
    model_version: string;
    experiment_id: string | null;
    variant: string | null;
    /** Candidates contributed per source before dedupe (collaborative, similar_to_recent, ...). */
    retrieval_sources: Record<string, number>;
    latency_ms: LatencyBreakdown;
    cold_start?: boolean;
    cache_hit?: boolean;
    /** True when ranking timed out and the cosine fallback ordered the list. */
    ranking_fallback?: boolean;
    /**
     * Set when the feature store could not be read ('store_unavailable'): a fallback list
     * (popular, unpersonalised) built without the user's features. HTTP answers it with 503.
     */
    degraded?: string;
  };
}

export interface SimilarRequest {
  item_id: string;
  user_id?: string;
  num_items?: number; // 1..500, default 20
  similarity_type?: SimilarityType; // default hybrid
  exclude_items?: string[];
}

export interface SimilarItem {
  item_id: string;
  similarity_score: number;
  similarity_type: SimilarityType;
  common_attributes: string[]; // "category:action", "creator:xyz"
}

export interface SimilarResponse {
  request_id: string;
  source_item: string;
  similar_items: SimilarItem[];
}

export interface FeedbackEvent {
  item_id: string;
  event_type: EventType;
  timestamp?: string; // ISO-8601, server clock when absent
  duration_seconds?: number;
  completion_rate?: number; // 0..1
  context?: { recommendation_id?: string; position?: number; surface?: string };
}

export interface FeedbackRequest {
  user_id: string;
  events: FeedbackEvent[];
}

export interface FeedbackResponse {
  status: 'accepted';
  events_processed: number;
  /** Events recognised by their idempotency key as already recorded, and ignored. */
  duplicates_ignored: number;
}

export interface NegativeFeedbackRequest {
  user_id: string;
  item_id: string;
  feedback_type: NegativeFeedbackType;
  reason?: string;
}

export interface NegativeFeedbackResponse {
  status: 'accepted' | 'duplicate_ignored';
  action_taken: 'item_blocked' | 'item_hidden' | 'item_reported';
}

/** Per-call options every front end passes down: where the caller's deadline goes. */
export interface CallOptions {
  /** Absolute deadline, ms since epoch (Date.now() clock). Work past it is not started. */
  deadline?: number;
  /** Aborted when the client goes away; pipeline stages may stop early. */
  signal?: AbortSignal;
}

/**
 * What every front end calls. Implemented once (pipeline/service.ts); HTTP, gRPC and the
 * tests all go through it, which is what keeps the transports' semantics identical.
 * Inputs are already validated (api/validate.ts); errors are thrown as ApiError.
 */
export interface RecommenderService {
  recommend(req: RecommendationRequest, opts?: CallOptions): Promise<RecommendationResponse>;
  similar(req: SimilarRequest, opts?: CallOptions): Promise<SimilarResponse>;
  feedback(req: FeedbackRequest, opts?: CallOptions): Promise<FeedbackResponse>;
  negativeFeedback(
    req: NegativeFeedbackRequest,
    opts?: CallOptions,
  ): Promise<NegativeFeedbackResponse>;
  /** True once models are loaded and warmed; /readyz and grpc.health.v1 report it. */
  ready(): boolean;
  /** Why it will never turn ready (its start-up failed), for /readyz; null otherwise. */
  failedReason?(): string | null;
  /** What start-up still waits for (a Redis not answering yet), for /readyz; null otherwise. */
  waitingFor?(): string | null;
  /** A shared feature store's state for /readyz; null for the embedded one. */
  storeHealth?(): StoreHealth | null;
  /** The model repository's versions and which one serves, for GET /v1/models. */
  models?(): ModelsStatus | null;
}

/** GET /v1/models: one version of the model repository (models/watcher.ts). */
export type VersionState = 'loading' | 'serving' | 'failed' | 'available';

export interface VersionStatus {
  version: number;
  state: VersionState;
  /** Why it failed (state 'failed'), or why the serving version's replacement did not load. */
  reason?: string;
  /** When it started serving or failed (ISO 8601). */
  since?: string;
  /** Load and warm-up time of the serving version. */
  load_ms?: number;
}

export interface ModelsStatus {
  name: string;
  /** The version serving now; null before the first one loaded. */
  serving: number | null;
  /** The one version this server may serve (--model-version); null follows the newest. */
  pinned: number | null;
  /** How often the repository is listed (0: only at start-up and on SIGHUP). */
  poll_ms: number;
  /** Every version listed, newest first, plus a serving one whose directory is gone. */
  versions: VersionStatus[];
}

/** A shared feature store's state, as /readyz shows it. */
export interface StoreHealth {
  backend: string;
  connected: boolean;
}
