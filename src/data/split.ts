// Temporal split: each user's most recent interactions are held out, the rest is training
// data. Time order matters (a random split leaks the future into training and flatters
// every model that memorises popularity trends).
import { rowsByUserTime, selectRows } from './log.js';
import type { InteractionLog } from './types.js';

export interface SplitOptions {
  /** Share of each user's events held out (default 0.2). */
  fraction?: number;
  /** At least this many held out per eligible user (default 1). */
  minHoldout?: number;
  /** Users with fewer than this many training events left keep all events in train (default 3). */
  minTrain?: number;
}

export interface Split {
  train: InteractionLog;
  test: InteractionLog;
}

export function temporalSplit(log: InteractionLog, opts: SplitOptions = {}): Split {
  const fraction = opts.fraction ?? 0.2;
  const minHoldout = opts.minHoldout ?? 1;
  const minTrain = opts.minTrain ?? 3;
  if (!(fraction > 0 && fraction < 1))
    throw new RangeError(`split fraction must be in (0, 1): ${fraction}`);
  const rows = rowsByUserTime(log);
  const train: number[] = [];
  const test: number[] = [];
  let a = 0;
  while (a < rows.length) {
    const u = log.user[rows[a]];
    let b = a;
    while (b < rows.length && log.user[rows[b]] === u) b++;
    const n = b - a;
    const h = Math.max(minHoldout, Math.floor(n * fraction));
    const cut = n - h >= minTrain ? b - h : b;
    for (let k = a; k < cut; k++) train.push(rows[k]);
    for (let k = cut; k < b; k++) test.push(rows[k]);
    a = b;
  }
  return { train: selectRows(log, train), test: selectRows(log, test) };
}
