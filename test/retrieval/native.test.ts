import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/retrieval/native.js';

test('the built addon loads and reports the CPU features it found', () => {
  const info = loadNative().engineInfo();
  for (const key of ['avx2', 'fma', 'f16c'] as const) {
    assert.equal(typeof info[key], 'boolean', `${key} is a boolean`);
  }
});
