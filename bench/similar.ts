// "Similar items" by inner product against cosine, on trained item vectors: which items
// each metric calls neighbours, and what they add as similar-to-recent candidates. The
// figures behind the builder's default HNSW metric (models/builder.ts).
//
//   npm run bench:similar [-- --quick] [-- --json] [-- --source movielens|synthetic]
//                         [-- --per 20] [-- --max-users N]
//
// Data: MovieLens (../shared/datasets/ml-latest-small) when present, else the synthetic
// generator (20k items, 5k users; --quick: 5k, 1.5k). Temporal split (the builder's), ALS
// as `recserve build` trains it (32 factors, the data set's defaults), then its cold-start
// content vectors for items with fewer than 5 training interactions. Every neighbour
// below is exact (the exact index: over the item vectors for inner product, over them
// scaled to unit length for cosine).
//
// Candidates, per test user: the last 5 distinct items of the user's training events are
// the seeds (the server's recent items), and each seed brings its `per` best unseen items
// by each metric, as the similar-to-recent source does. Per metric:
// - recall: the share of the user's held-out items among the candidates (mean over users);
// - gain: the share that are among them and not among the collaborative source's (the
//   user's top 200 unseen items by inner product with the user's vector): what the source
//   adds to the candidate pool the ranker sees;
// - coverage: distinct items over all users' candidates;
// - pop_rank: the candidates' mean rank by training popularity (0 = most popular);
// - norm_ratio: the candidates' mean norm over the median item's.
// Then item to item (the seeds of /v1/similar): the share of the top 30 by cosine that
// the top 30 by inner product hold; and the HNSW graph of each metric (M 32, efConstruction
// 80): recall@10 against its exact top 10 and single-query q/s on one thread, by efSearch.
import { parseBenchArgs, numberOption } from './lib/args.js';
import { recallAtK, unitRows } from './lib/data.js';
import { nowMs, rate } from './lib/stats.js';
import { printTable } from './lib/table.js';
import { loadSource, type DataSource } from '../src/models/builder.js';
import { defaultMovieLensDir, hasMovieLens } from '../src/data/movielens.js';
import { temporalSplit } from '../src/data/split.js';
import { buildInteractions, trainAls } from '../src/training/als.js';
import { computeWeights } from '../src/training/weights.js';
import { applyColdItems, fitContentModel } from '../src/training/coldstart.js';
import { setPopularity } from '../src/data/log.js';
import { heldOutSets } from '../src/eval/evaluate.js';
import { ExactIndex } from '../src/retrieval/exact.js';
import { HnswIndex, type HnswMetric } from '../src/retrieval/hnsw.js';
import { projectRoot } from '../src/retrieval/native.js';

const args = parseBenchArgs();
const quick = args.quick;
const per = numberOption(args, 'per', 20);
const maxUsers = numberOption(args, 'max-users', quick ? 500 : Infinity);
const SEEDS = 5;
const COLLAB = 200;
const log = (line: string) => {
  if (!args.json) console.log(line);
};
const t0 = nowMs();

const mlDir = defaultMovieLensDir(projectRoot());
const want = args.options.get('source') ?? (hasMovieLens(mlDir) ? 'movielens' : 'synthetic');
if (want !== 'movielens' && want !== 'synthetic')
  throw new RangeError(`--source must be movielens or synthetic, got '${want}'`);
if (want === 'movielens' && !hasMovieLens(mlDir))
  throw new Error(`--source movielens: no MovieLens data in ${mlDir}`);
const source: DataSource =
  want === 'movielens'
    ? { kind: 'movielens', dir: mlDir }
    : {
        kind: 'synthetic',
        options: quick
          ? { items: 5000, users: 1500, events: 100_000, seed: 1 }
          : { items: 20_000, users: 5000, events: 400_000, seed: 1 },
      };
const data = await loadSource(source);
const { train, test } = temporalSplit(data.log);
const nItems = data.items.ids.length;
const cm = buildInteractions(train, computeWeights(train, data.defaults.weights), nItems);
const rel = heldOutSets(cm, test);
const als = trainAls(cm, { factors: 32, iterations: 10, seed: 1, ...data.defaults.als });
const d = als.dim;
const E = als.itemFactors;
// As the builder does: items with fewer than 5 training interactions get content-based
// vectors. Their ALS vectors are noise, and, for items that one user alone rated, all point
// the same way (that user's), which cosine would rank as ties.
setPopularity(data.items, train);
const cold = applyColdItems(data.items, E, fitContentModel(data.items, E, d), 5);
log(
  `${want}: ${nItems} items (${cold} with content vectors), ${cm.numUsers} users, ${rel.size} with held-out items; ALS d = ${d} (${((nowMs() - t0) / 1000).toFixed(1)} s)`,
);

const norms = new Float32Array(nItems);
for (let i = 0; i < nItems; i++) norms[i] = Math.hypot(...E.subarray(i * d, i * d + d));
const unit = unitRows(E, d);
const sortedNorms = Float32Array.from(norms.filter((x) => x > 0)).sort();
const medianNorm = sortedNorms[sortedNorms.length >> 1]!;
const popRank = new Float64Array(nItems);
Array.from({ length: nItems }, (_, i) => i)
  .sort((a, b) => cm.itemPtr[b + 1]! - cm.itemPtr[b]! - (cm.itemPtr[a + 1]! - cm.itemPtr[a]!))
  .forEach((item, r) => (popRank[item] = r));

const rows = Uint32Array.from({ length: nItems }, (_, i) => i);
const byIp = ExactIndex.create({ dim: d });
byIp.build(rows, E);
const byCos = ExactIndex.create({ dim: d });
byCos.build(rows, unit);
const exactOf: Record<HnswMetric, { index: ExactIndex; vecs: Float32Array }> = {
  ip: { index: byIp, vecs: E },
  cosine: { index: byCos, vecs: unit },
};

// The seeds: each user's last SEEDS distinct training items, newest first.
const recent = new Map<number, number[]>();
const order = Array.from({ length: train.length }, (_, e) => e).sort(
  (a, b) => train.timestamp[b]! - train.timestamp[a]!,
);
for (const e of order) {
  const u = train.user[e]!;
  let l = recent.get(u);
  if (!l) recent.set(u, (l = []));
  if (l.length < SEEDS && !l.includes(train.item[e]!)) l.push(train.item[e]!);
}

interface Acc {
  recall: number;
  gain: number;
  hits: number;
  popRank: number;
  normRatio: number;
  users: number;
  seen: Set<number>;
}
const acc: Record<HnswMetric, Acc> = {
  ip: { recall: 0, gain: 0, hits: 0, popRank: 0, normRatio: 0, users: 0, seen: new Set() },
  cosine: { recall: 0, gain: 0, hits: 0, popRank: 0, normRatio: 0, users: 0, seen: new Set() },
};
let collabRecall = 0;
let users = 0;
for (const [u, held] of rel) {
  if (users >= maxUsers) break;
  const seeds = recent.get(u);
  if (!seeds || seeds.length === 0) continue;
  users++;
  const seen = new Set<number>();
  for (let k = cm.userPtr[u]!; k < cm.userPtr[u + 1]!; k++) seen.add(cm.userItems[k]!);
  const exclude = Uint32Array.from(seen).sort();
  const collab = new Set(
    byIp.searchSync(als.userFactors.subarray(u * d, u * d + d), COLLAB, { exclude: [exclude] }).ids,
  );
  let c = 0;
  for (const r of held) if (collab.has(r)) c++;
  collabRecall += c / held.size;
  for (const metric of ['ip', 'cosine'] as const) {
    const { index, vecs } = exactOf[metric];
    const q = new Float32Array(seeds.length * d);
    seeds.forEach((s, i) => q.set(vecs.subarray(s * d, s * d + d), i * d));
    const res = index.searchSync(q, per, { exclude: seeds.map(() => exclude) });
    const cands = new Set<number>();
    for (const id of res.ids) if (id !== 0xffffffff) cands.add(id);
    let hit = 0;
    let gain = 0;
    for (const r of held)
      if (cands.has(r)) {
        hit++;
        if (!collab.has(r)) gain++;
      }
    const a = acc[metric];
    a.recall += hit / held.size;
    a.gain += gain / held.size;
    a.hits += hit > 0 ? 1 : 0;
    a.users++;
    let pr = 0;
    let nr = 0;
    for (const r of cands) {
      pr += popRank[r]!;
      nr += norms[r]! / medianNorm;
      a.seen.add(r);
    }
    a.popRank += pr / cands.size;
    a.normRatio += nr / cands.size;
  }
}
const candidates = (['ip', 'cosine'] as const).map((metric) => {
  const a = acc[metric];
  return {
    metric,
    recall: a.recall / a.users,
    gain: a.gain / a.users,
    hit_rate: a.hits / a.users,
    coverage: a.seen.size,
    pop_rank: a.popRank / a.users,
    norm_ratio: a.normRatio / a.users,
  };
});

// Item to item: from 200 items spread over the catalogue (those with vectors).
const withVector = Array.from(rows).filter((r) => norms[r]! > 0);
const probes = Array.from(
  { length: Math.min(200, withVector.length) },
  (_, i) => withVector[Math.floor((i * withVector.length) / Math.min(200, withVector.length))]!,
);
const probeQueries = (vecs: Float32Array) => {
  const q = new Float32Array(probes.length * d);
  probes.forEach((r, i) => q.set(vecs.subarray(r * d, r * d + d), i * d));
  return q;
};
const self = probes.map((r) => Uint32Array.of(r));
const top30 = (metric: HnswMetric) =>
  exactOf[metric].index.searchSync(probeQueries(exactOf[metric].vecs), 30, { exclude: self }).ids;
const ip30 = top30('ip');
const cos30 = top30('cosine');
const overlap30 = recallAtK(cos30, ip30, probes.length, 30);
const meanNorm = (ids: Uint32Array) =>
  ids.reduce((s, r) => s + norms[r]!, 0) / ids.length / medianNorm;

// 50: the server's default (pipeline.efSearch); /v1/similar raises it to 3n at least.
const EFS = [16, 50, 128, 256];
const graphs = [];
for (const metric of ['ip', 'cosine'] as const) {
  const tb = nowMs();
  const hnsw = await HnswIndex.build(rows, E, d, { metric });
  const buildS = (nowMs() - tb) / 1000;
  const q = probeQueries(E);
  const truth = exactOf[metric].index.searchSync(metric === 'cosine' ? probeQueries(unit) : q, 10, {
    exclude: self,
  }).ids;
  for (const ef of EFS) {
    const one = (p: number) =>
      hnsw.searchSync(q.subarray(p * d, (p + 1) * d), 10, { efSearch: ef, exclude: [self[p]!] });
    const got = new Uint32Array(probes.length * 10);
    for (let p = 0; p < probes.length; p++) got.set(one(p).ids, p * 10);
    let i = 0;
    const qps = rate(() => one(i++ % probes.length), quick ? 200 : 600, 100);
    graphs.push({
      metric,
      ef_search: ef,
      recall_at_10: recallAtK(truth, got, probes.length, 10),
      qps,
      build_s: buildS,
    });
  }
}

const out = {
  bench: 'similar',
  date: new Date().toISOString(),
  dataset: want,
  items: nItems,
  users: cm.numUsers,
  test_users: users,
  dim: d,
  seeds_per_user: SEEDS,
  per_seed: per,
  collab_k: COLLAB,
  collab_recall: collabRecall / users,
  candidates,
  item_to_item: {
    probes: probes.length,
    ip_top30_holds_of_cosine_top30: overlap30,
    ip_top30_norm_ratio: meanNorm(ip30),
    cosine_top30_norm_ratio: meanNorm(cos30),
  },
  hnsw: graphs,
  seconds: (nowMs() - t0) / 1000,
};
if (args.json) {
  console.log(JSON.stringify(out));
} else {
  log(
    `\nsimilar-to-recent candidates: ${users} test users, their last ${SEEDS} items, ${per} neighbours each; ` +
      `the collaborative source (top ${COLLAB}) alone finds ${(out.collab_recall * 100).toFixed(1)}% of the held-out items`,
  );
  printTable(
    [
      'metric',
      'recall',
      'gain over collaborative',
      'hit rate',
      'coverage',
      'pop rank',
      'norm / median',
    ],
    candidates.map((c) => [
      c.metric,
      c.recall.toFixed(4),
      c.gain.toFixed(4),
      c.hit_rate.toFixed(3),
      c.coverage,
      c.pop_rank.toFixed(0),
      c.norm_ratio.toFixed(2),
    ]),
  );
  log(
    `\nitem to item (${probes.length} items): the top 30 by inner product hold ${(overlap30 * 100).toFixed(1)}% of the top 30 by cosine; ` +
      `their mean norm ${out.item_to_item.ip_top30_norm_ratio.toFixed(2)}x the median item's (cosine's ${out.item_to_item.cosine_top30_norm_ratio.toFixed(2)}x)`,
  );
  printTable(
    ['HNSW metric', 'ef', 'recall@10 vs exact', 'q/s (1 thread)', 'build s'],
    graphs.map((g) => [
      g.metric,
      g.ef_search,
      g.recall_at_10.toFixed(3),
      g.qps.toFixed(0),
      g.build_s.toFixed(1),
    ]),
  );
  log(`\n${out.seconds.toFixed(1)} s`);
}
