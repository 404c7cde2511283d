// Model versions changing while traffic flows (models/watcher.ts): a new version is loaded
// beside the serving one and swapped in without a failed request; a version that fails to
// load leaves the serving one and is tried again once its files change; removing the serving
// version rolls back; start-up skips a bad newest version; --model-version pins one.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  cpSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { importRanker } from '../../src/models/import.js';
import { ensureTestModels, post, startTestServer, until, type Json } from './harness.js';

const NAME = 'recserve';

/** A private copy of the test repository (versions get added and removed). */
function copyRepo(): string {
  const repo = mkdtempSync(join(tmpdir(), 'recserve-swap-models-'));
  cpSync(ensureTestModels(), repo, { recursive: true });
  return repo;
}

/**
 * Version `to` made from version `from` the way a hand copy would be, config and manifest
 * rewritten to the new number, placed with one rename (as the repository writer does).
 * `spoil` may break a file in it before it appears.
 */
function copyVersion(repo: string, from: number, to: number, spoil?: (dir: string) => void): void {
  const tmp = join(repo, NAME, `.tmp-test-${to}`);
  cpSync(join(repo, NAME, String(from)), tmp, { recursive: true });
  const config = JSON.parse(readFileSync(join(tmp, 'config.json'), 'utf8')) as Json;
  config.version = to;
  const text = JSON.stringify(config, null, 2) + '\n';
  writeFileSync(join(tmp, 'config.json'), text);
  const manifest = JSON.parse(readFileSync(join(tmp, 'manifest.json'), 'utf8')) as Json;
  manifest.files['config.json'] = {
    sha256: createHash('sha256').update(text).digest('hex'),
    bytes: Buffer.byteLength(text),
  };
  writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  spoil?.(tmp);
  renameSync(tmp, join(repo, NAME, String(to)));
}

/** Rewrites a version's manifest entry for `file` to its present size and digest. */
function rehash(dir: string, file: string): void {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Json;
  const data = readFileSync(join(dir, file));
  manifest.files[file] = {
    sha256: createHash('sha256').update(data).digest('hex'),
    bytes: data.length,
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

async function getJson(base: string, path: string): Promise<{ status: number; json: Json }> {
  const r = await fetch(base + path);
  return { status: r.status, json: (await r.json()) as Json };
}

/** Version `v`'s /v1/models entry, once it is in `state` (30 s at most). */
function inState(base: string, v: number, state: string): Promise<Json> {
  return until(`version ${v} ${state}`, 30_000, async () => {
    const entry = (await getJson(base, '/v1/models')).json.versions.find(
      (x: Json) => x.version === v,
    );
    return entry?.state === state ? entry : undefined;
  });
}

async function serving(base: string): Promise<number | null> {
  return (await getJson(base, '/v1/models')).json.serving as number | null;
}

/** Concurrent recommendation loops until stopped: every answer's status and model version. */
function traffic(base: string, clients = 4) {
  const seen: { status: number; version: string | undefined; startedAt: number; doneAt: number }[] =
    [];
  let stop = false;
  const loops = Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; !stop; i++) {
      const startedAt = Date.now();
      // Cache off by user: every answer is computed by the model serving at the time.
      const r = await post(base, '/v1/recommendations', {
        user_id: `u${(c * 7919 + i) % 800}`,
        num_items: 10,
      });
      seen.push({
        status: r.status,
        version: r.json?.metadata?.model_version,
        startedAt,
        doneAt: Date.now(),
      });
    }
  });
  return {
    seen,
    async stop() {
      stop = true;
      await Promise.all(loops);
      return seen;
    },
  };
}

test('a new version is swapped in under traffic without a failed request; the old one is freed', async () => {
  const repo = copyRepo();
  const { server, base } = await startTestServer([
    '--models',
    repo,
    '--model-poll-ms',
    '100',
    '--cache-ttl-ms',
    '0',
  ]);
  try {
    await server.ready;
    const old = server.registry.current()!;
    assert.equal(old.version, `${NAME}-v1`);
    const load = traffic(base);
    await new Promise((r) => setTimeout(r, 300));
    // The MLOps path: an externally trained ranker dropped in as version 2.
    const v1 = join(repo, NAME, '1');
    const cfg = JSON.parse(readFileSync(join(v1, 'config.json'), 'utf8')) as Json;
    const rankerConfig = join(repo, 'ranker.json');
    writeFileSync(rankerConfig, JSON.stringify(cfg.ranker));
    const imported = await importRanker({
      repoDir: repo,
      name: NAME,
      modelPath: join(v1, 'model.onnx'),
      configPath: rankerConfig,
    });
    assert.equal(imported.version, 2);
    const swappedAt = await until('version 2 in answers', 30_000, async () => {
      const hit = load.seen.find((s) => s.version === `${NAME}-v2`);
      return hit?.doneAt;
    });
    await new Promise((r) => setTimeout(r, 300));
    const seen = await load.stop();
    const bad = seen.filter((s) => s.status !== 200);
    assert.deepEqual(bad, [], `${bad.length} of ${seen.length} answers failed during the swap`);
    assert.ok(seen.some((s) => s.version === `${NAME}-v1`));
    // A request that began after a v2 answer came back cannot be served by v1.
    const late = seen.filter((s) => s.startedAt > swappedAt);
    assert.ok(late.length > 0);
    assert.deepEqual(
      late.filter((s) => s.version !== `${NAME}-v2`),
      [],
      'an answer from the old version after the swap',
    );
    // The old version's ranking workers are shut once its last request released it.
    await until('the old model freed', 30_000, async () =>
      (old.ranker as unknown as { closed: boolean }).closed ? true : undefined,
    );
    assert.equal(
      (server.registry.current()!.ranker as unknown as { closed: boolean }).closed,
      false,
    );
    // Version 2 has version 1's items.json: it shares the catalog and its tables, not a copy.
    const now = server.registry.current()!;
    assert.equal(now.bundle.items.ids, old.bundle.items.ids);
    assert.equal(now.bundle.items.index, old.bundle.items.index);
    assert.equal(now.categoryRows, old.categoryRows);
    assert.equal(now.creatorRows, old.creatorRows);
    assert.notEqual(now.exact, old.exact);
    const models = (await getJson(base, '/v1/models')).json;
    assert.equal(models.name, NAME);
    assert.equal(models.serving, 2);
    assert.equal(models.pinned, null);
    assert.deepEqual(
      models.versions.map((v: Json) => [v.version, v.state]),
      [
        [2, 'serving'],
        [1, 'available'],
      ],
    );
    assert.ok(models.versions[0].load_ms >= 0);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^recserve_model_version\{name="recserve"\} 2$/m);
    assert.match(metrics, /^recserve_model_loads_total\{result="loaded"\} 2$/m);
  } finally {
    await server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});

test('a version that fails leaves the serving one, is retried once its files change, and removing it rolls back', async () => {
  const repo = copyRepo();
  const { server, base } = await startTestServer(['--models', repo, '--model-poll-ms', '100']);
  try {
    await server.ready;
    const quality = join(repo, NAME, '1', 'items_quality.f32');
    // One value short: the manifest's size check refuses the version.
    copyVersion(repo, 1, 2, (dir) => truncateSync(join(dir, 'items_quality.f32'), 4));
    const failed = await inState(base, 2, 'failed');
    assert.match(failed.reason, /items_quality\.f32/);
    assert.equal(await serving(base), 1);
    const r = await post(base, '/v1/recommendations', { user_id: 'u1' });
    assert.equal(r.status, 200);
    assert.equal(r.json.metadata.model_version, `${NAME}-v1`);
    // Several polls later it has not been tried again (its files did not change).
    await new Promise((res) => setTimeout(res, 400));
    let metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^recserve_model_loads_total\{result="failed"\} 1$/m);

    // The file completed (a copy that had not finished): tried again, and it serves.
    cpSync(quality, join(repo, NAME, '2', 'items_quality.f32'));
    await until('version 2 serving', 30_000, async () =>
      (await serving(base)) === 2 ? true : undefined,
    );

    // A directory renamed from another version (its config says 1) is refused by name.
    const tmp = join(repo, NAME, '.tmp-renamed');
    cpSync(join(repo, NAME, '1'), tmp, { recursive: true });
    renameSync(tmp, join(repo, NAME, '3'));
    const renamed = await inState(base, 3, 'failed');
    assert.match(
      renamed.reason,
      /config\.json says recserve version 1, but the directory is recserve\/3/,
    );
    assert.equal(await serving(base), 2);

    // Rolling back: the serving version's directory goes; the newest that loads replaces
    // it (3 still fails unchanged, so 1).
    rmSync(join(repo, NAME, '2'), { recursive: true });
    await until('version 1 serving again', 30_000, async () =>
      (await serving(base)) === 1 ? true : undefined,
    );
    const again = await post(base, '/v1/recommendations', { user_id: 'u2' });
    assert.equal(again.status, 200);
    assert.equal(again.json.metadata.model_version, `${NAME}-v1`);
    metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^recserve_model_version\{name="recserve"\} 1$/m);
  } finally {
    await server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});

test('start-up skips a newest version that fails and serves the next older one', async () => {
  const repo = copyRepo();
  copyVersion(repo, 1, 2, (dir) => truncateSync(join(dir, 'hnsw.index'), 100));
  const { server, base } = await startTestServer(['--models', repo, '--model-poll-ms', '0']);
  try {
    await server.ready;
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const models = (await getJson(base, '/v1/models')).json;
    assert.equal(models.serving, 1);
    assert.equal(models.poll_ms, 0);
    assert.equal(models.versions[0].version, 2);
    assert.equal(models.versions[0].state, 'failed');
    assert.match(models.versions[0].reason, /hnsw\.index/);
    // SIGHUP's check (here called directly) tries a failed version again on request.
    cpSync(join(repo, NAME, '1', 'hnsw.index'), join(repo, NAME, '2', 'hnsw.index'));
    await server.models.check(true);
    assert.equal(await serving(base), 2);
  } finally {
    await server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});

test('--model-version pins a version; a pin the repository lacks fails start-up, naming it', async () => {
  const repo = copyRepo();
  copyVersion(repo, 1, 2);
  const pinned = await startTestServer(['--models', repo, '--model-version', '1']);
  try {
    await pinned.server.ready;
    const models = (await getJson(pinned.base, '/v1/models')).json;
    assert.equal(models.serving, 1);
    assert.equal(models.pinned, 1);
    await pinned.server.models.check();
    assert.equal(await serving(pinned.base), 1);
  } finally {
    await pinned.server.close();
  }
  const missing = await startTestServer([
    '--models',
    repo,
    '--model-version',
    '7',
    '--model-poll-ms',
    '0',
  ]);
  try {
    await assert.rejects(
      missing.server.ready,
      /version 7 of 'recserve' is not in .*--model-version/,
    );
    const ready = await getJson(missing.base, '/readyz');
    assert.equal(ready.status, 503);
    assert.equal(ready.json.status, 'failed');
  } finally {
    await missing.server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});

test('a version file that never ends is refused, later versions still load, and stopping abandons a long load', async () => {
  const repo = copyRepo();
  const { server, base } = await startTestServer(['--models', repo, '--model-poll-ms', '100']);
  try {
    await server.ready;
    // A manifest that covers a link to /dev/zero as an empty file: its size matched, and
    // the checksum read it for good, blocking every later version and the server's stop.
    copyVersion(repo, 1, 2, (dir) => {
      symlinkSync('/dev/zero', join(dir, 'extra.bin'));
      const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Json;
      manifest.files['extra.bin'] = {
        sha256: createHash('sha256').update('').digest('hex'),
        bytes: 0,
      };
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    });
    const failed = await inState(base, 2, 'failed');
    assert.match(failed.reason, /extra\.bin is not a regular file/);
    copyVersion(repo, 1, 3);
    await until('version 3 serving', 30_000, async () =>
      (await serving(base)) === 3 ? true : undefined,
    );

    // A version whose checksums take seconds (8 GiB, sparse, with a wrong digest): a stop
    // during its load abandons it rather than hashing to the end, and records no failure.
    copyVersion(repo, 1, 4, (dir) => {
      writeFileSync(join(dir, 'huge.bin'), '');
      truncateSync(join(dir, 'huge.bin'), 8 * 2 ** 30);
      const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Json;
      // Listed first, so the load reaches it before anything else.
      manifest.files = {
        'huge.bin': { sha256: '0'.repeat(64), bytes: 8 * 2 ** 30 },
        ...manifest.files,
      };
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    });
    await inState(base, 4, 'loading');
    const t0 = Date.now();
    await server.close();
    const ms = Date.now() - t0;
    assert.ok(ms < 2500, `stopping took ${ms} ms`);
    const after = server.models.status().versions.find((x) => x.version === 4);
    assert.notEqual(after?.state, 'failed');
    assert.equal(server.metrics.modelLoads.get({ result: 'failed' }), 1);
  } finally {
    await server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});

test("a version written again under its number is loaded again; the earlier content's cached answers are not served", async () => {
  const repo = copyRepo();
  // Polling off: each check is this test's own.
  const { server, base } = await startTestServer(['--models', repo, '--model-poll-ms', '0']);
  try {
    await server.ready;
    const ask = () => post(base, '/v1/recommendations', { user_id: 'u1', num_items: 5 });
    /** Version 2 from version 1 with `note` in its config (other content, same answers). */
    const write2 = (note: string, spoil?: (dir: string) => void) =>
      copyVersion(repo, 1, 2, (dir) => {
        const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Json;
        cfg.training = { ...cfg.training, note };
        writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
        rehash(dir, 'config.json');
        spoil?.(dir);
      });
    write2('first');
    await server.models.check();
    assert.equal(await serving(base), 2);
    // cache_hit is present (true) on cached answers only.
    assert.equal((await ask()).json.metadata.cache_hit, undefined);
    const cached = await ask();
    assert.equal(cached.json.metadata.cache_hit, true);
    assert.equal(cached.json.metadata.model_version, `${NAME}-v2`);
    const firstSince = (await getJson(base, '/v1/models')).json.versions[0].since;

    // Removed and written again before the next check (the writers number a version
    // latest + 1, so this is what "roll back, then import the fix" gives).
    rmSync(join(repo, NAME, '2'), { recursive: true });
    write2('second');
    await server.models.check();
    const models = (await getJson(base, '/v1/models')).json;
    assert.equal(models.serving, 2);
    assert.notEqual(models.versions[0].since, firstSince, 'version 2 was not loaded again');
    const fresh = await ask();
    assert.equal(fresh.status, 200);
    assert.equal(fresh.json.metadata.model_version, `${NAME}-v2`);
    assert.equal(
      fresh.json.metadata.cache_hit,
      undefined,
      'an answer cached from the earlier content',
    );

    // Replaced by content that does not load: what serves stays, and says so.
    rmSync(join(repo, NAME, '2'), { recursive: true });
    write2('third', (dir) => truncateSync(join(dir, 'items_quality.f32'), 4));
    await server.models.check();
    const after = (await getJson(base, '/v1/models')).json;
    assert.equal(after.serving, 2);
    assert.equal(after.versions[0].state, 'serving');
    assert.match(after.versions[0].reason, /its replacement on disk failed: .*items_quality\.f32/);
    assert.equal((await ask()).status, 200);
    // Not retried while its files stay as they are.
    await server.models.check();
    assert.equal(server.metrics.modelLoads.get({ result: 'failed' }), 1);
  } finally {
    await server.close();
    rmSync(repo, { recursive: true, force: true });
  }
});
