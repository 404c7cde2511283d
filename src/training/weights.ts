// Confidence weights for implicit training: the event type sets the base weight
// (purchase > share > like > click > view; skip is negative evidence and gets none), an
// explicit weight column overrides it, ratings map to a weight that grows with the rating,
// views scale with how long they were watched, and older events decay exponentially
// (exp(-lambda · days before the newest event), the seed's apply_time_decay).
import { EVENT_CODES, type InteractionLog } from '../data/types.js';

export interface WeightOptions {
  /** Base weight per event type. */
  eventWeights?: Partial<Record<(typeof EVENT_CODES)[number], number>>;
  /** Decay per day (default 0.01 = 1%/day as in the seed); 0 disables decay. */
  decayPerDay?: number;
  /** Reference time for decay (default: the newest event in the log). */
  now?: number;
  /** Ratings at or below this get weight 0 (default 0: every rating is a positive signal). */
  minRating?: number;
}

export const DEFAULT_EVENT_WEIGHTS: Record<(typeof EVENT_CODES)[number], number> = {
  view: 1,
  click: 3,
  like: 5,
  share: 6,
  purchase: 10,
  skip: 0,
  rating: 1,
};

const DAY = 86_400_000;

/** Base weight of one event (before decay). */
export function eventWeight(
  log: InteractionLog,
  i: number,
  table: Record<string, number> = DEFAULT_EVENT_WEIGHTS,
  minRating = 0,
): number {
  const w = log.weight[i];
  if (!Number.isNaN(w)) return w;
  const name = EVENT_CODES[log.event[i]];
  if (name === 'rating') {
    const r = log.rating[i];
    // 0.5..5 stars → 0.1..1 times the rating weight; low ratings still say "watched it".
    return r <= minRating ? 0 : (table.rating * r) / 5;
  }
  let base = table[name] ?? 0;
  if (name === 'view' && log.duration) {
    const d = log.duration[i];
    // A view watched for a minute counts fully; a 5-second bounce barely counts.
    if (!Number.isNaN(d)) base *= Math.min(1, 0.2 + d / 75);
  }
  return base;
}

/** Decayed confidence weight of every event (a new array; the log is not modified). */
export function computeWeights(log: InteractionLog, opts: WeightOptions = {}): Float32Array {
  const table = { ...DEFAULT_EVENT_WEIGHTS, ...opts.eventWeights };
  const lambda = opts.decayPerDay ?? 0.01;
  let now = opts.now ?? -Infinity;
  if (opts.now === undefined)
    for (let i = 0; i < log.length; i++) if (log.timestamp[i] > now) now = log.timestamp[i];
  const out = new Float32Array(log.length);
  for (let i = 0; i < log.length; i++) {
    const base = eventWeight(log, i, table, opts.minRating ?? 0);
    const days = Math.max(0, (now - log.timestamp[i]) / DAY);
    out[i] = lambda > 0 ? base * Math.exp(-lambda * days) : base;
  }
  return out;
}
