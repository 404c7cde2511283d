// SIGTERM ends `recserve serve` within --drain-timeout-ms (plus the moment it takes to
// close), whatever gRPC clients keep open: a StreamFeedback whose client never half-closes,
// one already answered INVALID_ARGUMENT that the client keeps open, and a unary call whose
// request never ends. Runs the real bin/recserve.js in a child process, as an orchestrator
// would stop it. Before the fix such connections lived until the keepalive timer (60 s by
// default) dropped them, and the process with them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { frameMessage } from '../../src/transport/grpc/fast.js';
import { serviceDefinition } from '../../src/transport/grpc/proto.js';
import { ensureTestModels } from '../http/harness.js';
import { waitForHealth } from './helpers.js';

const bin = fileURLToPath(new URL('../../../bin/recserve.js', import.meta.url));
const DRAIN_MS = 1000;
/** What stopping takes after the drain bound: the last answers, closing the stores. */
const MARGIN_MS = 4000;

/** Opens a call on `session` and writes `message` (if any) without ending the request. */
function openCall(
  session: http2.ClientHttp2Session,
  method: string,
  message: Buffer | undefined,
): { status: Promise<string | undefined> } {
  const stream = session.request({
    ':method': 'POST',
    ':path': `/recserve.v1.RecommendationService/${method}`,
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  stream.on('error', () => {});
  stream.resume();
  if (message) stream.write(frameMessage(message));
  const status = new Promise<string | undefined>((resolve) => {
    let s: string | undefined;
    stream.on('response', (h) => (s ??= h['grpc-status'] as string | undefined));
    stream.on('trailers', (h) => (s ??= h['grpc-status'] as string | undefined));
    stream.on('close', () => resolve(s));
  });
  return { status };
}

test('SIGTERM exits within the drain timeout though gRPC clients keep streams open', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'recserve-data-'));
  const args = ['serve', '--port', '0', '--grpc-port', '0', '--models', ensureTestModels()];
  args.push('--no-build-missing', '--data-dir', dataDir, '--no-fsync-feedback');
  args.push('--log-level', 'info', '--drain-timeout-ms', String(DRAIN_MS));
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const sessions: http2.ClientHttp2Session[] = [];
  try {
    // The gRPC port is in the 'grpc listening' log line (grpcPort).
    const port = await new Promise<number>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        const port = (JSON.parse(line) as { grpcPort?: number }).grpcPort;
        if (port !== undefined) resolve(port);
      });
      void exited.then((code) => reject(new Error(`recserve exited (${code}) before listening`)));
    });
    const address = `127.0.0.1:${port}`;
    assert.equal(await waitForHealth(address, '', 'SERVING', 60_000), 'SERVING');

    const serialize = serviceDefinition().StreamFeedback!.requestSerialize as (
      v: unknown,
    ) => Buffer;
    const open = (): http2.ClientHttp2Session => {
      const s = http2.connect(`http://${address}`);
      s.on('error', () => {});
      sessions.push(s);
      return s;
    };
    const a = open();
    const streaming = openCall(
      a,
      'StreamFeedback',
      serialize({ user_id: 'u', events: [{ item_id: 'i', event_type: 'view' }] }),
    );
    // A unary request whose end never comes: the fast path waits for it, no handler runs.
    openCall(a, 'GetSimilarItems', Buffer.from('0a0169', 'hex'));
    // Answered at once (a batch without events), kept open by its client all the same.
    const refused = openCall(open(), 'StreamFeedback', serialize({ user_id: 'u' }));
    await new Promise((r) => setTimeout(r, 300));

    const t0 = Date.now();
    child.kill('SIGTERM');
    const timeout = new Promise<'late'>((r) => setTimeout(r, DRAIN_MS + MARGIN_MS, 'late').unref());
    const code = await Promise.race([exited, timeout]);
    const took = Date.now() - t0;
    assert.notEqual(code, 'late', `still running ${took} ms after SIGTERM`);
    assert.equal(code, 0);
    // The open stream was told to retry elsewhere; the refused one kept its answer.
    assert.equal(await streaming.status, '14');
    assert.equal(await refused.status, '3');
  } finally {
    for (const s of sessions) s.destroy();
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
});
