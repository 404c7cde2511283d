// The grpc-js internals recserve reaches into, in one place: the node:http2 servers behind a
// grpc.Server (Server.http2Servers, private in grpc-js 1.14). Each use checks the shape at
// run time and degrades to plain grpc-js when it is not as expected (another version).
import type * as http2 from 'node:http2';

/** The grpc-js 1.14 fields read here and by fast.ts (private, checked at run time). */
export interface GrpcJsServerInternals {
  http2Servers?: unknown;
  onStreamOpened?: unknown;
}

/** The HTTP/2 servers a bound grpc.Server listens with; undefined when not found. */
export function http2ServersOf(server: object): http2.Http2Server[] | undefined {
  const internals = server as GrpcJsServerInternals;
  if (!(internals.http2Servers instanceof Map) || internals.http2Servers.size === 0) {
    return undefined;
  }
  const h2s = [...internals.http2Servers.keys()] as http2.Http2Server[];
  return h2s.every((h) => typeof h?.on === 'function' && typeof h.listeners === 'function')
    ? h2s
    : undefined;
}

/** The client connections of a grpc.Server, so that its shutdown can end them. */
export interface SessionTracker {
  /** Destroys every open connection (and the streams on it); returns how many there were. */
  destroyAll(): number;
}

/**
 * Tracks the HTTP/2 sessions of `server` (call right after bindAsync). Returns undefined
 * when grpc-js is not shaped as expected.
 *
 * Why: grpc-js 1.14's forceShutdown destroys only the sessions it records for channelz
 * (Server.sessions), and with channelz off (server.ts) it records none. tryShutdown sends
 * GOAWAY and waits for every stream to close, and a stream whose client never half-closes
 * (an open StreamFeedback, even one already answered) never closes on its own: the
 * connection, and the process with it, lived on until the keepalive timer dropped it, up
 * to a minute past the drain bound.
 */
export function trackSessions(server: object): SessionTracker | undefined {
  const h2s = http2ServersOf(server);
  if (!h2s) return undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  const add = (session: http2.ServerHttp2Session): void => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  };
  const byServer = (server as GrpcJsServerInternals).http2Servers as Map<unknown, unknown>;
  for (const h2 of h2s) {
    h2.on('session', add);
    // A connection accepted before this call (bindAsync answers once all its listeners are
    // up, which may be I/O turns after the first) is in grpc-js's own per-server set.
    const known = (byServer.get(h2) as { sessions?: unknown } | undefined)?.sessions;
    if (known instanceof Set) for (const s of known as Set<http2.ServerHttp2Session>) add(s);
  }
  return {
    destroyAll() {
      const n = sessions.size;
      for (const s of sessions) s.destroy();
      sessions.clear();
      return n;
    },
  };
}
