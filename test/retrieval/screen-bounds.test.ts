// The int8 screen's error bound, pair by pair: test/retrieval/native/i8-screen-bounds.cc
// built from the addon's own kernel sources (each with the flags CMakeLists.txt gives it)
// and run. The exact-index tests check the screened results end to end; this checks the
// promise they rest on, for every kernel set this CPU runs with a screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../../src/retrieval/native.js';
import { ExactIndex } from '../../src/retrieval/exact.js';

const SOURCES: [string, string[]][] = [
  ['native/exact/kernels_scalar.cc', []],
  ['native/exact/kernels_avx2.cc', ['-mavx2', '-mfma', '-mf16c']],
  [
    'native/exact/kernels_avx512.cc',
    ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512vl', '-mavx512bw', '-mavx512dq'],
  ],
  ['test/retrieval/native/i8-screen-bounds.cc', []],
];

const screenedSets = (['avx2', 'avx512', 'avx512-bf16'] as const).filter((kernel) => {
  try {
    return ExactIndex.create({ dim: 1, kernel, screen: 'int8' }).screen === 'int8';
  } catch {
    return false;
  }
});

test(
  "every pair's float32 score lies within the int8 screen's band, in every set",
  { skip: screenedSets.length === 0 ? 'no kernel set with the int8 screen on this CPU' : false },
  () => {
    const root = projectRoot();
    const dir = mkdtempSync(join(tmpdir(), 'recserve-screen-bounds-'));
    try {
      const objects = SOURCES.map(([src, flags], i) => {
        const obj = join(dir, `${i}.o`);
        execFileSync('g++', ['-O2', '-std=c++17', '-Inative', ...flags, '-c', src, '-o', obj], {
          cwd: root,
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        return obj;
      });
      const exe = join(dir, 'i8-screen-bounds');
      execFileSync('g++', [...objects, '-o', exe], { stdio: ['ignore', 'ignore', 'pipe'] });
      let out: string;
      try {
        out = execFileSync(exe, { encoding: 'utf8' });
      } catch (e) {
        assert.fail(`i8-screen-bounds failed:\n${(e as { stdout?: string }).stdout ?? e}`);
      }
      // One line per set the index offers the screen with: pairs checked, none outside.
      for (const kernel of screenedSets) {
        const m = new RegExp(`^${kernel} pairs (\\d+) violations (\\d+)$`, 'm').exec(out);
        assert.ok(m, `${kernel}: no line in\n${out}`);
        assert.ok(Number(m[1]) > 100_000, `${kernel}: only ${m[1]} pairs`);
        assert.equal(Number(m[2]), 0, out);
      }
      if (screenedSets.includes('avx2') && screenedSets.includes('avx512'))
        assert.match(out, /^coding mismatches 0$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
