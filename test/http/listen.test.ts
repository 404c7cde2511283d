// A port already taken is a user's setting gone wrong: `recserve serve` says so in one line
// and exits 1. uWS listened with SO_REUSEPORT, so a second server on the same port started,
// and the kernel split connections between two servers with separate state.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { ensureTestModels, startTestServer } from './harness.js';

const BIN = fileURLToPath(new URL('../../../bin/recserve.js', import.meta.url));

test('a second server on a port in use exits 1 with one line, and the first keeps it', async () => {
  const { server, base } = await startTestServer();
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-listen-'));
  try {
    const r = spawnSync(
      process.execPath,
      [
        BIN,
        'serve',
        '--port',
        String(server.http.port),
        '--no-grpc',
        '--models',
        ensureTestModels(),
        '--no-build-missing',
        '--data-dir',
        dataDir,
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^recserve serve: cannot listen on 127\.0\.0\.1:\d+ /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await server.close();
  }
});
