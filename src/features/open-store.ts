// The FeatureStore the server runs on, from its configuration: the embedded memory store, or
// the Redis store on one server or a Cluster. serve.ts needs nothing backend-specific beyond
// what this returns (is it connected, wait until it is, what to call it in logs).
import { Cluster } from 'ioredis';
import { parseClusterNodes, type ServerConfig } from '../config/index.js';
import { MemoryFeatureStore } from './memory-store.js';
import { RedisFeatureStore } from './redis-store.js';
import type { FeatureStore, ItemInfoLookup } from './store.js';

export interface OpenedStore {
  store: FeatureStore;
  backend: 'memory' | 'redis';
  /** Where it is, for logs and /readyz: never a password. */
  address: string;
  /** False while a Redis store has no connection. */
  connected(): boolean;
  /** Resolves once connected (at once for memory); rejects after timeoutMs. */
  waitUntilConnected(timeoutMs: number): Promise<void>;
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
  if (cfg.redisClusterNodes !== '') {
    const nodes = parseClusterNodes(cfg.redisClusterNodes);
    const cluster = new Cluster(nodes, {
      // As for one server (redis-store.ts): fail pending commands fast during an outage,
      // reconnect forever at most every second.
      clusterRetryStrategy: (times) => Math.min(times * 100, 1000),
      redisOptions: { maxRetriesPerRequest: 1, connectTimeout: 2000 },
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
    waitUntilConnected: (ms) => store.waitUntilConnected(ms),
  };
}
