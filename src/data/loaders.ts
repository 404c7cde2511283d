// Loaders for interaction and item files (CSV with a header row, or JSONL). A malformed
// field is a DataError naming file, line and field; duplicate events, duplicate items and
// events for unknown items are dropped and counted in the returned stats, never fatal.
import { DEVICE_TYPES } from '../api/types.js';
import type { ItemCatalog } from '../models/bundle.js';
import { DataError, readRecords, type DataRecord } from './csv.js';
import {
  CatalogBuilder,
  LogBuilder,
  RATING_CODE,
  eventCode,
  rowsByUserTime,
  selectRows,
  setPopularity,
} from './log.js';
import { UNKNOWN_DEVICE, type InteractionLog } from './types.js';

export interface InteractionStats {
  /** Data records read. */
  records: number;
  /** Events kept. */
  events: number;
  /** Exact repeats (same user, item, event, timestamp) dropped. */
  duplicates: number;
  /** Events naming an item absent from the item catalog, dropped. */
  unknownItems: number;
}

export interface ItemStats {
  records: number;
  items: number;
  /** Repeated item ids (the first record wins). */
  duplicates: number;
}

const INTERACTION_ALIASES: Record<string, string> = {
  userid: 'user_id',
  user: 'user_id',
  itemid: 'item_id',
  item: 'item_id',
  movieid: 'item_id',
  event: 'event_type',
  eventtype: 'event_type',
  ts: 'timestamp',
  time: 'timestamp',
  duration_seconds: 'duration',
};

const ITEM_ALIASES: Record<string, string> = {
  itemid: 'item_id',
  id: 'item_id',
  movieid: 'item_id',
  genres: 'categories',
  category: 'categories',
  creator: 'creator_id',
  creatorid: 'creator_id',
  createdat: 'created_at',
  quality_score: 'quality',
};

function str(v: unknown): string {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v.trim() : String(v);
}

function requireString(rec: DataRecord, field: string, file: string, line: number): string {
  const s = str(rec[field]);
  if (s === '') throw new DataError(file, line, `field '${field}' is missing or empty`);
  return s;
}

/** Number from a field, NaN when absent/empty; a non-numeric value is an error. */
function optNumber(rec: DataRecord, field: string, file: string, line: number): number {
  const v = rec[field];
  if (v === undefined || v === null || v === '') return NaN;
  const x = typeof v === 'number' ? v : Number(str(v));
  if (!Number.isFinite(x))
    throw new DataError(file, line, `field '${field}' is not a number: ${JSON.stringify(v)}`);
  return x;
}

/**
 * Milliseconds since epoch from a number (seconds when below 1e11, else ms) or an ISO-8601
 * string. Absent → NaN when `optional`, else an error.
 */
export function parseTimestamp(
  v: unknown,
  field: string,
  file: string,
  line: number,
  optional = false,
): number {
  if (v === undefined || v === null || v === '') {
    if (optional) return NaN;
    throw new DataError(file, line, `field '${field}' is missing`);
  }
  let x: number;
  if (typeof v === 'number') x = v;
  else {
    const s = str(v);
    x = /^-?\d+(\.\d+)?$/.test(s) ? Number(s) : Date.parse(s);
  }
  if (!Number.isFinite(x))
    throw new DataError(file, line, `field '${field}' is not a timestamp: ${JSON.stringify(v)}`);
  return Math.abs(x) < 1e11 ? x * 1000 : x;
}

export interface LoadInteractionsOptions {
  /**
   * Items already loaded (from an items file). Events for ids not in it are counted as
   * unknownItems and dropped. Without it, every item id seen becomes a catalog row.
   */
  catalog?: CatalogBuilder;
}

export interface LoadedInteractions {
  log: InteractionLog;
  items: ItemCatalog;
  stats: InteractionStats;
}

/** Reads `user_id,item_id,event_type|rating,timestamp[,weight,duration,context]`. */
export async function loadInteractions(
  path: string,
  opts: LoadInteractionsOptions = {},
): Promise<LoadedInteractions> {
  const catalog = opts.catalog ?? new CatalogBuilder();
  const addUnknown = opts.catalog === undefined;
  const b = new LogBuilder(1 << 16);
  const stats: InteractionStats = { records: 0, events: 0, duplicates: 0, unknownItems: 0 };
  let checkedColumns = false;
  await readRecords(
    path,
    (rec, line) => {
      stats.records++;
      if (!checkedColumns) {
        // Name the missing column once, on the first record, rather than per line.
        for (const f of ['user_id', 'item_id', 'timestamp'])
          if (!(f in rec)) throw new DataError(path, line, `missing column '${f}'`);
        if (!('event_type' in rec) && !('rating' in rec))
          throw new DataError(path, line, "missing column 'event_type' (or 'rating')");
        checkedColumns = true;
      }
      const userId = requireString(rec, 'user_id', path, line);
      const itemId = requireString(rec, 'item_id', path, line);
      const ts = parseTimestamp(rec.timestamp, 'timestamp', path, line);
      let event: number;
      let rating = NaN;
      const et = str(rec.event_type);
      if (et !== '') {
        event = eventCode(et.toLowerCase());
        if (event < 0 || event === RATING_CODE)
          throw new DataError(
            path,
            line,
            `field 'event_type' is not one of view|click|like|share|purchase|skip: ${JSON.stringify(et)}`,
          );
      } else {
        rating = optNumber(rec, 'rating', path, line);
        if (Number.isNaN(rating))
          throw new DataError(path, line, "field 'event_type' (or 'rating') is empty");
        event = RATING_CODE;
      }
      const weight = optNumber(rec, 'weight', path, line);
      if (weight < 0) throw new DataError(path, line, `field 'weight' is negative: ${weight}`);
      const duration = optNumber(rec, 'duration', path, line);
      if (duration < 0)
        throw new DataError(path, line, `field 'duration' is negative: ${duration}`);
      let device = UNKNOWN_DEVICE;
      const ctx = parseContext(rec.context, path, line);
      if (ctx.device_type !== undefined) {
        const d = (DEVICE_TYPES as readonly string[]).indexOf(ctx.device_type);
        if (d < 0)
          throw new DataError(
            path,
            line,
            `field 'context.device_type' is unknown: ${JSON.stringify(ctx.device_type)}`,
          );
        device = d;
      }
      let itemRow = catalog.index.get(itemId);
      if (itemRow === undefined) {
        if (!addUnknown) {
          stats.unknownItems++;
          return;
        }
        itemRow = catalog.add(itemId);
      }
      b.push(b.userRow(userId), itemRow, ts, event, rating, weight, device, duration);
    },
    INTERACTION_ALIASES,
  );
  const raw = b.finish();
  const { log, duplicates } = dropDuplicates(raw);
  stats.duplicates = duplicates;
  stats.events = log.length;
  const items = catalog.finish();
  setPopularity(items, log);
  return { log, items, stats };
}

function parseContext(v: unknown, file: string, line: number): { device_type?: string } {
  if (v === undefined || v === null || v === '') return {};
  let obj: unknown = v;
  if (typeof v === 'string') {
    try {
      obj = JSON.parse(v);
    } catch {
      throw new DataError(file, line, "field 'context' is not a JSON object");
    }
  }
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
    throw new DataError(file, line, "field 'context' is not a JSON object");
  const d = (obj as Record<string, unknown>).device_type;
  return d === undefined ? {} : { device_type: str(d) };
}

/**
 * Drops exact repeats (same user, item, event, timestamp) and returns the log sorted by
 * (user, time), the order every later stage wants.
 */
export function dropDuplicates(log: InteractionLog): { log: InteractionLog; duplicates: number } {
  const rows = rowsByUserTime(log);
  const keep: number[] = [];
  let duplicates = 0;
  let runStart = 0;
  for (let k = 0; k < rows.length; k++) {
    const r = rows[k];
    if (k > 0) {
      const p = rows[k - 1];
      if (log.user[p] !== log.user[r] || log.timestamp[p] !== log.timestamp[r])
        runStart = keep.length;
    }
    // Compare only with kept rows of the same (user, timestamp) run: runs are tiny.
    let dup = false;
    for (let j = runStart; j < keep.length; j++) {
      const q = keep[j];
      if (log.item[q] === log.item[r] && log.event[q] === log.event[r]) {
        dup = true;
        break;
      }
    }
    if (dup) duplicates++;
    else keep.push(r);
  }
  return { log: selectRows(log, keep), duplicates };
}

export interface LoadedItems {
  catalog: CatalogBuilder;
  stats: ItemStats;
}

/** Reads `item_id,title,categories,creator_id,created_at,quality` (all but item_id optional). */
export async function loadItems(
  path: string,
  opts: { categorySeparator?: RegExp } = {},
): Promise<LoadedItems> {
  const sep = opts.categorySeparator ?? /[|;]/;
  const catalog = new CatalogBuilder();
  const stats: ItemStats = { records: 0, items: 0, duplicates: 0 };
  let checked = false;
  await readRecords(
    path,
    (rec, line) => {
      stats.records++;
      if (!checked) {
        if (!('item_id' in rec)) throw new DataError(path, line, "missing column 'item_id'");
        checked = true;
      }
      const id = requireString(rec, 'item_id', path, line);
      if (catalog.has(id)) {
        stats.duplicates++;
        return;
      }
      const title = str(rec.title);
      const rawCats = rec.categories;
      let cats: string[];
      if (Array.isArray(rawCats)) cats = rawCats.map(str);
      else
        cats = str(rawCats)
          .split(sep)
          .map((s) => s.trim());
      cats = cats.filter((c) => c !== '' && c !== '(no genres listed)');
      const createdAt = parseTimestamp(rec.created_at, 'created_at', path, line, true);
      let quality = optNumber(rec, 'quality', path, line);
      if (Number.isNaN(quality)) quality = 0.5;
      else if (quality < 0 || quality > 1)
        throw new DataError(path, line, `field 'quality' must be within 0..1: ${quality}`);
      catalog.add(id, title, cats, str(rec.creator_id), createdAt, quality);
    },
    ITEM_ALIASES,
  );
  stats.items = catalog.size;
  return { catalog, stats };
}

/** Items file (optional) + interactions file → catalog, log and both stats. */
export async function loadFiles(
  interactionsPath: string,
  itemsPath?: string,
): Promise<LoadedInteractions & { itemStats?: ItemStats }> {
  if (!itemsPath) return loadInteractions(interactionsPath);
  const { catalog, stats: itemStats } = await loadItems(itemsPath);
  const r = await loadInteractions(interactionsPath, { catalog });
  return { ...r, itemStats };
}
