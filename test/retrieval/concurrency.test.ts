// Searches racing upserts, removes and rebuilds, under ThreadSanitizer:
// test/retrieval/native/exact-concurrency.cc built with the exact index's own sources and
// -fsanitize=thread, then run. It fails on any race report and on any result that a torn
// row, a lost row or a broken filter would produce (the program's header says what it
// checks). The JS tests cannot race the index's threads this way, and nothing else watches
// the locks, the shared floors and the pool for races.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../../src/retrieval/native.js';

// [source, its flags (CMakeLists.txt)]: every source the index is built from, instrumented.
const SOURCES: [string, string[]][] = [
  ['native/exact/kernels_scalar.cc', []],
  ['native/exact/kernels_avx2.cc', ['-mavx2', '-mfma', '-mf16c']],
  [
    'native/exact/kernels_avx512.cc',
    ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512vl', '-mavx512bw', '-mavx512dq'],
  ],
  ['native/exact/exact_index.cc', []],
  ['native/common/thread_pool.cc', []],
  ['native/cuda/exact_cuda_stub.cc', []],
  ['test/retrieval/native/exact-concurrency.cc', []],
];

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('searches racing writes: no data race, every result whole and exact', async () => {
  const root = projectRoot();
  const dir = mkdtempSync(join(tmpdir(), 'recserve-tsan-'));
  try {
    const objects = await Promise.all(
      SOURCES.map(async ([src, flags], i) => {
        const obj = join(dir, `${i}.o`);
        const r = await run(
          'g++',
          [
            '-O1',
            '-g',
            '-std=c++17',
            '-Inative',
            '-fsanitize=thread',
            ...flags,
            '-c',
            src,
            '-o',
            obj,
          ],
          { cwd: root },
        );
        assert.equal(r.code, 0, `g++ ${src}:\n${r.stderr}`);
        return obj;
      }),
    );
    const exe = join(dir, 'exact-concurrency');
    const link = await run('g++', ['-fsanitize=thread', ...objects, '-o', exe, '-pthread']);
    assert.equal(link.code, 0, link.stderr);

    const env = { ...process.env, TSAN_OPTIONS: 'exitcode=66 second_deadlock_stack=1' };
    let r = await run(exe, ['1.5'], { env });
    // Kernels with more ASLR entropy than this TSan expects refuse to start it; without
    // randomisation it runs.
    if (/unexpected memory mapping/.test(r.stderr))
      r = await run('setarch', [arch() === 'x64' ? 'x86_64' : arch(), '-R', exe, '1.5'], { env });
    // The first report (the message shows it, not the whole of stderr).
    assert.ok(!/ThreadSanitizer/.test(r.stderr), r.stderr.slice(0, 6000));
    assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(0, 4000)}`);
    // One line per kernel set and storage; scalar, avx2 and the CPU's best are always built.
    const lines = r.stdout.trim().split('\n');
    assert.ok(lines.length >= 4, r.stdout);
    for (const line of lines) {
      const m = /^(\S+) (f32|f16) writes (\d+) searches (\d+) results (\d+) problems (\d+)/.exec(
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
