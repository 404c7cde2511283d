// `recserve serve` as a child process: it logs where it listens, turns ready, and on SIGTERM
// finishes the requests already in flight, then exits 0.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../src/retrieval/native.js';
import { ensureTestModels } from './harness.js';

function request(
  agent: http.Agent,
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('SIGTERM drains in-flight requests and exits 0', async () => {
  const models = ensureTestModels();
  const child = spawn(
    process.execPath,
    [
      join(projectRoot(), 'bin', 'recserve.js'),
      'serve',
      '--port',
      '0',
      '--models',
      models,
      '--no-build-missing',
      '--data-dir',
      mkdtempSync(join(tmpdir(), 'recserve-data-')),
      '--no-fsync-feedback',
      '--grpc-port',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const lines: Record<string, unknown>[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          lines.push(rec);
          if (typeof rec.port === 'number') resolve(rec.port);
        } catch {
          // not a log line
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited early (${code})`)));
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  for (let i = 0; i < 200; i++) {
    const r = await request(agent, port, 'GET', '/readyz');
    if (r.status === 200) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  // Open 8 connections first, so the requests below travel on accepted sockets.
  await Promise.all(Array.from({ length: 8 }, () => request(agent, port, 'GET', '/healthz')));
  const pending = Array.from({ length: 8 }, (_, i) =>
    request(
      agent,
      port,
      'POST',
      '/v1/recommendations',
      JSON.stringify({ user_id: `drain-user-${i}`, num_items: 100 }),
    ),
  );
  await new Promise((res) => setImmediate(res));
  child.kill('SIGTERM');
  const results = await Promise.all(pending);
  for (const r of results) assert.equal(r.status, 200, r.body);
  assert.equal(await exited, 0);
  agent.destroy();
  assert.ok(lines.some((l) => l.msg === 'stopping: draining in-flight requests'));
  assert.ok(lines.some((l) => l.msg === 'stopped'));
});
