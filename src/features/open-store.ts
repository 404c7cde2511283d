// The FeatureStore the server runs on, from its configuration: the embedded memory store, or
// the Redis store on one server or a Cluster. serve.ts needs nothing backend-specific beyond
// what this returns (is it connected, wait until it is, what to call it in logs).
import { Cluster, Redis } from 'ioredis';
import { parseClusterNodes, type ServerConfig } from '../config/index.js';
import { MemoryFeatureStore } from './memory-store.js';
import { RedisFeatureStore, reconnectDelay, SERVING_CLIENT_OPTIONS } from './redis-store.js';
import type { FeatureStore, ItemInfoLookup } from './store.js';

/** A store that connected but can never serve as configured (start-up fails, no retry). */
export class StoreSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreSetupError';
  }
}

export interface OpenedStore {
  store: FeatureStore;
  backend: 'memory' | 'redis';
  /** Where it is, for logs and /readyz: never a password. */
  address: string;
  /** False while a Redis store has no connection. */
  connected(): boolean;
  /** Resolves once connected (at once for memory); rejects after timeoutMs. */
  waitUntilConnected(timeoutMs: number): Promise<void>;
  /** What is worth a warning about the store's own settings, once connected. */
  warnings(): Promise<string[]>;
}

/** The URL as logs may show it: user and password masked. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable url)';
  }
}

export function openFeatureStore(
  cfg: ServerConfig,
  itemInfo: ItemInfoLookup,
  onError: (err: Error, what: string) => void,
): OpenedStore {
  if (cfg.store === 'memory') {
    const store = new MemoryFeatureStore({
      maxCacheBytes: Math.max(1, cfg.pipeline.cacheMaxBytes),
      itemInfo,
    });
    return {
      store,
      backend: 'memory',
      address: 'embedded',
      connected: () => true,
      waitUntilConnected: () => Promise.resolve(),
      warnings: () => Promise.resolve([]),
    };
  }
  const common = {
    itemInfo,
    prefix: cfg.redisPrefix,
    timeoutMs: cfg.redisTimeoutMs,
    onError,
  };
  let store: RedisFeatureStore;
  let address: string;
  let nodes: { host: string; port: number }[] = [];
  if (cfg.redisClusterNodes !== '') {
    nodes = parseClusterNodes(cfg.redisClusterNodes);
    const cluster = new Cluster(nodes, {
      clusterRetryStrategy: reconnectDelay,
      redisOptions: SERVING_CLIENT_OPTIONS,
    });
    store = new RedisFeatureStore({ redis: cluster, closeClient: true, ...common });
    address = `cluster ${nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
  } else {
    store = new RedisFeatureStore({ redis: cfg.redisUrl, ...common });
    address = redactUrl(cfg.redisUrl);
  }
  return {
    store,
    backend: 'redis',
    address,
    connected: () => store.connected,
    warnings: async () => {
      const policy = await store.evictionPolicy();
      return policy === null || policy === 'noeviction'
        ? []
        : [
            `redis maxmemory-policy is ${policy}: when Redis is full it may evict idempotency ` +
              `keys (a retried event then counts twice) or a user's keys (their blocks ` +
              `forgotten); set noeviction (a full Redis then answers 503 store_unavailable)`,
          ];
    },
    waitUntilConnected: async (ms) => {
      try {
        await store.waitUntilConnected(ms);
      } catch (err) {
        // A Cluster client pointed at a plain Redis retries its slot refresh for good; the
        // seed nodes themselves say why, and waiting will not change it.
        const why = nodes.length ? await seedsCannotServe(nodes) : null;
        if (why) throw new StoreSetupError(`redis at ${address}: ${why}`);
        throw err;
      }
      const inUse = await store.databaseInUse();
      if (inUse !== null && inUse !== store.databaseAsked) {
        throw new StoreSetupError(
          `redis at ${address}: database ${store.databaseAsked} is out of range for that ` +
            `server (its 'databases' setting); the connection is on database ${inUse}`,
        );
      }
    },
  };
}

/**
 * Why the seed nodes can never serve as a Cluster, from the first that answers: a Redis
 * without cluster support, or one that asks for a password (Cluster mode here has no way
 * to give one). Null when none answers, or they are Cluster nodes merely not ready yet.
 */
async function seedsCannotServe(nodes: { host: string; port: number }[]): Promise<string | null> {
  for (const n of nodes) {
    const at = `${n.host}:${n.port}`;
    const probe = new Redis({
      host: n.host,
      port: n.port,
      lazyConnect: true,
      connectTimeout: 500,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
    });
    // A refused AUTH surfaces as an error event; the call itself then sees a closed socket.
    let refused = '';
    probe.on('error', (e: Error) => (refused = e.message));
    try {
      await probe.connect();
      const info = await probe.info('cluster');
      if (/^cluster_enabled:0\s*$/m.test(info))
        return (
          `${at} is not a Cluster node (cluster_enabled:0); use --redis-url for a single ` +
          'server, or --redis-cluster-nodes with the nodes of a Cluster'
        );
    } catch (e) {
      if (/^NOAUTH\b/.test((e as Error).message) || /^NOAUTH\b/.test(refused))
        return (
          `${at} asks for a password, which --redis-cluster-nodes cannot give; use ` +
          '--redis-url (redis://user:password@host:port) for a single server'
        );
      // Unreachable or refusing: not evidence either way.
    } finally {
      probe.disconnect();
    }
  }
  return null;
}
