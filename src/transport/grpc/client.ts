// A typed, promise-returning client for recserve.v1.RecommendationService: what the SDK's
// gRPC transport, the tests and bench/grpc-load.ts use. Requests are the JSON contract's
// objects as they are (the proto mirrors them); responses are converted back to the JSON
// contract (convert.ts) and failures are thrown as the registry's ApiError (status.ts).
import * as grpc from '@grpc/grpc-js';
import type {
  FeedbackRequest,
  FeedbackResponse,
  NegativeFeedbackRequest,
  NegativeFeedbackResponse,
  RecommendationRequest,
  RecommendationResponse,
  SimilarRequest,
  SimilarResponse,
} from '../../api/types.js';
import {
  feedbackResponseFromWire,
  negativeFeedbackResponseFromWire,
  recommendationResponseFromWire,
  similarResponseFromWire,
} from './convert.js';
import { serviceClientConstructor, serviceDefinition } from './proto.js';
import { fromServiceError } from './status.js';

export interface GrpcClientOptions {
  /** Largest response accepted. Default 4 MiB (the server's send limit). */
  maxReceiveBytes?: number;
  /** Client keepalive ping interval. Default 60 s (the server permits no faster). */
  keepaliveTimeMs?: number;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

/** Per-call settings: an absolute deadline (ms since epoch) and an abort signal. */
export interface GrpcCallSettings {
  deadline?: number;
  signal?: AbortSignal;
}

type Unary = (
  req: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;

type ClientStream = (
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientWritableStream<unknown>;

export class RecserveGrpcClient {
  private readonly client: grpc.Client;

  constructor(address: string, options: GrpcClientOptions = {}) {
    const Ctor = serviceClientConstructor();
    this.client = new Ctor(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': options.maxReceiveBytes ?? 4 * 1024 * 1024,
      'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? 60_000,
      'grpc.enable_channelz': 0,
      ...options.channelOptions,
    });
  }

  /** Waits until the channel is connected (or throws past the deadline). */
  waitForReady(deadline: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.waitForReady(deadline, (err) => (err ? reject(err) : resolve())),
    );
  }

  getRecommendations(
    req: RecommendationRequest,
    s: GrpcCallSettings = {},
  ): Promise<RecommendationResponse> {
    return this.unary('GetRecommendations', req, s).then(recommendationResponseFromWire);
  }

  getSimilarItems(req: SimilarRequest, s: GrpcCallSettings = {}): Promise<SimilarResponse> {
    return this.unary('GetSimilarItems', req, s).then(similarResponseFromWire);
  }

  recordFeedback(req: FeedbackRequest, s: GrpcCallSettings = {}): Promise<FeedbackResponse> {
    return this.unary('RecordFeedback', req, s).then(feedbackResponseFromWire);
  }

  recordNegativeFeedback(
    req: NegativeFeedbackRequest,
    s: GrpcCallSettings = {},
  ): Promise<NegativeFeedbackResponse> {
    return this.unary('RecordNegativeFeedback', req, s).then(negativeFeedbackResponseFromWire);
  }

  /** Sends the batches on one client stream, honouring its backpressure; returns the total. */
  async streamFeedback(
    batches: Iterable<FeedbackRequest> | AsyncIterable<FeedbackRequest>,
    s: GrpcCallSettings = {},
  ): Promise<FeedbackResponse> {
    const method = this.method<ClientStream>('StreamFeedback');
    let stream: grpc.ClientWritableStream<unknown> | undefined;
    const result = new Promise<unknown>((resolve, reject) => {
      stream = method(new grpc.Metadata(), this.callOptions(s), (err, res) =>
        err ? reject(fromServiceError(err)) : resolve(res),
      );
    });
    // The server may answer before the batches run out (a bad message, a drain): stop
    // writing then, and keep that early answer from counting as an unhandled rejection.
    let answered = false;
    result.then(
      () => (answered = true),
      () => (answered = true),
    );
    const onAbort = (): void => stream!.cancel();
    s.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const b of batches) {
        if (answered) break;
        if (!stream!.write(b)) {
          // Either the buffer drains, or the call already failed and the result says why.
          await Promise.race([
            new Promise((r) => stream!.once('drain', r)),
            result.then(
              () => undefined,
              () => undefined,
            ),
          ]);
        }
      }
      stream!.end();
      return feedbackResponseFromWire(await result);
    } finally {
      s.signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A unary call whose response is NOT decoded: the raw protobuf bytes. For load generators,
   * which (like autocannon on HTTP) should spend their CPU sending, not parsing, so that the
   * numbers measure the server.
   */
  unaryBytes(
    method: 'GetRecommendations' | 'GetSimilarItems',
    req: RecommendationRequest | SimilarRequest,
    s: GrpcCallSettings = {},
  ): Promise<Buffer> {
    const def = serviceDefinition()[method]!;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<unknown, Buffer>(
        def.path,
        def.requestSerialize,
        (b: Buffer) => b,
        req,
        new grpc.Metadata(),
        this.callOptions(s),
        (err, res) => (err ? reject(fromServiceError(err)) : resolve(res!)),
      );
    });
  }

  close(): void {
    this.client.close();
  }

  private method<T>(name: string): T {
    const fn = (this.client as unknown as Record<string, unknown>)[name] as T & {
      bind(c: unknown): T;
    };
    return fn.bind(this.client);
  }

  private callOptions(s: GrpcCallSettings): grpc.CallOptions {
    const o: grpc.CallOptions = {};
    if (s.deadline !== undefined) o.deadline = s.deadline;
    return o;
  }

  private unary(name: string, req: unknown, s: GrpcCallSettings): Promise<unknown> {
    const method = this.method<Unary>(name);
    return new Promise((resolve, reject) => {
      const call = method(req, new grpc.Metadata(), this.callOptions(s), (err, res) => {
        s.signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromServiceError(err));
        else resolve(res);
      });
      const onAbort = (): void => call.cancel();
      s.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
