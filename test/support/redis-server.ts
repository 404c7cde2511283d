// A throwaway redis-server for tests and benchmarks: started daemonized on a loopback port
// with no persistence, answered once it responds to PING, shut down with SHUTDOWN NOSAVE.
// One place for what the Redis store tests, the Cluster test and bench/store.ts all need.
import { execFileSync, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

/** A free loopback port (port 0), or whether `port` is free: it, or -1 when taken. */
export function freePort(port = 0): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(-1));
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      const got = typeof addr === 'object' && addr ? addr.port : -1;
      srv.close(() => resolve(got));
    });
  });
}

/** True when redis-server (and, with `withCli`, redis-cli) can be run here. */
export function hasRedisServer(withCli = false): boolean {
  return (
    spawnSync('redis-server', ['--version']).status === 0 &&
    (!withCli || spawnSync('redis-cli', ['--version']).status === 0)
  );
}

export interface RedisServerHandle {
  port: number;
  url: string;
  /** A connected client for admin commands (INFO, CLUSTER ...). */
  admin: Redis;
  stop(): Promise<void>;
}

/**
 * Starts redis-server on `port` (a free one when omitted) with `args` appended, and resolves
 * once it answers PING (--daemonize returns before the server listens).
 */
export async function startRedisServer(
  opts: { port?: number; args?: string[] } = {},
): Promise<RedisServerHandle> {
  const port = opts.port ?? (await freePort());
  execFileSync('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'yes',
    ...(opts.args ?? []),
  ]);
  const admin = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    // After SHUTDOWN the socket never closes cleanly: do not hold the process 2 s for it.
    disconnectTimeout: 100,
  });
  admin.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await admin.connect();
      await admin.ping();
      break;
    } catch (err) {
      if (i > 50) throw err;
      admin.disconnect();
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    admin,
    stop: async () => {
      await admin.call('SHUTDOWN', 'NOSAVE').catch(() => undefined);
      admin.disconnect();
    },
  };
}
