// The standalone programs under bench/native/ that bench/README.md and the native code's
// comments quote: they must still compile against the headers and libraries they use, and
// f16-scan's shapes must still score what the index's scans score.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../../src/retrieval/native.js';

const AVX512 = ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512vl', '-mavx512bw'];

function cpuHas(...flags: string[]): boolean {
  try {
    const line = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    const set = new Set(line.split(/\s+/));
    return flags.every((f) => set.has(f));
  } catch {
    return false;
  }
}

test('bench/native programs compile; f16-scan agrees with the index scan', (t) => {
  const root = projectRoot();
  const dir = mkdtempSync(join(tmpdir(), 'recserve-bench-native-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const gxx = (src: string, out: string, flags: string[], libs: string[] = []) =>
    execFileSync(
      'g++',
      ['-O2', '-pthread', ...flags, join(root, src), '-o', join(dir, out), ...libs],
      { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
    );
  // The flags the files' first lines give.
  gxx('bench/native/f16-scan.cc', 'f16-scan', [...AVX512, '-mavx512dq', '-Inative']);
  // FAISS is a static library: it is linked after the source.
  gxx('bench/native/mips-graphs.cc', 'mips-graphs', ['-fopenmp'], ['-lfaiss', '-lopenblas']);
  gxx('bench/native/issue-rate.cc', 'issue-rate', [
    '-mfma',
    '-mavx512f',
    '-mavx512vl',
    '-mavx512bf16',
    '-mavx512vnni',
  ]);
  gxx('bench/native/avx2-step-mix.cc', 'avx2-step-mix', ['-mavx2']);
  if (cpuHas('avx2')) {
    // A short run: every mix timed (a figure each), and the ratio the README quotes.
    const out = execFileSync(join(dir, 'avx2-step-mix'), ['100000'], { encoding: 'utf8' });
    assert.equal([...out.matchAll(/ ([0-9.]+) cycles a loop$/gm)].length, 6, out);
    assert.match(out, /^int16 pairs \/ tile step: [0-9.]+$/m);
  }
  if (!cpuHas('avx2', 'fma', 'f16c', 'avx512f', 'avx512vl', 'avx512bw', 'avx512dq')) {
    t.skip('compiled; running f16-scan needs AVX-512 F/VL/BW/DQ');
    return;
  }
  // 104 rows (13 groups of 8), d = 64 and 96 (96: no unrolled scan, every row in
  // Scan4F16), one pass: every shape against Scan4F16, the first line of each round.
  for (const d of ['64', '96']) {
    const out = execFileSync(join(dir, 'f16-scan'), ['104', d, '1', '1'], { encoding: 'utf8' });
    const diffs = [...out.matchAll(/largest difference from the first ([0-9.e+-]+)\)/g)].map((m) =>
      Number(m[1]),
    );
    assert.equal(diffs.length, 12, out); // 6 shapes, two rounds
    for (const x of diffs) assert.ok(x < 1e-4, `d=${d}: ${out}`);
    assert.match(out, /vcvtph2ps \+ FMA alone .* zmm [0-9.]+, ymm [0-9.]+/);
  }
});
