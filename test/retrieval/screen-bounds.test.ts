// The int8 screen's error bound, pair by pair: test/retrieval/native/i8-screen-bounds.cc
// built from the addon's own kernel sources (each with the flags CMakeLists.txt gives it)
// and run. The exact-index tests check the screened results end to end; this checks the
// promise they rest on, for every kernel set this CPU runs with a screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExactIndex } from '../../src/retrieval/exact.js';
import { KERNEL_SOURCES, buildProgram, run } from './native-program.js';

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
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'recserve-screen-bounds-'));
    try {
      const exe = await buildProgram(
        dir,
        'i8-screen-bounds',
        [...KERNEL_SOURCES, ['test/retrieval/native/i8-screen-bounds.cc', []]],
        ['-O2'],
      );
      const r = await run(exe, []);
      assert.equal(r.code, 0, `i8-screen-bounds failed:\n${r.stdout}\n${r.stderr}`);
      const out = r.stdout;
      // One line per set the index offers the screen with: pairs checked, none outside.
      for (const kernel of screenedSets) {
        const m = new RegExp(`^${kernel} pairs (\\d+) violations (\\d+)$`, 'm').exec(out);
        assert.ok(m, `${kernel}: no line in\n${out}`);
        assert.ok(Number(m[1]) > 100_000, `${kernel}: only ${m[1]} pairs`);
        assert.equal(Number(m[2]), 0, out);
        // The scores carry each row's slack: the pairs are checked against their own rows'
        // bands too (on rows of very different sizes), and none may fall outside.
        const b = new RegExp(`^${kernel} row bands (\\d+)$`, 'm').exec(out);
        assert.ok(b, `${kernel}: no row-band line in\n${out}`);
        assert.ok(
          Number(b[1]) > 100_000,
          `${kernel}: only ${b[1]} pairs against their rows' bands`,
        );
      }
      if (screenedSets.includes('avx2') && screenedSets.includes('avx512'))
        assert.match(out, /^coding mismatches 0$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
