// A version's HNSW graph against its catalog. The graph's ids are item rows (bundle.ts), so
// a graph built for another catalog (more items, fewer, another dimension) loads without
// complaint and then answers with rows past the catalog (`"item_id": null`) or never
// returns most items. The builder indexes every row once (ids 0..numItems-1), so a
// version's graph holds exactly numItems ids, each a row; anything else is refused here,
// at load, naming the file.
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import type { HnswIndex } from '../retrieval/hnsw.js';
import { BundleIntegrityError } from './repository.js';

/**
 * Refuses `hnsw` (loaded from `path`) unless its dimension is `dim` and its ids are exactly
 * the rows 0..numItems-1. The loader already refused repeated ids and ids past uint32, so
 * with `size === numItems` every id below numItems means the ids are the rows. The ids are
 * read from the file rather than searched for: HnswIndex.save writes FAISS's IndexIDMap
 * (inside an IndexPreTransform for cosine), whose id map is the file's last part (a
 * 64-bit count, then one int64 per graph row, -1 for a removed one). A bare IndexHNSWFlat
 * (fourcc "IHNf") has no map: its ids are its rows. One read and one pass over the ids.
 */
export async function checkHnswAgainstCatalog(
  dir: string,
  path: string,
  hnsw: Pick<HnswIndex, 'dim' | 'size' | 'removedRows'>,
  dim: number,
  numItems: number,
): Promise<void> {
  const file = basename(path);
  const refuse = (why: string): never => {
    throw new BundleIntegrityError(dir, `${file} ${why}; rebuild the version's graph`);
  };
  if (hnsw.dim !== dim) refuse(`has dimension ${hnsw.dim}, but the bundle's dim is ${dim}`);
  if (hnsw.size !== numItems)
    refuse(`holds ${hnsw.size} items, but the catalog (items.json) has ${numItems}`);
  const rows = hnsw.size + hnsw.removedRows;
  const fh = await open(path, 'r');
  let head: Buffer;
  let tail: Buffer;
  try {
    const bytes = (await fh.stat()).size;
    head = Buffer.alloc(4);
    await fh.read(head, 0, 4, 0);
    const tailBytes = 8 + 8 * rows;
    tail = Buffer.alloc(Math.min(tailBytes, bytes));
    await fh.read(tail, 0, tail.length, bytes - tail.length);
    if (tail.length < tailBytes) tail = Buffer.alloc(0);
  } finally {
    await fh.close();
  }
  if (head.toString('latin1') === 'IHNf') {
    if (hnsw.removedRows === 0) return;
    refuse('is a bare HNSW graph with removed rows');
  }
  if (
    tail.length === 0 ||
    tail.readUInt32LE(0) !== rows % 2 ** 32 ||
    tail.readUInt32LE(4) !== Math.floor(rows / 2 ** 32)
  )
    refuse(`does not end with an id map of ${rows} ids (not a graph HnswIndex.save wrote)`);
  const words = new Int32Array(tail.buffer, tail.byteOffset + 8, 2 * rows);
  for (let r = 0; r < rows; r++) {
    const lo = words[2 * r]! >>> 0;
    const hi = words[2 * r + 1]!;
    if (hi === -1 && lo === 0xffffffff) continue; // a removed row
    if (hi !== 0 || lo >= numItems)
      refuse(
        `holds id ${hi === 0 ? lo : 'out of range'} at graph row ${r}, but the catalog's rows ` +
          `are 0..${numItems - 1}`,
      );
  }
}
