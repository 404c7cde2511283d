// The CLI's usage errors: a mistyped flag or command gets one line and exit status 2, not a
// stack trace. Runs the real bin/recserve.js in a child process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const bin = fileURLToPath(new URL('../../../bin/recserve.js', import.meta.url));

function recserve(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stderr: r.stderr };
}

test('an unknown flag names the command and the flag, exits 2, prints no stack', () => {
  const r = recserve('eval', '--no-such-flag');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^recserve eval: .*'--no-such-flag'/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('an unknown command exits 2 with the list of commands', () => {
  const r = recserve('no-such-command');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command 'no-such-command'/);
  assert.match(r.stderr, /^\s+build-demo\s/m);
});
