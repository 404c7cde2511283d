// The parts of a bundle that ranking workers read, laid out in SharedArrayBuffers so every
// worker sees the SAME memory as the main thread (a 1M × 64 bundle is 256 MB of embeddings:
// one copy, not one per thread). Per-item category lists are flattened to offsets + data,
// because structured-cloning a million small typed arrays into each worker would cost
// seconds and hundreds of megabytes.
import {
  categoryTableOf,
  creatorTableOf,
  withCategoryTable,
  withCreatorTable,
  type ModelBundle,
} from '../../models/bundle.js';
import type { FeatureItems } from '../../features/catalog.js';
import { turn } from '../../models/loading.js';

export interface SharedItems {
  dim: number;
  itemEmbeddings: Float32Array;
  /** L2 norm of each item embedding (cosine similarity, re-rank diversity). */
  itemNorms: Float32Array;
  categoryNames: string[];
  /** categories of item r are catData[catOffsets[r] .. catOffsets[r + 1]). */
  catOffsets: Uint32Array;
  catData: Uint16Array;
  /** Item r's creator is creatorNames[creatorOf[r]] (-1: none). */
  creatorOf: Int32Array;
  creatorNames: string[];
  createdAt: Float64Array;
  quality: Float32Array;
  popularity: Float32Array;
}

function shared<T extends Float32Array | Float64Array | Uint32Array | Uint16Array | Int32Array>(
  src: T,
  make: (buf: SharedArrayBuffer, length: number) => T,
): T {
  if (src.buffer instanceof SharedArrayBuffer) return src;
  const out = make(new SharedArrayBuffer(src.byteLength), src.length);
  out.set(src as never);
  return out;
}

/**
 * The bundle's item arrays in shared memory (used as they are where the loader read them
 * there), and each item's norm. The norms are computed 100k items a turn of the event loop:
 * at 1M x 64 in one piece they held it 0.2-0.3 s while the server loaded (throwaway
 * marks around each step).
 */
export async function shareBundleItems(bundle: ModelBundle): Promise<SharedItems> {
  const { items } = bundle;
  const n = items.ids.length;
  // Loaded bundles already hold their category table in shared memory; others are copied.
  const table = categoryTableOf(items);
  const catOffsets = shared(table.offsets, (b, l) => new Uint32Array(b, 0, l));
  const catData = shared(table.data, (b, l) => new Uint16Array(b, 0, l));
  const creators = creatorTableOf(items);
  const itemEmbeddings = shared(bundle.itemEmbeddings, (b, l) => new Float32Array(b, 0, l));
  const dim = bundle.dim;
  const itemNorms = new Float32Array(new SharedArrayBuffer(4 * Math.max(1, n)), 0, n);
  for (let from = 0; from < n; from += 100_000) {
    if (from > 0) await turn();
    for (let r = from, to = Math.min(n, from + 100_000); r < to; r++) {
      let s2 = 0;
      for (let j = r * dim, e = j + dim; j < e; j++) s2 += itemEmbeddings[j]! * itemEmbeddings[j]!;
      itemNorms[r] = Math.sqrt(s2);
    }
  }
  return {
    dim: bundle.dim,
    itemEmbeddings,
    itemNorms,
    categoryNames: items.categoryNames,
    catOffsets,
    catData,
    creatorOf: shared(creators.of, (b, l) => new Int32Array(b, 0, l)),
    creatorNames: creators.names,
    createdAt: shared(items.createdAt, (b, l) => new Float64Array(b, 0, l)),
    quality: shared(items.quality, (b, l) => new Float32Array(b, 0, l)),
    popularity: shared(items.popularity, (b, l) => new Float32Array(b, 0, l)),
  };
}

/** Item r's first (primary) category number, -1 when it has none. */
export function primaryCategoryOf(
  s: Pick<SharedItems, 'catOffsets' | 'catData'>,
  r: number,
): number {
  const at = s.catOffsets[r]!;
  return at < s.catOffsets[r + 1]! ? s.catData[at]! : -1;
}

/** Item r's category names. */
export function categoryNamesOf(
  s: Pick<SharedItems, 'catOffsets' | 'catData' | 'categoryNames'>,
  r: number,
): string[] {
  const out: string[] = [];
  for (let i = s.catOffsets[r]!, e = s.catOffsets[r + 1]!; i < e; i++)
    out.push(s.categoryNames[s.catData[i]!]!);
  return out;
}

/**
 * Rebuilds the FeatureItems view inside a worker: the shared category table as is, the
 * per-item arrays only if something reads them (features read the table).
 */
export function featureItemsOf(s: SharedItems): FeatureItems {
  return withCreatorTable(
    withCategoryTable(
      {
        categoryNames: s.categoryNames,
        createdAt: s.createdAt,
        quality: s.quality,
        popularity: s.popularity,
      },
      { offsets: s.catOffsets, data: s.catData },
    ),
    { of: s.creatorOf, names: s.creatorNames },
  );
}
