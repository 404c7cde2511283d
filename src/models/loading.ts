// Pieces of loading a model version that run on the event loop, sized so that the server,
// which listens while it loads (/healthz, /readyz, /metrics), keeps answering: at 1M items
// the loader's steps ran back to back for up to 2.2-2.7 s without a turn of the event loop
// (bench:startup, bench/README.md "eighteenth").

/** Lets the event loop run what is due (I/O callbacks, timers) before the caller goes on. */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * For long loops on the event loop: the returned function, awaited every few thousand
 * iterations, yields a turn once `sliceMs` have passed since the last one and otherwise
 * costs a clock read. While a new version loads beside the serving one (a hot swap,
 * models/watcher.ts) every request in flight waits out each piece, so pieces are bounded
 * by time, not by count (a count that suits 20k items is a stall at 1M).
 */
export function slicer(sliceMs = 8): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    if (performance.now() - last < sliceMs) return undefined;
    return turn().then(() => {
      last = performance.now();
    });
  };
}

/** Never yields (a synchronous caller's `due`). */
export const noSlices = (): undefined => undefined;

/**
 * key -> position, as `new Map(keys.map((k, i) => [k, i]))` (a repeated key keeps its last
 * position), built `chunk` keys at a time with a turn of the event loop between when one is
 * due (slicer): at 1M item ids the one-piece Map took 0.6-0.9 s (a throwaway timing), and
 * pieces of 100k keys held the loop 60-265 ms each during a hot swap. With `repeated`, a
 * repeated key calls it instead (first and second position) and it must throw: the map's
 * size tells, so the check costs no lookup until there is one.
 */
export async function positionMap(
  keys: readonly string[],
  chunk = 20_000,
  repeated?: (key: string, first: number, again: number) => never,
  sliceMs?: number,
): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  const due = slicer(sliceMs);
  for (let from = 0; from < keys.length; from += chunk) {
    if (from > 0) await due();
    const to = Math.min(keys.length, from + chunk);
    if (!repeated) for (let i = from; i < to; i++) m.set(keys[i]!, i);
    else
      for (let i = from; i < to; i++) {
        m.set(keys[i]!, i);
        if (m.size !== i + 1) repeated(keys[i]!, keys.indexOf(keys[i]!), i);
      }
  }
  return m;
}

/**
 * Rows by popularity, largest first, ties by row ascending: the order of
 * `rows.sort((a, b) => pop[b] - pop[a] || a - b)` for numbers (-0 equal to 0), with NaN,
 * which that comparator leaves unordered, after everything. Each row's float is made a
 * 32-bit key that orders as unsigned (largest popularity smallest), and the rows are
 * radix-sorted by it, 8 bits a pass; each pass is stable, so equal keys keep the rows'
 * ascending order. At 1M rows 0.12-0.15 s, against 0.5-0.6 s for the comparator sort (a throwaway
 * timing).
 */
export async function rowsByPopularity(
  pop: Float32Array,
  due: () => Promise<void> | undefined = noSlices,
): Promise<Uint32Array> {
  const n = pop.length;
  const bits = new Uint32Array(pop.buffer, pop.byteOffset, n);
  const keys = new Uint32Array(n);
  for (let r = 0; r < n; r++) {
    const b = bits[r]! === 0x80000000 ? 0 : bits[r]!;
    // As unsigned, negative floats order backwards (flip them all) and the others forwards
    // above every negative one (set the sign bit); NaN goes below all of them. Then the
    // complement, so that the most popular comes first.
    const o =
      (b & 0x7fffffff) > 0x7f800000 ? 0 : b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    keys[r] = ~o >>> 0;
  }
  let rows = new Uint32Array(n);
  for (let r = 0; r < n; r++) rows[r] = r;
  let next = new Uint32Array(n);
  const starts = new Uint32Array(257);
  for (let shift = 0; shift < 32; shift += 8) {
    // A pass at 1M rows is ~30 ms: a turn between passes when due.
    await due();
    starts.fill(0);
    for (let i = 0; i < n; i++) starts[((keys[rows[i]!]! >>> shift) & 255) + 1]++;
    for (let v = 1; v <= 256; v++) starts[v]! += starts[v - 1]!;
    for (let i = 0; i < n; i++) {
      const r = rows[i]!;
      next[starts[(keys[r]! >>> shift) & 255]!++] = r;
    }
    [rows, next] = [next, rows];
  }
  return rows;
}
