// Shared by the HTTP and pipeline tests: a small demo model repository (built once per
// machine into the temp dir by `recserve build-demo`, the real builder) and a real server
// on an ephemeral port.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { latestVersion } from '../../src/models/repository.js';
import { projectRoot } from '../../src/retrieval/native.js';
import { startServer, type RunningServer } from '../../src/cli/serve.js';

// The suffix names the builder's output format: bump it when a test needs what older
// builds lack (v2: the HNSW graph by cosine), so a cached older bundle is not reused.
export const TEST_MODELS = join(tmpdir(), 'recserve-test-models-v2');

/** Builds the small test bundle unless it exists (about half a minute the first time). */
export function ensureTestModels(): string {
  if (latestVersion(TEST_MODELS, 'recserve') !== undefined) return TEST_MODELS;
  const main = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const args = ['build-demo', '--if-missing', '--repo', TEST_MODELS];
  args.push('--items', '3000', '--users', '800', '--events', '40000', '--seed', '7');
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`build-demo failed: ${r.stderr}`);
  return TEST_MODELS;
}

export async function startTestServer(extra: string[] = []): Promise<{
  server: RunningServer;
  base: string;
}> {
  const models = ensureTestModels();
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-data-'));
  const cfg = loadConfig(
    [
      '--port',
      '0',
      '--models',
      models,
      '--no-build-missing',
      '--data-dir',
      dataDir,
      '--no-fsync-feedback',
      '--log-level',
      'silent',
      '--seed',
      '1',
      // These tests speak HTTP; gRPC has its own (test/grpc). Port 0 keeps servers apart.
      '--grpc-port',
      '0',
      ...extra,
    ],
    {},
  );
  let server: RunningServer;
  try {
    server = await startServer(cfg);
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  // The data dir (feedback log, embedded store's files) goes with the server: every test
  // run used to leave one per server in the temp dir.
  const close = server.close.bind(server);
  server.close = async () => {
    try {
      await close();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  };
  return { server, base: `http://127.0.0.1:${server.http.port}` };
}

/** Response bodies are read loosely in tests: a wrong shape fails the assertion anyway. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- test-only loose JSON
export type Json = any;

export async function post(
  base: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Json }> {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json: Json = null;
  try {
    json = JSON.parse(text) as Json;
  } catch {
    json = text;
  }
  return { status: r.status, json };
}

/** Asks `probe` every 50 ms until it answers something other than undefined, for `ms` at most. */
export async function until<T>(
  what: string,
  ms: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
