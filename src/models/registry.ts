// The serving model: a loaded bundle plus every piece of runtime state derived from it
// (exact index, HNSW index, ranking worker pool, popularity lists, norms), held behind ONE
// reference. Requests acquire the current ServingModel at their start and use only it, so a
// later swap (hot reload) is one assignment: requests in flight finish on the old model,
// new ones see the new one, and the old one is freed when its last request releases it.
import type { PipelineConfig } from '../config/index.js';
import type { ModelBundle } from './bundle.js';
import type { Metrics } from '../observability/metrics.js';
import { ExactIndex } from '../retrieval/exact.js';
import { HnswIndex } from '../retrieval/hnsw.js';
import { BundleIntegrityError, hnswConfigMetric, type LoadedBundle } from './repository.js';
import { RetrievalBatcher } from '../pipeline/candidates/batcher.js';
import { RankerPool } from '../pipeline/ranking/pool.js';
import { onnxFlopsPerRow } from '../ranker/flops.js';
import { availableParallelism } from 'node:os';
import { shareBundleItems, type SharedItems } from '../pipeline/ranking/shared-bundle.js';
import { rowsByPopularity, slicer, turn } from './loading.js';
import { checkHnswAgainstCatalog } from './hnsw-ids.js';

export interface ServingModel {
  readonly bundle: ModelBundle;
  /** "<name>-v<version>", the model_version clients see. */
  readonly version: string;
  /**
   * What cached answers are keyed by: the version and its manifest's digest. A version
   * number can come back with other content (removed, then written again as latest + 1),
   * and answers cached from the earlier content (here, or in a Redis other replicas share)
   * must not be served for it.
   */
  readonly cacheVersion: string;
  readonly items: SharedItems;
  readonly exact: ExactIndex;
  readonly collaborative: RetrievalBatcher;
  readonly hnsw: HnswIndex;
  readonly ranker: RankerPool;
  /** L2 norm of each item embedding (cosine fallback, similar items). */
  readonly itemNorms: Float32Array;
  /** Item rows by training popularity, most popular first (top 2000). */
  readonly popular: Int32Array;
  /** Per category number: its items by popularity, most popular first (top 200). */
  readonly popularByCategory: Int32Array[];
  /** Per category number: all its item rows ascending (allow-lists for filters). */
  readonly categoryRows: Uint32Array[];
  readonly categoryIndex: Map<string, number>;
  /** Creator id -> its item rows (content similarity). */
  readonly creatorRows: Map<string, number[]>;
  /** Largest training popularity (normalises the cold-start popularity score). */
  readonly maxPopularity: number;
}

export interface BuildOptions {
  pipeline: PipelineConfig;
  metrics?: Metrics;
  /** Index threads for the exact scan. Default: the addon's choice. */
  exactThreads?: number;
  /**
   * The model serving now, when this one will replace it: tables that depend only on the
   * catalog are shared with it when the two share their catalog (loadBundle's `reuse`).
   */
  previous?: ServingModel;
  /** Abandons the build at its next step (a server that stops while a version loads). */
  signal?: AbortSignal;
}

/**
 * The exact index's value errors name a flat position ("vectors[i] is ...") or a row
 * ("vectors row r (elements from i) has ..."); an MLOps engineer needs the item or user.
 * `who(row)` names the row's owner. Other errors pass through.
 */
function nameOwner(e: unknown, dim: number, who: (row: number) => string, note = ''): never {
  const msg = e instanceof RangeError ? e.message : '';
  const row = /^vectors row (\d+) \(elements from \d+\) (.*)$/.exec(msg);
  if (row) throw new RangeError(`${who(Number(row[1]))}: its embedding ${row[2]}`);
  const at = /^vectors\[(\d+)\] (.*)$/.exec(msg);
  if (!at) throw e;
  const pos = Number(at[1]);
  throw new RangeError(
    `${who(Math.floor(pos / dim))}: embedding component ${pos % dim} ${at[2]}${note}`,
  );
}

/**
 * User embeddings are the collaborative queries: one the indexes would refuse (its scores
 * could overflow float32) would fail every request of that user, so the version is refused
 * at load instead, naming the user.
 */
function checkUserEmbeddings(bundle: ModelBundle): void {
  const { dim, userEmbeddings, coldUserEmbedding, userIds } = bundle;
  try {
    ExactIndex.checkVectors(userEmbeddings, dim);
  } catch (e) {
    nameOwner(e, dim, (u) => `user ${JSON.stringify(userIds[u])}`);
  }
  try {
    ExactIndex.checkVectors(coldUserEmbedding, dim);
  } catch (e) {
    nameOwner(e, dim, () => 'the cold-start user');
  }
}

/** "@" and the start of the version's manifest digest, for bundles loaded from a repository. */
function manifestTag(bundle: ModelBundle): string {
  const digest = (bundle as Partial<LoadedBundle>).digests?.manifest;
  return digest ? `@${digest.slice(0, 16)}` : '';
}

export async function buildServingModel(
  bundle: ModelBundle,
  opts: BuildOptions,
): Promise<ServingModel> {
  const { dim, items } = bundle;
  const n = items.ids.length;
  // Checked before anything starts: every request is ranked, and without a model.onnx the
  // ranking pool's sizing failed with "ENOENT: open ''".
  if (!bundle.ranker.path)
    throw new BundleIntegrityError(
      bundle.dir,
      'no ranker (model.onnx): the server ranks every request; build the version without ' +
        '--no-ranker, or add one with `recserve import-ranker`',
    );
  const signal = opts.signal;
  const shared = await shareBundleItems(bundle);
  signal?.throwIfAborted();
  // From here on the bundle points at the shared arrays: a loaded bundle's own (the loader
  // reads them into shared memory), other bundles' copies, so that their private arrays can
  // be collected (at 1M × 64 that is 256 MB that would otherwise be held twice).
  bundle.itemEmbeddings = shared.itemEmbeddings;
  bundle.items.createdAt = shared.createdAt;
  bundle.items.quality = shared.quality;
  bundle.items.popularity = shared.popularity;
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) ids[i] = i;
  const exact = ExactIndex.create({
    dim,
    storage: opts.pipeline.exactStorage,
    screen: opts.pipeline.exactScreen,
    ...(opts.exactThreads === undefined ? {} : { threads: opts.exactThreads }),
  });
  try {
    // On a native thread: at 1M x 64 the build held the event loop ~1 s, while the server
    // listens (not ready) and answers its health checks. The rows are shared memory, which
    // the index reads in place rather than copy (the copy held the event loop 0.4-0.6 s at
    // 1M x 64: throwaway marks around each step).
    await exact.buildAsync(ids, shared.itemEmbeddings);
  } catch (e) {
    nameOwner(
      e,
      dim,
      (r) => `item ${JSON.stringify(items.ids[r])}`,
      ` (pipeline.exactStorage '${opts.pipeline.exactStorage}')`,
    );
  }
  signal?.throwIfAborted();
  checkUserEmbeddings(bundle);
  if (!bundle.hnswPath)
    throw new BundleIntegrityError(
      bundle.dir,
      'no HNSW index (hnsw.index): similar items need one; build the version with an addon ' +
        'that has FAISS, without --no-hnsw',
    );
  const hnsw = await HnswIndex.load(bundle.hnswPath);
  signal?.throwIfAborted();
  // A graph built for another catalog loads as well; its ids must be this one's rows.
  await checkHnswAgainstCatalog(bundle.dir, bundle.hnswPath, hnsw, dim, n);
  // The file says its metric; config.json says what the bundle was built with.
  const fileMetric = hnswConfigMetric(hnsw.metric);
  if (fileMetric !== bundle.hnswMetric)
    throw new BundleIntegrityError(
      bundle.dir,
      `hnsw.index's metric is ${fileMetric}, but config.json hnsw.metric says ${bundle.hnswMetric}`,
    );

  const itemNorms = shared.itemNorms;
  // The tables below run in slices of the event loop (loading.ts slicer): the server listens
  // while it loads, and serves while a new version loads beside the serving one. With each
  // table in one turn of its own, bench:startup's longest gap in this function was 91-302 ms
  // at 1M items, and bench:swap's requests waited those out.
  const due = slicer();
  await turn();
  const byPop = await rowsByPopularity(items.popularity, due);
  const popular = Int32Array.from(byPop.subarray(0, 2000));
  await due();
  const nc = items.categoryNames.length;
  const { catOffsets, catData } = shared;
  // A version that shares the serving one's catalog (loadBundle's `reuse`: the same
  // items.json) shares its tables of rows by category and creator too.
  const prev = opts.previous?.bundle.items.ids === items.ids ? opts.previous : undefined;
  let categoryRows: Uint32Array[];
  if (prev) categoryRows = prev.categoryRows;
  else {
    // Each category's rows, ascending, counted first and written straight into their arrays.
    const perCategory = new Uint32Array(nc);
    for (let i = 0, e = catOffsets[n]!; i < e; i++) perCategory[catData[i]!]!++;
    categoryRows = Array.from({ length: nc }, (_, c) => new Uint32Array(perCategory[c]!));
    perCategory.fill(0);
    for (let r = 0; r < n; r++) {
      if ((r & 0xffff) === 0) await due();
      for (let i = catOffsets[r]!, e = catOffsets[r + 1]!; i < e; i++) {
        const c = catData[i]!;
        categoryRows[c]![perCategory[c]!++] = r;
      }
    }
  }
  await due();
  const popLists: number[][] = Array.from({ length: nc }, () => []);
  for (let k = 0; k < n; k++) {
    if ((k & 0xffff) === 0) await due();
    const r = byPop[k]!;
    for (let i = catOffsets[r]!, e = catOffsets[r + 1]!; i < e; i++) {
      const c = catData[i]!;
      if (popLists[c]!.length < 200) popLists[c]!.push(r);
    }
  }
  await due();
  let creatorRows: Map<string, number[]>;
  if (prev) creatorRows = prev.creatorRows;
  else {
    // By the creators' numbers, not their names: a Map lookup by string per item, with the
    // category lists' conversions, held the event loop ~0.5 s at 1M items (throwaway marks).
    const { creatorOf, creatorNames } = shared;
    const byCreator: number[][] = creatorNames.map(() => []);
    for (let r = 0; r < n; r++) {
      if ((r & 0xffff) === 0) await due();
      if (creatorOf[r]! >= 0) byCreator[creatorOf[r]!]!.push(r);
    }
    creatorRows = new Map<string, number[]>();
    for (let c = 0; c < creatorNames.length; c++)
      if (byCreator[c]!.length > 0) creatorRows.set(creatorNames[c]!, byCreator[c]!);
  }
  await due();
  let maxPopularity = 0;
  for (let r = 0; r < n; r++)
    if (items.popularity[r]! > maxPopularity) maxPopularity = items.popularity[r]!;
  signal?.throwIfAborted();

  const ranker = new RankerPool(shared, bundle.ranker, {
    threads: rankerPoolThreads(opts.pipeline.rankerThreads, bundle.ranker.path),
    intraOpThreads: opts.pipeline.rankerIntraOpThreads,
    nice: opts.pipeline.rankerNice,
    batchAcrossRequests: opts.pipeline.rankerBatching,
    maxBatchRows: rankerMaxBatchRows(
      opts.pipeline.rankerMaxBatchRows,
      opts.pipeline.maxCandidates,
      bundle.ranker.path,
    ),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  const collaborative = new RetrievalBatcher(exact, {
    maxBatch: opts.pipeline.maxBatch,
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  return {
    bundle,
    version: `${bundle.name}-v${bundle.version}`,
    cacheVersion: `${bundle.name}-v${bundle.version}${manifestTag(bundle)}`,
    items: shared,
    exact,
    collaborative,
    hnsw,
    ranker,
    itemNorms,
    popular,
    popularByCategory: popLists.map((l) => Int32Array.from(l)),
    categoryRows,
    categoryIndex: prev?.categoryIndex ?? new Map(items.categoryNames.map((c, i) => [c, i])),
    creatorRows,
    maxPopularity,
  };
}

/**
 * From this many FLOPs per candidate a ranker is "heavy": the seed's 1024-512-256-128 tower
 * costs 1.68M, the trainer's default [64, 32] tower 23k.
 */
export const HEAVY_RANKER_FLOPS = 250_000;

/**
 * Ranking workers for a model: the configured count, or with 0 (auto) 2 from 4 cores up and,
 * below that, 1 for a light ranker and 2 for a heavy one. Measured on the 2-core machine
 * (bench/README.md): with the default tower one worker beat two (a second competes with the
 * event loop and the scan threads, and ranking is a small part of a request); with the
 * seed-size tower ranking dominates and two workers cut the 0.7-floor p99 from 69-83 ms to
 * 42-62 ms in four alternating runs.
 */
export function rankerPoolThreads(configured: number, rankerPath: string): number {
  if (configured > 0) return configured;
  if (availableParallelism() >= 4) return 2;
  return onnxFlopsPerRow(rankerPath) >= HEAVY_RANKER_FLOPS ? 2 : 1;
}

/**
 * Most candidate rows in one cross-request ranking batch: the configured count, or with 0
 * (auto) 2048 for a light ranker and two requests' worth (2 x maxCandidates) for a heavy
 * one. A light ranker's ONNX run is dominated by per-call costs, which batching shares; the
 * seed-size tower runs at the same candidates/s from 64 rows to 1024 (bench:ranker, one
 * thread: 58.9k at 64, 59.5k at 150, 57.1k at 1024), so a large batch buys nothing and
 * makes the requests queued behind it wait for all of it. Open loop at 63 req/s on the
 * 1M-item bundle (`RECSERVE_RANKER_MAX_BATCH_ROWS=R npm run bench:load -- --models ...
 * --only warm_uncached@63 --rate 63 --open-duration 40`, 2 cores, noisy host, two
 * alternating rounds): p99 74.2 / 66.1 ms at 2048 rows, 60.7 / 68.3 at 400, 62.1 / 48.9 at
 * 200 (no cross-request batching); bench/README.md has the runs.
 */
export function rankerMaxBatchRows(
  configured: number,
  maxCandidates: number,
  rankerPath: string,
): number {
  if (configured > 0) return configured;
  return onnxFlopsPerRow(rankerPath) >= HEAVY_RANKER_FLOPS ? 2 * maxCandidates : 2048;
}

/** Frees a model's runtime state (worker threads; native memory goes with the GC). */
export async function releaseServingModel(m: ServingModel): Promise<void> {
  await m.ranker.close();
}

/** Holds the one serving reference and counts the requests using each model. */
export class ModelRegistry {
  private currentModel: ServingModel | undefined;
  private readonly refs = new Map<ServingModel, number>();
  private readonly retired = new Set<ServingModel>();

  current(): ServingModel | undefined {
    return this.currentModel;
  }

  /** The model a request should use from start to end; pair with release(). */
  acquire(): ServingModel | undefined {
    const m = this.currentModel;
    if (m) this.refs.set(m, (this.refs.get(m) ?? 0) + 1);
    return m;
  }

  release(m: ServingModel): void {
    const left = (this.refs.get(m) ?? 1) - 1;
    if (left > 0) {
      this.refs.set(m, left);
      return;
    }
    this.refs.delete(m);
    if (this.retired.delete(m)) void releaseServingModel(m);
  }

  /** Makes `m` the serving model; the previous one is freed once its requests are done. */
  swap(m: ServingModel): ServingModel | undefined {
    const old = this.currentModel;
    this.currentModel = m;
    if (old) {
      if ((this.refs.get(old) ?? 0) === 0) void releaseServingModel(old);
      else this.retired.add(old);
    }
    return old;
  }

  async close(): Promise<void> {
    const all = new Set<ServingModel>(this.retired);
    if (this.currentModel) all.add(this.currentModel);
    this.currentModel = undefined;
    this.retired.clear();
    await Promise.all([...all].map(releaseServingModel));
  }
}
