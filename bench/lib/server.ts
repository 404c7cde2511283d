// What the load benchmarks share: a synthetic model repository built once per size, and
// `recserve serve` started as a child process on ephemeral ports, resolved when it logs
// that it is ready. The server's feedback data dir is a temp dir removed when it exits.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { latestVersion } from '../../src/models/repository.js';
import { projectRoot } from '../../src/retrieval/native.js';

/**
 * A synthetic repository of `items` items and embedding dimension `dim` in the temp dir,
 * built by `recserve build-demo` the first time and reused after (keyed by both).
 */
export function ensureSyntheticModels(
  items: number,
  dim: number,
  log: (msg: string) => void,
): string {
  const dir = join(tmpdir(), `recserve-bench-models-${items}-d${dim}`);
  if (latestVersion(dir, 'recserve') !== undefined) return dir;
  log(`building a ${items}-item, d=${dim} synthetic repository into ${dir} (once)`);
  const users = Math.max(500, Math.min(200_000, Math.round(items / 4)));
  const events = Math.max(20_000, Math.min(10_000_000, items * 10));
  const r = spawnSync(
    process.execPath,
    [
      join(projectRoot(), 'dist', 'src', 'cli', 'main.js'),
      'build-demo',
      '--repo',
      dir,
      '--items',
      String(items),
      '--users',
      String(users),
      '--events',
      String(events),
      '--factors',
      String(dim),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  if (r.status !== 0) throw new Error('build-demo failed');
  return dir;
}

export interface BenchServer {
  child: ChildProcess;
  port: number;
  /** 0 when started with --no-grpc. */
  grpcPort: number;
  /** Every JSON log line the server has written so far (kept until it exits). */
  logs: Record<string, unknown>[];
}

/**
 * Starts `recserve serve` on ephemeral ports over `models` (`extra` adds CLI flags) and
 * resolves once it logs that the model is loaded and warm. Benchmarks and the SIGTERM test
 * both start the server this way. `onListening` is told the HTTP port as soon as the server
 * logs it, before the model has loaded (bench:startup asks /readyz from then on).
 */
export async function startBenchServer(
  models: string,
  extra: string[] = [],
  onListening?: (port: number) => void,
): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-bench-data-'));
  const child = spawn(
    process.execPath,
    [
      join(projectRoot(), 'bin', 'recserve.js'),
      'serve',
      '--port',
      '0',
      '--grpc-port',
      '0',
      '--models',
      models,
      '--no-build-missing',
      '--data-dir',
      dataDir,
      '--no-fsync-feedback',
      '--log-level',
      'info',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  child.once('exit', () => rmSync(dataDir, { recursive: true, force: true }));
  let buf = '';
  let port = 0;
  let grpcPort = 0;
  const logs: Record<string, unknown>[] = [];
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          if (typeof rec.port === 'number' && port === 0) {
            port = rec.port;
            onListening?.(port);
          }
          if (typeof rec.grpcPort === 'number') grpcPort = rec.grpcPort;
          if (rec.msg === 'model loaded and warm: ready') resolve();
        } catch {
          /* not JSON */
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code})`)));
  });
  return { child, port, grpcPort, logs };
}
