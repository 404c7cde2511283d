// `recserve build-demo` and `recserve build`: train a bundle and write it as a new version
// of the model repository (see models/README.md). `recserve import-ranker` drops an ONNX
// ranker exported by another tool into a new version.
import { parseArgs } from 'node:util';
import { join, resolve } from 'node:path';
import { projectRoot } from '../retrieval/native.js';
import { HNSW_METRICS, type HnswMetric } from '../retrieval/hnsw.js';
import { buildBundle, defaultRepoDir, type DataSource } from '../models/builder.js';
import { defaultMovieLensDir } from '../data/movielens.js';
import { DEFAULT_BUNDLE_NAME, latestVersion } from '../models/repository.js';
import { importRanker } from '../models/import.js';
import { UsageError } from './usage.js';

/** Size of the demo repository: small enough to build in well under a minute. */
export const DEMO_SIZE = { items: 20000, users: 5000, events: 300000 } as const;
/** The demo's ranker budget: the ranker dominates the demo build, which must stay under a minute. */
export const DEMO_RANKER = { epochs: 3, maxExamples: 60000 } as const;

/** An integer in [lo, hi], for the options whose engine bounds them (checked here, named). */
function intIn(v: string, name: string, lo: number, hi: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi)
    throw new UsageError(
      `--${name} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`,
    );
  return n;
}

function int(v: string | undefined, name: string, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw new UsageError(`--${name} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

function hnswMetric(v: string): HnswMetric {
  if (!(HNSW_METRICS as readonly string[]).includes(v))
    throw new UsageError(`--hnsw-metric must be cosine or ip, got ${JSON.stringify(v)}`);
  return v as HnswMetric;
}

/** "1024,512,256,128" → [1024, 512, 256, 128]: the deep tower's hidden layer widths. */
function hiddenSizes(v: string): number[] {
  const sizes = v.split(',').map((x) => Number(x.trim()));
  if (sizes.length === 0 || sizes.some((h) => !Number.isInteger(h) || h < 1 || h > 8192)) {
    throw new UsageError(
      `flag --ranker-hidden: expected comma-separated layer widths 1..8192, got ${JSON.stringify(v)}`,
    );
  }
  return sizes;
}

const COMMON = {
  repo: { type: 'string' },
  name: { type: 'string' },
  version: { type: 'string' },
  seed: { type: 'string' },
  factors: { type: 'string' },
  iterations: { type: 'string' },
  reg: { type: 'string' },
  alpha: { type: 'string' },
  'no-ranker': { type: 'boolean' },
  'no-hnsw': { type: 'boolean' },
  'hnsw-m': { type: 'string' },
  'hnsw-ef-construction': { type: 'string' },
  'hnsw-metric': { type: 'string' },
  'ranker-epochs': { type: 'string' },
  'ranker-examples': { type: 'string' },
  'ranker-hidden': { type: 'string' },
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

type Values = {
  [K in keyof typeof COMMON]?: (typeof COMMON)[K]['type'] extends 'boolean' ? boolean : string;
};

async function run(
  source: DataSource,
  v: Values,
  rankerDefaults: { epochs?: number; maxExamples?: number } = {},
): Promise<number> {
  const repoDir = resolve(v.repo ?? defaultRepoDir(projectRoot()));
  const r = await buildBundle({
    source,
    repoDir,
    name: v.name ?? DEFAULT_BUNDLE_NAME,
    version: v.version === undefined ? undefined : int(v.version, 'version', 1),
    seed: v.seed === undefined ? undefined : int(v.seed, 'seed', 1),
    als: {
      ...(v.factors !== undefined && { factors: int(v.factors, 'factors', 32) }),
      ...(v.iterations !== undefined && { iterations: int(v.iterations, 'iterations', 10) }),
      ...(v.reg !== undefined && { regularization: num(v.reg, 'reg') }),
      ...(v.alpha !== undefined && { alpha: num(v.alpha, 'alpha') }),
    },
    ranker: v['no-ranker']
      ? false
      : {
          ...rankerDefaults,
          ...(v['ranker-epochs'] !== undefined && {
            epochs: int(v['ranker-epochs'], 'ranker-epochs', 4),
          }),
          ...(v['ranker-examples'] !== undefined && {
            maxExamples: int(v['ranker-examples'], 'ranker-examples', 150000),
          }),
          ...(v['ranker-hidden'] !== undefined && { hidden: hiddenSizes(v['ranker-hidden']) }),
        },
    hnsw: v['no-hnsw'] ? 'off' : 'auto',
    hnswParams: {
      ...(v['hnsw-m'] !== undefined && { M: intIn(v['hnsw-m'], 'hnsw-m', 2, 512) }),
      ...(v['hnsw-ef-construction'] !== undefined && {
        efConstruction: intIn(v['hnsw-ef-construction'], 'hnsw-ef-construction', 1, 65536),
      }),
      ...(v['hnsw-metric'] !== undefined && { metric: hnswMetric(v['hnsw-metric']) }),
    },
    threads: v.threads === undefined ? undefined : int(v.threads, 'threads', 2),
    log: v.quiet ? undefined : (m) => console.error(`[build] ${m}`),
  });
  console.log(
    JSON.stringify({ version: r.version, dir: r.dir, seconds: Number(r.seconds.toFixed(2)) }),
  );
  return 0;
}

const DEMO_HELP = `usage: recserve build-demo [--if-missing] [--items N] [--users N] [--events N]
                          [--repo DIR] [--name NAME] [--seed N] [--no-ranker] [--no-hnsw]
                          [--hnsw-m N] [--hnsw-ef-construction N] [--hnsw-metric cosine|ip]
                          [--factors N] [--ranker-epochs N] [--ranker-examples N] [--ranker-hidden W1,W2,...]
Builds the demo bundle from the seeded synthetic generator (default ${DEMO_SIZE.items} items,
${DEMO_SIZE.users} users, ${DEMO_SIZE.events} events) into <project>/models/recserve/<next version>.
--if-missing: do nothing when a version already exists.`;

export async function buildDemoCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...COMMON,
      'if-missing': { type: 'boolean' },
      items: { type: 'string' },
      users: { type: 'string' },
      events: { type: 'string' },
    },
  });
  if (values.help) {
    console.log(DEMO_HELP);
    return 0;
  }
  const repoDir = resolve(values.repo ?? defaultRepoDir(projectRoot()));
  const name = values.name ?? DEFAULT_BUNDLE_NAME;
  if (values['if-missing']) {
    const v = latestVersion(repoDir, name);
    if (v !== undefined) {
      if (!values.quiet)
        console.error(`[build] ${join(repoDir, name, String(v))} exists; nothing to do`);
      return 0;
    }
  }
  const source: DataSource = {
    kind: 'synthetic',
    options: {
      items: int(values.items, 'items', DEMO_SIZE.items),
      users: int(values.users, 'users', DEMO_SIZE.users),
      events: int(values.events, 'events', DEMO_SIZE.events),
      seed: values.seed === undefined ? 42 : int(values.seed, 'seed', 42),
    },
  };
  return run(source, { ...values, repo: repoDir }, DEMO_RANKER);
}

const BUILD_HELP = `usage: recserve build --source synthetic|movielens|files [options]
  synthetic:  --items N --users N --events N [--seed N]
  movielens:  [--dir DIR]   (default ../shared/datasets/ml-latest-small)
  files:      --interactions FILE [--items-file FILE]   (CSV with header, or .jsonl)
  training:   --factors N --iterations N --reg X --alpha X --threads N (ALS workers; default 2 from 1M observations)
              --no-ranker --ranker-epochs N --ranker-examples N --no-hnsw
              --hnsw-m N --hnsw-ef-construction N (HNSW degree and build beam; default 32, 80;
                16, 40 from 200k items: builds several times faster, finds less past the top 10)
              --hnsw-metric cosine|ip (what "similar" means; default cosine: by inner product
                the neighbours of any item are mostly popular ones)
              --ranker-hidden W1,W2,... (deep tower widths; default 64,32; the seed's: 1024,512,256,128)
  output:     --repo DIR (default <project>/models) --name NAME (default recserve) --version N`;

export async function buildCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...COMMON,
      source: { type: 'string' },
      items: { type: 'string' },
      users: { type: 'string' },
      events: { type: 'string' },
      dir: { type: 'string' },
      interactions: { type: 'string' },
      'items-file': { type: 'string' },
    },
  });
  if (values.help || !values.source) {
    console.log(BUILD_HELP);
    return values.help ? 0 : 2;
  }
  let source: DataSource;
  switch (values.source) {
    case 'synthetic':
      source = {
        kind: 'synthetic',
        options: {
          items: int(values.items, 'items', 20000),
          users: int(values.users, 'users', 5000),
          events: int(values.events, 'events', 300000),
          seed: values.seed === undefined ? 42 : int(values.seed, 'seed', 42),
        },
      };
      break;
    case 'movielens':
      source = {
        kind: 'movielens',
        dir: resolve(values.dir ?? defaultMovieLensDir(projectRoot())),
      };
      break;
    case 'files':
      if (!values.interactions) throw new UsageError('--source files needs --interactions FILE');
      source = {
        kind: 'files',
        interactions: resolve(values.interactions),
        items: values['items-file'] ? resolve(values['items-file']) : undefined,
      };
      break;
    default:
      throw new UsageError(
        `--source must be synthetic, movielens or files, got ${JSON.stringify(values.source)}`,
      );
  }
  return run(source, values);
}

const IMPORT_HELP = `usage: recserve import-ranker --model model.onnx --config ranker.json [--from VERSION]
                             [--repo DIR] [--name NAME]
Copies version VERSION (default: the latest) into a new version whose ranker is model.onnx.
ranker.json: { "inputs": [{ "name": "<onnx input>", "features": ["dot", ...] }],
               "output": "<onnx output>", "output_kind": "logit" | "probability" }
The model is loaded with ONNX Runtime and checked against the config before anything is written.`;

export async function importRankerCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: 'string' },
      config: { type: 'string' },
      from: { type: 'string' },
      repo: { type: 'string' },
      name: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || !values.model || !values.config) {
    console.log(IMPORT_HELP);
    return values.help ? 0 : 2;
  }
  const r = await importRanker({
    repoDir: resolve(values.repo ?? defaultRepoDir(projectRoot())),
    name: values.name ?? DEFAULT_BUNDLE_NAME,
    modelPath: resolve(values.model),
    configPath: resolve(values.config),
    fromVersion: values.from === undefined ? undefined : int(values.from, 'from', 1),
  });
  console.log(JSON.stringify(r));
  return 0;
}
