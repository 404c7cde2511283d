// Server configuration: precedence (defaults < file < environment < flags), validation
// naming the setting, and the documented defaults.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig, parseClusterNodes } from '../../src/config/index.js';

test('defaults: 127.0.0.1:8080, 1 MiB bodies, the seed’s pipeline constants', () => {
  const c = loadConfig([], {});
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, 8080);
  assert.equal(c.maxBodyBytes, 1024 * 1024);
  assert.equal(c.modelName, 'recserve');
  assert.equal(c.pipeline.coldStartThreshold, 10);
  assert.equal(c.pipeline.explorationRate, 0.05);
  assert.equal(c.pipeline.rankingTimeoutMs, 50);
});

test('file < environment < flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'recserve-cfg-'));
  const file = join(dir, 'c.json');
  writeFileSync(
    file,
    JSON.stringify({ port: 1000, host: '0.0.0.0', pipeline: { maxCandidates: 99 } }),
  );
  const c = loadConfig(['--config', file, '--port=3000', '--no-build-missing'], {
    RECSERVE_PORT: '2000',
    RECSERVE_CACHE_TTL_MS: '0',
  });
  rmSync(dir, { recursive: true, force: true });
  assert.equal(c.port, 3000);
  assert.equal(c.host, '0.0.0.0');
  assert.equal(c.pipeline.maxCandidates, 99);
  assert.equal(c.pipeline.cacheTtlMs, 0);
  assert.equal(c.buildMissing, false);
});

test('bad values are refused naming the setting and its source', () => {
  assert.throws(
    () => loadConfig(['--port', '70000'], {}),
    (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /flag --port.*between 0 and 65535/);
      return true;
    },
  );
  assert.throws(
    () => loadConfig([], { RECSERVE_EXPLORATION_RATE: 'lots' }),
    /RECSERVE_EXPLORATION_RATE/,
  );
  assert.throws(() => loadConfig(['--colour', 'blue'], {}), /unknown setting 'colour'/);
  assert.throws(() => loadConfig(['--port'], {}), /--port needs a value/);
  assert.throws(
    () => loadConfig([], { RECSERVE_EXACT_SCREEN: 'int4' }),
    /'exact-screen' must be auto, int8 or none, got int4/,
  );
  // Not decimal numbers (Number() made '' and ' ' 0, a random port, and '0x1F90' 8080).
  for (const bad of ['', ' ', '0x1F90', '1_000'])
    assert.throws(() => loadConfig(['--port', bad], {}), /--port.*must be an integer/, bad);
  assert.throws(() => loadConfig([], { RECSERVE_PORT: '' }), /RECSERVE_PORT/);
  assert.equal(loadConfig(['--port', ' 9000 '], {}).port, 9000);
  // A timer of more than 2^31 - 1 ms fires after 1 ms: every ranking fell back.
  assert.throws(() => loadConfig(['--ranking-timeout-ms', '3000000000'], {}), /2147483647/);
  assert.equal(loadConfig(['--exact-screen', 'none'], {}).pipeline.exactScreen, 'none');
  assert.equal(loadConfig([], {}).pipeline.exactScreen, 'auto');
});

test('the store settings: redis by URL or Cluster seeds, checked at start-up', () => {
  assert.equal(loadConfig([], {}).store, 'memory');
  const r = loadConfig(['--store', 'redis', '--redis-url', 'rediss://u:p@cache.internal:6380/2'], {
    RECSERVE_REDIS_TIMEOUT_MS: '250',
  });
  assert.deepEqual(
    [r.store, r.redisUrl, r.redisTimeoutMs],
    ['redis', 'rediss://u:p@cache.internal:6380/2', 250],
  );
  const c = loadConfig(['--redis-cluster-nodes', 'a:7000, [::1]:7001'], {});
  assert.deepEqual(parseClusterNodes(c.redisClusterNodes), [
    { host: 'a', port: 7000 },
    { host: '::1', port: 7001 },
  ]);
  assert.throws(() => loadConfig(['--store', 'mongo'], {}), /'store' must be memory or redis/);
  assert.throws(() => loadConfig(['--redis-url', 'http://x:1'], {}), /redis:\/\/ or rediss:\/\//);
  assert.throws(() => loadConfig(['--redis-url', 'localhost:6379'], {}), /'redis-url'/);
  assert.throws(() => loadConfig(['--redis-cluster-nodes', 'a:7000,b'], {}), /host:port.*'b'/);
  assert.throws(() => loadConfig(['--redis-cluster-nodes', 'a:70000'], {}), /host:port/);
  assert.throws(() => loadConfig(['--redis-timeout-ms', '0'], {}), /between 1 and 60000/);
  assert.throws(() => loadConfig(['--redis-prefix', 'a{b}:'], {}), /'redis-prefix' must not/);
  for (const bad of ['redis://h:1/abc', 'redis://h:1/%20', 'redis://h:1/1/2'])
    assert.throws(() => loadConfig(['--redis-url', bad], {}), /database number/, bad);
  assert.throws(
    () => loadConfig(['--redis-url', 'redis://h:1/0?lazyConnect=true'], {}),
    /no query parameters/,
  );
  assert.equal(loadConfig(['--redis-url', 'redis://h:1/3'], {}).redisUrl, 'redis://h:1/3');
});
