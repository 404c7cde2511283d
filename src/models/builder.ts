// The bundle build: data → temporal split → event weights → ALS → cold-start content
// embeddings → ranker → HNSW → one new immutable version in the model repository. The
// split's held-out part only measures the bundle (metrics in config.json); every model in
// the bundle is trained on the training part, so the ranker sees embeddings that were
// fitted without the events it is validated on.
import { join } from 'node:path';
import { loadFiles } from '../data/loaders.js';
import { setPopularity } from '../data/log.js';
import { loadMovieLens } from '../data/movielens.js';
import { temporalSplit, type SplitOptions } from '../data/split.js';
import { generateSynthetic, type SyntheticOptions } from '../data/synthetic.js';
import type { InteractionLog } from '../data/types.js';
import { evaluateEmbeddings, heldOutSets } from '../eval/evaluate.js';
import { buildInteractions, trainAlsParallel, type AlsOptions } from '../training/als.js';
import {
  applyColdItems,
  fitContentModel,
  meanUserEmbedding,
  type ContentModel,
} from '../training/coldstart.js';
import { computeWeights, type WeightOptions } from '../training/weights.js';
import type { ItemCatalog } from './bundle.js';
import {
  DEFAULT_BUNDLE_NAME,
  hnswConfigMetric,
  writeVersion,
  type RankerArtifact,
} from './repository.js';
import type { HnswMetric } from '../retrieval/hnsw.js';

export type DataSource =
  | { kind: 'synthetic'; options?: SyntheticOptions }
  | { kind: 'movielens'; dir: string }
  | { kind: 'files'; interactions: string; items?: string };

export interface LoadedData {
  log: InteractionLog;
  items: ItemCatalog;
  /** Loader counters (duplicates, unknown ids ...), recorded in config.json. */
  stats: Record<string, number>;
  /** Sensible training defaults for this kind of data. */
  defaults: { weights: WeightOptions; als?: AlsOptions };
}

export async function loadSource(src: DataSource): Promise<LoadedData> {
  if (src.kind === 'synthetic') {
    const s = generateSynthetic(src.options);
    return {
      log: s.log,
      items: s.items,
      stats: { events: s.log.length },
      defaults: { weights: {} },
    };
  }
  if (src.kind === 'movielens') {
    const m = await loadMovieLens(src.dir);
    // Ratings span two decades: decaying them relative to the newest rating would mostly
    // measure when a user joined, not what they like. Ratings keep their own weight.
    return {
      log: m.log,
      items: m.items,
      stats: { ...prefix('ratings_', m.stats), ...prefix('movies_', m.itemStats) },
      // ALS values `recserve eval` selects on this data set's validation split.
      defaults: { weights: { decayPerDay: 0 }, als: { regularization: 10, alpha: 1 } },
    };
  }
  const f = await loadFiles(src.interactions, src.items);
  return {
    log: f.log,
    items: f.items,
    stats: {
      ...prefix('interactions_', f.stats),
      ...(f.itemStats ? prefix('items_', f.itemStats) : {}),
    },
    defaults: { weights: {} },
  };
}

function prefix(p: string, o: object): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [p + k, Number(v)]));
}

export interface BuildOptions {
  source: DataSource;
  repoDir: string;
  name?: string;
  version?: number;
  split?: SplitOptions;
  weights?: WeightOptions;
  als?: AlsOptions;
  /** Items with fewer training interactions get content-based embeddings (default 5). */
  coldMinInteractions?: number;
  /** Train the ranker (default true); options go to trainRanker. */
  ranker?: false | { epochs?: number; maxExamples?: number; hidden?: number[] };
  /** 'auto' (default): build HNSW when the native addon has FAISS; 'require'; 'off'. */
  hnsw?: 'auto' | 'require' | 'off';
  /**
   * The HNSW graph's degree and build beam. Default: the index's (M 32, efConstruction 80),
   * or M 16 / efConstruction 40 from LARGE_CATALOG items. Its metric: default 'cosine'.
   */
  hnswParams?: { M?: number; efConstruction?: number; metric?: HnswMetric };
  /** Evaluate at most this many held-out users for the recorded metrics (default 2000). */
  evalUsers?: number;
  seed?: number;
  /** Worker threads for ALS (default: 2 from 1M observations up, else 1 = the calling thread). */
  threads?: number;
  log?: (msg: string) => void;
}

/** From this many items up, the ranker and HNSW use large-catalog defaults (see below). */
export const LARGE_CATALOG = 200_000;

export interface BuildResult {
  version: number;
  dir: string;
  metrics: Record<string, number>;
  seconds: number;
}

export async function buildBundle(opts: BuildOptions): Promise<BuildResult> {
  const say = opts.log ?? (() => {});
  const t0 = performance.now();
  const lap = (): number => (performance.now() - t0) / 1000;
  const metrics: Record<string, number> = {};
  const data = await loadSource(opts.source);
  const { items } = data;
  const numItems = items.ids.length;
  say(
    `data: ${data.log.length} events, ${data.log.userIds.length} users, ${numItems} items (${lap().toFixed(1)}s)`,
  );
  metrics.load_s = lap();

  const { train, test } = temporalSplit(data.log, opts.split);
  metrics.train_events = train.length;
  metrics.test_events = test.length;
  setPopularity(items, train);

  const weightOpts = { ...data.defaults.weights, ...opts.weights };
  const cm = buildInteractions(train, computeWeights(train, weightOpts), numItems);
  const alsOpts: AlsOptions = {
    factors: 32,
    iterations: 10,
    seed: opts.seed,
    ...data.defaults.als,
    ...opts.als,
  };
  const als = await trainAlsParallel(cm, {
    // Workers pay a start-up and JIT warm-up cost per build; below ~1M observations a
    // sequential run finishes first (bench/train.ts compares both in one run).
    threads: opts.threads ?? (cm.userItems.length >= 1_000_000 ? 2 : 1),
    ...alsOpts,
    onIteration: (i, s) => say(`als: iteration ${i}/${alsOpts.iterations} (${s.toFixed(1)}s)`),
  });
  const dim = als.dim;
  metrics.als_s = als.seconds;
  metrics.als_nnz = als.nnz;

  const coldMin = opts.coldMinInteractions ?? 5;
  let content: ContentModel | undefined;
  {
    const t = performance.now();
    content = fitContentModel(items, als.itemFactors, dim, { minInteractions: coldMin });
    metrics.cold_items = applyColdItems(items, als.itemFactors, content, coldMin);
    metrics.content_features = content.features.length;
    metrics.content_s = (performance.now() - t) / 1000;
    say(
      `cold start: ${metrics.cold_items} items got content embeddings (${content.features.length} features)`,
    );
  }
  const coldUser = meanUserEmbedding(als.userFactors, dim);

  {
    const rel = heldOutSets(cm, test);
    const m = await evaluateEmbeddings(als.userFactors, als.itemFactors, dim, cm, rel, {
      categories: items.categories,
      maxUsers: opts.evalUsers ?? 2000,
    });
    metrics.als_recall10 = m.recall10;
    metrics.als_recall20 = m.recall20;
    metrics.als_ndcg10 = m.ndcg10;
    metrics.eval_users = m.users;
    say(
      `als held-out: recall@20 ${m.recall20.toFixed(4)}, ndcg@10 ${m.ndcg10.toFixed(4)} over ${m.users} users`,
    );
  }

  let ranker: RankerArtifact | undefined;
  if (opts.ranker !== false) {
    const t = performance.now();
    const { trainRanker } = await import('../ranker/train.js');
    // Building an example scores the whole catalog for one user (hard negatives), so the
    // example budget's cost grows with the catalog: large catalogs get a smaller default.
    const rankerOpts = { ...(numItems >= LARGE_CATALOG && { maxExamples: 20000 }), ...opts.ranker };
    const r = await trainRanker(
      {
        dim,
        items,
        itemEmbeddings: als.itemFactors,
        userEmbeddings: als.userFactors,
        userIds: train.userIds,
        train,
        seed: opts.seed,
      },
      rankerOpts,
    );
    ranker = { onnx: r.onnx, inputs: r.inputs, output: r.output, outputKind: r.outputKind };
    for (const [k, v] of Object.entries(r.metrics))
      metrics[k.startsWith('ranker_') ? k : `ranker_${k}`] = v;
    metrics.ranker_s = (performance.now() - t) / 1000;
    say(`ranker: trained in ${metrics.ranker_s.toFixed(1)}s`);
  }

  const hnswMode = opts.hnsw ?? 'auto';
  let writeHnsw: ((path: string) => Promise<void>) | undefined;
  let hnswParams: { M?: number; efConstruction?: number; metric: HnswMetric } | undefined;
  if (hnswMode !== 'off') {
    const t = performance.now();
    try {
      const { HnswIndex } = await import('../retrieval/hnsw.js');
      const ids = new Uint32Array(numItems);
      for (let i = 0; i < numItems; i++) ids[i] = i;
      // Graph construction dominates large builds; a sparser graph (M 16, efConstruction
      // 40) builds several times faster there. efSearch buys its recall back for the
      // first ranks only: on the 1M reference bundle recall@10 reaches 1.0 but recall@100
      // stays below 0.7 at any efSearch, which also caps walks under a filter; M 32 lifts
      // that ceiling to 0.96 or more for 2-4x the build time (bench/README.md, "Deep
      // ranks on the reference bundle's graph"). --hnsw-m / --hnsw-ef-construction choose.
      // Cosine: the graph answers "items similar to this one" (similar-to-recent
      // candidates, /v1/similar). ALS item vectors' norms grow with popularity, and by
      // inner product an item's neighbours are mostly popular items whatever the item:
      // items the collaborative source (the user's top 200 by inner product) returns
      // already. As similar-to-recent candidates, cosine neighbours found fewer held-out
      // items on their own (MovieLens 0.187 of them against 0.238; synthetic 0.128 against
      // 0.234) but more that the collaborative source missed (0.0261 against 0.0214;
      // 0.0271 against 0.0179), from 5-6x as many distinct items (npm run bench:similar;
      // bench/README.md, "Similar items by cosine"). --hnsw-metric ip keeps the old graph.
      const hnswOpts = {
        ...(numItems >= LARGE_CATALOG && { M: 16, efConstruction: 40 }),
        metric: 'cosine' as HnswMetric,
        ...opts.hnswParams,
      };
      const index = await HnswIndex.build(ids, als.itemFactors, dim, hnswOpts);
      hnswParams = hnswOpts;
      writeHnsw = (path) => index.save(path);
      metrics.hnsw_s = (performance.now() - t) / 1000;
      say(
        `hnsw: built over ${numItems} items by ${hnswOpts.metric} (${metrics.hnsw_s.toFixed(1)}s)`,
      );
    } catch (e) {
      if (hnswMode === 'require') throw e;
      say(`hnsw: skipped (${(e as Error).message})`);
    }
  }

  metrics.build_s = lap();
  const out = await writeVersion(
    opts.repoDir,
    {
      name: opts.name ?? DEFAULT_BUNDLE_NAME,
      dim,
      items,
      itemEmbeddings: als.itemFactors,
      userIds: train.userIds,
      userEmbeddings: als.userFactors,
      coldUserEmbedding: coldUser,
      content,
      ranker,
      writeHnsw,
      hnswMetric: hnswParams && hnswConfigMetric(hnswParams.metric),
      metrics,
      training: {
        source:
          opts.source.kind === 'synthetic'
            ? { kind: 'synthetic', ...opts.source.options }
            : opts.source,
        data_stats: data.stats,
        split: { fraction: 0.2, minHoldout: 1, minTrain: 3, ...opts.split },
        weights: weightOpts,
        als: { factors: dim, ...alsOpts },
        cold_min_interactions: coldMin,
        ...(hnswParams && { hnsw: hnswParams }),
      },
    },
    { version: opts.version },
  );
  say(`wrote ${out.dir} (${lap().toFixed(1)}s total)`);
  return { version: out.version, dir: out.dir, metrics, seconds: lap() };
}

/** <project>/models, the default repository. */
export function defaultRepoDir(projectRoot: string): string {
  return join(projectRoot, 'models');
}
