// A port already taken is a user's setting gone wrong: `recserve serve` says so in one line
// and exits 1. uWS listened with SO_REUSEPORT, so a second server on the same port started,
// and the kernel split connections between two servers with separate state.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { ensureTestModels, startTestServer } from './harness.js';

const BIN = fileURLToPath(new URL('../../../bin/recserve.js', import.meta.url));

/** `recserve serve` on the test models, HTTP only. */
function serveArgs(port: number, dataDir: string): string[] {
  return [
    BIN,
    'serve',
    '--port',
    String(port),
    '--no-grpc',
    '--models',
    ensureTestModels(),
    '--no-build-missing',
    '--data-dir',
    dataDir,
  ];
}

test('a second server on a port in use exits 1 with one line, and the first keeps it', async () => {
  const { server, base } = await startTestServer();
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-listen-'));
  try {
    const r = spawnSync(process.execPath, serveArgs(server.http.port, dataDir), {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^recserve serve: cannot listen on 127\.0\.0\.1:\d+ /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await server.close();
  }
});

test('a second server on a data dir in use exits 1 naming the first; the first keeps it', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-lock-'));
  const { server, base } = await startTestServer(['--data-dir', dataDir]);
  try {
    await server.ready;
    const r = spawnSync(process.execPath, serveArgs(0, dataDir), {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^recserve serve: data dir .* is in use by process ${process.pid} \\(since `),
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    const fb = await fetch(`${base}/v1/feedback`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'u1', events: [{ item_id: 'i1', event_type: 'view' }] }),
    });
    assert.equal(fb.status, 200);
  } finally {
    await server.close();
  }
  // Stopped, the first server left the dir free: the next one starts on it.
  const next = await startTestServer(['--data-dir', dataDir]);
  await next.server.ready;
  await next.server.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test('SIGTERM or SIGHUP just after "listening" is handled: stop exits 0 and frees the data dir', async () => {
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
    const dataDir = mkdtempSync(join(tmpdir(), 'recserve-early-'));
    const child = spawn(process.execPath, serveArgs(0, dataDir), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<{ code: number | null; sig: string | null }>((resolve) =>
      child.once('exit', (code, sig) => resolve({ code, sig })),
    );
    // The signal goes as soon as the server says it listens (the model still loading).
    let out = '';
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('"listening')) resolve();
      });
    });
    child.kill(signal);
    if (signal === 'SIGHUP') {
      // Still running: SIGHUP only asks for a look at the model repository.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(child.exitCode, null, 'SIGHUP stopped the server');
      child.kill('SIGTERM');
    }
    const { code, sig } = await exited;
    assert.deepEqual({ code, sig }, { code: 0, sig: null }, `after ${signal}`);
    assert.equal(existsSync(join(dataDir, 'LOCK')), false, 'the lock was left behind');
    rmSync(dataDir, { recursive: true, force: true });
  }
});
