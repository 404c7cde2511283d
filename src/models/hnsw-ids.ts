// A version's HNSW graph against its catalog. The graph's ids are item rows (bundle.ts), so
// a graph built for another catalog (more items, fewer, another dimension) loads without
// complaint and then answers with rows past the catalog (`"item_id": null`) or never
// returns most items. The builder indexes every row once (ids 0..numItems-1), so a
// version's graph holds exactly numItems ids, each a row; anything else is refused here,
// at load, naming the file.
import { basename } from 'node:path';
import type { HnswIndex } from '../retrieval/hnsw.js';
import { BundleIntegrityError } from './repository.js';

/**
 * Refuses `hnsw` (loaded from `path`) unless its dimension is `dim` and its ids are exactly
 * the rows 0..numItems-1. The index holds each id once (the loader refused repeated ids and
 * ids past uint32), so with numItems of them every id below numItems means the ids are the
 * rows. The ids come from the index itself (`ids()`, ascending, removed rows left out),
 * not from the file's bytes: whatever FAISS's layout, the check sees what searches return.
 */
export async function checkHnswAgainstCatalog(
  dir: string,
  path: string,
  hnsw: Pick<HnswIndex, 'dim' | 'ids'>,
  dim: number,
  numItems: number,
): Promise<void> {
  const file = basename(path);
  const refuse = (why: string): never => {
    throw new BundleIntegrityError(dir, `${file} ${why}; rebuild the version's graph`);
  };
  if (hnsw.dim !== dim) refuse(`has dimension ${hnsw.dim}, but the bundle's dim is ${dim}`);
  const ids = await hnsw.ids();
  if (ids.length !== numItems)
    refuse(`holds ${ids.length} items, but the catalog (items.json) has ${numItems}`);
  // Ascending: the ids past the catalog, if any, are the last ones.
  const past = ids.findIndex((id) => id >= numItems);
  if (past >= 0) {
    const more = ids.length - past - 1;
    refuse(
      `holds id ${ids[past]}${more > 0 ? ` and ${more} more past the catalog` : ''}, but ` +
        `the catalog's rows are 0..${numItems - 1}`,
    );
  }
}
