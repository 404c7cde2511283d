// Exact inner-product top-k over item embeddings: the "collaborative candidates" of every
// personalised request. A thin typed adapter over NativeExactIndex; every argument check
// happens in native code (TypeError/RangeError naming the argument), so the JS side adds
// only the shaping of options.
import {
  loadNative,
  settle,
  type ExactScreen,
  type ExactTuning,
  type NativeExactIndex,
  type TopK,
} from './native.js';

export type Storage = 'f32' | 'f16';
export type { ExactScreen, ExactTuning, TopK } from './native.js';
export { EXACT_SCREENS } from './native.js';

/** Id used to pad rows with fewer than k results (score -Infinity). */
export const NO_ID = 0xffffffff;

/** The kernel sets ExactIndexOptions.kernel names ('auto': the best this CPU runs). */
export const EXACT_KERNELS = [
  'auto',
  'scalar',
  'avx2',
  'avx512',
  'avx512-bf16',
  'avx512-scan',
] as const;
export type ExactKernel = (typeof EXACT_KERNELS)[number];

export interface ExactIndexOptions {
  dim: number;
  /** 'f16' halves the bytes read per scan (F16C conversion); scores within ~1e-3 relative. Default 'f32'. */
  storage?: Storage;
  /** Threads one search may use (0 or unset: all cores). */
  threads?: number;
  /**
   * Kernel set: default 'auto' picks the best this CPU runs ('avx512-bf16' with AVX512_BF16:
   * batches screened with bfloat16 products, survivors rescored in float32, so results are
   * the float32 kernels'; else 'avx512', or on CPUs that split 512-bit FMAs (AMD Zen 4)
   * 'avx512-scan': the AVX2 batch tiles with the AVX-512 single-query scans; else 'avx2', else
   * 'scalar'); the others force one (tests, benchmarks) and throw RangeError when absent.
   */
  kernel?: ExactKernel;
  /**
   * 'auto' (default) uses the CUDA backend when the addon has it and a device answers,
   * else the CPU engine; 'cpu' always the CPU engine. See `backend` for the one in use.
   */
  device?: 'auto' | 'cpu' | 'cuda';
  /**
   * 'auto' (default): 'int8' where the kernel set has the int8 screen (every set but
   * 'scalar': vpdpbusd where the CPU has AVX512_VNNI, vpmaddubsw in the AVX2 set), else
   * 'none'. 'int8' keeps an int8 code row beside every stored row (dim rounded up to 8,
   * plus 8 bytes: +56% over float16 rows at d = 64, +28% over float32) and scores batches
   * of 3 or more queries (2 with float32 rows, and with float16 rows of 12 MiB and more in
   * the AVX2 set; tuning: screenMinBatch, screenStepBytes) in 8-bit integer products,
   * rescoring in float32 every pair whose proven error bound could reach the query's
   * top-k: results are those of the float32 kernels, in 0.3-0.7 of the time on a Zen 4 at
   * 12 or more queries, 0.35-0.69 with the AVX2 set (bench/README.md). Smaller batches scan
   * the stored rows as without it. Throws RangeError on the scalar set.
   */
  screen?: ExactScreen;
}

export interface SearchOptions {
  /** Per query: ids to skip (already seen, blocked), applied inside the scan. */
  exclude?: (Uint32Array | null)[];
  /** Shared allowed subset (e.g. a category), applied inside the scan. */
  allow?: Uint32Array | null;
}

export class ExactIndex {
  private constructor(private readonly native: NativeExactIndex) {}

  static create(opts: ExactIndexOptions): ExactIndex {
    if (opts === null || typeof opts !== 'object') throw new TypeError('opts must be an object');
    const native = new (loadNative().NativeExactIndex)(
      opts.dim,
      opts.storage ?? 'f32',
      opts.threads ?? 0,
      opts.kernel ?? 'auto',
      opts.device ?? 'auto',
      opts.screen ?? 'auto',
    );
    return new ExactIndex(native);
  }

  /**
   * Checks rows of `dim` floats as build and upsert would, without an index: a RangeError
   * names the first NaN or infinite element ("vectors[i] ..."), the first row whose squared
   * norm could overflow a float32 score ("vectors row r ..."), or for 'f16' the first value
   * beyond ±65504.
   */
  static checkVectors(vectors: Float32Array, dim: number, storage: Storage = 'f32'): void {
    loadNative().checkVectors(vectors, dim, storage);
  }

  get dim(): number {
    return this.native.dim;
  }
  get size(): number {
    return this.native.size;
  }
  get storage(): Storage {
    return this.native.storage;
  }
  /** Kernel set in use: 'avx512-bf16', 'avx512', 'avx512-scan', 'avx2' or 'scalar'. */
  get kernel(): string {
    return this.native.kernel;
  }
  /** 'int8' where batches are screened with int8 codes of the rows (ExactIndexOptions.screen). */
  get screen(): 'int8' | 'none' {
    return this.native.screen;
  }
  /** Queries this index searched twice: their guessed floor overshot (ExactTuning.guessRank). */
  get guessRetries(): number {
    return this.native.guessRetries;
  }
  /**
   * Times the int8 screen rescored a query's candidates in the middle of a scan because its
   * error bound could not narrow them (a query of zeros, rows it codes badly): a count to
   * watch, each costing a float32 rescoring of ~8k candidates.
   */
  get screenPrunes(): number {
    return this.native.screenPrunes;
  }
  /**
   * Searches that went through the int8 screen: batches of at least `screenMinBatch` queries,
   * fewer where the scan reads more rows (`screenStepBytes`). A query searched again after
   * its guessed floor overshot (`guessRetries`) counts once more.
   */
  get screenedBatches(): number {
    return this.native.screenedBatches;
  }
  /**
   * Upserts that fitted the int8 screen again: they brought more rows past the range its
   * codes cover than the screen leaves out (`screenOutliers`), and every stored row was coded
   * again (rather than clamped, which would have widened every pair's error bound until the
   * next build).
   */
  get screenRefits(): number {
    return this.native.screenRefits;
  }
  /**
   * Rows the int8 screen leaves out because an element of theirs lies past its range:
   * screened batches score them exactly instead, so a few far-out item vectors do not
   * coarsen the codes of all the others. `build` leaves out up to 1 row in 2,048 (at least
   * 16) where that narrows the range 1.5x or more; upserts add rows past the range up to
   * twice that, then the screen is fitted again (`screenRefits`).
   */
  get screenOutliers(): number {
    return this.native.screenOutliers;
  }
  /**
   * Rows the index holds before an upsert of new ids must grow its buffers. `build` leaves
   * room for a quarter more rows (address space until rows land there).
   */
  get capacity(): number {
    return this.native.capacity;
  }
  /**
   * Upserts that grew the buffers. `moved`: the rows' pages moved into larger ones (Linux,
   * buffers of 1 MiB and up), a page-table change under the write lock, a few ms at 1M
   * rows. `copied`: the rows were copied (smaller buffers, or where the kernel refused the
   * move), before the write lock, which holds the calling thread (~1 s at 1M x 64
   * float32; upsertAsync does it on a native thread).
   */
  get growths(): { moved: number; copied: number } {
    return this.native.growths;
  }

  /** Engine that serves searches: 'cpu', or 'cuda' when a device was found. */
  get backend(): 'cpu' | 'cuda' {
    return this.native.backend;
  }
  get threads(): number {
    return this.native.threads;
  }

  /**
   * Replace contents: ids.length rows of vectors (row-major). Ids are uint32 (item rows)
   * other than NO_ID (0xFFFFFFFF, which pads short results: RangeError here and in upsert).
   */
  build(ids: Uint32Array, vectors: Float32Array): void {
    this.native.build(ids, vectors);
  }

  /**
   * Insert or overwrite rows; visible to every search that starts afterwards. Writes take
   * the index's write lock on the calling thread: they wait for searches already scanning
   * (at most one scan's duration) and new searches wait for them, never the other way
   * round for long (writers are preferred, so a stream of searches cannot starve them).
   */
  upsert(ids: Uint32Array, vectors: Float32Array): void {
    this.native.upsert(ids, vectors);
  }

  /**
   * Remove rows by id; an unknown id throws RangeError and nothing is removed. `build`,
   * `upsert` and `remove` throw an Error while an async write of this index is pending
   * (called and not settled): they would run before it.
   */
  remove(ids: Uint32Array): void {
    this.native.remove(ids);
  }

  /**
   * `build`, `upsert` and `remove` on a native thread: the event loop goes on meanwhile
   * (a build of 1M rows holds the calling thread ~1 s, as does an upsert that outgrows
   * buffers it must copy, see `growths`, or that fits the int8 screen again, 0.3 s at
   * 1.26M rows, see `screenRefits`). The arguments are copied, so the caller may reuse
   * its arrays at once; the call itself holds the calling thread only for the copy (and
   * the type and length checks): the vectors' values are checked on the native thread, in
   * the copy (at 1M x 64, buildAsync returned after 218-273 ms, the copy's page faults,
   * where checking them too took 276-317 ms). Vectors in a SharedArrayBuffer are the
   * exception: they are read in place on the native thread until the promise settles, so
   * the caller must not write them before then (the server's shared item embeddings: no
   * 256 MB copy on the event loop at 1M x 64). Bad arguments, a bad value or an unknown id
   * on remove included, reject with TypeError/RangeError and change nothing. Resolves once
   * every search that starts afterwards sees the change;
   * an index's async writes enter libuv's thread pool one at a time, in call order (so
   * a burst of them holds one pool thread, not all four, and searches keep the rest).
   */
  buildAsync(ids: Uint32Array, vectors: Float32Array): Promise<void> {
    return settle(() => this.native.buildAsync(ids, vectors));
  }
  upsertAsync(ids: Uint32Array, vectors: Float32Array): Promise<void> {
    return settle(() => this.native.upsertAsync(ids, vectors));
  }
  removeAsync(ids: Uint32Array): Promise<void> {
    return settle(() => this.native.removeAsync(ids));
  }

  /**
   * B = queries.length / dim queries in one pass over item memory. Resolves to B×k ids and
   * scores, best first; rows with fewer than k candidates are padded with NO_ID / -Infinity.
   * k is an integer in [1, 2^20] and B×k at most 2^24 (a RangeError otherwise: the results
   * alone would take 128 MiB). Runs on a native thread; the caller may reuse `queries` as
   * soon as this returns.
   */
  search(queries: Float32Array, k: number, opts?: SearchOptions): Promise<TopK> {
    try {
      return this.native.search(queries, k, opts?.exclude ?? null, opts?.allow ?? null);
    } catch (err) {
      // Bad arguments are found before any work is queued; report them the same way as
      // failures during the search, through the promise.
      return Promise.reject(err);
    }
  }

  /** The same search on the calling thread (benchmarks). Blocks the event loop. */
  searchSync(queries: Float32Array, k: number, opts?: SearchOptions): TopK {
    return this.native.searchSync(queries, k, opts?.exclude ?? null, opts?.allow ?? null);
  }

  /**
   * Scan tuning knobs (benchmarks and tests); the defaults suit this machine. All or
   * nothing: every field is checked before any applies. Searches already running keep the
   * settings they started with.
   */
  setTuning(t: ExactTuning): void {
    this.native.setTuning(t);
  }

  /** The settings searches start with now (the defaults depend on kernel set and storage). */
  get tuning(): Required<ExactTuning> {
    return this.native.tuning;
  }
}
