// Small statistics helpers for benchmark samples.

/** The p-th percentile (0..100) of the samples, by linear interpolation; NaN when empty. */
export function percentile(samples: ArrayLike<number>, p: number): number {
  const n = samples.length;
  if (n === 0) return NaN;
  const sorted = Float64Array.from(samples).sort();
  const pos = (Math.min(Math.max(p, 0), 100) / 100) * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function mean(samples: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < samples.length; i++) s += samples[i];
  return samples.length === 0 ? NaN : s / samples.length;
}

/** Milliseconds since an arbitrary origin, with sub-microsecond resolution. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Runs `fn` repeatedly until at least `minMs` have passed (and at least `minIters` times),
 * after one untimed warm-up call; returns the calls per second.
 */
export function rate(fn: () => void, minMs: number, minIters = 1): number {
  fn();
  let iters = 0;
  const t0 = nowMs();
  let t = t0;
  while (iters < minIters || t - t0 < minMs) {
    fn();
    iters++;
    t = nowMs();
  }
  return (iters * 1000) / (t - t0);
}

/**
 * Like rate(), and also the process CPU time (all threads) per call in milliseconds. On a
 * shared machine wall-clock rates swing with other load; CPU time per call does much less,
 * so it is the figure to compare engines by when the two disagree.
 */
export function rateWithCpu(
  fn: () => void,
  minMs: number,
  minIters = 1,
  warm = true,
): { perSec: number; cpuMs: number } {
  if (warm) fn();
  let iters = 0;
  const c0 = process.cpuUsage();
  const t0 = nowMs();
  let t = t0;
  while (iters < minIters || t - t0 < minMs) {
    fn();
    iters++;
    t = nowMs();
  }
  const c = process.cpuUsage(c0);
  return { perSec: (iters * 1000) / (t - t0), cpuMs: (c.user + c.system) / 1000 / iters };
}
