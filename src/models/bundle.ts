// A model bundle: everything that must change together, in one consistent item id space
// (catalog, item and user embeddings, the HNSW index, the ranker). A bundle is the unit
// the model repository versions and that a hot-swap replaces. The server holds the
// serving bundle behind ONE reference (models/registry), never copies of its parts.
//
// Item ids are strings on the wire; inside a bundle every item is its row number
// (0..numItems-1) in `items.ids`, and that row number is the id the native indexes store.

export interface ItemCatalog {
  /** External item id of each row. */
  ids: string[];
  /** External id -> row. */
  index: Map<string, number>;
  titles: string[];
  /** Category names; per-item categories reference them by number. */
  categoryNames: string[];
  /**
   * Per item, the numbers of its categories in categoryNames. Loaded bundles hold these in
   * `categoryTable` and make this array only when something reads it (see withCategoryTable);
   * server code reads the table (categoryTableOf), so a 1M-item server never holds it.
   */
  categories: Uint16Array[];
  /** The same lists, flat (loaded bundles have it; categoryTableOf builds it otherwise). */
  categoryTable?: CategoryTable;
  creatorIds: string[];
  /** The same creators as numbers (see creatorTableOf); loaded for serving, built otherwise. */
  creatorTable?: CreatorTable;
  /** ms since epoch. */
  createdAt: Float64Array;
  /** 0..1 editorial/content quality. */
  quality: Float32Array;
  /** Interaction count in the training data (popularity prior). */
  popularity: Float32Array;
}

/**
 * Per-item category lists as two flat arrays: item r's categories are
 * data[offsets[r] .. offsets[r + 1]). A million items are two objects here, where
 * Uint16Array[] is a million (about 200 MB of heap at 1M items, all of it marked by every
 * major garbage collection).
 */
export interface CategoryTable {
  /** numItems + 1 entries. */
  offsets: Uint32Array;
  data: Uint16Array;
}

/** Builds the flat table from per-item lists; with `shared`, in SharedArrayBuffers. */
export function buildCategoryTable(
  lists: readonly ArrayLike<number>[],
  shared = false,
): CategoryTable {
  const n = lists.length;
  let total = 0;
  for (let r = 0; r < n; r++) total += lists[r]!.length;
  const offsets = shared
    ? new Uint32Array(new SharedArrayBuffer(4 * (n + 1)))
    : new Uint32Array(n + 1);
  const data = shared
    ? new Uint16Array(new SharedArrayBuffer(2 * Math.max(1, total)), 0, total)
    : new Uint16Array(total);
  let at = 0;
  for (let r = 0; r < n; r++) {
    offsets[r] = at;
    const l = lists[r]!;
    for (let i = 0; i < l.length; i++) data[at++] = l[i]!;
  }
  offsets[n] = at;
  return { offsets, data };
}

const derivedTables = new WeakMap<object, CategoryTable>();

/**
 * The catalog's flat category table: its own when it has one, else built once from
 * `categories` and remembered for that catalog (catalogs made by builders and tests).
 */
export function categoryTableOf(
  items: Pick<ItemCatalog, 'categories' | 'categoryTable'>,
): CategoryTable {
  if (items.categoryTable) return items.categoryTable;
  let t = derivedTables.get(items);
  if (!t) derivedTables.set(items, (t = buildCategoryTable(items.categories)));
  return t;
}

/**
 * Gives `target` the table as `categoryTable`, and a `categories` property that makes the
 * per-item arrays (views into the table) on first read only: training and evaluation code
 * that indexes `categories[r]` keeps working, and a server that never reads it never pays
 * for a million small objects. Assigning `categories` replaces the lazy value.
 */
export function withCategoryTable<T extends object>(
  target: T,
  table: CategoryTable,
): T & { categories: Uint16Array[]; categoryTable: CategoryTable } {
  let lists: Uint16Array[] | undefined;
  Object.defineProperty(target, 'categoryTable', {
    value: table,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  Object.defineProperty(target, 'categories', {
    enumerable: true,
    configurable: true,
    get(): Uint16Array[] {
      if (!lists) {
        const n = table.offsets.length - 1;
        lists = new Array<Uint16Array>(n);
        for (let r = 0; r < n; r++)
          lists[r] = table.data.subarray(table.offsets[r]!, table.offsets[r + 1]!);
      }
      return lists;
    },
    set(v: Uint16Array[]) {
      // Keep the two forms in agreement.
      lists = v;
      (target as { categoryTable?: CategoryTable }).categoryTable = buildCategoryTable(v);
    },
  });
  return target as T & { categories: Uint16Array[]; categoryTable: CategoryTable };
}

/**
 * Per-item creator as a number into `names` (-1: none), so threads that share the catalog
 * share one Int32Array instead of each holding a million strings.
 */
export interface CreatorTable {
  of: Int32Array;
  /** Distinct creator ids; names[of[r]] is item r's creator. */
  names: string[];
}

/** Builds a creator table from per-item ids ('' = none); with `shared`, in shared memory. */
export function buildCreatorTable(ids: readonly string[], shared = false): CreatorTable {
  const n = ids.length;
  const of = shared
    ? new Int32Array(new SharedArrayBuffer(4 * Math.max(1, n)), 0, n)
    : new Int32Array(n);
  const names: string[] = [];
  const numbers = new Map<string, number>();
  for (let r = 0; r < n; r++) {
    const id = ids[r];
    if (id === undefined || id === '') {
      of[r] = -1;
      continue;
    }
    let c = numbers.get(id);
    if (c === undefined) {
      numbers.set(id, (c = names.length));
      names.push(id);
    }
    of[r] = c;
  }
  return { of, names };
}

const derivedCreators = new WeakMap<object, CreatorTable>();

/** The catalog's creator table: its own, else built once from creatorIds and remembered. */
export function creatorTableOf(
  items: Pick<ItemCatalog, 'creatorIds' | 'creatorTable'>,
): CreatorTable {
  if (items.creatorTable) return items.creatorTable;
  let t = derivedCreators.get(items);
  if (!t) derivedCreators.set(items, (t = buildCreatorTable(items.creatorIds)));
  return t;
}

/**
 * Gives `target` the creator table as `creatorTable`, and a `creatorIds` property made from
 * it on first read only (see withCategoryTable).
 */
export function withCreatorTable<T extends object>(
  target: T,
  table: CreatorTable,
): T & { creatorIds: string[]; creatorTable: CreatorTable } {
  let ids: string[] | undefined;
  Object.defineProperty(target, 'creatorTable', {
    value: table,
    enumerable: true,
    writable: true,
    configurable: true,
  });
  Object.defineProperty(target, 'creatorIds', {
    enumerable: true,
    configurable: true,
    get(): string[] {
      ids ??= Array.from(table.of, (c) => (c < 0 ? '' : table.names[c]!));
      return ids;
    },
    set(v: string[]) {
      ids = v;
      (target as { creatorTable?: CreatorTable }).creatorTable = buildCreatorTable(v);
    },
  });
  return target as T & { creatorIds: string[]; creatorTable: CreatorTable };
}

export interface RankerInputSpec {
  /** ONNX input name. */
  name: string;
  /** Feature names (from features/catalog.ts) that fill this input's last dimension, in order. */
  features: string[];
}

export interface RankerConfig {
  /** Path of model.onnx, absolute. */
  path: string;
  inputs: RankerInputSpec[];
  /** ONNX output name holding one score (logit or probability) per candidate. */
  output: string;
  outputKind: 'logit' | 'probability';
}

export interface ModelBundle {
  name: string;
  version: number;
  /** Absolute path of models/<name>/<version>/. */
  dir: string;
  dim: number;
  items: ItemCatalog;
  /** numItems × dim, row-major, row r = item r. */
  itemEmbeddings: Float32Array;
  /** Users seen in training. */
  userIds: string[];
  userIndex: Map<string, number>;
  /** numUsers × dim. */
  userEmbeddings: Float32Array;
  /** Embedding for a user with no history (mean of trained users). */
  coldUserEmbedding: Float32Array;
  /** Absolute path of the saved FAISS HNSW index over itemEmbeddings (ids = rows). */
  hnswPath: string;
  /**
   * What the index's scores are (config.json hnsw.metric): 'cosine' in bundles built since
   * the metric existed, 'inner_product' in older ones. The file says the same (registry.ts
   * checks that it does).
   */
  hnswMetric: 'inner_product' | 'cosine';
  ranker: RankerConfig;
  /** Training/eval metrics recorded in the version's config. */
  metrics: Record<string, number>;
}
