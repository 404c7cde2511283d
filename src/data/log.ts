// Building and slicing columnar interaction logs and item catalogs. Loaders and the
// synthetic generator append rows through LogBuilder (amortised doubling, so 10M events
// cost a few reallocations, never per-event objects); splits select rows with selectRows.
import type { ItemCatalog } from '../models/bundle.js';
import { EVENT_CODES, UNKNOWN_DEVICE, type InteractionLog } from './types.js';

/** Code of an event name in EVENT_CODES, or -1. */
export function eventCode(name: string): number {
  return (EVENT_CODES as readonly string[]).indexOf(name);
}

export const RATING_CODE = eventCode('rating');

function grow<T extends Float64Array | Float32Array | Int32Array | Uint8Array>(a: T, n: number): T {
  const Ctor = a.constructor as new (n: number) => T;
  const b = new Ctor(n);
  b.set(a);
  return b;
}

/** Appends events to growable typed columns; `finish()` returns the InteractionLog. */
export class LogBuilder {
  length = 0;
  user: Int32Array;
  item: Int32Array;
  timestamp: Float64Array;
  event: Uint8Array;
  rating: Float32Array;
  weight: Float32Array;
  device: Uint8Array;
  duration: Float32Array;
  session: Int32Array;
  readonly userIds: string[] = [];
  readonly userIndex = new Map<string, number>();
  private hasDevice = false;
  private hasDuration = false;
  private hasSession = false;

  constructor(capacity = 1024) {
    const n = Math.max(16, capacity);
    this.user = new Int32Array(n);
    this.item = new Int32Array(n);
    this.timestamp = new Float64Array(n);
    this.event = new Uint8Array(n);
    this.rating = new Float32Array(n);
    this.weight = new Float32Array(n);
    this.device = new Uint8Array(n);
    this.duration = new Float32Array(n);
    this.session = new Int32Array(n);
  }

  /** Row of an external user id, assigning the next row to a new one. */
  userRow(id: string): number {
    let r = this.userIndex.get(id);
    if (r === undefined) {
      r = this.userIds.length;
      this.userIds.push(id);
      this.userIndex.set(id, r);
    }
    return r;
  }

  private ensure(n: number): void {
    if (n <= this.user.length) return;
    const cap = Math.max(n, this.user.length * 2);
    this.user = grow(this.user, cap);
    this.item = grow(this.item, cap);
    this.timestamp = grow(this.timestamp, cap);
    this.event = grow(this.event, cap);
    this.rating = grow(this.rating, cap);
    this.weight = grow(this.weight, cap);
    this.device = grow(this.device, cap);
    this.duration = grow(this.duration, cap);
    this.session = grow(this.session, cap);
  }

  push(
    user: number,
    item: number,
    timestamp: number,
    event: number,
    rating = NaN,
    weight = NaN,
    device = UNKNOWN_DEVICE,
    duration = NaN,
    session = -1,
  ): void {
    const i = this.length;
    this.ensure(i + 1);
    this.user[i] = user;
    this.item[i] = item;
    this.timestamp[i] = timestamp;
    this.event[i] = event;
    this.rating[i] = rating;
    this.weight[i] = weight;
    this.device[i] = device;
    this.duration[i] = duration;
    this.session[i] = session;
    if (device !== UNKNOWN_DEVICE) this.hasDevice = true;
    if (!Number.isNaN(duration)) this.hasDuration = true;
    if (session >= 0) this.hasSession = true;
    this.length = i + 1;
  }

  finish(): InteractionLog {
    const n = this.length;
    const log: InteractionLog = {
      length: n,
      user: this.user.slice(0, n),
      item: this.item.slice(0, n),
      timestamp: this.timestamp.slice(0, n),
      event: this.event.slice(0, n),
      rating: this.rating.slice(0, n),
      weight: this.weight.slice(0, n),
      userIds: this.userIds,
    };
    if (this.hasDevice) log.device = this.device.slice(0, n);
    if (this.hasDuration) log.duration = this.duration.slice(0, n);
    if (this.hasSession) log.session = this.session.slice(0, n);
    return log;
  }
}

/** A new log holding the given rows (in the given order); userIds are shared, not copied. */
export function selectRows(log: InteractionLog, rows: ArrayLike<number>): InteractionLog {
  const n = rows.length;
  const pick = <T extends Float64Array | Float32Array | Int32Array | Uint8Array>(a: T): T => {
    const Ctor = a.constructor as new (n: number) => T;
    const b = new Ctor(n);
    for (let i = 0; i < n; i++) b[i] = a[rows[i]];
    return b;
  };
  const out: InteractionLog = {
    length: n,
    user: pick(log.user),
    item: pick(log.item),
    timestamp: pick(log.timestamp),
    event: pick(log.event),
    rating: pick(log.rating),
    weight: pick(log.weight),
    userIds: log.userIds,
  };
  if (log.device) out.device = pick(log.device);
  if (log.duration) out.duration = pick(log.duration);
  if (log.session) out.session = pick(log.session);
  return out;
}

/** Row indices of the log sorted by (user, timestamp): the order splits and sessions need. */
export function rowsByUserTime(log: InteractionLog): Int32Array {
  const n = log.length;
  // Counting sort by user, then sort each user's slice by time: O(n log k) instead of a
  // comparator sort over 10M rows.
  const numUsers = log.userIds.length;
  const start = new Int32Array(numUsers + 1);
  for (let i = 0; i < n; i++) start[log.user[i] + 1]++;
  for (let u = 0; u < numUsers; u++) start[u + 1] += start[u];
  const fill = start.slice(0, numUsers);
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) rows[fill[log.user[i]]++] = i;
  const ts = log.timestamp;
  for (let u = 0; u < numUsers; u++) {
    const a = start[u];
    const b = start[u + 1];
    if (b - a > 1) {
      const seg = rows.subarray(a, b);
      // Stable on ties: equal timestamps keep file order.
      const sorted = Array.from(seg).sort((x, y) => ts[x] - ts[y] || x - y);
      seg.set(sorted);
    }
  }
  return rows;
}

/** Mutable catalog under construction; `finish()` freezes the columns into typed arrays. */
export class CatalogBuilder {
  readonly ids: string[] = [];
  readonly index = new Map<string, number>();
  readonly titles: string[] = [];
  readonly categoryNames: string[] = [];
  private readonly categoryIndex = new Map<string, number>();
  readonly categories: Uint16Array[] = [];
  readonly creatorIds: string[] = [];
  private createdAt: number[] = [];
  private quality: number[] = [];

  has(id: string): boolean {
    return this.index.has(id);
  }

  categoryCode(name: string): number {
    let c = this.categoryIndex.get(name);
    if (c === undefined) {
      c = this.categoryNames.length;
      if (c > 0xffff) throw new Error('more than 65536 categories');
      this.categoryNames.push(name);
      this.categoryIndex.set(name, c);
    }
    return c;
  }

  /** Adds an item and returns its row; the caller checks for duplicates first. */
  add(
    id: string,
    title = '',
    categories: string[] = [],
    creatorId = '',
    createdAt = NaN,
    quality = 0.5,
  ): number {
    const r = this.ids.length;
    this.ids.push(id);
    this.index.set(id, r);
    this.titles.push(title);
    const codes = [...new Set(categories.map((c) => this.categoryCode(c)))];
    this.categories.push(Uint16Array.from(codes));
    this.creatorIds.push(creatorId);
    this.createdAt.push(createdAt);
    this.quality.push(quality);
    return r;
  }

  setCreatedAt(row: number, ms: number): void {
    this.createdAt[row] = ms;
  }

  get size(): number {
    return this.ids.length;
  }

  finish(): ItemCatalog {
    return {
      ids: this.ids,
      index: this.index,
      titles: this.titles,
      categoryNames: this.categoryNames,
      categories: this.categories,
      creatorIds: this.creatorIds,
      createdAt: Float64Array.from(this.createdAt),
      quality: Float32Array.from(this.quality),
      popularity: new Float32Array(this.ids.length),
    };
  }
}

/** Sets catalog.popularity to each item's event count in the log (in place). */
export function setPopularity(items: ItemCatalog, log: InteractionLog): void {
  const pop = new Float32Array(items.ids.length);
  for (let i = 0; i < log.length; i++) pop[log.item[i]]++;
  items.popularity = pop;
}
