// Approximate inner-product or cosine search: FAISS IndexHNSWFlat behind a typed adapter,
// used for "items similar to what you just watched". Files written by save() are standard
// FAISS indexes (an IndexIDMap over IndexHNSWFlat; for cosine, inside an IndexPreTransform
// that scales to unit length), so Python's faiss.read_index reads them.
import {
  loadNative,
  settle,
  type HnswGraphReport,
  type NativeHnswIndex,
  type TopK,
} from './native.js';

/**
 * What a score is. 'ip': the inner product. 'cosine': the inner product of the vectors
 * scaled to unit length (the index stores them scaled, a zero vector as zero, and scales
 * each query), so a score is a cosine in [-1, 1]. Use 'cosine' for "similar items" over
 * trained embeddings, whose norms grow with popularity: by inner product the neighbours of
 * any item are mostly the popular ones (bench:similar).
 */
export type HnswMetric = 'ip' | 'cosine';
export const HNSW_METRICS = ['ip', 'cosine'] as const;

export interface HnswBuildOptions {
  /** Graph degree (FAISS M). Default 32. */
  M?: number;
  /** Candidate list size while building. Default 80. */
  efConstruction?: number;
  /** Default 'ip'. A saved index keeps its metric (load() reads it from the file). */
  metric?: HnswMetric;
}

export interface HnswSearchOptions {
  /** Candidate list size for this call (raised to k when smaller). Default 64. */
  efSearch?: number;
  /**
   * OpenMP threads for this call; default 1 for a single query (a parallel region only
   * adds wake-up latency there) and min(B, cores) for a batch.
   */
  threads?: number;
  /**
   * 'faiss' runs IndexHNSW::search instead of our traversal of the same graph. Benchmark
   * comparisons only: FAISS 1.7.3 ignores the per-call efSearch there (it uses the value
   * stored in the index, 16), and `threads` becomes its OpenMP thread count.
   */
  impl?: 'recserve' | 'faiss';
  /**
   * Per query: ids never to return (already seen, blocked). The walk still goes through
   * them, so the graph stays connected around them; the result holds k admissible items
   * where the index has them (NO_ID pads the rest).
   */
  exclude?: (Uint32Array | null)[];
  /** Shared allowed subset (e.g. a category): only these ids are returned. */
  allow?: Uint32Array | null;
  /**
   * How a filtered query finds its results. 'auto' (default) walks the graph unless the
   * admissible items are few enough that scoring each of them is cheaper than crossing the
   * others ('scan': exact results over the admissible items); 'graph' and 'scan' force one
   * path. Ignored when nothing is filtered (no exclude or allow, and no id removed).
   */
  filterMode?: HnswFilterMode;
}

export const HNSW_FILTER_MODES = ['auto', 'graph', 'scan'] as const;
export type HnswFilterMode = (typeof HNSW_FILTER_MODES)[number];

function filterModeCode(mode: HnswFilterMode | undefined): number {
  if (mode === undefined) return 0;
  const code = HNSW_FILTER_MODES.indexOf(mode);
  if (code < 0) throw new RangeError(`filterMode must be one of ${HNSW_FILTER_MODES.join(', ')}`);
  return code;
}

export const HNSW_DEFAULTS = { M: 32, efConstruction: 80, efSearch: 64 } as const;

function nativeClass(): NonNullable<ReturnType<typeof loadNative>['NativeHnswIndex']> {
  const ctor = loadNative().NativeHnswIndex;
  if (!ctor) throw new Error('recserve: this addon build has no FAISS (HNSW unavailable)');
  return ctor;
}

export class HnswIndex {
  private constructor(private readonly native: NativeHnswIndex) {}

  static async build(
    ids: Uint32Array,
    vectors: Float32Array,
    dim: number,
    opts?: HnswBuildOptions,
  ): Promise<HnswIndex> {
    const Ctor = nativeClass();
    const native = new Ctor(
      dim,
      opts?.M ?? HNSW_DEFAULTS.M,
      opts?.efConstruction ?? HNSW_DEFAULTS.efConstruction,
      opts?.metric ?? 'ip',
    );
    await settle(() => native.add(ids, vectors));
    return new HnswIndex(native);
  }

  static async load(path: string): Promise<HnswIndex> {
    const Ctor = nativeClass();
    // A placeholder that load() replaces whole (dimension, graph and ids from the file).
    const native = new Ctor(1, HNSW_DEFAULTS.M, HNSW_DEFAULTS.efConstruction);
    await settle(() => native.load(path));
    return new HnswIndex(native);
  }

  get dim(): number {
    return this.native.dim;
  }
  /** Ids held: added and not removed. */
  get size(): number {
    return this.native.size;
  }
  /** Rows removed but still in the graph as waypoints; `compact()` drops them. */
  get removedRows(): number {
    return this.native.removedRows;
  }
  /** The metric it was built with, or the loaded file's. */
  get metric(): HnswMetric {
    return this.native.metric;
  }

  /**
   * Writes the index to `path` (FAISS's format; `load` reads it back) as it stands after
   * every add, remove and load called before this call: saves queue with them, in call
   * order.
   */
  save(path: string): Promise<void> {
    return settle(() => this.native.save(path));
  }

  /**
   * The ids held (added and not removed), ascending, one each: a removed id's row, still
   * in the graph as a waypoint, is left out, and an id removed and added again appears
   * once. Reflects every add, remove and load called before this call (it queues with
   * them, as `save` does); searches go on meanwhile. The order is the ids', not the
   * graph's rows, which `compact` renumbers. A copy on a native thread: 4 bytes an id.
   */
  ids(): Promise<Uint32Array> {
    return settle(() => this.native.ids());
  }

  /**
   * Adds new ids (an id already held is a RangeError, as is NO_ID, 0xFFFFFFFF, which pads
   * short results; to replace a vector, remove its id first). Runs on a native thread with
   * every core. Searches go on meanwhile: the rows go in a chunk at a time, each sized to
   * hold searches back ~10 ms (they may see some of the new ids before the promise
   * resolves; every search issued after it sees all of them). `add`, `remove`, `load`,
   * `save`, `checkGraph` and `ids` run in call order, one at a time in libuv's thread pool,
   * so a burst of writes holds one pool thread and searches keep the rest.
   */
  add(ids: Uint32Array, vectors: Float32Array): Promise<void> {
    return settle(() => this.native.add(ids, vectors));
  }

  /**
   * Removes held ids (an unknown id is a RangeError, and then nothing is removed). The
   * next search never returns them. FAISS's graph cannot drop a node, so each stays in the
   * graph as a waypoint walks pass through (the graph stays connected); `size` counts the
   * ids held, and `save` writes a removed row with id -1, which FAISS's own search reports
   * as no result.
   */
  remove(ids: Uint32Array): Promise<void> {
    return settle(() => this.native.remove(ids));
  }

  /**
   * Rebuilds the graph over the ids held, dropping the removed rows (`removedRows`), which
   * cost memory and walk time: an id replaced again and again (remove, then add) leaves a
   * row each time. Resolves to the number of rows dropped (0 at once when none is
   * removed). Builds beside the graph searched and swaps the new one in: searches go on
   * meanwhile, and adds and removes made meanwhile are carried over. Holds two copies of
   * the rows until the swap. `threads`: the build's threads, every core by default; fewer
   * leave cores to the searches meanwhile, for a longer build (an integer in [0, 1024], 0
   * meaning every core; a RangeError naming `threads` otherwise).
   */
  compact(options?: { threads?: number }): Promise<number> {
    return settle(() => this.native.compact(options?.threads));
  }

  /**
   * Walks the whole graph (on a native thread; searches go on, changes wait) and counts
   * the rows a walk cannot reach from the entry point, those with no path back to it, and
   * those where the paths kept for small adds do not follow the graph: all 0 after every
   * add, load and compaction, which reconnect the graph. Also says how many reconnections
   * ran over the whole graph and how many only over what a small add changed. A
   * diagnostic: ~0.3 s of one core at 1M rows.
   */
  checkGraph(): Promise<HnswGraphReport> {
    return settle(() => this.native.checkGraph());
  }

  /**
   * Top-k by inner product, best first, on a native thread. Filters (`exclude`, `allow`)
   * are applied inside the search, not by over-fetching.
   */
  search(queries: Float32Array, k: number, opts?: HnswSearchOptions): Promise<TopK> {
    return settle(() => this.native.search(queries, k, ...this.args(opts)));
  }

  /** The same search on the calling thread (benchmarks). Blocks the event loop. */
  searchSync(queries: Float32Array, k: number, opts?: HnswSearchOptions): TopK {
    return this.native.searchSync(queries, k, ...this.args(opts));
  }

  private args(
    opts: HnswSearchOptions | undefined,
  ): [number, number, boolean, (Uint32Array | null)[] | null, Uint32Array | null, number] {
    return [
      opts?.efSearch ?? HNSW_DEFAULTS.efSearch,
      opts?.threads ?? 0,
      opts?.impl === 'faiss',
      opts?.exclude ?? null,
      opts?.allow ?? null,
      filterModeCode(opts?.filterMode),
    ];
  }
}
