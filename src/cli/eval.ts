// `recserve eval`: offline comparison of popularity, item-kNN, ALS and ALS + ranker on a
// temporal split (see src/eval/run.ts). A table by default, JSON with --json.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { defaultMovieLensDir, hasMovieLens } from '../data/movielens.js';
import { formatReport, runEvaluation } from '../eval/run.js';
import type { DataSource } from '../models/builder.js';
import { projectRoot } from '../retrieval/native.js';
import { UsageError } from './usage.js';

const HELP = `usage: recserve eval [--dataset movielens|synthetic] [--dir DIR] [--json]
                    [--items N --users N --events N] [--no-tune] [--no-ranker]
                    [--candidates N] [--max-users N] [--ranker-epochs N] [--ranker-examples N]
Temporal split (each user's most recent 20% held out); Recall@10/20, NDCG@10, MRR,
coverage@10 and intra-list diversity for popularity, item-kNN, ALS and ALS + ranker.
ALS and item-kNN are tuned on a validation split of the training data unless --no-tune.`;

function int(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

export async function evalCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dataset: { type: 'string' },
      dir: { type: 'string' },
      json: { type: 'boolean' },
      items: { type: 'string' },
      users: { type: 'string' },
      events: { type: 'string' },
      'no-tune': { type: 'boolean' },
      'no-ranker': { type: 'boolean' },
      candidates: { type: 'string' },
      'max-users': { type: 'string' },
      'ranker-epochs': { type: 'string' },
      'ranker-examples': { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const dataset = values.dataset ?? 'movielens';
  let source: DataSource;
  if (dataset === 'movielens') {
    const dir = resolve(values.dir ?? defaultMovieLensDir(projectRoot()));
    if (!hasMovieLens(dir)) {
      console.error(
        `recserve eval: MovieLens not found in ${dir} (need ratings.csv, movies.csv); try --dataset synthetic`,
      );
      return 2;
    }
    source = { kind: 'movielens', dir };
  } else if (dataset === 'synthetic') {
    source = {
      kind: 'synthetic',
      options: {
        items: int(values.items, 'items') ?? 20000,
        users: int(values.users, 'users') ?? 5000,
        events: int(values.events, 'events') ?? 300000,
        seed: int(values.seed, 'seed') ?? 42,
      },
    };
  } else {
    throw new UsageError(
      `--dataset must be movielens or synthetic, got ${JSON.stringify(dataset)}`,
    );
  }
  const epochs = int(values['ranker-epochs'], 'ranker-epochs');
  const maxExamples = int(values['ranker-examples'], 'ranker-examples');
  const report = await runEvaluation({
    source,
    tune: !values['no-tune'],
    ranker: values['no-ranker']
      ? false
      : {
          ...(epochs !== undefined && { epochs }),
          ...(maxExamples !== undefined && { maxExamples }),
        },
    candidates: int(values.candidates, 'candidates'),
    maxUsers: int(values['max-users'], 'max-users'),
    seed: int(values.seed, 'seed'),
    log: values.json ? undefined : (m) => console.error(`[eval] ${m}`),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return 0;
}
