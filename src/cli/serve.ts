// `recserve serve`: builds what is missing (the addon, the demo model repository), starts the
// HTTP front end at once (so /healthz answers and /readyz says "not ready" while loading),
// loads and warms the newest model version, then turns ready. SIGTERM/SIGINT: stop
// accepting, finish in-flight requests, exit 0.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, describeSettings, loadConfig, type ServerConfig } from '../config/index.js';
import { ListenError } from '../transport/listen-error.js';
import { openFeatureStore, StoreSetupError } from '../features/open-store.js';
import type { FeatureStore, ItemInfo } from '../features/store.js';
import { DataDirError, DataDirInUseError, DirLock } from '../feedback/dir-lock.js';
import { FeedbackIngestor } from '../feedback/ingestor.js';
import { latestVersion } from '../models/repository.js';
import { buildServingModel, ModelRegistry } from '../models/registry.js';
import { ModelWatcher } from '../models/watcher.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { categoryNamesOf } from '../pipeline/ranking/shared-bundle.js';
import { RecommendationPipeline } from '../pipeline/service.js';
import { projectRoot } from '../retrieval/native.js';
import { startHttpServer, type HttpServer } from '../transport/http/server.js';
import { startGrpcServer, type GrpcServerHandle } from '../transport/grpc/server.js';

export interface RunningServer {
  config: ServerConfig;
  http: HttpServer;
  /** The gRPC front end (undefined with --no-grpc). */
  grpc: GrpcServerHandle | undefined;
  service: RecommendationPipeline;
  registry: ModelRegistry;
  /** Which model version serves; check() lists the repository now (SIGHUP). */
  models: ModelWatcher;
  store: FeatureStore;
  metrics: Metrics;
  log: Logger;
  /** Settles when the model is loaded and warm (rejects when loading failed). */
  ready: Promise<void>;
  /** Graceful stop: drain HTTP, then free the model and the store. */
  close(): Promise<void>;
}

/** Newest version directory of models/<name>/ (models/repository.ts decides what counts). */
export function latestVersionDir(modelsDir: string, name: string): string | undefined {
  const v = latestVersion(modelsDir, name);
  return v === undefined ? undefined : join(modelsDir, name, String(v));
}

/** Runs a build step as a child process without blocking the event loop (/healthz answers). */
function runStep(args: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // The child's stdout goes to our stderr: stdout carries only this server's JSON logs.
    const child = spawn(process.execPath, args, { stdio: ['ignore', 2, 2] });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${what} failed (exit ${code})`)),
    );
  });
}

async function buildMissing(cfg: ServerConfig, log: Logger): Promise<void> {
  const root = projectRoot();
  if (!existsSync(join(root, 'build', 'Release', 'recserve_native.node'))) {
    log.info('native addon missing: building it (scripts/build-native.mjs)');
    await runStep([join(root, 'scripts', 'build-native.mjs')], 'building the native addon');
  }
  if (!latestVersionDir(cfg.modelsDir, cfg.modelName)) {
    log.info({ modelsDir: cfg.modelsDir }, 'no model version found: building the demo repository');
    await runStep(
      [
        join(root, 'dist', 'src', 'cli', 'main.js'),
        'build-demo',
        '--if-missing',
        '--repo',
        cfg.modelsDir,
        '--name',
        cfg.modelName,
      ],
      'recserve build-demo',
    );
  }
}

/** Starts everything in-process (tests and the CLI share it). */
export async function startServer(cfg: ServerConfig, log?: Logger): Promise<RunningServer> {
  const logger = log ?? createLogger(cfg.logLevel);
  // One embedded-store server per data dir (its feedback log): a second one fails here,
  // naming the first, before it listens or loads anything (feedback/dir-lock.ts).
  const dirLock = cfg.store === 'memory' ? await DirLock.acquire(cfg.dataDir) : null;
  const metrics = new Metrics();
  const registry = new ModelRegistry();
  // Aggregation reads the current model's catalog; an item it does not know is still
  // recorded (seen, counts), just without category/creator aggregates.
  const itemInfo = (itemId: string): ItemInfo | undefined => {
    const m = registry.current();
    const row = m?.bundle.items.index.get(itemId);
    if (m === undefined || row === undefined) return undefined;
    const items = m.bundle.items;
    return {
      categories: categoryNamesOf(m.items, row),
      creatorId: items.creatorIds[row] || null,
    };
  };
  const storeLog = logger.child({ component: 'store' });
  // A Redis that is down fails every reconnect attempt (up to one a second): one line per
  // distinct message per minute is what the log can carry; the counter has them all.
  const lastLogged = new Map<string, number>();
  const opened = openFeatureStore(cfg, itemInfo, (err, what) => {
    metrics.storeErrors.inc({ what });
    const key = `${what}:${err.message}`;
    const now = Date.now();
    if ((lastLogged.get(key) ?? -Infinity) > now - 60_000) return;
    if (lastLogged.size > 100) lastLogged.clear();
    lastLogged.set(key, now);
    storeLog.warn({ what, err: err.message }, 'feature store error');
  });
  const store = opened.store;
  metrics.storeConnected.onCollect(() => {
    metrics.storeConnected.set({ backend: opened.backend }, opened.connected() ? 1 : 0);
  });
  const service = new RecommendationPipeline({
    registry,
    store,
    config: cfg.pipeline,
    metrics,
    log: logger.child({ component: 'pipeline' }),
  });
  if (opened.backend !== 'memory') {
    service.setStoreHealth(() => ({ backend: opened.backend, connected: opened.connected() }));
  }
  // Set once the gRPC server is up (a scrape may come while it starts).
  const grpcRef: { current?: GrpcServerHandle } = {};
  metrics.queueDepth.onCollect(() => {
    const m = registry.current();
    metrics.queueDepth.set({ queue: 'ranking' }, m ? m.ranker.queueDepth() : 0);
    metrics.queueDepth.set({ queue: 'retrieval' }, m ? m.collaborative.queueDepth() : 0);
    metrics.queueDepth.set({ queue: 'http_in_flight' }, http.inFlight());
    metrics.queueDepth.set({ queue: 'grpc_in_flight' }, grpcRef.current?.inFlight() ?? 0);
  });
  metrics.exactIndex.onCollect(() => {
    const x = registry.current()?.exact;
    if (!x) return;
    metrics.exactIndex.set({ stat: 'rows' }, x.size);
    metrics.exactIndex.set({ stat: 'screen_outliers' }, x.screenOutliers);
    metrics.exactIndex.set({ stat: 'screened_batches' }, x.screenedBatches);
    metrics.exactIndex.set({ stat: 'screen_prunes' }, x.screenPrunes);
    metrics.exactIndex.set({ stat: 'screen_refits' }, x.screenRefits);
    metrics.exactIndex.set({ stat: 'guess_retries' }, x.guessRetries);
  });
  const http = await startHttpServer(service, {
    host: cfg.host,
    port: cfg.port,
    maxBodyBytes: cfg.maxBodyBytes,
    metrics,
    log: logger.child({ component: 'http' }),
  }).catch(async (err: unknown) => {
    await dirLock?.release();
    throw err;
  });
  logger.info({ host: cfg.host, port: http.port }, 'listening (not ready until models load)');
  // gRPC shares the pipeline; its health service reports the same readiness as /readyz.
  const grpc = cfg.grpcEnabled
    ? await startGrpcServer(service, {
        host: cfg.grpcHost,
        port: cfg.grpcPort,
        maxReceiveBytes: cfg.grpcMaxMessageBytes,
        maxConcurrentStreams: cfg.grpcMaxConcurrentStreams,
        keepaliveTimeMs: cfg.grpcKeepaliveMs,
        drainTimeoutMs: cfg.drainTimeoutMs,
        metrics,
      }).catch(async (err: unknown) => {
        await http.close(0);
        await dirLock?.release();
        throw err;
      })
    : undefined;
  grpcRef.current = grpc;

  let ingestor: FeedbackIngestor | undefined;
  let stopped = false;
  // Settles when close() begins: a start-up still waiting for Redis stops waiting at once.
  let onStop!: () => void;
  const stopping = new Promise<'stopped'>((resolve) => (onStop = () => resolve('stopped')));
  // Start-up waits for a shared store as long as it takes (Redis may start after us), saying
  // so on /readyz; the model loads meanwhile.
  const storeUp = (async () => {
    if (opened.backend === 'memory') return;
    logger.info(
      { store: opened.backend, address: opened.address },
      'connecting to the feature store',
    );
    for (;;) {
      try {
        const r = await Promise.race([opened.waitUntilConnected(2000), stopping]);
        if (r === 'stopped') throw new Error('stopped before the feature store answered');
        service.setWaitingFor(null);
        for (const w of await opened.warnings()) storeLog.warn(w);
        return;
      } catch (err) {
        // A database the server does not have will not appear by waiting.
        if (stopped || err instanceof StoreSetupError) throw err;
        service.setWaitingFor(`${opened.backend} at ${opened.address}`);
      }
    }
  })();
  // Awaited once the model is in (below); until then a failure must not count as unhandled.
  storeUp.catch(() => undefined);
  const watcher = new ModelWatcher({
    repoDir: cfg.modelsDir,
    name: cfg.modelName,
    pinned: cfg.modelVersion > 0 ? cfg.modelVersion : null,
    pollMs: cfg.modelPollMs,
    registry,
    build: (b, previous, signal) =>
      buildServingModel(b, {
        pipeline: cfg.pipeline,
        metrics,
        signal,
        ...(previous ? { previous } : {}),
      }),
    warm: (m) => service.warm(m),
    log: logger.child({ component: 'models' }),
    metrics,
  });
  service.setModelsStatus(() => watcher.status());
  metrics.modelVersion.onCollect(() => {
    const m = registry.current();
    if (m) metrics.modelVersion.set({ name: m.bundle.name }, m.bundle.version);
  });
  const ready = (async () => {
    const t0 = Date.now();
    if (cfg.buildMissing) await buildMissing(cfg, logger);
    // /readyz says why no version loads while the watcher waits for one that does.
    const model = await watcher.start((reason) => service.setFailed(reason, false));
    service.setFailed(null);
    const bundle = model.bundle;
    await storeUp;
    if (opened.backend === 'memory') {
      // The log is replayed after the model is in place, so replayed events aggregate by the
      // catalog's categories and creators exactly as live ones do.
      const o = await FeedbackIngestor.open(store, cfg.dataDir, { fsync: cfg.fsyncFeedback });
      ingestor = o.ingestor;
      if (o.replay) logger.info({ replay: o.replay }, 'feedback log replayed');
    } else {
      // Redis is the durable state every replica shares (its persistence settings decide how
      // durable); a per-replica log replayed into it would count events twice once their
      // idempotency keys (24 h) expire.
      ingestor = new FeedbackIngestor({ store, log: null });
    }
    service.setFeedbackSink(ingestor);
    await service.warm();
    service.setReady(true);
    logger.info(
      {
        model: model.version,
        items: bundle.items.ids.length,
        ms: Date.now() - t0,
        // What the engines chose on this host (kernel set, CUDA or not, pool sizes): the
        // first thing to check when figures differ between machines.
        exact: {
          kernel: model.exact.kernel,
          backend: model.exact.backend,
          storage: model.exact.storage,
          screen: model.exact.screen,
          // Items far out that the int8 screen scores exactly (ExactIndex.screenOutliers).
          screenOutliers: model.exact.screenOutliers,
          threads: model.exact.threads,
        },
        // What "similar" means in this version (config.json hnsw.metric).
        hnsw: { metric: model.hnsw.metric, items: model.hnsw.size },
        ranker: model.ranker.describe(),
      },
      'model loaded and warm: ready',
    );
  })();
  ready.catch((err: unknown) => {
    if (stopped) {
      logger.info('stopped before start-up finished');
      return;
    }
    logger.error({ err }, 'start-up failed; staying not ready');
    service.setFailed(err instanceof Error ? err.message : String(err));
  });

  let closing: Promise<void> | undefined;
  return {
    config: cfg,
    http,
    grpc,
    service,
    registry,
    models: watcher,
    store,
    metrics,
    log: logger,
    ready,
    close() {
      closing ??= (async () => {
        stopped = true;
        onStop();
        service.setReady(false);
        // Both front ends drain at once, under the same bound.
        await Promise.all([http.close(cfg.drainTimeoutMs), grpc?.close(cfg.drainTimeoutMs)]);
        await watcher.close();
        await ready.catch(() => undefined);
        await ingestor?.close();
        await registry.close();
        await store.close();
        metrics.close();
        await dirLock?.release();
      })();
      return closing;
    },
  };
}

export async function run(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(
      `usage: recserve serve [--port N --host H --models DIR --config FILE ...]\n\nsettings (flag / environment):\n${describeSettings()}`,
    );
    return 0;
  }
  let cfg: ServerConfig;
  try {
    cfg = loadConfig(args, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`recserve serve: ${err.message}`);
      return 2;
    }
    throw err;
  }
  // The signals are taken before anything starts: one that arrives while the server starts
  // (it listens before it is ready) is acted on once it has started, where the default
  // action had killed the process with the data dir's lock left behind.
  let server: RunningServer | undefined;
  let pending: string | null = null;
  let onSignal = (signal: string) => {
    pending ??= signal;
  };
  const onTerm = () => onSignal('SIGTERM');
  const onInt = () => onSignal('SIGINT');
  // SIGHUP: list the model repository now, and try again versions that failed to load
  // (a failure caused by something outside their files: memory, a library).
  const onHup = () => {
    if (!server) return;
    server.log.info('SIGHUP: checking the model repository');
    void server.models.check(true);
  };
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);
  process.on('SIGHUP', onHup);
  try {
    server = await startServer(cfg);
  } catch (err) {
    if (
      err instanceof ListenError ||
      err instanceof DataDirInUseError ||
      err instanceof DataDirError
    ) {
      console.error(`recserve serve: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const running = server;
  const exitCode = await new Promise<number>((resolve) => {
    let stopping = false;
    onSignal = (signal: string) => {
      if (stopping) return;
      stopping = true;
      running.log.info(
        {
          signal,
          inFlight: running.http.inFlight(),
          grpcInFlight: running.grpc?.inFlight() ?? 0,
        },
        'stopping: draining in-flight requests',
      );
      running.close().then(
        () => resolve(0),
        (err: unknown) => {
          running.log.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    if (pending !== null) onSignal(pending);
  });
  process.off('SIGHUP', onHup);
  running.log.info('stopped');
  return exitCode;
}
