// A hand-written node:http2 path for recserve's unary methods, on the same port and the same
// HTTP/2 sessions as grpc-js, which keeps everything else: health, reflection, the streaming
// method, connection management (keepalive, idle timeout, max concurrent streams, GOAWAY on
// shutdown) and every call the fast path declines (compressed requests, a malformed
// grpc-timeout, a content-type that is not gRPC).
//
// Why: under cached load a grpc-js unary call cost ~110-160 µs of the event loop, of which
// grpc-js's call machinery (interceptor chain, Metadata objects built from and into
// headers, a stream decoder, per-call listeners, a copy of every answer into a framed
// buffer) and the garbage it makes were the largest part after node:http2 itself
// (bench/README.md, "gRPC load"). Here a unary call is: the request's DATA collected, its
// one message decoded by the same protobufjs deserializer grpc-js would use, the handler
// called, and the answer sent as headers + one framed message + trailers, or trailers-only
// for an error, exactly the frames grpc-js sends (test/grpc/fast.test.ts compares both
// paths call for call).
//
// How it is attached: grpc-js registers one 'stream' listener on each HTTP/2 server it
// creates (Server.http2Servers, private in grpc-js 1.14; internals.ts finds them).
// attachFastPath swaps that listener for one that offers each stream to the fast path first
// and hands it to grpc-js's own listener otherwise. When grpc-js's internals are not shaped
// as expected (another version), nothing is changed and every call goes through grpc-js:
// slower, never wrong; the server logs it and GrpcServerHandle.fastPath says so (a test
// asserts it is on).
import type * as http2 from 'node:http2';
import { status as Status, type StatusObject } from '@grpc/grpc-js';
import { ApiError } from '../../api/errors.js';
import { http2ServersOf, type GrpcJsServerInternals } from './internals.js';
import { toStatus } from './status.js';

/** What a unary handler knows about its call, whichever path carried it. */
export interface CallControl {
  /** Absolute deadline (ms since the epoch) from grpc-timeout; undefined for none. */
  readonly deadline: number | undefined;
  /**
   * True when the server must end the call at its deadline itself. grpc-js arms its own
   * timer for the calls it carries; the fast path leaves that to the handler's bookkeeping.
   */
  readonly enforceDeadline: boolean;
  /** True once the caller went away (reset the stream, lost the connection). */
  cancelled(): boolean;
  /** Runs f when the stream closes; after the answer that is no cancellation (check first). */
  onCancel(f: () => void): void;
}

/** Answers a call once: an error status, or the response value. */
export type Respond = (err: Partial<StatusObject> | null, value?: unknown) => void;
export type UnaryHandler = (request: unknown, call: CallControl, respond: Respond) => void;

export interface FastMethod {
  /** "/recserve.v1.RecommendationService/GetRecommendations" */
  path: string;
  /** The method's request deserializer (the one grpc-js would call). */
  deserialize: (message: Buffer) => unknown;
  /** The response as one gRPC frame: flag byte, big-endian length, message. */
  frame: (value: unknown) => Buffer;
  handler: UnaryHandler;
}

export interface FastPathOptions {
  /** Largest request message accepted (grpc.max_receive_message_length). */
  maxReceiveBytes: number;
  /** Largest response message sent (grpc.max_send_message_length). */
  maxSendBytes: number;
}

/** A gRPC frame around `message`, written in place after a 5-byte gap the caller left. */
export function frameInPlace(buf: Buffer): Buffer {
  buf[0] = 0; // not compressed
  buf.writeUInt32BE(buf.length - 5, 1);
  return buf;
}

/** A gRPC frame holding a copy of `message`. */
export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out.set(message, 5);
  return frameInPlace(out);
}

// The response headers and OK trailers grpc-js sends, made once. node:http2 copies what it
// needs from them per call and never writes to them.
const RESPONSE_HEADERS = {
  ':status': 200,
  'content-type': 'application/grpc+proto',
  'grpc-accept-encoding': 'identity,deflate,gzip',
  'grpc-encoding': 'identity',
};
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
const WAIT_FOR_TRAILERS = { waitForTrailers: true };
const END_STREAM = { endStream: true };

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function ignore(): void {}

/** grpc-timeout units (the gRPC HTTP/2 spec) in ms. */
const TIMEOUT_UNITS: Record<string, number> = { H: 3.6e6, M: 6e4, S: 1e3, m: 1, u: 1e-3, n: 1e-6 };
const TIMEOUT_RE = /^(\d{1,8})([HMSmun])$/;

/** grpc-timeout → absolute deadline in ms; null when malformed (grpc-js answers those). */
export function parseGrpcTimeout(v: string, now = Date.now()): number | null {
  const m = TIMEOUT_RE.exec(v);
  if (!m) return null;
  return now + Math.floor(Number(m[1]) * TIMEOUT_UNITS[m[2]!]!);
}

/** One unary call on the fast path: collects its request, answers once. */
class FastCall implements CallControl {
  readonly enforceDeadline = true;
  private first: Buffer | undefined;
  private rest: Buffer[] | undefined;
  private size = 0;
  private answered = false;
  readonly respond: Respond;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly method: FastMethod,
    readonly deadline: number | undefined,
    private readonly o: FastPathOptions,
  ) {
    this.respond = (err, value) => this.answer(err, value);
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.once('end', () => this.onEnd());
  }

  cancelled(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  onCancel(f: () => void): void {
    this.stream.once('close', f);
  }

  private onData(chunk: Buffer): void {
    if (this.answered) return; // refused early; the rest of the body is drained
    if (this.first === undefined) this.first = chunk;
    else (this.rest ??= []).push(chunk);
    this.size += chunk.length;
    if (this.size < 5) return;
    const head = this.rest ? Buffer.concat([this.first, ...this.rest], 5) : this.first;
    const length = head.readUInt32BE(1);
    // grpc-js's wording for both limits, so either path reads the same to a client.
    if (length > this.o.maxReceiveBytes) {
      this.fail(
        Status.RESOURCE_EXHAUSTED,
        `Received message larger than max (${length} vs ${this.o.maxReceiveBytes})`,
      );
    } else if (this.size > 5 + length) {
      this.fail(
        Status.UNIMPLEMENTED,
        `Received a second request message for server streaming method ${this.method.path}`,
      );
    }
  }

  private onEnd(): void {
    if (this.answered) return;
    const size = this.size;
    if (size === 0) {
      this.fail(
        Status.UNIMPLEMENTED,
        `Received no request message for server streaming method ${this.method.path}`,
      );
      return;
    }
    const buf = this.rest ? Buffer.concat([this.first!, ...this.rest], size) : this.first!;
    this.first = this.rest = undefined;
    if (size < 5 || size !== 5 + buf.readUInt32BE(1)) {
      // A malformed request, answered as one whose message bytes are bad (proto.ts). grpc-js
      // drops such a partial message and answers as if none came (UNIMPLEMENTED).
      const what =
        size < 5
          ? `inside its gRPC frame header (${size} of 5 bytes)`
          : `inside its message (${size - 5} of ${buf.readUInt32BE(1)} bytes)`;
      this.answer(toStatus(new ApiError('malformed_body', `the request ended ${what}`)));
      return;
    }
    // A compressed message needs grpc-encoding, and calls carrying one go to grpc-js.
    if (buf[0] !== 0) {
      this.fail(Status.INTERNAL, 'Compressed message without a grpc-encoding');
      return;
    }
    let request: unknown;
    try {
      request = this.method.deserialize(buf.subarray(5));
    } catch {
      this.fail(Status.INTERNAL, 'Error deserializing request'); // grpc-js's words
      return;
    }
    this.method.handler(request, this, this.respond);
  }

  private fail(code: Status, details: string): void {
    this.answer({ code, details });
  }

  private answer(err: Partial<StatusObject> | null, value?: unknown): void {
    if (this.answered) return;
    this.answered = true;
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    if (err) {
      sendStatus(stream, err);
      return;
    }
    let frame: Buffer;
    try {
      frame = this.method.frame(value);
    } catch (e) {
      sendStatus(stream, {
        code: Status.INTERNAL,
        details: `Error serializing response: ${(e as Error).message}`,
      });
      return;
    }
    if (frame.length - 5 > this.o.maxSendBytes) {
      sendStatus(stream, {
        code: Status.RESOURCE_EXHAUSTED,
        details: `Sent message larger than max (${frame.length - 5} vs. ${this.o.maxSendBytes})`,
      });
      return;
    }
    stream.respond(RESPONSE_HEADERS, WAIT_FOR_TRAILERS);
    stream.once('wantTrailers', sendOkTrailers);
    stream.end(frame);
  }
}

/** A trailers-only answer (headers and status in one HEADERS frame), as grpc-js sends. */
function sendStatus(stream: http2.ServerHttp2Stream, st: Partial<StatusObject>): void {
  const headers: http2.OutgoingHttpHeaders = {
    ':status': 200,
    'content-type': 'application/grpc+proto',
    'grpc-status': String(st.code ?? Status.UNKNOWN),
    'grpc-message': encodeURI(st.details ?? ''),
  };
  if (st.metadata) {
    for (const [k, v] of Object.entries(st.metadata.getMap())) {
      headers[k] = typeof v === 'string' ? v : v.toString('base64');
    }
  }
  stream.respond(headers, END_STREAM);
}

type StreamListener = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  ...rest: unknown[]
) => void;

/**
 * Puts the fast path in front of grpc-js on every HTTP/2 server `server` listens on (call
 * after bindAsync). Returns false, changing nothing, when grpc-js is not shaped as expected.
 */
export function attachFastPath(
  server: object,
  methods: readonly FastMethod[],
  o: FastPathOptions,
): boolean {
  const internals = server as GrpcJsServerInternals;
  const h2s = http2ServersOf(server);
  // All or nothing: each server must carry exactly grpc-js's one 'stream' listener.
  if (!h2s || !h2s.every((h) => h.listeners('stream').length === 1)) return false;
  // grpc-js counts open streams per session for its idle timeout; the fast path's streams
  // must count too, or a session busy with fast calls would be closed as idle.
  const opened =
    typeof internals.onStreamOpened === 'function'
      ? (internals.onStreamOpened as (s: http2.ServerHttp2Stream) => void).bind(server)
      : undefined;
  const byPath = new Map(methods.map((m) => [m.path, m]));

  for (const h2 of h2s) {
    const grpcJs = h2.listeners('stream')[0] as StreamListener;
    h2.removeListener('stream', grpcJs);
    h2.on('stream', function (this: http2.Http2Server, stream, headers, ...rest) {
      const m = byPath.get(headers[':path'] as string);
      const ct = headers['content-type'];
      const enc = headers['grpc-encoding'];
      const timeout = headers['grpc-timeout'];
      const deadline = timeout === undefined ? undefined : parseGrpcTimeout(String(timeout));
      if (
        m === undefined ||
        typeof ct !== 'string' ||
        !ct.startsWith('application/grpc') ||
        (enc !== undefined && enc !== 'identity') ||
        deadline === null
      ) {
        grpcJs.call(this, stream, headers, ...rest);
        return;
      }
      // As grpc-js: errors are followed by 'close', which is what the call acts on.
      stream.on('error', ignore);
      opened?.(stream);
      new FastCall(stream, m, deadline, o);
    } as StreamListener);
  }
  return true;
}
