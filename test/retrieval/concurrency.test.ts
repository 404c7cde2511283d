// Searches racing upserts, removes, rebuilds and tuning changes, under sanitizers:
// test/retrieval/native/exact-concurrency.cc built with the exact index's own sources and
// -fsanitize=..., then run. It fails on any sanitizer report and on any result that a torn
// row, a lost row or a broken filter would produce (the program's header says what it
// checks). The JS tests cannot race the index's threads this way, and nothing else watches
// the locks, the shared floors and the pool for races.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join } from 'node:path';
import { INDEX_SOURCES, buildProgram, run } from './native-program.js';

// The same storm under two builds: ThreadSanitizer (races), and AddressSanitizer with
// UndefinedBehaviorSanitizer (out-of-bounds and freed memory, leaks, undefined arithmetic),
// which cannot share one build.
const SANITIZERS = [
  {
    name: 'ThreadSanitizer',
    flags: ['-fsanitize=thread'],
    report: /ThreadSanitizer/,
    env: { TSAN_OPTIONS: 'exitcode=66 second_deadlock_stack=1' },
  },
  {
    name: 'AddressSanitizer and UndefinedBehaviorSanitizer',
    flags: ['-fsanitize=address,undefined', '-fno-omit-frame-pointer'],
    report: /AddressSanitizer|LeakSanitizer|runtime error/,
    env: { UBSAN_OPTIONS: 'halt_on_error=1 print_stacktrace=1' },
  },
];

for (const san of SANITIZERS) {
  test(`searches racing writes under ${san.name}: no report, every result whole and exact`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'recserve-sanitized-'));
    try {
      // Every source instrumented, the kernels included.
      const exe = await buildProgram(
        dir,
        'exact-concurrency',
        [...INDEX_SOURCES, ['test/retrieval/native/exact-concurrency.cc', []]],
        // -g1: file and line in reports, at a third of -g's compile time here.
        ['-O1', '-g1', ...san.flags],
        [...san.flags, '-pthread'],
      );

      const env = { ...process.env, ...san.env };
      let r = await run(exe, ['1.5'], { env });
      // Kernels with more ASLR entropy than a sanitizer expects refuse to start it; without
      // randomisation it runs.
      if (/unexpected memory mapping/.test(r.stderr))
        r = await run('setarch', [arch() === 'x64' ? 'x86_64' : arch(), '-R', exe, '1.5'], {
          env,
        });
      // The first report (the message shows it, not the whole of stderr).
      assert.ok(!san.report.test(r.stderr), r.stderr.slice(0, 6000));
      assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(0, 4000)}`);
      // One line per kernel set and storage; scalar, avx2 and the CPU's best are always built.
      const lines = r.stdout.trim().split('\n');
      assert.ok(lines.length >= 4, r.stdout);
      for (const line of lines) {
        const m =
          /^(\S+) (f32|f16) writes (\d+) prunes \d+ searches (\d+) results (\d+) problems (\d+)/.exec(
            line,
          );
        assert.ok(m, `unexpected line: ${line}`);
        assert.ok(Number(m[3]) > 10, `${line}: too few writes to race`);
        assert.ok(Number(m[4]) > 10, `${line}: too few searches`);
        assert.equal(Number(m[6]), 0, line);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
