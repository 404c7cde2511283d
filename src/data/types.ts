// Interaction data in memory, columnar: 10M events as objects would cost gigabytes and
// minutes of GC, as typed arrays they cost ~170 MB. Users and items are dense numbers
// (rows) into `userIds` / the item catalog's `ids`; loaders assign them.
import type { EventType } from '../api/types.js';

/** Event codes stored in InteractionLog.event; 'rating' is for explicit-feedback data. */
export const EVENT_CODES: readonly (EventType | 'rating')[] = [
  'view',
  'click',
  'like',
  'share',
  'purchase',
  'skip',
  'rating',
];

export interface InteractionLog {
  /** Number of events (arrays may be longer; only [0, length) is valid). */
  length: number;
  /** User row of each event, into userIds. */
  user: Int32Array;
  /** Item row of each event, into the item catalog. */
  item: Int32Array;
  /** ms since epoch. */
  timestamp: Float64Array;
  /** Index into EVENT_CODES. */
  event: Uint8Array;
  /** Explicit rating (NaN when the event is implicit). */
  rating: Float32Array;
  /** Confidence weight derived from event type/rating/duration (see training/weights). */
  weight: Float32Array;
  userIds: string[];
  /** Optional columns (loaders fill them when the source has them). */
  /** Device code of each event, index into DEVICE_TYPES (api/types.ts); 255 = unknown. */
  device?: Uint8Array;
  /** Seconds watched/viewed (NaN when unknown). */
  duration?: Float32Array;
  /** Session number of each event (-1 when unknown); unique across users. */
  session?: Int32Array;
}

/** Device code meaning "unknown" in InteractionLog.device. */
export const UNKNOWN_DEVICE = 255;
