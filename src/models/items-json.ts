// items.json, a version's catalog (ids, titles, category names, categories, creator ids),
// parsed where it does not stop the event loop. At 1M items the file is ~59 MB and
// JSON.parse alone took 1.1 s of the loop (a throwaway timing), while the server listens (not ready) and answers
// its health checks. A large file is parsed on a worker thread (items-json-worker.ts), which
// sends back compact forms: each list of strings as one string and where each entry ends,
// the categories as the flat table in shared memory (no copy), the creators' table likewise
// (distinct names, and a number per item). The loop then cuts the strings out 100k entries
// a turn. Small files, where a worker's start costs more than the parse, are parsed in
// place through the same forms.
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import {
  buildCategoryTable,
  buildCreatorTable,
  type CategoryTable,
  type CreatorTable,
} from './bundle.js';
import { turn } from './loading.js';

/** A catalog file that parses but does not hold what a catalog must (names the field). */
export class ItemsFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ItemsFormatError';
  }
}

/** A list of strings as one string and the end of each entry in it. */
export interface PackedStrings {
  text: string;
  ends: Uint32Array;
}

/** What a worker sends: items.json in compact forms (see the top of this file). */
export interface PackedItems {
  ids: PackedStrings;
  titles: PackedStrings;
  categoryNames: string[];
  categoryTable: CategoryTable;
  /** In shared memory, as the category table. */
  creatorTable: CreatorTable;
}

export interface CatalogLists {
  ids: string[];
  titles: string[];
  categoryNames: string[];
  /** In SharedArrayBuffers (what ranking workers read). */
  categoryTable: CategoryTable;
  /** One string object per distinct creator (a million items by 40k creators hold 40k). */
  creatorIds: string[];
  /** The same creators as numbers, in SharedArrayBuffers. */
  creatorTable: CreatorTable;
}

function list(raw: Record<string, unknown>, field: string): unknown[] {
  const a = raw[field];
  if (!Array.isArray(a)) throw new ItemsFormatError(`items.json ${field}: expected a list`);
  return a;
}

/** raw[field] as a list of strings, or ItemsFormatError naming the first that is not one. */
function strings(raw: Record<string, unknown>, field: string): string[] {
  const a = list(raw, field);
  for (let i = 0; i < a.length; i++)
    if (typeof a[i] !== 'string')
      throw new ItemsFormatError(
        `items.json ${field}[${i}]: expected a string, got ${a[i] === null ? 'null' : typeof a[i]}`,
      );
  return a as string[];
}

function packStrings(a: string[]): PackedStrings {
  const ends = new Uint32Array(a.length);
  let total = 0;
  for (let i = 0; i < a.length; i++) ends[i] = total += a[i]!.length;
  return { text: a.join(''), ends };
}

/** Parses items.json's text into the compact forms (on whichever thread calls it). */
export function packItems(text: string): PackedItems {
  const raw = JSON.parse(text) as unknown;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new ItemsFormatError('items.json: expected an object');
  const r = raw as Record<string, unknown>;
  const ids = strings(r, 'ids');
  const n = ids.length;
  const categoryNames = strings(r, 'category_names');
  const nc = categoryNames.length;
  const categories = list(r, 'categories');
  if (categories.length !== n)
    throw new ItemsFormatError(`items.json categories: expected ${n} lists`);
  // Each entry is a number into category_names (stored as uint16): anything else would be
  // stored as some other category, or index past the tables built from them.
  for (let i = 0; i < n; i++) {
    const l = categories[i];
    if (!Array.isArray(l))
      throw new ItemsFormatError(
        `items.json categories[${i}]: expected a list (item ${JSON.stringify(ids[i])})`,
      );
    for (let j = 0; j < l.length; j++) {
      const c = l[j] as unknown;
      if (typeof c !== 'number' || !Number.isInteger(c) || c < 0 || c >= nc || c > 0xffff)
        throw new ItemsFormatError(
          `items.json categories[${i}][${j}]: ${JSON.stringify(c) ?? String(c)} is not a ` +
            `category number (0..${nc - 1} into category_names) (item ${JSON.stringify(ids[i])})`,
        );
    }
  }
  return {
    ids: packStrings(ids),
    titles: packStrings(strings(r, 'titles')),
    categoryNames,
    categoryTable: buildCategoryTable(categories as number[][], true),
    creatorTable: buildCreatorTable(strings(r, 'creator_ids'), true),
  };
}

/** The entries of `p`, cut out `chunk` at a time with a turn of the event loop between. */
async function unpackStrings(p: PackedStrings, chunk: number): Promise<string[]> {
  const out = new Array<string>(p.ends.length);
  let start = 0;
  for (let from = 0; from < out.length; from += chunk) {
    if (from > 0) await turn();
    const to = Math.min(out.length, from + chunk);
    for (let i = from; i < to; i++) {
      const end = p.ends[i]!;
      out[i] = p.text.slice(start, end);
      start = end;
    }
  }
  return out;
}

async function unpackItems(p: PackedItems, chunk: number): Promise<CatalogLists> {
  const ids = await unpackStrings(p.ids, chunk);
  await turn();
  const titles = await unpackStrings(p.titles, chunk);
  await turn();
  const { of, names } = p.creatorTable;
  const creatorIds = new Array<string>(of.length);
  for (let i = 0; i < creatorIds.length; i++) creatorIds[i] = of[i]! < 0 ? '' : names[of[i]!]!;
  return {
    ids,
    titles,
    categoryNames: p.categoryNames,
    categoryTable: p.categoryTable,
    creatorIds,
    creatorTable: p.creatorTable,
  };
}

/** From this many bytes of items.json the parse goes to a worker (see the top). */
const ITEMS_JSON_WORKER_BYTES = 4 << 20;

/** Parses the file on a worker thread: the compact forms, or the worker's error re-thrown. */
async function packOnWorker(path: string): Promise<PackedItems> {
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker(new URL('./items-json-worker.js', import.meta.url), {
    workerData: { path },
  });
  try {
    return await new Promise<PackedItems>((resolve, reject) => {
      worker.once(
        'message',
        (m: { packed?: PackedItems; error?: { name: string; message: string } }) => {
          if (m.packed) return resolve(m.packed);
          const e = m.error!;
          const err =
            e.name === 'ItemsFormatError'
              ? new ItemsFormatError(e.message)
              : e.name === 'SyntaxError'
                ? new SyntaxError(e.message)
                : new Error(e.message);
          reject(err);
        },
      );
      worker.once('error', reject);
      worker.once('exit', (code) =>
        reject(new Error(`items.json reader exited (code ${code}) before answering`)),
      );
    });
  } finally {
    void worker.terminate();
  }
}

/**
 * items.json at `path` as the catalog's lists. `worker` forces where the parse runs (tests);
 * by default a worker from ITEMS_JSON_WORKER_BYTES. Rejects with ItemsFormatError naming
 * the field when the file parses but is not a catalog, with SyntaxError when it does not
 * parse.
 */
export async function readItemsJson(
  path: string,
  opts: { worker?: boolean; chunk?: number } = {},
): Promise<CatalogLists> {
  const onWorker = opts.worker ?? statSync(path).size >= ITEMS_JSON_WORKER_BYTES;
  const packed = onWorker ? await packOnWorker(path) : packItems(await readFile(path, 'utf8'));
  return unpackItems(packed, opts.chunk ?? 100_000);
}
