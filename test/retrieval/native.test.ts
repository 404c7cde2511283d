import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadNative } from '../../src/retrieval/native.js';
import { ExactIndex } from '../../src/retrieval/exact.js';

test('the built addon loads and reports the CPU features it found', () => {
  const info = loadNative().engineInfo();
  for (const key of ['avx2', 'fma', 'f16c'] as const) {
    assert.equal(typeof info[key], 'boolean', `${key} is a boolean`);
  }
});

test('the default exact kernel set is the one this CPU should get', (t) => {
  // Read the CPU from the kernel's own report, independently of the addon's cpuid code.
  let cpuinfo: string;
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    t.skip('no /proc/cpuinfo');
    return;
  }
  const first = cpuinfo.split('\n\n')[0]!;
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1] ?? '';
  const flags = new Set(field('flags').split(/\s+/));
  const has = (...f: string[]) => f.every((x) => flags.has(x));
  let want = 'scalar';
  if (has('avx2', 'fma', 'f16c')) {
    want = 'avx2';
    if (has('avx512f', 'avx512vl', 'avx512bw', 'avx512dq')) {
      // AVX512_BF16 screens rows with bfloat16 products and rescores the survivors in
      // float32, on every CPU that has it (Zen 4 included). Without it, AMD family 19h (Zen 4),
      // which executes 512-bit FMAs as two halves, gets the AVX2 batch tiles.
      const zen4 = field('vendor_id') === 'AuthenticAMD' && Number(field('cpu family')) === 0x19;
      want = has('avx512_bf16') ? 'avx512-bf16' : zen4 ? 'avx512-scan' : 'avx512';
    }
  }
  assert.equal(loadNative().exactKernel, want);
  assert.equal(loadNative().engineInfo().exactKernel, want);
  // The int8 screen is on by default in every set but the scalar one: vpdpbusd in the
  // AVX-512 sets where the CPU has AVX512_VNNI, else the AVX2 set's vpmaddubsw tiles (the
  // AVX-512 sets start from the AVX2 table). Until a host without AVX-512 ran this, the test
  // said 'none' there.
  const screen = want === 'scalar' ? 'none' : 'int8';
  assert.equal(ExactIndex.create({ dim: 8 }).screen, screen);
});
