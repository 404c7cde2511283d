// Runs a script in a fresh node process, for tests whose failure mode is a crash: a signal
// or an abort there fails the test instead of killing the test runner.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** Runs `source` as an ES module (node --input-type=module -e) with extra node `args`. */
export function runModule(source: string, args: string[] = []): ChildResult {
  const r = spawnSync(process.execPath, [...args, '--input-type=module', '-e', source], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, signal: r.signal, out: r.stdout + r.stderr };
}

/** The child exited 0, on no signal; returns its last line of output. */
export function assertClean(r: ChildResult): string {
  assert.equal(r.signal, null, `killed by ${r.signal}:\n${r.out}`);
  assert.equal(r.status, 0, r.out);
  return r.out.trim().split('\n').pop() ?? '';
}
