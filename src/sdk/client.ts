// RecommendationClient: the seed's SDK (get_recommendations, get_similar_items,
// record_interaction, record_negative_feedback) for TypeScript, over HTTP or gRPC behind one
// interface, with per-call timeouts, retries and typed errors.
//
// Timeouts: each call has ONE budget (timeoutMs, default 1 s) covering every attempt and
// backoff; each attempt's remaining budget is sent to the server as its deadline (gRPC
// deadline / HTTP x-timeout-ms), so the server never works past the point the caller stops
// listening.
//
// Retries (decided per call, documented here because it is a contract):
// - Only errors that say "this server could not take it now" are retried: unavailable
//   (unreachable, not ready, shutting down) and rate_limited. Bad input, not_found and
//   deadline_exceeded are not: they would fail the same way again.
// - Reads (getRecommendations, getSimilarItems) are safe to repeat.
// - Feedback is retried too, because the server deduplicates events by the seed's
//   idempotency key hash(user_id, item_id, event_type, timestamp bucket) for 24 h. That holds
//   only if a retry carries the SAME timestamp, so the SDK stamps every event that has none
//   with the client's clock BEFORE the first attempt: an attempt that reached the server but
//   whose answer was lost is then counted once (the retry reports it in duplicates_ignored).
// - Negative feedback (block/hide/report) is idempotent on the server (a repeat answers
//   duplicate_ignored), so it is retried as well.
// - Backoff is "full jitter": attempt n waits uniform(0, min(maxDelayMs, baseDelayMs·2^n)),
//   so a fleet of clients that failed together does not retry together.
import type {
  EventType,
  FeedbackEvent,
  FeedbackRequest,
  FeedbackResponse,
  NegativeFeedbackRequest,
  NegativeFeedbackResponse,
  NegativeFeedbackType,
  RecommendationRequest,
  RecommendationResponse,
  RequestContext,
  RequestType,
  SimilarityType,
  SimilarRequest,
  SimilarResponse,
} from '../api/types.js';
import { RecserveError } from './errors.js';
import { GrpcTransport, type GrpcTransportOptions } from './grpc.js';
import { HttpTransport, type HttpTransportOptions } from './http.js';
import type { AttemptOptions, Transport } from './transport.js';

export interface RetryPolicy {
  /** Attempts in all, the first included. Default 3; 1 turns retries off. */
  maxAttempts: number;
  /** First backoff ceiling. Default 25 ms. */
  baseDelayMs: number;
  /** Backoff ceiling. Default 500 ms. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 25, maxDelayMs: 500 };

export type ClientOptions = (
  | ({ transport: 'http' } & HttpTransportOptions)
  | ({ transport: 'grpc' } & GrpcTransportOptions)
  | { transport: Transport }
) & {
  /** Budget of each call, retries included. Default 1000 ms. */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Random source for the jitter (tests pin it). Default Math.random. */
  random?: () => number;
};

/** Per-call settings every method takes last. */
export interface CallSettings {
  /** This call's budget, retries included; overrides the client's timeoutMs. */
  timeoutMs?: number;
  /** Gives up the call (no further attempts). */
  signal?: AbortSignal;
}

export interface GetRecommendationsOptions extends CallSettings {
  context?: RequestContext;
  numItems?: number;
  excludeItems?: string[];
  filters?: RecommendationRequest['filters'];
  requestType?: RequestType;
  diversitySettings?: RecommendationRequest['diversity_settings'];
}

export interface GetSimilarItemsOptions extends CallSettings {
  userId?: string;
  numItems?: number;
  similarityType?: SimilarityType;
  excludeItems?: string[];
}

export interface RecordInteractionOptions extends CallSettings {
  /** ISO-8601; the client's clock when absent (see the retry note above). */
  timestamp?: string;
  durationSeconds?: number;
  completionRate?: number;
  context?: FeedbackEvent['context'];
}

/** The server takes at most this many events per call; recordInteractions splits larger batches. */
export const MAX_EVENTS_PER_CALL = 1000;

export class RecommendationClient {
  readonly transport: Transport;
  private readonly timeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly random: () => number;

  constructor(o: ClientOptions) {
    if (typeof o.transport === 'object') this.transport = o.transport;
    else if (o.transport === 'http') this.transport = new HttpTransport(o as HttpTransportOptions);
    else this.transport = new GrpcTransport(o as GrpcTransportOptions);
    this.timeoutMs = o.timeoutMs ?? 1000;
    this.retry = { ...DEFAULT_RETRY, ...o.retry };
    this.random = o.random ?? Math.random;
  }

  /** Personalised recommendations for a user. */
  getRecommendations(
    userId: string,
    o: GetRecommendationsOptions = {},
  ): Promise<RecommendationResponse> {
    const req: RecommendationRequest = { user_id: userId };
    if (o.context !== undefined) req.context = o.context;
    if (o.requestType !== undefined) req.request_type = o.requestType;
    if (o.numItems !== undefined) req.num_items = o.numItems;
    if (o.excludeItems !== undefined) req.exclude_items = o.excludeItems;
    if (o.filters !== undefined) req.filters = o.filters;
    if (o.diversitySettings !== undefined) req.diversity_settings = o.diversitySettings;
    return this.call(o, (a) => this.transport.recommend(req, a));
  }

  /** Items similar to `itemId` (personalised when `userId` is given). */
  getSimilarItems(itemId: string, o: GetSimilarItemsOptions = {}): Promise<SimilarResponse> {
    const req: SimilarRequest = { item_id: itemId };
    if (o.userId !== undefined) req.user_id = o.userId;
    if (o.numItems !== undefined) req.num_items = o.numItems;
    if (o.similarityType !== undefined) req.similarity_type = o.similarityType;
    if (o.excludeItems !== undefined) req.exclude_items = o.excludeItems;
    return this.call(o, (a) => this.transport.similar(req, a));
  }

  /** One interaction (view, click, ...). */
  recordInteraction(
    userId: string,
    itemId: string,
    eventType: EventType,
    o: RecordInteractionOptions = {},
  ): Promise<FeedbackResponse> {
    const e: FeedbackEvent = { item_id: itemId, event_type: eventType };
    if (o.timestamp !== undefined) e.timestamp = o.timestamp;
    if (o.durationSeconds !== undefined) e.duration_seconds = o.durationSeconds;
    if (o.completionRate !== undefined) e.completion_rate = o.completionRate;
    if (o.context !== undefined) e.context = o.context;
    return this.recordInteractions(userId, [e], o);
  }

  /**
   * A batch of one user's interactions. Batches over MAX_EVENTS_PER_CALL are sent as several
   * calls in order; the totals are summed. Events without a timestamp get the client's clock.
   */
  async recordInteractions(
    userId: string,
    events: FeedbackEvent[],
    o: CallSettings = {},
  ): Promise<FeedbackResponse> {
    const now = new Date().toISOString();
    const stamped = events.map((e) => (e.timestamp === undefined ? { ...e, timestamp: now } : e));
    const total: FeedbackResponse = {
      status: 'accepted',
      events_processed: 0,
      duplicates_ignored: 0,
    };
    // An empty batch still goes to the server, which says what it thinks of it.
    for (let i = 0; i === 0 || i < stamped.length; i += MAX_EVENTS_PER_CALL) {
      const req: FeedbackRequest = {
        user_id: userId,
        events: stamped.slice(i, i + MAX_EVENTS_PER_CALL),
      };
      const r = await this.call(o, (a) => this.transport.feedback(req, a));
      total.events_processed += r.events_processed;
      total.duplicates_ignored += r.duplicates_ignored;
    }
    return total;
  }

  /** not_interested / hide / report: the item is blocked for the user at once. */
  recordNegativeFeedback(
    userId: string,
    itemId: string,
    feedbackType: NegativeFeedbackType,
    o: CallSettings & { reason?: string } = {},
  ): Promise<NegativeFeedbackResponse> {
    const req: NegativeFeedbackRequest = {
      user_id: userId,
      item_id: itemId,
      feedback_type: feedbackType,
    };
    if (o.reason !== undefined) req.reason = o.reason;
    return this.call(o, (a) => this.transport.negativeFeedback(req, a));
  }

  close(): void {
    this.transport.close();
  }

  /** Runs attempts until success, a final error, the budget's end or the attempt limit. */
  private async call<T>(s: CallSettings, attempt: (a: AttemptOptions) => Promise<T>): Promise<T> {
    const deadline = Date.now() + (s.timeoutMs ?? this.timeoutMs);
    for (let n = 1; ; n++) {
      try {
        return await attempt({ deadline, signal: s.signal });
      } catch (err) {
        const e =
          err instanceof RecserveError
            ? err
            : new RecserveError('internal', String(err), {
                transport: this.transport.kind,
                fromServer: false,
                cause: err,
              });
        e.attempts = n;
        if (!e.retryable || n >= this.retry.maxAttempts || s.signal?.aborted) throw e;
        const ceiling = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (n - 1));
        const wait = this.random() * ceiling;
        // No point sleeping past the budget: the next attempt could not run.
        if (Date.now() + wait >= deadline) throw e;
        await sleep(wait, s.signal);
      }
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
