// The HTTP front end on uWebSockets.js, and the ONLY module that touches uWS objects. Its
// rules, all kept here so no pipeline code ever sees `res`:
// - onAborted is attached before any await: uWS terminates the process if a response is
//   aborted with no handler, and writing to an aborted response is use-after-free.
// - the HttpRequest is valid only during the synchronous handler: headers are read first.
// - body chunks are copied: uWS neuters the ArrayBuffer after each onData callback.
// - every write after async work happens inside res.cork() (one syscall, and required).
// - large bodies go out with tryEnd and resume from onWritable (backpressure).
// - an answer to HEAD carries the headers a GET would get and no body: uWS sends whatever
//   it is given, and a client reads body bytes after a HEAD answer as the next response.
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { ApiError, toApiError } from '../../api/errors.js';
import { ListenError } from '../listen-error.js';
import type { CallOptions, RecommendationResponse, RecommenderService } from '../../api/types.js';
import {
  validateFeedbackRequest,
  validateNegativeFeedbackRequest,
  validateRecommendationRequest,
  validateSimilarRequest,
} from '../../api/validate.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import { CodecRegistry, type Route } from './codec.js';

export interface HttpServerOptions {
  host: string;
  /** 0 = any free port (read it back from HttpServer.port). */
  port: number;
  /** Larger bodies are answered 413 without being buffered. */
  maxBodyBytes: number;
  metrics: Metrics;
  log: Logger;
  codecs?: CodecRegistry;
}

export interface HttpServer {
  readonly port: number;
  readonly codecs: CodecRegistry;
  /** Requests accepted and not yet answered. */
  inFlight(): number;
  /**
   * Graceful stop: close the listen socket (no new connections), answer what is in flight
   * (responses then carry Connection: close), wait up to drainTimeoutMs, then close the rest.
   */
  close(drainTimeoutMs?: number): Promise<void>;
}

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  406: '406 Not Acceptable',
  409: '409 Conflict',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
  504: '504 Gateway Timeout',
};

const RETRY_SOON = [['retry-after', '1']] as const;

/** Per-request state the adapter keeps; `aborted` guards every later write. */
interface Exchange {
  res: HttpResponse;
  aborted: boolean;
  done: boolean;
  route: string;
  startNs: bigint;
  controller: AbortController | undefined;
}

type Handler = (body: unknown, opts: CallOptions) => Promise<unknown>;

/** How a response goes out besides status, type and body. */
interface ReplyOptions {
  /** Close the connection after it (small error bodies only). */
  closeConnection?: boolean;
  /** The answer to a HEAD request: every header, Content-Length included, and no body. */
  headOnly?: boolean;
  /** Headers beyond content-type (the Allow of a 405). */
  headers?: readonly (readonly [string, string])[];
}

const ROUTES: { path: string; route: Route; validate: (raw: unknown) => unknown; call: string }[] =
  [
    {
      path: '/v1/recommendations',
      route: 'recommendations',
      validate: validateRecommendationRequest,
      call: 'recommend',
    },
    { path: '/v1/similar', route: 'similar', validate: validateSimilarRequest, call: 'similar' },
    {
      path: '/v1/feedback',
      route: 'feedback',
      validate: validateFeedbackRequest,
      call: 'feedback',
    },
    {
      path: '/v1/feedback/negative',
      route: 'negative_feedback',
      validate: validateNegativeFeedbackRequest,
      call: 'negativeFeedback',
    },
  ];

export async function startHttpServer(
  service: RecommenderService,
  opts: HttpServerOptions,
): Promise<HttpServer> {
  const { metrics, log, maxBodyBytes } = opts;
  const codecs = opts.codecs ?? new CodecRegistry();
  const app: TemplatedApp = uWS.App();
  let inFlight = 0;
  let draining = false;
  let drained: (() => void) | undefined;

  const begin = (res: HttpResponse, route: string): Exchange => {
    const ex: Exchange = {
      res,
      aborted: false,
      done: false,
      route,
      startNs: process.hrtime.bigint(),
      controller: undefined,
    };
    inFlight++;
    res.onAborted(() => {
      ex.aborted = true;
      ex.controller?.abort();
      finish(ex, 499);
    });
    return ex;
  };

  const finish = (ex: Exchange, status: number): void => {
    if (ex.done) return;
    ex.done = true;
    inFlight--;
    metrics.requests.inc({ route: ex.route, status: String(status) });
    metrics.requestSeconds.observe(
      { route: ex.route },
      Number(process.hrtime.bigint() - ex.startNs) / 1e9,
    );
    // Not from here: finish() runs inside res.cork(), and closing the app now would close the
    // socket before the corked response leaves it (the last answer of a drain was lost).
    if (draining && inFlight === 0) setImmediate(() => drained?.());
  };

  /** Writes a whole response (status, headers, body) with backpressure; corked by callers. */
  const send = (
    ex: Exchange,
    status: number,
    contentType: string,
    body: Uint8Array | string,
    reply: ReplyOptions = {},
  ): void => {
    if (ex.aborted || ex.done) return;
    const res = ex.res;
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    res.cork(() => {
      res.writeStatus(STATUS_TEXT[status] ?? `${status} Unknown`);
      res.writeHeader('content-type', contentType);
      for (const [name, value] of reply.headers ?? []) res.writeHeader(name, value);
      if (draining) res.writeHeader('connection', 'close');
      if (reply.headOnly) {
        // endWithoutBody(length) in uWS.js 20.30 waits for that many body bytes and never
        // completes the response, so the length a GET would carry goes out as a header.
        res.writeHeader('content-length', String(bytes.byteLength));
        res.endWithoutBody();
        finish(ex, status);
        return;
      }
      if (reply.closeConnection) {
        // Small error bodies only: end() writes everything and closes after it.
        res.end(bytes, true);
        finish(ex, status);
        return;
      }
      const total = bytes.byteLength;
      const [ok, done] = res.tryEnd(bytes, total);
      if (done || ok) {
        finish(ex, status);
        return;
      }
      // The socket buffer is full: resume from where the kernel stopped taking bytes.
      const startOffset = res.getWriteOffset();
      res.onWritable((offset) => {
        const [ok2, done2] = res.tryEnd(bytes.subarray(offset - startOffset), total);
        if (done2 || ok2) finish(ex, status);
        return ok2;
      });
    });
  };

  const sendError = (ex: Exchange, err: unknown, reply: ReplyOptions = {}): void => {
    const e = toApiError(err);
    if (e.code === 'internal') log.error({ err, route: ex.route }, 'request failed');
    send(ex, e.httpStatus, 'application/json', JSON.stringify(e.toJSON()), reply);
  };

  /** Reads the body (copying chunks), enforcing the size limit while it streams in. */
  const readBody = (ex: Exchange, onBody: (bytes: Uint8Array) => void): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    ex.res.onData((chunk, isLast) => {
      if (over) return;
      size += chunk.byteLength;
      if (size > maxBodyBytes) {
        over = true;
        sendError(
          ex,
          new ApiError('payload_too_large', `request body exceeds ${maxBodyBytes} bytes`),
          { closeConnection: true },
        );
        return;
      }
      // Buffer.from(ArrayBuffer) would alias the neutered buffer; copy the bytes out.
      chunks.push(Buffer.from(new Uint8Array(chunk)));
      if (isLast) onBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
  };

  /** Path -> the methods it answers: the Allow header of a 405. */
  const allowed = new Map<string, string>();
  for (const r of ROUTES) {
    allowed.set(r.path, 'POST');
    const call = (service as unknown as Record<string, Handler>)[r.call]!.bind(service);
    app.post(r.path, (res: HttpResponse, req: HttpRequest) => {
      const ex = begin(res, r.route);
      const contentType = req.getHeader('content-type');
      const accept = req.getHeader('accept');
      const length = Number(req.getHeader('content-length') || '0');
      const timeoutHeader = req.getHeader('x-timeout-ms');
      const timeoutMs = timeoutHeader === '' ? 0 : Number(timeoutHeader);
      if (length > maxBodyBytes) {
        // Refuse before a single byte is buffered; close so the rest is not read.
        sendError(
          ex,
          new ApiError('payload_too_large', `request body exceeds ${maxBodyBytes} bytes`),
          { closeConnection: true },
        );
        return;
      }
      // While draining, requests on connections that were already open are still served
      // (their responses carry Connection: close); the closed listen socket stops new ones.
      readBody(ex, (bytes) => {
        let input: unknown;
        try {
          // A deadline that is not a number was ignored before: the caller believed the
          // server bounded the work when it did not.
          if (!(Number.isFinite(timeoutMs) && timeoutMs >= 0)) {
            throw ApiError.invalid(
              'X-Timeout-Ms',
              `must be a number of milliseconds >= 0, got ${JSON.stringify(timeoutHeader.slice(0, 40))}`,
            );
          }
          // Negotiate the response type before doing any work: a 406 should cost nothing.
          codecs.forAccept(r.route, accept);
          input = r.validate(codecs.decode(r.route, bytes, contentType));
        } catch (err) {
          sendError(ex, err);
          return;
        }
        // The AbortController is made only if a stage asks for the signal: most answers
        // (cache hits) never do, and one per request is measurable at 20k req/s.
        const callOpts: CallOptions = {
          get signal(): AbortSignal {
            if (!ex.controller) {
              ex.controller = new AbortController();
              if (ex.aborted) ex.controller.abort();
            }
            return ex.controller.signal;
          },
        };
        if (timeoutMs > 0) callOpts.deadline = Date.now() + timeoutMs;
        call(input, callOpts).then(
          (value) => {
            if (ex.aborted) return;
            let encoded: { body: Uint8Array | string; contentType: string };
            try {
              encoded = codecs.encode(r.route, value, accept);
            } catch (err) {
              sendError(ex, err);
              return;
            }
            // The API contract's "503: service degraded (fallback recommendations)": the
            // list is there, and the status tells a client that it is not personalised.
            const degraded =
              r.route === 'recommendations' &&
              (value as RecommendationResponse).metadata.degraded !== undefined;
            if (degraded) {
              send(ex, 503, encoded.contentType, encoded.body, { headers: RETRY_SOON });
            } else {
              send(ex, 200, encoded.contentType, encoded.body);
            }
          },
          (err: unknown) => {
            if (!ex.aborted) sendError(ex, err);
          },
        );
      });
    });
  }

  // HEAD on a GET route is the GET's answer without its body, as HTTP requires.
  const getRoute = (path: string, route: string, produce: () => [number, string, string]) => {
    allowed.set(path, 'GET, HEAD');
    const answer = (headOnly: boolean) => (res: HttpResponse) => {
      const ex = begin(res, route);
      const [status, type, body] = produce();
      send(ex, status, type, body, { headOnly });
    };
    app.get(path, answer(false));
    app.head(path, answer(true));
  };
  getRoute('/healthz', 'healthz', () => [200, 'application/json', '{"status":"ok"}']);
  getRoute('/readyz', 'readyz', () => {
    // A shared store (Redis) shows its state. Losing it does not make the server unready:
    // every replica shares it, so unready would take all of them out of the balancer, where
    // a ready one still serves degraded recommendations (and says 503 store_unavailable for
    // feedback, which the client retries).
    const health = service.storeHealth?.() ?? null;
    const store = health === null ? {} : { store: health };
    if (service.ready() && !draining) {
      return [
        200,
        'application/json',
        health === null ? '{"status":"ready"}' : JSON.stringify({ status: 'ready', ...store }),
      ];
    }
    if (draining) return [503, 'application/json', '{"status":"draining"}'];
    // A start-up that failed says why here, not only in the log: "not_ready" alone read the
    // same as a load still running.
    const failed = service.failedReason?.() ?? null;
    if (failed !== null)
      return [503, 'application/json', JSON.stringify({ status: 'failed', reason: failed })];
    const waiting = service.waitingFor?.() ?? null;
    return waiting === null
      ? [503, 'application/json', '{"status":"not_ready"}']
      : [503, 'application/json', JSON.stringify({ status: 'not_ready', waiting_for: waiting })];
  });
  // The model repository as this server sees it: which version serves, which failed and
  // why (a hot swap that did not happen is visible here, not only in the log).
  getRoute('/v1/models', 'models', () => {
    const models = service.models?.() ?? null;
    if (models !== null) return [200, 'application/json', JSON.stringify(models)];
    const err = new ApiError('not_found', 'this server has no model repository');
    return [err.httpStatus, 'application/json', JSON.stringify(err)];
  });
  getRoute('/metrics', 'metrics', () => [
    200,
    'text/plain; version=0.0.4; charset=utf-8',
    metrics.render(),
  ]);
  app.any('/*', (res, req) => {
    // uWS hands the method lower-cased whatever the client sent.
    const method = req.getMethod().toUpperCase();
    const url = req.getUrl();
    const ex = begin(res, 'unknown');
    const allow = allowed.get(url);
    const err = allow
      ? new ApiError('method_not_allowed', `${method} is not allowed on ${url}; use ${allow}`)
      : new ApiError('not_found', `no route ${url}`);
    // Drain a body the client may be sending so the connection stays usable.
    res.onData(() => undefined);
    sendError(ex, err, {
      headOnly: method === 'HEAD',
      ...(allow ? { headers: [['allow', allow] as const] } : {}),
    });
  });

  // uWS listens with SO_REUSEPORT unless told otherwise: a second recserve on the same port
  // started, and the kernel split the connections between two servers with separate state
  // (a user's hide sent to one was not enforced by the other). LIBUS_LISTEN_EXCLUSIVE_PORT
  // (1) makes the second refuse; the typings lack the (host, port, options, cb) form.
  const listenExclusive = app.listen as unknown as (
    host: string,
    port: number,
    options: number,
    cb: (sock: us_listen_socket | false) => void,
  ) => TemplatedApp;
  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    listenExclusive.call(app, opts.host, opts.port, 1, (sock) => {
      if (sock) resolve(sock);
      else
        reject(
          new ListenError(
            `cannot listen on ${opts.host}:${opts.port} (in use, or not an address of this host?)`,
          ),
        );
    });
  });
  const port = uWS.us_socket_local_port(listenSocket);
  let closing: Promise<void> | undefined;

  return {
    port,
    codecs,
    inFlight: () => inFlight,
    close(drainTimeoutMs = 10_000): Promise<void> {
      if (closing) return closing;
      draining = true;
      uWS.us_listen_socket_close(listenSocket);
      closing = new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          // Closes idle keep-alive connections too; in-flight ones are answered by now.
          // close() exists in uWS.js v20.30 but is missing from its typings.
          (app as unknown as { close(): void }).close();
          resolve();
        };
        const timer = setTimeout(() => {
          log.warn({ inFlight }, 'drain timeout: closing with requests in flight');
          done();
        }, drainTimeoutMs);
        if (inFlight === 0) done();
        else drained = done;
      });
      return closing;
    },
  };
}
