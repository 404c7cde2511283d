// Test helpers for the gRPC front end: a scripted RecommenderService for transport-level
// behaviour (status mapping, deadlines, limits, draining) and stock clients for the
// standard health and reflection services, built from their published .proto files.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { projectRoot } from '../../src/retrieval/native.js';
import type {
  CallOptions,
  FeedbackRequest,
  FeedbackResponse,
  NegativeFeedbackRequest,
  NegativeFeedbackResponse,
  RecommendationRequest,
  RecommendationResponse,
  RecommenderService,
  SimilarRequest,
  SimilarResponse,
} from '../../src/api/types.js';

/**
 * Stands in for the pipeline ONLY where the transport is under test: it records what the
 * transport handed it and answers with fixed data, or with whatever `behaviour` says.
 */
export class ScriptedService implements RecommenderService {
  isReady = true;
  calls: { method: string; req: unknown; opts: CallOptions | undefined }[] = [];
  /** Replaces the answer of the next calls: throw, wait, ... */
  behaviour: ((method: string, opts: CallOptions | undefined) => Promise<void>) | undefined;
  private readonly seen = new Set<string>();

  private async enter(method: string, req: unknown, opts?: CallOptions): Promise<void> {
    this.calls.push({ method, req, opts });
    if (this.behaviour) await this.behaviour(method, opts);
  }

  /** When set, recommend() answers it as a cache hit would: the same item list every time. */
  cachedAnswer: RecommendationResponse | undefined;

  async recommend(req: RecommendationRequest, opts?: CallOptions): Promise<RecommendationResponse> {
    await this.enter('recommend', req, opts);
    const c = this.cachedAnswer;
    if (c) {
      const latency = { total: Math.random(), retrieval: 0, ranking: 0, feature_fetch: 0 };
      return {
        request_id: `req_${this.calls.length}`,
        recommendations: c.recommendations,
        metadata: { ...c.metadata, cache_hit: true, latency_ms: latency },
      };
    }
    return {
      request_id: 'req_1',
      recommendations: Array.from({ length: req.num_items ?? 20 }, (_, i) => ({
        item_id: `item_${i}`,
        score: 1 / (i + 1),
        rank: i + 1,
        explanation: {
          reason: i === 0 ? 'similar_to_recent' : 'collaborative',
          source_items: i === 0 ? ['item_9'] : [],
        },
        metadata: { title: `Title ${i}`, categories: ['action'], creator_id: 'c1', year: 2020 + i },
      })),
      metadata: {
        model_version: 'v1',
        experiment_id: null,
        variant: 'control',
        retrieval_sources: { collaborative: 3, trending: 0 },
        latency_ms: { total: 1.5, retrieval: 0.5, ranking: 0.75, feature_fetch: 0, rerank: 0.25 },
        cache_hit: false,
      },
    };
  }

  async similar(req: SimilarRequest, opts?: CallOptions): Promise<SimilarResponse> {
    await this.enter('similar', req, opts);
    return {
      request_id: 'req_2',
      source_item: req.item_id,
      similar_items: [
        {
          item_id: 'item_7',
          similarity_score: 0.5,
          similarity_type: 'content',
          common_attributes: ['category:action'],
        },
        {
          item_id: 'item_8',
          similarity_score: 0,
          similarity_type: 'content',
          common_attributes: [],
        },
      ],
    };
  }

  async feedback(req: FeedbackRequest, opts?: CallOptions): Promise<FeedbackResponse> {
    await this.enter('feedback', req, opts);
    let dup = 0;
    for (const e of req.events) {
      const key = `${req.user_id}|${e.item_id}|${e.event_type}|${e.timestamp ?? ''}`;
      if (this.seen.has(key)) dup++;
      else this.seen.add(key);
    }
    return {
      status: 'accepted',
      events_processed: req.events.length - dup,
      duplicates_ignored: dup,
    };
  }

  async negativeFeedback(
    req: NegativeFeedbackRequest,
    opts?: CallOptions,
  ): Promise<NegativeFeedbackResponse> {
    await this.enter('negativeFeedback', req, opts);
    return { status: 'accepted', action_taken: 'item_blocked' };
  }

  ready(): boolean {
    return this.isReady;
  }
}

const LOADER = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export function healthClient(address: string): grpc.Client & {
  Check: (
    req: { service: string },
    cb: (err: grpc.ServiceError | null, res?: { status: string }) => void,
  ) => void;
} {
  const def = protoLoader.loadSync(healthProtoPath, LOADER);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  const c = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  return c as unknown as ReturnType<typeof healthClient>;
}

export function healthCheck(address: string, service: string): Promise<string> {
  const c = healthClient(address);
  return new Promise((resolve, reject) => {
    c.Check({ service }, (err, res) => {
      c.close();
      if (err) reject(err);
      else resolve(res!.status);
    });
  });
}

/** One request on grpc.reflection.v1.ServerReflection; returns the single response. */
export function reflect(
  address: string,
  request: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const dir = join(projectRoot(), 'node_modules', '@grpc', 'reflection', 'build', 'proto');
  const def = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    ...LOADER,
    includeDirs: [dir],
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  const c = new pkg.grpc.reflection.v1.ServerReflection(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const stream = (
      c as unknown as {
        ServerReflectionInfo: () => grpc.ClientDuplexStream<unknown, Record<string, unknown>>;
      }
    ).ServerReflectionInfo();
    stream.on('data', (res) => {
      stream.end();
      c.close();
      resolve(res);
    });
    stream.on('error', (err) => {
      c.close();
      reject(err);
    });
    stream.write(request);
  });
}

/** Health is copied from readiness by a poll (GrpcServerOptions.healthPollMs): wait for it. */
export async function waitForHealth(
  address: string,
  service: string,
  want: string,
  timeoutMs = 2000,
): Promise<string> {
  const end = Date.now() + timeoutMs;
  let got = await healthCheck(address, service);
  while (got !== want && Date.now() < end) {
    await sleep(25);
    got = await healthCheck(address, service);
  }
  return got;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
