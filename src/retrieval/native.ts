// Loads the compiled addon once. Every other module reaches native code through the typed
// wrappers in this folder, never through `require` of the .node file.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

export interface EngineInfo {
  avx2: boolean;
  fma: boolean;
  f16c: boolean;
  /**
   * Kernel set the exact index uses by default: 'avx512-bf16', 'avx512', 'avx512-scan', 'avx2'
   * or 'scalar'.
   */
  exactKernel: string;
  /** False for the node-gyp build (exact index only). */
  faiss: boolean;
  cuda: { compiled: boolean; devices: number; status: string };
  hardwareThreads: number;
}

/** What every top-k search resolves to: B×k ids and scores, best first. */
export interface TopK {
  ids: Uint32Array;
  scores: Float32Array;
  k: number;
}

/** ExactIndexOptions.screen: 'auto' is 'int8' where the kernel set has the screen, else 'none'. */
export const EXACT_SCREENS = ['auto', 'int8', 'none'] as const;
export type ExactScreen = (typeof EXACT_SCREENS)[number];

/** Scan tuning knobs of the exact index (see native/exact/exact_index.h). */
export interface ExactTuning {
  /** Rows one thread scans at least before a search is split (default 16384). */
  minRowsPerTask?: number;
  /**
   * Each claim of a scan's thread takes the blocks left over claimDivisor x threads, at
   * least one: long runs first, single blocks at the end (default 2; 0 = one block at a time).
   */
  claimDivisor?: number;
  /** Item bytes per cache block reused by every query of a batch, for the batch kernels (default 32768). */
  blockBytes?: number;
  /** The same for the direct scans of the batches the batch kernels leave (B = 1 among them; default 65536). */
  scanBlockBytes?: number;
  /** Batches at least this large pack each block of rows into transposed panels first (default 12; 0 = never). */
  packMinBatch?: number;
  /**
   * Where the index keeps int8 codes, batches at least this large take the batch kernels too
   * (default 3, 2 with f32 storage; 0 = only packMinBatch).
   */
  screenMinBatch?: number;
  /**
   * From this many bytes of stored rows scanned (all rows, or an allow list's), batches one
   * query smaller than screenMinBatch take the screen, and one smaller again at each
   * doubling, down to 2 (default 12 MiB for f16 in the AVX2 set, 0 = none elsewhere:
   * screenMinBatch alone).
   */
  screenStepBytes?: number;
  /** Batches at least this large use OpenBLAS sgemm (0 = never; CMake build only). */
  sgemmMinBatch?: number;
  /** Item rows per sgemm call (default 4096). */
  sgemmRows?: number;
  /**
   * Batch-kernel scans start each query at its guessRank-th best score over a sample of
   * guessRank * N / (3k) rows, and search again the rare query whose k-th best falls short
   * of it (default 14; 0 = never). Only where the sample is at most 1/16 of N.
   */
  guessRank?: number;
  /** Scans of fewer rows take no guess (default 16384). */
  guessMinRows?: number;
}

export interface NativeExactIndex {
  readonly dim: number;
  readonly size: number;
  readonly storage: 'f32' | 'f16';
  readonly threads: number;
  readonly kernel: string;
  readonly backend: 'cpu' | 'cuda';
  /** 'int8' where the index keeps int8 codes of its rows and screens batches with them. */
  readonly screen: 'int8' | 'none';
  /** Queries searched again because a guessed floor overshot (ExactTuning.guessRank). */
  readonly guessRetries: number;
  /** Times the int8 screen rescored a query's candidates mid-scan: its bound could not narrow them. */
  readonly screenPrunes: number;
  /** Searches through the int8 screen (ExactIndex.screenedBatches). */
  readonly screenedBatches: number;
  readonly screenRefits: number;
  /** Rows the int8 screen leaves to exact scores (ExactIndex.screenOutliers). */
  readonly screenOutliers: number;
  readonly capacity: number;
  readonly growths: { moved: number; copied: number };
  build(ids: Uint32Array, vectors: Float32Array): void;
  upsert(ids: Uint32Array, vectors: Float32Array): void;
  buildAsync(ids: Uint32Array, vectors: Float32Array): Promise<void>;
  upsertAsync(ids: Uint32Array, vectors: Float32Array): Promise<void>;
  removeAsync(ids: Uint32Array): Promise<void>;
  remove(ids: Uint32Array): void;
  search(
    queries: Float32Array,
    k: number,
    exclude?: (Uint32Array | null)[] | null,
    allow?: Uint32Array | null,
  ): Promise<TopK>;
  searchSync(
    queries: Float32Array,
    k: number,
    exclude?: (Uint32Array | null)[] | null,
    allow?: Uint32Array | null,
  ): TopK;
  setTuning(t: ExactTuning): void;
  /** The settings searches start with now: every field of ExactTuning. */
  readonly tuning: Required<ExactTuning>;
}

/** HnswIndex.checkGraph(): reachability over the whole layer-0 graph. */
export interface HnswGraphReport {
  /** Rows in the graph, removed ones included. */
  rows: number;
  /** Rows no walk can reach from the entry point (0 after every change). */
  fromEntryMissing: number;
  /** Rows with no path back to the entry point (0 after every change). */
  toEntryMissing: number;
  /**
   * Rows where the paths to and from the entry kept for small adds do not follow the graph
   * (0 after every change).
   */
  treeFaults: number;
  /** Reconnections over the whole graph (builds, loads, compactions, larger adds). */
  reconnectsFull: number;
  /** Reconnections from what a small add changed. */
  reconnectsIncremental: number;
}

export interface NativeHnswIndex {
  readonly dim: number;
  readonly size: number;
  readonly removedRows: number;
  readonly metric: 'ip' | 'cosine';
  add(ids: Uint32Array, vectors: Float32Array): Promise<void>;
  remove(ids: Uint32Array): Promise<void>;
  compact(threads?: number): Promise<number>;
  checkGraph(): Promise<HnswGraphReport>;
  search(
    queries: Float32Array,
    k: number,
    efSearch: number,
    threads: number,
    useFaiss?: boolean,
    exclude?: (Uint32Array | null)[] | null,
    allow?: Uint32Array | null,
    filterMode?: number,
  ): Promise<TopK>;
  searchSync(
    queries: Float32Array,
    k: number,
    efSearch: number,
    threads: number,
    useFaiss?: boolean,
    exclude?: (Uint32Array | null)[] | null,
    allow?: Uint32Array | null,
    filterMode?: number,
  ): TopK;
  save(path: string): Promise<void>;
  load(path: string): Promise<void>;
  ids(): Promise<Uint32Array>;
}

export interface NativeFaissFlat {
  readonly size: number;
  add(vectors: Float32Array): void;
  searchSync(queries: Float32Array, k: number, threads?: number): TopK;
}

/** The raw surface the addon exports; each engine adds its own entries. */
export interface NativeAddon {
  engineInfo(): EngineInfo;
  exactKernel: string;
  /** Whether this build has the sgemm path of the exact index. */
  exactHasSgemm: boolean;
  /** Throws what the exact index's build would for these rows (see ExactIndex.checkVectors). */
  checkVectors(vectors: Float32Array, dim: number, storage: string): void;
  NativeExactIndex: new (
    dim: number,
    storage: string,
    threads: number,
    kernel: string,
    device: string,
    screen?: ExactScreen,
  ) => NativeExactIndex;
  /** Absent in the node-gyp build, which has no FAISS. */
  NativeHnswIndex?: new (
    dim: number,
    M: number,
    efConstruction: number,
    metric?: 'ip' | 'cosine',
  ) => NativeHnswIndex;
  NativeFaissFlat?: new (dim: number) => NativeFaissFlat;
  /**
   * Benchmark probe: best-of-reps streaming read of a buffer, in GB/s (1e9 bytes/s). The
   * buffer is on 2 MiB pages like the exact index's rows unless hugePages is false.
   */
  benchStreamRead(mebibytes: number, threads: number, reps: number, hugePages?: boolean): number;
  /** Benchmark probe: GFLOP/s of a size^3 OpenBLAS sgemm (absent without BLAS). */
  benchSgemm?(size: number, reps: number): number;
}

/** Repository root, found from this file whether it runs from src/ (tsx) or dist/src/. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'CMakeLists.txt')))
      return dir;
    dir = resolve(dir, '..');
  }
  throw new Error('recserve: cannot find the project root from ' + import.meta.url);
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const path =
    process.env.RECSERVE_ADDON ?? join(projectRoot(), 'build', 'Release', 'recserve_native.node');
  if (!existsSync(path)) {
    throw new Error(
      `recserve: native addon not found at ${path}; run \`npm run build:native\` (or \`npm run setup\`)`,
    );
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}

/**
 * Runs `fn`, which queues native work behind a promise: an error it throws before queueing
 * (a bad argument) reaches the caller through the promise too, as failures during the work
 * do.
 */
export function settle<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}
