// The watcher's retry rules (models/watcher.ts), with the real loader and a build step that
// fails the way a version whose directory moved away mid-load fails (ENOENT): such a
// failure is tried again at the next listing without any change to the files, but only
// once, so a version that really lacks a file is not loaded again every few seconds.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEFAULT_PIPELINE } from '../../src/config/index.js';
import { buildServingModel, ModelRegistry } from '../../src/models/registry.js';
import { ModelWatcher } from '../../src/models/watcher.js';
import { logger } from '../../src/observability/logger.js';
import { ensureTestModels } from '../http/harness.js';

function vanished(): Error {
  return Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), {
    code: 'ENOENT',
  });
}

test('a load that failed for a vanished file is retried at the next listing, once', async () => {
  const repo = mkdtempSync(join(tmpdir(), 'recserve-watcher-'));
  cpSync(ensureTestModels(), repo, { recursive: true });
  const registry = new ModelRegistry();
  let builds = 0;
  let failFirst = 1;
  const watcher = new ModelWatcher({
    repoDir: repo,
    name: 'recserve',
    pollMs: 0,
    registry,
    build: async (bundle, previous, signal) => {
      builds++;
      if (failFirst-- > 0) throw vanished();
      return buildServingModel(bundle, {
        pipeline: DEFAULT_PIPELINE,
        signal,
        ...(previous ? { previous } : {}),
      });
    },
    warm: async () => undefined,
    log: logger(),
  });
  try {
    // Polling off: start() gives up after one pass, with the failure recorded.
    await assert.rejects(watcher.start(), /ENOENT/);
    assert.equal(watcher.status().versions[0]!.state, 'failed');
    // No file changed, yet the next listing tries again, and this time it loads.
    await watcher.check();
    assert.equal(builds, 2);
    assert.equal(watcher.status().serving, 1);

    // A version that fails this way every time: tried twice, then left until its files
    // change (or SIGHUP's check(true)).
    cpSync(join(repo, 'recserve', '1'), join(repo, 'recserve', '.tmp-2'), { recursive: true });
    failFirst = 100;
    builds = 0;
    const dir = join(repo, 'recserve', '.tmp-2');
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { version: number };
    cfg.version = 2;
    const text = JSON.stringify(cfg);
    writeFileSync(join(dir, 'config.json'), text);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as {
      files: Record<string, { sha256: string; bytes: number }>;
    };
    manifest.files['config.json'] = {
      sha256: createHash('sha256').update(text).digest('hex'),
      bytes: Buffer.byteLength(text),
    };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    renameSync(dir, join(repo, 'recserve', '2'));
    for (let i = 0; i < 4; i++) await watcher.check();
    assert.equal(builds, 2);
    assert.equal(watcher.status().serving, 1);
    await watcher.check(true);
    assert.equal(builds, 3);
  } finally {
    await watcher.close();
    await registry.close();
    rmSync(repo, { recursive: true, force: true });
  }
});
