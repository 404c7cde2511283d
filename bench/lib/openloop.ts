// An open-loop load generator: requests are sent at a fixed average rate with Poisson
// (exponential) inter-arrival times, whatever the server's answers do, and each request's
// latency runs from the moment it was SCHEDULED to the end of its response. A slow answer
// therefore never delays or hides the requests behind it (no coordinated omission), and a
// client that falls behind counts against the server, not in its favour.
//
// Why not autocannon's `overallRate`: it gives each of its C connections rate/C requests per
// one-second window and sends them back to back at the start of each window, so at 34 req/s
// over 16 connections the server sees a burst of 16 concurrent requests at the top of every
// second and then silence: a concurrency-16 burst test, not a rate. (It also corrects for
// coordinated omission with an expected interval of ceil(1 / per-connection rate) = 1 ms,
// which adds synthetic samples to every response slower than 1 ms.) bench/README.md shows
// both side by side.
import http from 'node:http';
import { percentile } from './stats.js';

export interface OpenLoopOptions {
  /** Base URL, e.g. http://127.0.0.1:8080. */
  url: string;
  /** Average requests per second. */
  rate: number;
  /** Seconds of sending; answers still in flight at the end are awaited (up to timeoutMs). */
  durationS: number;
  /** Builds each request (path + JSON body). */
  makeRequest: () => { path: string; body: string };
  /** A request unanswered after this long counts as an error. Default 10 s. */
  timeoutMs?: number;
  /** Seeded uniform [0, 1) source for the arrivals; default Math.random. */
  random?: () => number;
  /**
   * Requests in flight at most; an arrival beyond it is not sent and counts as an error
   * (`dropped`), so an overloaded server cannot make the generator open thousands of
   * sockets. Default 1,000.
   */
  maxInFlight?: number;
  /**
   * Told of every answer: when it was scheduled (performance.now() time), its latency,
   * its status (null: failed or timed out) and, with `wantBody`, its body. For benchmarks
   * that split a run into windows (bench/swap.ts).
   */
  onAnswer?: (scheduledMs: number, latencyMs: number, status: number | null, body: string) => void;
  /** Collect each answer's body for onAnswer. Default false. */
  wantBody?: boolean;
}

export interface OpenLoopResult {
  /** The arrival rate asked for (requests/s); `sent` / duration differs by Poisson noise. */
  offered_rps: number;
  sent: number;
  /** Answers per second over the sending window. */
  rps: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Failed, timed out or dropped requests (dropped are counted again in `dropped`). */
  errors: number;
  /** Arrivals not sent because maxInFlight requests were already waiting. */
  dropped: number;
  non2xx: number;
  /** Most requests the server held at once. */
  max_in_flight: number;
}

export async function openLoop(o: OpenLoopOptions): Promise<OpenLoopResult> {
  if (!(o.rate > 0)) throw new RangeError(`openLoop rate must be > 0, got ${o.rate}`);
  if (!(o.durationS > 0)) throw new RangeError(`openLoop durationS must be > 0`);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const random = o.random ?? Math.random;
  // Keep-alive sockets, as many as the open loop needs at once: a request never waits for
  // a free connection inside the client.
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const target = new URL(o.url);
  const latencies: number[] = [];
  let errors = 0;
  let dropped = 0;
  let non2xx = 0;
  const maxInFlightAllowed = o.maxInFlight ?? 1000;
  let inFlight = 0;
  let maxInFlight = 0;
  let sent = 0;
  const pending: Promise<void>[] = [];

  const fire = (scheduledMs: number): Promise<void> => {
    const { path, body } = o.makeRequest();
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    return new Promise<void>((resolve) => {
      let answer = '';
      const done = (ok: boolean, status?: number) => {
        inFlight--;
        const latency = performance.now() - scheduledMs;
        if (!ok) errors++;
        else if (status! < 200 || status! >= 300) non2xx++;
        else latencies.push(latency);
        o.onAnswer?.(scheduledMs, latency, ok ? status! : null, answer);
        resolve();
      };
      const req = http.request(
        {
          host: target.hostname,
          port: target.port,
          path,
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
          timeout: timeoutMs,
        },
        (res) => {
          if (o.wantBody) res.on('data', (c: Buffer) => (answer += c.toString()));
          else res.on('data', () => undefined);
          res.on('end', () => done(true, res.statusCode));
          res.on('error', () => done(false));
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => done(false));
      req.end(body);
    });
  };

  const t0 = performance.now();
  const endMs = t0 + o.durationS * 1000;
  // Arrival times are drawn ahead; a timer wakes up for each (timers fire late by up to a
  // millisecond or so, which the scheduled-time latency accounts for).
  let next = t0 - Math.log(1 - random()) * (1000 / o.rate);
  while (next < endMs) {
    const wait = next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    // Everything whose time has come goes now, each stamped with its own scheduled time.
    const now = performance.now();
    while (next <= now && next < endMs) {
      if (inFlight >= maxInFlightAllowed) {
        dropped++;
        errors++;
      } else {
        pending.push(fire(next));
        sent++;
      }
      next += -Math.log(1 - random()) * (1000 / o.rate);
    }
  }
  const sendingS = (performance.now() - t0) / 1000;
  await Promise.all(pending);
  agent.destroy();
  const answered = latencies.length;
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    offered_rps: o.rate,
    sent,
    rps: round(answered / sendingS),
    p50_ms: round(percentile(latencies, 50)),
    p90_ms: round(percentile(latencies, 90)),
    p99_ms: round(percentile(latencies, 99)),
    max_ms: round(latencies.reduce((a, b) => Math.max(a, b), 0)),
    errors,
    dropped,
    non2xx,
    max_in_flight: maxInFlight,
  };
}
