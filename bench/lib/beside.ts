// Writes timed beside searches (bench:hnsw-writes, bench:exact-writes): loops that each keep
// one search in flight for the whole run, and for each write its time and the latency of
// the searches that overlapped it, from issue to answer.
import { nowMs, percentile } from './stats.js';

export interface BesideRow {
  write: string;
  /** The write's time, from call to return (or to resolution, for a promise). */
  write_ms: number;
  /**
   * How long the call held the calling thread (the event loop) before it returned: the
   * whole write for a synchronous one, the argument checks and copies for an async one.
   */
  hold_ms: number;
  /** Searches that overlapped the write, and their latency. */
  searches: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  over_20ms: number;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `loops` search loops (`search(i)` issues the i-th query and resolves when it is
 * answered). `beside(write, fn)` waits `settleMs`, times `fn`, waits again, and records a
 * row; `stop()` ends the loops.
 */
export function searchesBeside(
  loops: number,
  search: (i: number) => Promise<unknown>,
  settleMs: number,
  log: (line: string) => void,
) {
  const rows: BesideRow[] = [];
  const spans: [number, number][] = [];
  let stopped = false;
  const running = Array.from({ length: loops }, async (_, s) => {
    for (let i = s; !stopped; i += loops) {
      const t = nowMs();
      await search(i);
      spans.push([t, nowMs()]);
    }
  });
  return {
    rows,
    async beside(write: string, fn: () => unknown): Promise<number> {
      await sleep(settleMs);
      const a = nowMs();
      const pending = fn();
      const held = nowMs() - a;
      await pending;
      const b = nowMs();
      await sleep(settleMs);
      const lat = spans.filter(([s, e]) => s < b && e > a).map(([s, e]) => e - s);
      rows.push({
        write,
        write_ms: b - a,
        hold_ms: held,
        searches: lat.length,
        p50_ms: percentile(lat, 50),
        p99_ms: percentile(lat, 99),
        max_ms: lat.reduce((x, y) => Math.max(x, y), 0),
        over_20ms: lat.filter((x) => x > 20).length,
      });
      log(`${write}: ${(b - a).toFixed(1)} ms`);
      return b - a;
    },
    async stop(): Promise<void> {
      stopped = true;
      await Promise.all(running);
    },
  };
}
