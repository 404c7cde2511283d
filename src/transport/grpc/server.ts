// The gRPC front end: recserve.v1.RecommendationService over @grpc/grpc-js, beside the
// standard grpc.health.v1.Health and server reflection. It decodes, validates with the same
// functions as HTTP (api/validate.ts), calls the one RecommenderService and encodes; all
// policy (caching, fallbacks, deadlines inside the pipeline) lives behind that interface.
// The unary methods are served by fast.ts's node:http2 path in front of grpc-js (same port,
// same frames; fast.ts says why); the handlers below are the same for both paths.
//
// Every channel argument below is set on purpose, because grpc-js's defaults suit a
// general-purpose library rather than a latency-bound service:
// - receive limit = the HTTP body limit (1 MiB): the same request is too large on both
//   front ends; grpc-js answers RESOURCE_EXHAUSTED without decoding it.
// - send limit 4 MiB: 500 items with metadata are ~100 KiB, so hitting it means a bug.
// - max concurrent streams per connection 256: enough to keep one multiplexed channel
//   busy (the pipeline batches concurrent requests), bounded so one client cannot queue
//   unbounded work; a client beyond it waits in its own HTTP/2 layer, not in our heap.
// - keepalive ping every 60 s on an idle connection, 20 s to answer: finds peers that
//   vanished behind a NAT or load balancer without pinging busy connections.
// - connection idle 5 min: releases sockets of clients that went quiet.
// - channelz off: it records every call, a cost with no reader here.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import { ApiError, toApiError } from '../../api/errors.js';
import type { CallOptions, FeedbackResponse, RecommenderService } from '../../api/types.js';
import {
  validateFeedbackRequest,
  validateNegativeFeedbackRequest,
  validateRecommendationRequest,
  validateSimilarRequest,
} from '../../api/validate.js';
import { logger, type Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import { similarResponseToWire } from './convert.js';
import {
  attachFastPath,
  frameMessage,
  type CallControl,
  type FastMethod,
  type Respond,
  type UnaryHandler,
} from './fast.js';
import { trackSessions } from './internals.js';
import {
  packageDefinition,
  recommendationFrame,
  serverServiceDefinition,
  SERVICE_NAME,
} from './proto.js';
import { toStatus } from './status.js';
import { ListenError } from '../listen-error.js';

export interface GrpcServerOptions {
  /** Interface to bind. Default 127.0.0.1 (loopback: expose deliberately). */
  host: string;
  /** Port; 0 picks a free one (tests). Default 50051. */
  port: number;
  /** Largest request message accepted. Default 1 MiB (the HTTP body limit). */
  maxReceiveBytes: number;
  /** Largest response message sent. Default 4 MiB. */
  maxSendBytes: number;
  /** HTTP/2 streams (calls) in flight per connection. Default 256. */
  maxConcurrentStreams: number;
  /** Ping an idle connection after this long. Default 60 s. */
  keepaliveTimeMs: number;
  /** ...and drop it when the ping is not answered within this. Default 20 s. */
  keepaliveTimeoutMs: number;
  /** Close connections with no calls for this long. Default 5 min. */
  maxConnectionIdleMs: number;
  /** close(): how long in-flight calls may take before they are cancelled. Default 10 s. */
  drainTimeoutMs: number;
  /** How often readiness is copied into grpc.health.v1. Default 250 ms. */
  healthPollMs: number;
  /** Expose server reflection. Default true. */
  reflection: boolean;
  /** Stream feedback: messages validated/recorded ahead of the reader at most. Default 32. */
  streamWindow: number;
  /**
   * Serve the unary methods on a hand-written node:http2 path in front of grpc-js (fast.ts
   * says why and how). Default true; false leaves every call to grpc-js.
   */
  fastPath: boolean;
  /** Calls by method and status code, latency by method (/metrics). Default: none. */
  metrics?: Metrics;
}

export const DEFAULT_GRPC_OPTIONS: GrpcServerOptions = {
  host: '127.0.0.1',
  port: 50051,
  maxReceiveBytes: 1024 * 1024,
  maxSendBytes: 4 * 1024 * 1024,
  maxConcurrentStreams: 256,
  keepaliveTimeMs: 60_000,
  keepaliveTimeoutMs: 20_000,
  maxConnectionIdleMs: 5 * 60_000,
  drainTimeoutMs: 10_000,
  healthPollMs: 250,
  reflection: true,
  streamWindow: 32,
  fastPath: true,
};

export interface GrpcServerHandle {
  /** The bound port (the real one when 0 was asked for). */
  readonly port: number;
  /** host:port, what a client dials. */
  readonly address: string;
  /** True when unary calls take the node:http2 fast path (fast.ts) rather than grpc-js. */
  readonly fastPath: boolean;
  /** Calls currently being handled. */
  inFlight(): number;
  /**
   * Graceful stop: health turns NOT_SERVING, new calls are refused, in-flight calls get
   * up to `timeoutMs` (default drainTimeoutMs) to finish, then are cancelled. Idempotent.
   */
  close(timeoutMs?: number): Promise<void>;
}

/** grpc-js Deadline (Date | ms number | Infinity) → absolute ms, or undefined for none. */
function deadlineMs(d: grpc.Deadline): number | undefined {
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

const OK = 'OK';
/** grpc.status number → its name, the `code` label of recserve_grpc_requests_total. */
const CODE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v, k]),
);

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown>;

/** A grpc-js call as a CallControl: grpc-js enforces the deadline itself. */
function grpcJsControl(call: AnyCall): CallControl {
  return {
    deadline: deadlineMs(call.getDeadline()),
    enforceDeadline: false,
    cancelled: () => call.cancelled,
    onCancel: (f) => call.once('cancelled', f),
  };
}

/** The longest delay setTimeout honours (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What a fast-path call that outlives its deadline is answered (grpc-js's words). */
const DEADLINE_PASSED = new ApiError('deadline_exceeded', 'Deadline exceeded');

export async function startGrpcServer(
  service: RecommenderService,
  options: Partial<GrpcServerOptions> = {},
): Promise<GrpcServerHandle> {
  const opts: GrpcServerOptions = { ...DEFAULT_GRPC_OPTIONS, ...options };
  const log: Logger = logger().child({ component: 'grpc' });
  let inFlight = 0;
  let closing = false;

  // Calls being handled. close() uses it when the drain bound passes: every such call is
  // answered UNAVAILABLE (retry on another replica) and its pipeline work aborted, so no
  // client waits on a server that is going away.
  const active = new Set<TrackedCall>();

  const metrics = opts.metrics;
  /** Per method, the metric label objects, made once rather than per call. */
  class MethodStats {
    readonly duration: Record<string, string>;
    private readonly byCode = new Map<string, Record<string, string>>();
    constructor(readonly method: string) {
      this.duration = { method };
    }
    record(code: string, t0: number): void {
      let l = this.byCode.get(code);
      if (!l) this.byCode.set(code, (l = { method: this.method, code }));
      metrics!.grpcRequests.inc(l);
      metrics!.grpcRequestSeconds.observe(this.duration, (performance.now() - t0) / 1000);
    }
  }

  /**
   * Bookkeeping shared by every handler, and the CallOptions the pipeline gets: the caller's
   * deadline, an abort signal, and settle(), which answers exactly once (the pipeline's
   * answer, an error, the drain's UNAVAILABLE, or the deadline on the fast path, whichever
   * comes first). A class rather than closures: one object per call on the hot path.
   */
  class TrackedCall implements CallOptions {
    deadline?: number;
    /** The deadline had passed before the call started. */
    readonly expired: boolean;
    private settled = false;
    private cancelled = false;
    private ac: AbortController | undefined;
    private timer: NodeJS.Timeout | undefined;
    private readonly t0: number;

    constructor(
      private readonly stats: MethodStats,
      private readonly call: CallControl,
      private readonly respond: Respond,
    ) {
      const deadline = call.deadline;
      this.t0 = metrics ? performance.now() : 0;
      if (deadline !== undefined) this.deadline = deadline;
      this.expired = deadline !== undefined && deadline <= Date.now();
      active.add(this);
      inFlight++;
      // grpc-js ends its own calls at their deadline; fast-path calls are ended here, the
      // pipeline's work aborted as grpc-js's cancellation would.
      // A deadline past setTimeout's range (grpc-timeout allows 99999999H) is no deadline:
      // Node would fire such a timer after 1 ms instead.
      const ms = deadline === undefined ? 0 : deadline - Date.now();
      if (call.enforceDeadline && deadline !== undefined && !this.expired && ms <= MAX_TIMER_MS) {
        this.timer = setTimeout(cutAtDeadline, ms, this);
      }
    }

    /**
     * As on HTTP, the AbortController is made only when a stage asks for the signal: most
     * answers (cache hits) never do, and one per call is measurable at high call rates. So
     * is the cancel listener, which only matters when there is a signal to abort.
     */
    get signal(): AbortSignal {
      if (!this.ac) {
        const c = new AbortController();
        this.ac = c;
        if (this.cancelled || this.call.cancelled()) c.abort();
        // The stream also closes after the answer was sent; only a call still being
        // worked on has anything to abort.
        else this.call.onCancel(() => this.settled || c.abort());
      }
      return this.ac.signal;
    }

    /** True once the call was answered (by its handler, the drain or the deadline). */
    get answered(): boolean {
      return this.settled;
    }

    settle(err: unknown, value?: unknown): void {
      if (this.settled) return;
      this.settled = true;
      if (this.timer) clearTimeout(this.timer);
      active.delete(this);
      inFlight--;
      if (err == null) {
        this.respond(null, value);
        if (metrics) this.stats.record(OK, this.t0);
      } else {
        const st = fail(this.stats.method, err);
        this.respond(st);
        if (metrics) {
          this.stats.record(CODE_NAMES[st.code ?? grpc.status.UNKNOWN] ?? 'UNKNOWN', this.t0);
        }
      }
    }

    /** Ends the call now with `err`, aborting the pipeline's work for it. */
    cut(err: ApiError): void {
      this.cancelled = true;
      this.ac?.abort();
      this.settle(err);
    }
  }

  function cutAtDeadline(t: TrackedCall): void {
    t.cut(DEADLINE_PASSED);
  }

  function fail(method: string, err: unknown): Partial<grpc.StatusObject> {
    const api = toApiError(err);
    if (api.code === 'internal') log.error({ err, method }, 'grpc call failed');
    return toStatus(api);
  }

  /** One unary method's handler, the same for the grpc-js path and the fast path. */
  function unary<Req, Res>(
    method: string,
    validate: (raw: unknown) => Req,
    run: (req: Req, o: CallOptions) => Promise<Res>,
    encode: (res: Res) => unknown,
  ): UnaryHandler {
    const stats = new MethodStats(method);
    return (request, call, respond) => {
      const t = new TrackedCall(stats, call, respond);
      // A call whose deadline already passed (it queued behind others) is not started.
      if (t.expired) {
        t.settle(new ApiError('deadline_exceeded', 'deadline passed before the call started'));
        return;
      }
      let req: Req;
      try {
        // Bytes that are not the request message arrive as the decoder's ApiError (proto.ts).
        if (request instanceof ApiError) throw request;
        req = validate(request);
      } catch (err) {
        t.settle(err);
        return;
      }
      run(req, t).then(
        (res) => t.settle(null, encode(res)),
        (err: unknown) => t.settle(err ?? new Error('rejected without a reason')),
      );
    };
  }

  /** A unary handler as grpc-js calls it. */
  const viaGrpcJs =
    (h: UnaryHandler): grpc.handleUnaryCall<unknown, unknown> =>
    (call, callback) =>
      h(call.request, grpcJsControl(call), callback);

  const streamStats = new MethodStats('StreamFeedback');
  const streamFeedback: grpc.handleClientStreamingCall<unknown, unknown> = (call, callback) => {
    const t = new TrackedCall(streamStats, grpcJsControl(call), callback);
    const total: FeedbackResponse = {
      status: 'accepted',
      events_processed: 0,
      duplicates_ignored: 0,
    };
    let index = 0;
    let pending = 0;
    let failed = false;
    let chain: Promise<void> = Promise.resolve();
    const fail1 = (err: unknown): void => {
      failed = true;
      t.settle(err);
    };
    call.on('data', (msg: unknown) => {
      if (failed || t.answered) return;
      const i = index++;
      // Each message is recorded in arrival order (a user's session order matters); the
      // window bounds how far the reader runs ahead of the pipeline.
      if (++pending >= opts.streamWindow) call.pause();
      chain = chain.then(async () => {
        try {
          // Nothing more is recorded once the stream was answered (a bad message, or the
          // drain's UNAVAILABLE): the client was told the rest did not go in.
          if (failed || t.answered) return;
          if (msg instanceof ApiError) throw msg; // not a FeedbackRequest (proto.ts)
          const r = await service.feedback(validateFeedbackRequest(msg), t);
          total.events_processed += r.events_processed;
          total.duplicates_ignored += r.duplicates_ignored;
        } catch (err) {
          const api = toApiError(err);
          fail1(new ApiError(api.code, `message ${i}: ${api.message}`, api.field));
        } finally {
          if (--pending < opts.streamWindow) call.resume();
        }
      });
    });
    call.on('end', () => {
      void chain.then(() => t.settle(null, total));
    });
    call.on('error', fail1);
  };

  const handlers: Record<string, UnaryHandler> = {
    GetRecommendations: unary(
      'GetRecommendations',
      validateRecommendationRequest,
      (r, o) => service.recommend(r, o),
      // Encoded by serverServiceDefinition's serializer, straight from the contract's object.
      (r) => r,
    ),
    GetSimilarItems: unary(
      'GetSimilarItems',
      validateSimilarRequest,
      (r, o) => service.similar(r, o),
      similarResponseToWire,
    ),
    RecordFeedback: unary(
      'RecordFeedback',
      validateFeedbackRequest,
      (r, o) => service.feedback(r, o),
      (r) => r,
    ),
    RecordNegativeFeedback: unary(
      'RecordNegativeFeedback',
      validateNegativeFeedbackRequest,
      (r, o) => service.negativeFeedback(r, o),
      (r) => r,
    ),
  };
  const impl: grpc.UntypedServiceImplementation = { StreamFeedback: streamFeedback };
  for (const [name, h] of Object.entries(handlers)) impl[name] = viaGrpcJs(h);

  const server = new grpc.Server({
    'grpc.max_receive_message_length': opts.maxReceiveBytes,
    'grpc.max_send_message_length': opts.maxSendBytes,
    'grpc.max_concurrent_streams': opts.maxConcurrentStreams,
    'grpc.keepalive_time_ms': opts.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs,
    'grpc.max_connection_idle_ms': opts.maxConnectionIdleMs,
    'grpc.enable_channelz': 0,
  });
  const definition = serverServiceDefinition();
  server.addService(definition, impl);

  // Health: '' (the whole server) and the service name follow service.ready().
  const health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  health.addToServer(server);
  let lastReady: boolean | undefined;
  const syncHealth = (): void => {
    const ready = !closing && service.ready();
    if (ready === lastReady) return;
    lastReady = ready;
    const s = ready ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', s);
    health.setStatus(SERVICE_NAME, s);
  };
  syncHealth();
  const healthTimer = setInterval(syncHealth, opts.healthPollMs);
  healthTimer.unref();

  if (opts.reflection) new ReflectionService(packageDefinition()).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${opts.host}:${opts.port}`,
      grpc.ServerCredentials.createInsecure(),
      (err, p) => {
        if (!err) return resolve(p);
        clearInterval(healthTimer);
        server.forceShutdown();
        reject(
          new ListenError(
            `gRPC cannot listen on ${opts.host}:${opts.port} (${err.message}); ` +
              'choose another --grpc-port, or --no-grpc',
          ),
        );
      },
    );
  });
  // So that close() can end every connection at its bound (internals.ts says why).
  const sessions = trackSessions(server);
  if (!sessions) log.warn('grpc-js internals not as expected: shutdown may wait on idle clients');
  let fastPath = false;
  if (opts.fastPath) {
    const methods: FastMethod[] = Object.entries(handlers).map(([name, handler]) => {
      const d = definition[name]!;
      const serialize = d.responseSerialize as (v: unknown) => Buffer;
      return {
        path: d.path,
        deserialize: d.requestDeserialize as (b: Buffer) => unknown,
        frame:
          name === 'GetRecommendations' ? recommendationFrame() : (v) => frameMessage(serialize(v)),
        handler,
      };
    });
    fastPath = attachFastPath(server, methods, opts);
    if (!fastPath) log.warn('grpc-js internals not as expected: unary calls stay on grpc-js');
  }
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  // Not `port`: log readers (bench/load.ts) take that key for the HTTP port.
  log.info({ grpcHost: opts.host, grpcPort: port, fastPath }, 'grpc listening');

  let closed: Promise<void> | undefined;
  return {
    port,
    address: `${host}:${port}`,
    fastPath,
    inFlight: () => inFlight,
    close(timeoutMs = opts.drainTimeoutMs): Promise<void> {
      closed ??= new Promise<void>((resolve) => {
        closing = true;
        syncHealth();
        clearInterval(healthTimer);
        const timer = setTimeout(() => {
          log.warn({ inFlight }, 'grpc drain timed out; cancelling the calls left');
          const stop = new ApiError('unavailable', 'server shutting down; retry elsewhere');
          for (const t of [...active]) t.cut(stop);
          // Answered calls let tryShutdown finish, unless a client keeps its side of a
          // stream open (answered or not): after 100 ms for the answers to go out, every
          // connection left is destroyed, which grpc-js's forceShutdown alone does not do
          // (internals.ts says why).
          force = setTimeout(() => {
            server.forceShutdown();
            const left = sessions?.destroyAll() ?? 0;
            if (left > 0) log.warn({ connections: left }, 'grpc connections closed at the bound');
            resolve();
          }, 100);
        }, timeoutMs);
        let force: NodeJS.Timeout | undefined;
        server.tryShutdown(() => {
          clearTimeout(timer);
          clearTimeout(force);
          resolve();
        });
      });
      return closed;
    },
  };
}
