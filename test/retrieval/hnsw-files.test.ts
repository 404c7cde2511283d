// Graph files that are not what save() wrote. read_index takes a file's structure as it
// finds it, so before the load checked it (HnswIndex::Load, CheckFileGraph) a neighbour id,
// level, offset or entry point out of range crashed the process in ~40% of files with 1 to
// 4 random bytes changed. Run in a child process, so that a crash fails the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { assertClean, runModule } from './child.js';

const HNSW = fileURLToPath(new URL('../../src/retrieval/hnsw.js', import.meta.url));
const FILES = 120;

test('a graph file with bytes changed loads whole or is refused, never crashes', () => {
  const r = runModule(`
    import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
    import { join } from 'node:path';
    import { tmpdir } from 'node:os';
    const { HnswIndex } = await import(${JSON.stringify(HNSW)});
    const dir = mkdtempSync(join(tmpdir(), 'recserve-hnsw-files-'));
    let s = 7;
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648), s / 2147483648);
    const D = 8, N = 300;
    const ids = Uint32Array.from({ length: N }, (_, i) => i);
    const rows = Float32Array.from({ length: N * D }, () => rnd() - 0.5);
    const saved = join(dir, 'base.idx');
    await (await HnswIndex.build(ids, rows, D, { M: 8 })).save(saved);
    const base = readFileSync(saved);
    let loaded = 0, refused = 0;
    for (let f = 0; f < ${FILES}; f++) {
      const b = Buffer.from(base);
      const flips = 1 + Math.floor(rnd() * 4);
      for (let i = 0; i < flips; i++) {
        const at = Math.floor(rnd() * b.length);
        b[at] = rnd() < 0.5 ? b[at] ^ (1 << Math.floor(rnd() * 8)) : Math.floor(rnd() * 256);
      }
      const p = join(dir, 'changed.idx');
      writeFileSync(p, b);
      try {
        const ix = await HnswIndex.load(p);
        await ix.search(new Float32Array(ix.dim).fill(0.1), 5, { efSearch: 64 });
        await ix.add(Uint32Array.of(1e6), new Float32Array(ix.dim).fill(0.2));
        await ix.checkGraph();
        loaded++;
      } catch (e) {
        // Ours name the file (RangeError); FAISS's own say FAISS (a file it cannot parse).
        if (!(e instanceof RangeError) && !/FAISS/.test(e.message)) throw e;
        if (!e.message.includes(p)) throw e;
        refused++;
      }
    }
    rmSync(dir, { recursive: true, force: true });
    console.log(loaded, refused);`);
  const [loaded, refused] = assertClean(r).split(' ').map(Number);
  assert.equal(loaded + refused, FILES);
  // Most changed bytes land in the graph's lists and tables, which the load must refuse.
  assert.ok(refused > FILES / 3, `${refused} of ${FILES} refused`);
});
