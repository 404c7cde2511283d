// binding.gyp builds the exact index alone with node-gyp (no CMake, no FAISS). This test
// builds it into build-gyp/ (skipped when up to date) and runs a search through the
// TypeScript wrapper in a child process pointed at that addon via RECSERVE_ADDON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../../src/retrieval/native.js';

test('the node-gyp build (exact index only) compiles, loads and searches', () => {
  const root = projectRoot();
  execFileSync(process.execPath, [join(root, 'scripts', 'build-gyp.mjs')], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const script = `
    const { ExactIndex } = await import(${JSON.stringify(join(root, 'dist/src/retrieval/exact.js'))});
    const { HnswIndex } = await import(${JSON.stringify(join(root, 'dist/src/retrieval/hnsw.js'))});
    const { loadNative } = await import(${JSON.stringify(join(root, 'dist/src/retrieval/native.js'))});
    const index = ExactIndex.create({ dim: 3, storage: 'f16' });
    index.build(Uint32Array.of(10, 20, 30), Float32Array.of(1, 0, 0, 0, 1, 0, 0, 0, 1));
    const r = await index.search(Float32Array.of(0.1, 0.7, 0.3), 2);
    let hnsw = 'available';
    try { await HnswIndex.build(new Uint32Array(0), new Float32Array(0), 3); }
    catch (e) { hnsw = e.message; }
    console.log(JSON.stringify({ ids: [...r.ids], faiss: loadNative().engineInfo().faiss, hnsw }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: {
      ...process.env,
      RECSERVE_ADDON: join(root, 'build-gyp/build/Release/recserve_native.node'),
    },
    encoding: 'utf8',
  });
  const got = JSON.parse(out.trim().split('\n').pop()!);
  assert.deepEqual(got.ids, [20, 30]);
  assert.equal(got.faiss, false);
  assert.match(got.hnsw, /no FAISS/);
});
