// Server configuration: read once at start-up from (lowest to highest precedence) the
// defaults declared below, an optional JSON file (--config / RECSERVE_CONFIG), environment
// variables (RECSERVE_*) and command-line flags; validated once, then passed down typed.
// Nothing else in the server reads process.env or argv.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { EXACT_SCREENS, projectRoot, type ExactScreen } from '../retrieval/native.js';

export interface ServerConfig {
  /** Interface the HTTP server binds. Default 127.0.0.1 (loopback: expose deliberately). */
  host: string;
  /** HTTP port; 0 picks a free one (tests). Default 8080. */
  port: number;
  /** Largest request body accepted; larger → 413. Default 1 MiB. */
  maxBodyBytes: number;
  /** Model repository root (models/<name>/<version>/). Default <project>/models. */
  modelsDir: string;
  /** Bundle name inside the repository. Default "recserve". */
  modelName: string;
  /**
   * List the model repository this often and swap in a new version (or back to an older
   * one when the serving version's directory is removed) while serving. 0: only at
   * start-up and on SIGHUP. Default 5 s.
   */
  modelPollMs: number;
  /** Serve exactly this version of the bundle; 0 (default) serves the newest that loads. */
  modelVersion: number;
  /** Build the addon / demo repository when missing before serving. Default true. */
  buildMissing: boolean;
  /** Durable feedback log and other server state (<dataDir>/events). Default <project>/data. */
  dataDir: string;
  /** fsync the feedback log on commit (group-committed). Default true. */
  fsyncFeedback: boolean;
  /** pino level. Default "info". */
  logLevel: string;
  /** How long SIGTERM waits for in-flight requests before exiting anyway. Default 10 s. */
  drainTimeoutMs: number;
  /** Serve gRPC (transport/grpc) beside HTTP. Default true; --no-grpc turns it off. */
  grpcEnabled: boolean;
  /** Interface the gRPC server binds. Default 127.0.0.1. */
  grpcHost: string;
  /**
   * gRPC port; 0 picks a free one. Default 50051, or 0 when the HTTP port is 0 and no gRPC
   * port is given (an ephemeral test server never collides on a fixed port).
   */
  grpcPort: number;
  /** Largest gRPC request message; larger → RESOURCE_EXHAUSTED. Default 1 MiB (as HTTP). */
  grpcMaxMessageBytes: number;
  /** HTTP/2 streams in flight per gRPC connection. Default 256. */
  grpcMaxConcurrentStreams: number;
  /** Ping idle gRPC connections this often (dead-peer detection). Default 60 s. */
  grpcKeepaliveMs: number;
  /**
   * Where user features, sessions, trending, the answer cache and idempotency keys live.
   * 'memory' (default): embedded, one process, made durable by the feedback log in dataDir.
   * 'redis': shared by every replica pointed at the same Redis (redisUrl, or
   * redisClusterNodes for a Cluster); Redis's own persistence makes it durable, and no
   * feedback log is written.
   */
  store: 'memory' | 'redis';
  /** The Redis server (redis:// or rediss://, user and password allowed). */
  redisUrl: string;
  /** A Redis Cluster's seed nodes, "host:port,host:port"; set, it replaces redisUrl. */
  redisClusterNodes: string;
  /** Prefix of every key recserve writes to Redis (the answer cache excepted). Default "rs:". */
  redisPrefix: string;
  /**
   * Bound on every Redis call. Past it a feedback call answers 503 store_unavailable (a retry
   * is safe), and a recommendation is served degraded, without the user's features. Default
   * 500 ms.
   */
  redisTimeoutMs: number;
  pipeline: PipelineConfig;
}

export interface PipelineConfig {
  /** Users with fewer positive interactions are served the cold-start mix (seed: 10). */
  coldStartThreshold: number;
  /** Candidates sent to the ranker at most (seed: ~150; issue: 150–300). Default 200. */
  maxCandidates: number;
  /** Per-source candidate counts. */
  collaborativeK: number;
  similarPerItem: number;
  /** How many of the user's recent items seed similar-to-recent (seed: last 5). */
  similarSeeds: number;
  trendingK: number;
  popularPerCategory: number;
  /**
   * Most queries in one collaborative retrieval pass. The batcher never waits for company:
   * a pass starts on the next tick when none is running, and queries arriving meanwhile
   * form the next pass (pipeline/candidates/batcher.ts). Default 64.
   */
  maxBatch: number;
  /**
   * Ranking (feature assembly + ONNX + re-rank) worker threads. 0 (the default) sizes the
   * pool per model: 2 from 4 cores up; below that 1, or 2 for a ranker costing at least
   * HEAVY_RANKER_FLOPS per candidate (models/registry.ts says why).
   */
  rankerThreads: number;
  /** ONNX intra-op threads per worker. Default 1 (workers are the parallelism). */
  rankerIntraOpThreads: number;
  /**
   * Nice value of the ranking worker threads (0..19; Linux, per thread). Default 5: when
   * requests outrun the cores, the event loop and the retrieval threads get the CPU first,
   * so loop lag stays low and the rankings queue instead (pipeline/ranking/pool.ts).
   * Measured with `RECSERVE_RANKER_NICE=N npm run bench:load -- --models <seed-ranker
   * bundle> --only warm_uncached,warm_uncached@0.7floor` (bench/README.md, 2026-12-04):
   * closed-loop loop lag p99 8.5-8.6 ms at 0, 7.4-7.6 at 5, 6.8-7.6 at 10; 10 starved the
   * rankings behind bursts of retrieval in one run (0.7-floor p99 67 ms).
   */
  rankerNice: number;
  /** Score jobs that queue while workers are busy in one ONNX run. Default true. */
  rankerBatching: boolean;
  /**
   * Most candidate rows in one such run. 0 (the default) sizes it per model: 2048 for a
   * light ranker, 2 x maxCandidates for one of at least HEAVY_RANKER_FLOPS per candidate
   * (models/registry.ts rankerMaxBatchRows says why).
   */
  rankerMaxBatchRows: number;
  /** Ranking slower than this → cosine fallback (seed: 50 ms timeout). */
  rankingTimeoutMs: number;
  /** Recommendation cache TTL; 0 disables the cache. Default 60 s. */
  cacheTtlMs: number;
  /**
   * Bytes of cached answers the embedded store keeps (LRU). Default 64 MiB (~8k answers of
   * 20 items): enough for the hot users, small enough that the old generation the garbage
   * collector has to mark stays small under uncached traffic.
   */
  cacheMaxBytes: number;
  /** ε of ε-greedy exploration in the re-rank (seed: 0.05). */
  explorationRate: number;
  /** Category cap per list when the request gives no category_diversity (seed: 5). */
  maxPerCategory: number;
  /**
   * Storage of the exact index's item vectors. 'f16' halves the bytes each collaborative
   * pass reads (scores within ~1e-3 relative; the ranker re-scores every candidate anyway).
   * Default 'f16': the collaborative pass is bandwidth-bound, f16 ran 2.1-2.4x the queries/s
   * of f32 at B = 1 with recall@100 >= 0.999 against f32 (bench:retrieval), and halved the
   * uncached p99 at 1M items (bench:load). 'f32' keeps exact scores.
   */
  exactStorage: 'f32' | 'f16';
  /**
   * The exact index's int8 screen (ExactIndexOptions.screen): 'auto' (default) keeps int8
   * codes of the item vectors wherever the CPU has AVX2 and screens batched collaborative
   * passes of 3 or more queries with them (2 with f32 storage, and with larger f16 indexes
   * without AVX-512 VNNI; same results; 0.3-0.7 of the time at 12 or more queries against
   * the unscreened kernels; at 3 to 11 queries 0.24-0.83 of the direct scans' time, and
   * since then 3 to 8 take 0.64-0.76 of that; f32 pairs 0.51-0.73 of the two-query scan's:
   * bench/README.md);
   * 'none' saves the codes' memory (dim rounded up to 8, plus 8 bytes an item).
   */
  exactScreen: ExactScreen;
  /** HNSW efSearch for similar-to-recent and /v1/similar (seed: 50). */
  efSearch: number;
  /** Seed for the re-rank's exploration RNG; null = Math.random (tests pin it). */
  seed: number | null;
}

export const DEFAULT_PIPELINE: PipelineConfig = {
  coldStartThreshold: 10,
  maxCandidates: 200,
  collaborativeK: 150,
  similarPerItem: 10,
  similarSeeds: 5,
  trendingK: 20,
  popularPerCategory: 10,
  maxBatch: 64,
  // Sized per model from its ranker's cost (models/registry.ts rankerPoolThreads).
  rankerThreads: 0,
  rankerIntraOpThreads: 1,
  rankerNice: 5,
  rankerBatching: true,
  rankerMaxBatchRows: 0,
  rankingTimeoutMs: 50,
  cacheTtlMs: 60_000,
  cacheMaxBytes: 64 * 1024 * 1024,
  explorationRate: 0.05,
  maxPerCategory: 5,
  exactStorage: 'f16',
  exactScreen: 'auto',
  efSearch: 50,
  seed: null,
};

export function defaultConfig(): ServerConfig {
  return {
    host: '127.0.0.1',
    port: 8080,
    maxBodyBytes: 1024 * 1024,
    modelsDir: resolve(projectRoot(), 'models'),
    modelName: 'recserve',
    modelPollMs: 5000,
    modelVersion: 0,
    buildMissing: true,
    dataDir: resolve(projectRoot(), 'data'),
    fsyncFeedback: true,
    logLevel: 'info',
    drainTimeoutMs: 10_000,
    grpcEnabled: true,
    grpcHost: '127.0.0.1',
    grpcPort: 50051,
    grpcMaxMessageBytes: 1024 * 1024,
    grpcMaxConcurrentStreams: 256,
    grpcKeepaliveMs: 60_000,
    store: 'memory',
    redisUrl: 'redis://127.0.0.1:6379',
    redisClusterNodes: '',
    redisPrefix: 'rs:',
    redisTimeoutMs: 500,
    pipeline: { ...DEFAULT_PIPELINE },
  };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Flag / env / file key → setter. Keys are kebab-case flags; env is RECSERVE_<UPPER_SNAKE>. */
type Kind = 'int' | 'num' | 'str' | 'bool';
/** The log levels pino knows; another one threw from pino's constructor, with its stack. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const KEYS: Record<
  string,
  { kind: Kind; path: string[]; min?: number; max?: number; oneOf?: readonly string[] }
> = {
  host: { kind: 'str', path: ['host'] },
  port: { kind: 'int', path: ['port'], min: 0, max: 65535 },
  'max-body-bytes': { kind: 'int', path: ['maxBodyBytes'], min: 1024, max: 64 * 1024 * 1024 },
  models: { kind: 'str', path: ['modelsDir'] },
  'model-name': { kind: 'str', path: ['modelName'] },
  'model-poll-ms': { kind: 'int', path: ['modelPollMs'], min: 0, max: 3_600_000 },
  'model-version': { kind: 'int', path: ['modelVersion'], min: 0 },
  'build-missing': { kind: 'bool', path: ['buildMissing'] },
  'data-dir': { kind: 'str', path: ['dataDir'] },
  'fsync-feedback': { kind: 'bool', path: ['fsyncFeedback'] },
  'log-level': { kind: 'str', path: ['logLevel'], oneOf: LOG_LEVELS },
  'drain-timeout-ms': { kind: 'int', path: ['drainTimeoutMs'], min: 0, max: 600_000 },
  grpc: { kind: 'bool', path: ['grpcEnabled'] },
  'grpc-host': { kind: 'str', path: ['grpcHost'] },
  'grpc-port': { kind: 'int', path: ['grpcPort'], min: 0, max: 65535 },
  'grpc-max-message-bytes': {
    kind: 'int',
    path: ['grpcMaxMessageBytes'],
    min: 1024,
    max: 64 * 1024 * 1024,
  },
  'grpc-max-concurrent-streams': {
    kind: 'int',
    path: ['grpcMaxConcurrentStreams'],
    min: 1,
    max: 65535,
  },
  'grpc-keepalive-ms': { kind: 'int', path: ['grpcKeepaliveMs'], min: 1000, max: 3_600_000 },
  store: { kind: 'str', path: ['store'], oneOf: ['memory', 'redis'] },
  'redis-url': { kind: 'str', path: ['redisUrl'] },
  'redis-cluster-nodes': { kind: 'str', path: ['redisClusterNodes'] },
  'redis-prefix': { kind: 'str', path: ['redisPrefix'] },
  'redis-timeout-ms': { kind: 'int', path: ['redisTimeoutMs'], min: 1, max: 60_000 },
  'cold-start-threshold': { kind: 'int', path: ['pipeline', 'coldStartThreshold'], min: 0 },
  'max-candidates': { kind: 'int', path: ['pipeline', 'maxCandidates'], min: 1, max: 5000 },
  'collaborative-k': { kind: 'int', path: ['pipeline', 'collaborativeK'], min: 0, max: 5000 },
  'similar-per-item': { kind: 'int', path: ['pipeline', 'similarPerItem'], min: 0, max: 1000 },
  'similar-seeds': { kind: 'int', path: ['pipeline', 'similarSeeds'], min: 0, max: 100 },
  'trending-k': { kind: 'int', path: ['pipeline', 'trendingK'], min: 0, max: 1000 },
  'popular-per-category': {
    kind: 'int',
    path: ['pipeline', 'popularPerCategory'],
    min: 0,
    max: 1000,
  },
  'max-batch': { kind: 'int', path: ['pipeline', 'maxBatch'], min: 1, max: 4096 },
  'ranker-threads': { kind: 'int', path: ['pipeline', 'rankerThreads'], min: 0, max: 64 },
  'ranker-intra-op-threads': {
    kind: 'int',
    path: ['pipeline', 'rankerIntraOpThreads'],
    min: 1,
    max: 64,
  },
  'ranker-nice': { kind: 'int', path: ['pipeline', 'rankerNice'], min: 0, max: 19 },
  'ranker-batching': { kind: 'bool', path: ['pipeline', 'rankerBatching'] },
  'ranker-max-batch-rows': {
    kind: 'int',
    path: ['pipeline', 'rankerMaxBatchRows'],
    min: 0,
    max: 1_000_000,
  },
  // Node's timers take at most 2^31 - 1 ms; past it a timer fires after 1 ms.
  'ranking-timeout-ms': {
    kind: 'int',
    path: ['pipeline', 'rankingTimeoutMs'],
    min: 1,
    max: 2_147_483_647,
  },
  'cache-ttl-ms': { kind: 'int', path: ['pipeline', 'cacheTtlMs'], min: 0 },
  'cache-max-bytes': { kind: 'int', path: ['pipeline', 'cacheMaxBytes'], min: 0 },
  'exploration-rate': { kind: 'num', path: ['pipeline', 'explorationRate'], min: 0, max: 1 },
  'max-per-category': { kind: 'int', path: ['pipeline', 'maxPerCategory'], min: 1, max: 500 },
  'exact-storage': { kind: 'str', path: ['pipeline', 'exactStorage'], oneOf: ['f32', 'f16'] },
  'exact-screen': { kind: 'str', path: ['pipeline', 'exactScreen'], oneOf: EXACT_SCREENS },
  'ef-search': { kind: 'int', path: ['pipeline', 'efSearch'], min: 1, max: 10_000 },
  seed: { kind: 'int', path: ['pipeline', 'seed'] },
};

function parseValue(key: string, raw: unknown, source: string): unknown {
  const spec = KEYS[key];
  if (!spec) throw new ConfigError(`${source}: unknown setting '${key}'`);
  if (spec.kind === 'str') {
    if (typeof raw !== 'string' || raw === '') {
      throw new ConfigError(`${source}: '${key}' must be a non-empty string`);
    }
    if (spec.oneOf && !spec.oneOf.includes(raw)) {
      const list = `${spec.oneOf.slice(0, -1).join(', ')} or ${spec.oneOf.at(-1)}`;
      throw new ConfigError(`${source}: '${key}' must be ${list}, got ${raw}`);
    }
    return raw;
  }
  if (spec.kind === 'bool') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1' || raw === '') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new ConfigError(`${source}: '${key}' must be true or false, got ${String(raw)}`);
  }
  // Decimal only: Number('') and Number(' ') are 0 (an empty --port listened on a random
  // port), and Number('0x1F90') is 8080.
  const decimal = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const n =
    typeof raw === 'number'
      ? raw
      : typeof raw === 'string' && decimal.test(raw.trim())
        ? Number(raw)
        : NaN;
  if (!Number.isFinite(n) || (spec.kind === 'int' && !Number.isInteger(n))) {
    throw new ConfigError(
      `${source}: '${key}' must be ${spec.kind === 'int' ? 'an integer' : 'a number'}, got ${String(raw)}`,
    );
  }
  if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
    throw new ConfigError(
      `${source}: '${key}' must be between ${spec.min ?? '-inf'} and ${spec.max ?? 'inf'}, got ${n}`,
    );
  }
  return n;
}

function assign(cfg: ServerConfig, key: string, value: unknown): void {
  const path = KEYS[key]!.path;
  let target = cfg as unknown as Record<string, unknown>;
  for (const p of path.slice(0, -1)) target = target[p] as Record<string, unknown>;
  target[path[path.length - 1]!] = value;
}

/** camelCase (file keys) and snake/kebab are all accepted in the JSON file. */
function toFlagKey(k: string): string {
  return k
    .replace(/([a-z])([A-Z])/g, '$1-$2')
    .replace(/_/g, '-')
    .toLowerCase();
}

function applyObject(cfg: ServerConfig, obj: Record<string, unknown>, source: string): void {
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'pipeline' && typeof v === 'object' && v !== null) {
      applyObject(cfg, v as Record<string, unknown>, source);
      continue;
    }
    const key = toFlagKey(k === 'modelsDir' ? 'models' : k);
    assign(cfg, key, parseValue(key, v, source));
  }
}

/**
 * Builds the configuration. `argv` are the flags after the subcommand
 * (`--port 8080`, `--port=8080`, `--no-build-missing`); `env` is normally process.env.
 */
export function loadConfig(
  argv: string[] = [],
  env: Record<string, string | undefined> = {},
): ServerConfig {
  const cfg = defaultConfig();
  const defaultGrpcPort = cfg.grpcPort;
  cfg.grpcPort = -1; // "not set": resolved at the end, once the HTTP port is known
  const flags: [string, string][] = [];
  let file = env.RECSERVE_CONFIG;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new ConfigError(`unexpected argument '${a}'`);
    let key = a.slice(2);
    let value: string | undefined;
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else if (key.startsWith('no-') && KEYS[key.slice(3)]?.kind === 'bool') {
      key = key.slice(3);
      value = 'false';
    } else if (KEYS[key]?.kind === 'bool') {
      value = 'true';
    } else {
      value = argv[++i];
      if (value === undefined) throw new ConfigError(`flag --${key} needs a value`);
    }
    if (key === 'config') file = value;
    else flags.push([key, value]);
  }
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`config file ${file}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(`config file ${file}: must hold a JSON object`);
    }
    applyObject(cfg, parsed as Record<string, unknown>, `config file ${file}`);
  }
  for (const key of Object.keys(KEYS)) {
    const envName = 'RECSERVE_' + key.replace(/-/g, '_').toUpperCase();
    const v = env[envName];
    if (v !== undefined) assign(cfg, key, parseValue(key, v, `environment ${envName}`));
  }
  for (const [key, value] of flags) assign(cfg, key, parseValue(key, value, `flag --${key}`));
  if (cfg.grpcPort < 0) cfg.grpcPort = cfg.port === 0 ? 0 : defaultGrpcPort;
  if (cfg.pipeline.exactStorage !== 'f32' && cfg.pipeline.exactStorage !== 'f16') {
    throw new ConfigError(
      `'exact-storage' must be f32 or f16, got ${String(cfg.pipeline.exactStorage)}`,
    );
  }
  if (!(EXACT_SCREENS as readonly string[]).includes(cfg.pipeline.exactScreen)) {
    throw new ConfigError(
      `'exact-screen' must be ${EXACT_SCREENS.slice(0, -1).join(', ')} or ${EXACT_SCREENS.at(-1)}, got ${String(cfg.pipeline.exactScreen)}`,
    );
  }
  checkRedisAddress(cfg);
  cfg.modelsDir = resolve(cfg.modelsDir);
  cfg.dataDir = resolve(cfg.dataDir);
  return cfg;
}

/** Cluster seeds as host/port pairs ("host:port,[::1]:port"). */
export function parseClusterNodes(list: string): { host: string; port: number }[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((node) => {
      const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(node);
      const port = m ? Number(m[2]) : NaN;
      if (!m || !(port >= 1 && port <= 65535)) {
        throw new ConfigError(`'redis-cluster-nodes' must list host:port pairs, got '${node}'`);
      }
      return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
    });
}

// Checked here so that a typo fails at start-up in one line, not as a client that retries a
// bad address forever while /readyz says "waiting for Redis".
function checkRedisAddress(cfg: ServerConfig): void {
  // A brace would make the prefix the keys' hash tag: every user in one Cluster slot, and
  // a user's cache keys (no prefix) in another slot than the scripts that drop them.
  if (/[{}]/.test(cfg.redisPrefix))
    throw new ConfigError(`'redis-prefix' must not contain { or }, got ${cfg.redisPrefix}`);
  if (cfg.redisClusterNodes !== '') {
    if (parseClusterNodes(cfg.redisClusterNodes).length === 0)
      throw new ConfigError(`'redis-cluster-nodes' lists no node`);
    return;
  }
  let url: URL;
  try {
    url = new URL(cfg.redisUrl);
  } catch {
    throw new ConfigError(
      `'redis-url' must be a URL such as redis://host:6379, got ${cfg.redisUrl}`,
    );
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
    throw new ConfigError(`'redis-url' must start with redis:// or rediss://, got ${cfg.redisUrl}`);
  if (url.hostname === '') throw new ConfigError(`'redis-url' names no host: ${cfg.redisUrl}`);
  // ioredis reads a database from the path and options from the query, and the query's win
  // over the server's own (a `?lazyConnect=true` never connected; `/abc` threw at start-up).
  if (!/^\/?(\d{1,5})?$/.test(url.pathname))
    throw new ConfigError(
      `'redis-url' path must be a database number (/0, /3), got ${url.pathname}`,
    );
  if (url.search !== '')
    throw new ConfigError(`'redis-url' takes no query parameters, got ${url.search}`);
}

/** The settings table for `recserve serve --help` and the README. */
export function describeSettings(): string {
  return Object.entries(KEYS)
    .map(
      ([k, s]) => `  --${k.padEnd(24)} RECSERVE_${k.replace(/-/g, '_').toUpperCase()} (${s.kind})`,
    )
    .join('\n');
}
