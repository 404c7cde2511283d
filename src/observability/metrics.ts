// Prometheus metrics in the text exposition format (0.0.4), without a client library:
// counters, gauges and fixed-bucket histograms keyed by label values. Observing is a Map
// lookup and a few additions, cheap enough for every request at tens of thousands per second.
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

type Labels = Record<string, string>;

// Called several times per request: no array and no join for the usual one or two labels.
function labelKey(names: readonly string[], labels: Labels): string {
  switch (names.length) {
    case 0:
      return '';
    case 1:
      return labels[names[0]!] ?? '';
    case 2:
      return (labels[names[0]!] ?? '') + '\u0001' + (labels[names[1]!] ?? '');
    default:
      return names.map((n) => labels[n] ?? '').join('\u0001');
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function renderLabels(names: readonly string[], key: string, extra?: string): string {
  const values = key === '' && names.length === 0 ? [] : key.split('\u0001');
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(',')}}` : '';
}

interface Metric {
  render(): string;
}

export class Counter implements Metric {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(this.labelNames, labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(this.labelNames, labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [k, v] of this.values)
      lines.push(`${this.name}${renderLabels(this.labelNames, k)} ${v}`);
    return lines.join('\n');
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();
  /** Read at scrape time (queue depths, pool utilisation): always current, no bookkeeping. */
  private readonly collectors: (() => void)[] = [];
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {}

  set(labels: Labels, v: number): void {
    this.values.set(labelKey(this.labelNames, labels), v);
  }

  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  render(): string {
    for (const c of this.collectors) c();
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const [k, v] of this.values)
      lines.push(`${this.name}${renderLabels(this.labelNames, k)} ${v}`);
    return lines.join('\n');
  }
}

export class Histogram implements Metric {
  private readonly series = new Map<string, { counts: Float64Array; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    readonly labelNames: readonly string[] = [],
  ) {}

  observe(labels: Labels, v: number): void {
    const k = labelKey(this.labelNames, labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: new Float64Array(this.buckets.length), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    // Buckets are few (≤ 20): a linear scan beats a binary search at this size.
    for (let i = 0; i < this.buckets.length; i++) {
      if (v <= this.buckets[i]!) {
        s.counts[i]!++;
        break;
      }
    }
    s.sum += v;
    s.count++;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const [k, s] of this.series) {
      let cum = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cum += s.counts[i]!;
        lines.push(
          `${this.name}_bucket${renderLabels(this.labelNames, k, `le="${this.buckets[i]}"`)} ${cum}`,
        );
      }
      lines.push(`${this.name}_bucket${renderLabels(this.labelNames, k, 'le="+Inf"')} ${s.count}`);
      lines.push(`${this.name}_sum${renderLabels(this.labelNames, k)} ${s.sum}`);
      lines.push(`${this.name}_count${renderLabels(this.labelNames, k)} ${s.count}`);
    }
    return lines.join('\n');
  }
}

/** Latency buckets in seconds: 0.25 ms .. 2.5 s, dense where our targets (5 ms, 50 ms) are. */
const LATENCY_BUCKETS = [
  0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5,
];
const SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/** Every metric the server exports, in one place so names stay consistent. */
export class Metrics {
  readonly requests = new Counter(
    'recserve_http_requests_total',
    'HTTP requests by route and status',
    ['route', 'status'],
  );
  readonly requestSeconds = new Histogram(
    'recserve_http_request_duration_seconds',
    'HTTP request latency by route',
    LATENCY_BUCKETS,
    ['route'],
  );
  readonly grpcRequests = new Counter(
    'recserve_grpc_requests_total',
    'gRPC calls by method and status code (OK, INVALID_ARGUMENT, ...)',
    ['method', 'code'],
  );
  readonly grpcRequestSeconds = new Histogram(
    'recserve_grpc_request_duration_seconds',
    'gRPC call latency by method (handler start to answer)',
    LATENCY_BUCKETS,
    ['method'],
  );
  readonly stageSeconds = new Histogram(
    'recserve_pipeline_stage_duration_seconds',
    'Pipeline stage latency (cache, feature_fetch, retrieval, ranking, rerank, total)',
    LATENCY_BUCKETS,
    ['stage'],
  );
  readonly batchSize = new Histogram(
    'recserve_batch_size',
    'Queries per batched pass (retrieval) or requests per ranking task',
    SIZE_BUCKETS,
    ['stage'],
  );
  readonly queueDepth = new Gauge('recserve_queue_depth', 'Work waiting, by queue', ['queue']);
  readonly cache = new Counter('recserve_cache_total', 'Recommendation cache lookups', ['result']);
  readonly fallbacks = new Counter(
    'recserve_ranking_fallback_total',
    'Requests ordered by the cosine fallback, by reason',
    ['reason'],
  );
  readonly coldStarts = new Counter(
    'recserve_cold_start_total',
    'Requests served the cold-start mix',
  );
  readonly feedbackEvents = new Counter('recserve_feedback_events_total', 'Feedback events', [
    'result',
  ]);
  readonly exactIndex = new Gauge(
    'recserve_exact_index',
    "The serving model version's exact index: rows, rows its int8 screen scores exactly " +
      '(screen_outliers), and since that version loaded: screened_batches, screen_prunes, ' +
      'screen_refits, guess_retries (ExactIndex in the README)',
    ['stat'],
  );
  readonly storeConnected = new Gauge(
    'recserve_store_connected',
    'The feature store answers (1) or not (0), by backend; memory is always 1',
    ['backend'],
  );
  readonly storeErrors = new Counter(
    'recserve_store_errors_total',
    'Feature-store failures by what failed: client (connection), request (a user read or ' +
      'write that failed or timed out), cache (a cache read or write skipped), trending ' +
      '(trending not read, or aggregates not updated)',
    ['what'],
  );
  readonly degraded = new Counter(
    'recserve_degraded_total',
    'Recommendations served without the feature store (fallback lists), by reason',
    ['reason'],
  );
  readonly modelLoads = new Counter(
    'recserve_model_loads_total',
    'Model version loads (start-up and hot swaps) by result: loaded, failed',
    ['result'],
  );
  readonly modelVersion = new Gauge(
    'recserve_model_version',
    'The model version serving, by model name',
    ['name'],
  );
  readonly loopLag = new Gauge(
    'recserve_event_loop_lag_seconds',
    'Event-loop delay percentiles since the previous scrape (perf_hooks.monitorEventLoopDelay)',
    ['quantile'],
  );
  private readonly loopHistogram: IntervalHistogram;
  private readonly all: Metric[];

  constructor() {
    // 10 ms resolution would hide exactly the stalls we look for; 1 ms is still negligible.
    this.loopHistogram = monitorEventLoopDelay({ resolution: 1 });
    this.loopHistogram.enable();
    this.loopLag.onCollect(() => {
      for (const q of [50, 90, 99]) {
        this.loopLag.set({ quantile: String(q / 100) }, this.loopHistogram.percentile(q) / 1e9);
      }
      this.loopLag.set({ quantile: '1' }, this.loopHistogram.max / 1e9);
      // Percentiles cover the interval since the previous scrape: a lifetime histogram
      // would bury today's stall under last week's calm.
      this.loopHistogram.reset();
    });
    this.all = [
      this.requests,
      this.requestSeconds,
      this.grpcRequests,
      this.grpcRequestSeconds,
      this.stageSeconds,
      this.batchSize,
      this.queueDepth,
      this.cache,
      this.fallbacks,
      this.coldStarts,
      this.feedbackEvents,
      this.exactIndex,
      this.storeConnected,
      this.storeErrors,
      this.degraded,
      this.modelLoads,
      this.modelVersion,
      this.loopLag,
    ];
  }

  /** Event-loop delay percentile in ms (benchmarks read it through /metrics or directly). */
  loopLagMs(percentile: number): number {
    return this.loopHistogram.percentile(percentile) / 1e6;
  }

  resetLoopLag(): void {
    this.loopHistogram.reset();
  }

  render(): string {
    return this.all.map((m) => m.render()).join('\n') + '\n';
  }

  close(): void {
    this.loopHistogram.disable();
  }
}
