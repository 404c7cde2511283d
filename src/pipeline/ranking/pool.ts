// The ranking worker pool, with batching across concurrent requests.
//
// Policy: a job goes to a worker at once when one is idle (no added latency at low load);
// while every worker is busy, arriving jobs wait, and the next free worker takes ALL that
// wait (up to maxBatchRows candidate rows) as one task, scored in one ONNX run. Under load
// this turns N small inferences into a few large ones; when idle it costs nothing.
// `batchAcrossRequests: false` sends one job per task (bench/load.ts compares the two).
import { Piscina } from 'piscina';
import type { RankerConfig } from '../../models/bundle.js';
import type { Metrics } from '../../observability/metrics.js';
import type { SharedItems } from './shared-bundle.js';
import type { RankJob, RankOutput, RankResult, RankWorkerData } from './worker.js';

export interface RankerPoolOptions {
  threads: number;
  intraOpThreads: number;
  /**
   * Nice value of the worker threads (0..19, default 0). Above 0 the event loop and the
   * retrieval threads win the CPU when it is short: under saturation the loop keeps
   * answering (cached requests, feedback, health) and starts retrieval passes on time
   * while rankings queue, instead of sharing every core equally with ONNX.
   */
  nice?: number;
  /** Most candidate rows in one task. Default 2048. */
  maxBatchRows?: number;
  batchAcrossRequests?: boolean;
  metrics?: Metrics;
}

interface Pending {
  job: RankJob;
  resolve: (out: RankOutput) => void;
  reject: (err: unknown) => void;
}

export class RankerPool {
  private readonly piscina: Piscina;
  private readonly pending: Pending[] = [];
  private readonly threads: number;
  private readonly maxBatchRows: number;
  private readonly batchAcross: boolean;
  private readonly metrics: Metrics | undefined;
  private closed = false;
  /** Batches handed to a worker and not yet settled (the caller may have stopped waiting). */
  private readonly inWorkers = new Set<Promise<unknown>>();

  constructor(items: SharedItems, ranker: RankerConfig, opts: RankerPoolOptions) {
    this.threads = opts.threads;
    this.maxBatchRows = opts.maxBatchRows ?? 2048;
    this.batchAcross = opts.batchAcrossRequests ?? true;
    this.metrics = opts.metrics;
    const workerData: RankWorkerData = {
      items,
      ranker,
      intraOpThreads: opts.intraOpThreads,
      nice: opts.nice ?? 0,
    };
    this.piscina = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      workerData,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      idleTimeout: Infinity,
      // Our own queue (above) does the waiting; Piscina's would hide it from batching.
      concurrentTasksPerWorker: 1,
    });
  }

  /** The pool's sizing, as the server logs it at start-up. */
  describe(): { workers: number; maxBatchRows: number; batchAcrossRequests: boolean } {
    return {
      workers: this.threads,
      maxBatchRows: this.maxBatchRows,
      batchAcrossRequests: this.batchAcross,
    };
  }

  /** Jobs waiting for a free worker. */
  queueDepth(): number {
    return this.pending.length;
  }

  /** Scores (probabilities) for job.candidates, in order, and the re-ranked list if asked. */
  rank(job: RankJob): Promise<RankOutput> {
    if (this.closed) return Promise.reject(new Error('ranker pool is closed'));
    return new Promise<RankOutput>((resolve, reject) => {
      this.pending.push({ job, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.inWorkers.size < this.threads && this.pending.length > 0) {
      const batch: Pending[] = [];
      let rows = 0;
      do {
        const next = this.pending[0]!;
        if (batch.length > 0 && rows + next.job.candidates.length > this.maxBatchRows) break;
        batch.push(this.pending.shift()!);
        rows += next.job.candidates.length;
      } while (this.batchAcross && this.pending.length > 0);
      this.metrics?.batchSize.observe({ stage: 'ranking' }, batch.length);
      const run: Promise<void> = this.piscina.run(batch.map((p) => p.job)).then(
        (result: RankResult) => {
          this.inWorkers.delete(run);
          batch.forEach((p, i) => p.resolve(result[i]!));
          this.dispatch();
        },
        (err: unknown) => {
          this.inWorkers.delete(run);
          for (const p of batch) p.reject(err);
          this.dispatch();
        },
      );
      this.inWorkers.add(run);
    }
  }

  /** Runs one tiny job on every thread so sessions are created before traffic arrives. */
  async warm(job: RankJob): Promise<void> {
    await Promise.all(
      Array.from({ length: this.threads }, () => this.piscina.run([job]) as Promise<RankResult>),
    );
  }

  /**
   * Rejects what is still queued, lets the batches already in workers finish (at most
   * `settleMs`), then stops the workers. Why wait: a request whose ranking overran its budget
   * was answered by the cosine fallback, but its batch is still inside onnxruntime-node's
   * run(); terminating that worker mid-run makes the binding throw a C++ exception in a dying
   * environment, which aborts the whole process (seen on shutdown under load with the seed's
   * 1024-512-256-128 ranker, and the same would happen when a hot swap retires a pool).
   */
  async close(settleMs = 10_000): Promise<void> {
    this.closed = true;
    for (const p of this.pending.splice(0)) p.reject(new Error('ranker pool is closed'));
    if (this.inWorkers.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inWorkers]),
        new Promise((r) => {
          timer = setTimeout(r, settleMs);
        }),
      ]);
      clearTimeout(timer);
    }
    await this.piscina.destroy();
  }

  /** Batches inside workers right now (tests). */
  inWorkerBatches(): number {
    return this.inWorkers.size;
  }
}
