// Dynamic batching of exact retrieval. One pass over N×d item memory costs the same for 1
// query as for 32 (the scan is bandwidth-bound), so concurrent requests' user vectors are
// coalesced into one search. Policy: if no pass is running, start one on the next macrotask
// tick with whatever has queued (requests arriving in the same tick share it); while a pass
// runs, queries wait and the next pass takes them all (up to maxBatch). Under low load a
// query waits ~0; under high load batches grow by themselves, which is what keeps the
// machine near its bandwidth floor.
import type { Metrics } from '../../observability/metrics.js';

/** The part of ExactIndex the batcher uses (src/retrieval/exact.ts). */
export interface BatchSearchable {
  readonly dim: number;
  search(
    queries: Float32Array,
    k: number,
    opts?: { exclude?: (Uint32Array | null)[]; allow?: Uint32Array | null },
  ): Promise<{ ids: Uint32Array; scores: Float32Array; k: number }>;
}

export interface Hits {
  ids: Uint32Array;
  scores: Float32Array;
}

interface Waiting {
  query: Float32Array;
  k: number;
  exclude: Uint32Array | null;
  resolve: (h: Hits) => void;
  reject: (e: unknown) => void;
}

const NO_ID = 0xffffffff;

export class RetrievalBatcher {
  private queue: Waiting[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly index: BatchSearchable,
    private readonly opts: { maxBatch: number; maxInFlight?: number; metrics?: Metrics },
  ) {}

  queueDepth(): number {
    return this.queue.length;
  }

  /** Top-k item rows for one query vector, skipping `exclude` inside the scan. */
  search(query: Float32Array, k: number, exclude: Uint32Array | null): Promise<Hits> {
    return new Promise<Hits>((resolve, reject) => {
      this.queue.push({ query, k, exclude, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= (this.opts.maxInFlight ?? 1)) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxBatch);
    const dim = this.index.dim;
    const queries = new Float32Array(batch.length * dim);
    let k = 1;
    batch.forEach((w, i) => {
      queries.set(w.query.subarray(0, dim), i * dim);
      if (w.k > k) k = w.k;
    });
    this.inFlight++;
    this.opts.metrics?.batchSize.observe({ stage: 'retrieval' }, batch.length);
    this.index.search(queries, k, { exclude: batch.map((w) => w.exclude) }).then(
      (res) => {
        this.inFlight--;
        batch.forEach((w, i) => {
          const base = i * res.k;
          let n = 0;
          while (n < w.k && n < res.k && res.ids[base + n] !== NO_ID) n++;
          w.resolve({
            ids: res.ids.slice(base, base + n),
            scores: res.scores.slice(base, base + n),
          });
        });
        if (this.queue.length > 0) this.schedule();
      },
      (err: unknown) => {
        this.inFlight--;
        for (const w of batch) w.reject(err);
        if (this.queue.length > 0) this.schedule();
      },
    );
  }
}
