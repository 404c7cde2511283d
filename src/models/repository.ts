// The model repository, Triton-style: <repo>/<name>/<version>/ with numeric versions. A
// version is written once and never modified: everything goes to a hidden temporary
// directory first, every file and the directory are fsynced, the version number is
// reserved with mkdir (fails if it exists), and the temporary directory is renamed over
// the empty reservation. Readers only see versions that carry a manifest.json, and verify
// the sha256 of every file it lists before using any of them.
//
// Layout of one version (raw arrays are little-endian, row-major):
//   config.json            name, version, kind, dim, counts, ranker inputs/outputs and the
//                          features filling each input, training metrics, created_at
//   items.json             catalog: ids, titles, category names, categories, creator ids
//   items_created_at.f64   ms since epoch per item      items_quality.f32 / items_popularity.f32
//   item_embeddings.f32    numItems × dim               users.json (user ids, row order)
//   user_embeddings.f32    numUsers × dim               cold_user.f32 (dim)
//   content_model.json + content_weights.f32  cold-start content → embedding map (optional)
//   hnsw.index             FAISS HNSW over item_embeddings, ids = item rows (optional);
//                          config.json's hnsw.metric says inner_product or cosine
//   model.onnx             the ranker (optional)
//   manifest.json          { files: { <name>: { sha256, bytes } } } over all the above
import { createHash, randomBytes } from 'node:crypto';
import {
  access,
  copyFile,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
} from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ContentModel } from '../training/coldstart.js';
import type { HnswMetric } from '../retrieval/hnsw.js';
import { positionMap, turn } from './loading.js';
import { ItemsFormatError, readItemsJson, type CatalogLists } from './items-json.js';
import {
  withCategoryTable,
  type ItemCatalog,
  type ModelBundle,
  type RankerInputSpec,
} from './bundle.js';

export const BUNDLE_KIND = 'recserve-bundle';
export const DEFAULT_BUNDLE_NAME = 'recserve';
const FORMAT = 1;

/** A version failed verification (missing file, wrong size or checksum, bad config). */
export class BundleIntegrityError extends Error {
  constructor(
    readonly dir: string,
    message: string,
  ) {
    super(`${dir}: ${message}`);
    this.name = 'BundleIntegrityError';
  }
}

/** Writing a version that already exists. */
export class VersionExistsError extends Error {
  constructor(readonly dir: string) {
    super(`${dir} already exists; a written version is never modified (write a new version)`);
    this.name = 'VersionExistsError';
  }
}

export interface RankerArtifact {
  /** model.onnx bytes, or the path of an existing file to copy. */
  onnx: Uint8Array | string;
  inputs: RankerInputSpec[];
  output: string;
  outputKind: 'logit' | 'probability';
}

export interface BundleArtifacts {
  name: string;
  dim: number;
  items: ItemCatalog;
  itemEmbeddings: Float32Array;
  userIds: string[];
  userEmbeddings: Float32Array;
  coldUserEmbedding: Float32Array;
  content?: ContentModel;
  ranker?: RankerArtifact;
  /** Writes the HNSW index to the given path (called inside the temporary directory). */
  writeHnsw?: (path: string) => Promise<void> | void;
  /** Or: copy an existing index file. */
  hnswFile?: string;
  /** The index's metric, recorded in config.json (default 'inner_product'). */
  hnswMetric?: HnswConfigMetric;
  metrics?: Record<string, number>;
  /** Free-form provenance recorded in config.json (data source, training parameters). */
  training?: Record<string, unknown>;
}

/** config.json's names for HnswIndex's metrics ('ip', 'cosine'). */
export type HnswConfigMetric = 'inner_product' | 'cosine';
export const HNSW_CONFIG_METRICS: readonly HnswConfigMetric[] = ['inner_product', 'cosine'];
/** config.json's name for an HnswIndex metric. */
export function hnswConfigMetric(metric: HnswMetric): HnswConfigMetric {
  return metric === 'cosine' ? 'cosine' : 'inner_product';
}

export interface BundleConfig {
  format: number;
  name: string;
  version: number;
  kind: string;
  dim: number;
  num_items: number;
  num_users: number;
  created_at: string;
  ranker: {
    file: string;
    inputs: RankerInputSpec[];
    output: string;
    output_kind: 'logit' | 'probability';
  } | null;
  hnsw: { file: string; metric: HnswConfigMetric } | null;
  content_model: { file: string; weights: string; features: number } | null;
  metrics: Record<string, number>;
  training: Record<string, unknown>;
}

function bytesOf(a: Float32Array | Float64Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

async function writeSynced(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The file's SHA-256, read through one 1 MiB buffer. A read stream's fresh 64 KiB buffer per
 * chunk made ~12,000 of them for a 1M-item version, and that much external memory churn
 * set off major garbage collections, each of which marked the serving version's catalog
 * too: 100-150 ms pauses of the event loop while a new version loaded beside it (a CPU
 * profile of bench:swap's load).
 */
export async function sha256File(
  path: string,
  opts: { maxBytes?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let total = 0;
    for (;;) {
      opts.signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      // A file that yields more than it was said to hold (one that grows, a device) is not
      // read to its end, which may never come.
      if (opts.maxBytes !== undefined && total > opts.maxBytes)
        throw new Error(`${path} holds more than ${opts.maxBytes} bytes`);
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/**
 * Numeric versions of `name` that are complete (carry a manifest), ascending. A version's
 * directory is its number as writeVersion writes it (1, 2, ... 10): a name such as `007`
 * or `0` is not a version (`007` would be listed as 7 and then read from .../7/).
 */
export function listVersions(repoDir: string, name: string): number[] {
  const dir = join(repoDir, name);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((v) => isVersionName(v) && existsSync(join(dir, v, 'manifest.json')))
    .map(Number)
    .sort((a, b) => a - b);
}

function isVersionName(v: string): boolean {
  return /^[1-9]\d*$/.test(v) && Number.isSafeInteger(Number(v));
}

/**
 * listVersions without blocking the event loop (the serving process lists its repository
 * every few seconds, and the repository may be on network storage).
 */
export async function listVersionsAsync(repoDir: string, name: string): Promise<number[]> {
  const dir = join(repoDir, name);
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return [];
  }
  const complete = await Promise.all(
    entries.filter(isVersionName).map(async (v) =>
      (await access(join(dir, v, 'manifest.json')).then(
        () => true,
        () => false,
      ))
        ? Number(v)
        : null,
    ),
  );
  return complete.filter((v): v is number => v !== null).sort((a, b) => a - b);
}

export function latestVersion(repoDir: string, name: string): number | undefined {
  const v = listVersions(repoDir, name);
  return v.length ? v[v.length - 1] : undefined;
}

function validateArtifacts(a: BundleArtifacts): void {
  const n = a.items.ids.length;
  const d = a.dim;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(a.name))
    throw new RangeError(`bundle name must be [A-Za-z0-9_.-]+: ${JSON.stringify(a.name)}`);
  if (!Number.isInteger(d) || d < 1) throw new RangeError(`dim must be a positive integer: ${d}`);
  if (a.itemEmbeddings.length !== n * d)
    throw new RangeError(
      `itemEmbeddings has ${a.itemEmbeddings.length} floats, expected ${n}×${d}`,
    );
  if (a.userEmbeddings.length !== a.userIds.length * d)
    throw new RangeError(
      `userEmbeddings has ${a.userEmbeddings.length} floats, expected ${a.userIds.length}×${d}`,
    );
  if (a.coldUserEmbedding.length !== d)
    throw new RangeError(
      `coldUserEmbedding has ${a.coldUserEmbedding.length} floats, expected ${d}`,
    );
  for (const [k, arr] of [
    ['itemEmbeddings', a.itemEmbeddings],
    ['userEmbeddings', a.userEmbeddings],
  ] as const)
    for (let i = 0; i < arr.length; i++)
      if (!Number.isFinite(arr[i])) throw new RangeError(`${k}[${i}] is not finite`);
}

/**
 * Writes a new version and returns it. `version` defaults to latest + 1; an existing
 * version is never overwritten (VersionExistsError).
 */
export async function writeVersion(
  repoDir: string,
  a: BundleArtifacts,
  opts: { version?: number } = {},
): Promise<{ version: number; dir: string }> {
  validateArtifacts(a);
  const base = resolve(repoDir, a.name);
  await mkdir(base, { recursive: true });
  const version = opts.version ?? (latestVersion(repoDir, a.name) ?? 0) + 1;
  if (!Number.isInteger(version) || version < 1)
    throw new RangeError(`version must be a positive integer: ${version}`);
  const finalDir = join(base, String(version));
  if (existsSync(finalDir)) throw new VersionExistsError(finalDir);
  const tmp = join(base, `.tmp-${version}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp);
  try {
    const files: string[] = [];
    const put = async (name: string, data: Uint8Array | string): Promise<void> => {
      await writeSynced(join(tmp, name), data);
      files.push(name);
    };
    const it = a.items;
    await put(
      'items.json',
      JSON.stringify({
        ids: it.ids,
        titles: it.titles,
        category_names: it.categoryNames,
        categories: it.categories.map((c) => Array.from(c)),
        creator_ids: it.creatorIds,
      }),
    );
    await put('items_created_at.f64', bytesOf(it.createdAt));
    await put('items_quality.f32', bytesOf(it.quality));
    await put('items_popularity.f32', bytesOf(it.popularity));
    await put('item_embeddings.f32', bytesOf(a.itemEmbeddings));
    await put('users.json', JSON.stringify(a.userIds));
    await put('user_embeddings.f32', bytesOf(a.userEmbeddings));
    await put('cold_user.f32', bytesOf(a.coldUserEmbedding));
    if (a.content) {
      await put(
        'content_model.json',
        JSON.stringify({ dim: a.content.dim, features: a.content.features }),
      );
      await put('content_weights.f32', bytesOf(a.content.weights));
    }
    let hnsw: BundleConfig['hnsw'] = null;
    if (a.writeHnsw || a.hnswFile) {
      const p = join(tmp, 'hnsw.index');
      if (a.writeHnsw) await a.writeHnsw(p);
      else await copyFile(a.hnswFile!, p);
      if (!existsSync(p)) throw new Error('the HNSW writer produced no file');
      await syncPath(p);
      files.push('hnsw.index');
      hnsw = { file: 'hnsw.index', metric: a.hnswMetric ?? 'inner_product' };
    }
    let ranker: BundleConfig['ranker'] = null;
    if (a.ranker) {
      const r = a.ranker;
      if (typeof r.onnx === 'string') {
        await copyFile(r.onnx, join(tmp, 'model.onnx'));
        await syncPath(join(tmp, 'model.onnx'));
        files.push('model.onnx');
      } else await put('model.onnx', r.onnx);
      ranker = {
        file: 'model.onnx',
        inputs: r.inputs,
        output: r.output,
        output_kind: r.outputKind,
      };
    }
    const config: BundleConfig = {
      format: FORMAT,
      name: a.name,
      version,
      kind: BUNDLE_KIND,
      dim: a.dim,
      num_items: it.ids.length,
      num_users: a.userIds.length,
      created_at: new Date().toISOString(),
      ranker,
      hnsw,
      content_model: a.content
        ? {
            file: 'content_model.json',
            weights: 'content_weights.f32',
            features: a.content.features.length,
          }
        : null,
      metrics: a.metrics ?? {},
      training: a.training ?? {},
    };
    await put('config.json', JSON.stringify(config, null, 2) + '\n');
    const manifest: Record<string, { sha256: string; bytes: number }> = {};
    for (const f of files.sort()) {
      const p = join(tmp, f);
      manifest[f] = { sha256: await sha256File(p), bytes: (await stat(p)).size };
    }
    await writeSynced(
      join(tmp, 'manifest.json'),
      JSON.stringify({ algorithm: 'sha256', files: manifest }, null, 2) + '\n',
    );
    await syncPath(tmp);
    // Reserve the number (mkdir fails when another writer got there first), then
    // atomically replace the empty reservation with the finished directory.
    try {
      await mkdir(finalDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new VersionExistsError(finalDir);
      throw e;
    }
    await rename(tmp, finalDir);
    await syncPath(base);
    return { version, dir: finalDir };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

interface Manifest {
  files: Record<string, { sha256: string; bytes: number }>;
  /** SHA-256 of manifest.json itself: names the version's whole content (verifyVersion). */
  digest: string;
}

/**
 * Checks every file the manifest lists (a regular file, its size, then its sha256); throws
 * BundleIntegrityError. `signal` abandons the check (a server that stops mid-load).
 */
export async function verifyVersion(dir: string, signal?: AbortSignal): Promise<Manifest> {
  let manifest: Manifest;
  try {
    const raw = await readFile(join(dir, 'manifest.json'));
    manifest = JSON.parse(raw.toString('utf8')) as Manifest;
    manifest.digest = createHash('sha256').update(raw).digest('hex');
  } catch (e) {
    throw new BundleIntegrityError(dir, `manifest.json unreadable: ${(e as Error).message}`);
  }
  if (!manifest || typeof manifest.files !== 'object')
    throw new BundleIntegrityError(dir, 'manifest.json has no files');
  if (!manifest.files['config.json'])
    throw new BundleIntegrityError(dir, 'manifest.json does not cover config.json');
  for (const [name, m] of Object.entries(manifest.files)) {
    if (name.includes('/') || name.includes('..'))
      throw new BundleIntegrityError(dir, `bad file name in manifest: ${name}`);
    const at = `manifest.json files[${JSON.stringify(name)}]`;
    if (!m || typeof m !== 'object')
      throw new BundleIntegrityError(dir, `${at}: expected { sha256, bytes }`);
    if (!Number.isSafeInteger(m.bytes) || m.bytes < 0)
      throw new BundleIntegrityError(
        dir,
        `${at}.bytes: expected a non-negative integer, got ${JSON.stringify(m.bytes)}`,
      );
    if (typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256))
      throw new BundleIntegrityError(
        dir,
        `${at}.sha256: expected 64 lowercase hex digits, got ${JSON.stringify(m.sha256)}`,
      );
    const p = join(dir, name);
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(p);
    } catch {
      throw new BundleIntegrityError(dir, `${name} is missing`);
    }
    // A device or a FIFO (a link to /dev/zero) states no size and never ends.
    if (!st.isFile()) throw new BundleIntegrityError(dir, `${name} is not a regular file`);
    const size = st.size;
    if (size !== m.bytes)
      throw new BundleIntegrityError(dir, `${name} has ${size} bytes, manifest says ${m.bytes}`);
    let h: string;
    try {
      h = await sha256File(p, { maxBytes: m.bytes, ...(signal ? { signal } : {}) });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new BundleIntegrityError(dir, `${name} could not be read: ${(e as Error).message}`);
    }
    if (h !== m.sha256)
      throw new BundleIntegrityError(
        dir,
        `${name} checksum mismatch (sha256 ${h}, manifest ${m.sha256})`,
      );
  }
  return manifest;
}

/**
 * A file of little-endian float32 or float64 values, read straight into the array it
 * returns (in a SharedArrayBuffer with `share`: the arrays ranking workers read, which
 * shareBundleItems then uses as they are). The reads run on libuv's pool, 16 MiB at a time;
 * nothing is copied on the event loop. (Reading the whole file into a Buffer and copying
 * it into an aligned array, then into shared memory, held the event loop ~0.8 s for a 1M
 * x 64 bundle's item embeddings.) A length that is not a whole number of values is refused
 * (BundleIntegrityError naming the file); the callers check the count.
 */
async function readValues<T extends Float32Array | Float64Array>(
  dir: string,
  name: string,
  Ctor: {
    new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
    BYTES_PER_ELEMENT: number;
  },
  share = false,
): Promise<T> {
  const path = join(dir, name);
  const fh = await open(path, 'r');
  try {
    const bytes = (await fh.stat()).size;
    if (bytes % Ctor.BYTES_PER_ELEMENT !== 0)
      throw new BundleIntegrityError(
        dir,
        `${name} has ${bytes} bytes, not a whole number of ${Ctor.BYTES_PER_ELEMENT}-byte values`,
      );
    const length = bytes / Ctor.BYTES_PER_ELEMENT;
    const size = length * Ctor.BYTES_PER_ELEMENT;
    const buf = share ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    const view = new Uint8Array(buf);
    for (let at = 0; at < size;) {
      const { bytesRead } = await fh.read(view, at, Math.min(16 << 20, size - at), at);
      if (bytesRead === 0) throw new Error(`${path}: ended at byte ${at} of ${size}`);
      at += bytesRead;
    }
    return new Ctor(buf, 0, length);
  } finally {
    await fh.close();
  }
}

const readF32 = (dir: string, name: string, share = false) =>
  readValues(dir, name, Float32Array, share);
const readF64 = (dir: string, name: string, share = false) =>
  readValues(dir, name, Float64Array, share);

/** A version's JSON file, parsed; bad JSON is a BundleIntegrityError naming the file. */
async function readJson(dir: string, name: string): Promise<unknown> {
  const text = await readFile(join(dir, name), 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new BundleIntegrityError(dir, `${name} is not valid JSON: ${(e as Error).message}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * config.json's fields have the types BundleConfig says (a string "32" for dim compared
 * as 32 values against 32 items' worth); BundleIntegrityError names the first that does not.
 */
function checkConfigTypes(dir: string, c: Record<string, unknown>): void {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new BundleIntegrityError(
      dir,
      `config.json ${field}: expected ${want}, got ${JSON.stringify(got) ?? String(got)}`,
    );
  };
  const str = (o: Record<string, unknown>, f: string, at: string): void => {
    if (typeof o[f] !== 'string') bad(`${at}${f}`, 'a string', o[f]);
  };
  const count = (f: string, min: number): void => {
    const v = c[f];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      bad(f, min > 0 ? 'a positive integer' : 'a non-negative integer', v);
  };
  str(c, 'name', '');
  count('version', 1);
  count('dim', 1);
  count('num_items', 0);
  count('num_users', 0);
  for (const f of ['ranker', 'hnsw', 'content_model']) {
    const v = c[f];
    if (v === null || v === undefined) continue;
    if (!isObject(v)) bad(f, 'an object or null', v);
  }
  const r = c.ranker as Record<string, unknown> | null | undefined;
  if (r) {
    str(r, 'file', 'ranker.');
    str(r, 'output', 'ranker.');
    if (r.output_kind !== 'logit' && r.output_kind !== 'probability')
      bad('ranker.output_kind', "'logit' or 'probability'", r.output_kind);
    if (!Array.isArray(r.inputs)) bad('ranker.inputs', 'a list', r.inputs);
    (r.inputs as unknown[]).forEach((inp, i) => {
      if (!isObject(inp) || typeof inp.name !== 'string' || !Array.isArray(inp.features))
        bad(`ranker.inputs[${i}]`, '{ name, features }', inp);
    });
  }
  const h = c.hnsw as Record<string, unknown> | null | undefined;
  if (h) str(h, 'file', 'hnsw.');
  const cm = c.content_model as Record<string, unknown> | null | undefined;
  if (cm) {
    str(cm, 'file', 'content_model.');
    str(cm, 'weights', 'content_model.');
  }
  if (c.metrics !== undefined && !isObject(c.metrics)) bad('metrics', 'an object', c.metrics);
}

export async function readConfig(dir: string): Promise<BundleConfig> {
  const raw = await readJson(dir, 'config.json');
  if (!isObject(raw)) throw new BundleIntegrityError(dir, 'config.json: expected an object');
  const config = raw as unknown as BundleConfig;
  if (config.kind !== BUNDLE_KIND)
    throw new BundleIntegrityError(
      dir,
      `config.json kind is ${JSON.stringify(config.kind)}, expected ${BUNDLE_KIND}`,
    );
  if (config.format !== FORMAT)
    throw new BundleIntegrityError(
      dir,
      `config.json format ${config.format} is not supported (expected ${FORMAT})`,
    );
  checkConfigTypes(dir, raw);
  return config;
}

/** A loaded bundle plus its cold-start content model, when the version has one. */
export type LoadedBundle = ModelBundle & {
  content?: ContentModel;
  /**
   * The manifest's SHA-256 of items.json and users.json (what loadBundle's `reuse` compares),
   * and of manifest.json itself, which names the version's whole content.
   */
  digests?: { items: string; users: string; manifest: string };
};

export interface LoadBundleOptions {
  /**
   * A loaded version (the one serving) whose catalog and user list this one may share: when
   * this version's manifest gives items.json (users.json) the same SHA-256, and the file
   * matches its manifest, the parsed lists and id maps are taken from it instead of being
   * parsed and built again. The usual new version (a retrained ranker or new embeddings over
   * the same catalog) then costs the serving process no catalog work: at 1M items that work
   * held the event loop for ~1.5 s in pieces of up to 265 ms, and twice the catalog's heap.
   * Nothing mutates a loaded catalog, so sharing it is safe.
   */
  reuse?: LoadedBundle;
  /** Abandons the load (rejects with the signal's reason) at its next step. */
  signal?: AbortSignal;
}

/** A loaded catalog's lists, as parsing its items.json gave them (loadBundle's `reuse`). */
function listsOf(items: ItemCatalog): CatalogLists {
  if (!items.categoryTable || !items.creatorTable)
    throw new Error('a reused catalog must come from loadBundle');
  return {
    ids: items.ids,
    titles: items.titles,
    categoryNames: items.categoryNames,
    categoryTable: items.categoryTable,
    creatorIds: items.creatorIds,
    creatorTable: items.creatorTable,
  };
}

/**
 * A version's manifest.json as digests, without checking any file: its own SHA-256 (which
 * names the whole version, since it lists every file's; the watcher compares it to tell a
 * version directory written again under the same number) and the SHA-256 it states for
 * items.json and users.json (what loadBundle's `reuse` compares). Null if unreadable.
 */
export async function manifestDigests(
  dir: string,
): Promise<{ manifest: string; items?: string; users?: string } | null> {
  try {
    const raw = await readFile(join(dir, 'manifest.json'));
    const m = JSON.parse(raw.toString('utf8')) as Partial<Manifest> | null;
    return {
      manifest: createHash('sha256').update(raw).digest('hex'),
      items: m?.files?.['items.json']?.sha256,
      users: m?.files?.['users.json']?.sha256,
    };
  } catch {
    return null;
  }
}

/**
 * Loads models/<name>/<version>/ after verifying every checksum. Rejects (never returns a
 * partial bundle) on any missing or corrupt file or inconsistent size.
 */
export async function loadBundle(dir: string, opts: LoadBundleOptions = {}): Promise<LoadedBundle> {
  dir = resolve(dir);
  // The manifest is verified below (every file against it); here it only says whether the
  // catalog and users are the ones `reuse` holds.
  const stated = opts.reuse?.digests ? await manifestDigests(dir) : null;
  const reuse = opts.reuse;
  const sameItems = !!stated?.items && stated.items === reuse?.digests?.items;
  const sameUsers = !!stated?.users && stated.users === reuse?.digests?.users;
  // items.json is parsed off the event loop where it is large (models/items-json.ts), beside
  // the checksums; nothing of it is used unless they all match (a version that fails them
  // rejects with their error, and the parse's outcome is dropped).
  const parsing: Promise<CatalogLists> = sameItems
    ? Promise.resolve(listsOf(reuse!.items))
    : readItemsJson(join(dir, 'items.json'));
  parsing.catch(() => undefined);
  const manifest = await verifyVersion(dir, opts.signal);
  opts.signal?.throwIfAborted();
  const c = await readConfig(dir);
  const d = c.dim;
  // Every file this version reads is one the manifest covers (and so was checked above):
  // a file left out of it would be served unchecked.
  const used: string[] = [...BUNDLE_FILES];
  if (c.hnsw) used.push(c.hnsw.file);
  if (c.ranker) used.push(c.ranker.file);
  if (c.content_model) used.push(c.content_model.file, c.content_model.weights);
  for (const f of used)
    if (!Object.hasOwn(manifest.files, f))
      throw new BundleIntegrityError(
        dir,
        `manifest.json does not cover ${f}, which this version uses (every file must be listed)`,
      );
  // A file that parses but is not a catalog is this version's fault, named as such.
  const lists = await parsing.catch((e: unknown) => {
    if (e instanceof ItemsFormatError) throw new BundleIntegrityError(dir, e.message);
    if (e instanceof SyntaxError)
      throw new BundleIntegrityError(dir, `items.json is not valid JSON: ${e.message}`);
    throw e;
  });
  const n = lists.ids.length;
  // The server listens while it loads: the id map gets turns of the event loop of its own
  // (models/loading.ts); the reads below yield anyway.
  await turn();
  const index = sameItems
    ? reuse!.items.index
    : await positionMap(lists.ids, undefined, (id, first, again) => {
        throw new BundleIntegrityError(
          dir,
          `items.json ids: item ${JSON.stringify(id)} is at rows ${first} and ${again} (ids must be unique)`,
        );
      });
  const categoryTable = lists.categoryTable;
  const items: ItemCatalog = withCategoryTable(
    {
      ids: lists.ids,
      index,
      titles: lists.titles,
      categoryNames: lists.categoryNames,
      creatorIds: lists.creatorIds,
      creatorTable: lists.creatorTable,
      createdAt: await readF64(dir, 'items_created_at.f64', true),
      quality: await readF32(dir, 'items_quality.f32', true),
      popularity: await readF32(dir, 'items_popularity.f32', true),
    },
    categoryTable,
  );
  const usersRaw = sameUsers ? reuse!.userIds : await readJson(dir, 'users.json');
  if (!Array.isArray(usersRaw))
    throw new BundleIntegrityError(dir, 'users.json: expected a list of user ids');
  for (let i = 0; i < usersRaw.length; i++)
    if (typeof usersRaw[i] !== 'string')
      throw new BundleIntegrityError(
        dir,
        `users.json[${i}]: expected a string user id, got ${JSON.stringify(usersRaw[i]) ?? String(usersRaw[i])}`,
      );
  const userIds = usersRaw as string[];
  const itemEmbeddings = await readF32(dir, 'item_embeddings.f32', true);
  const userEmbeddings = await readF32(dir, 'user_embeddings.f32');
  const coldUserEmbedding = await readF32(dir, 'cold_user.f32');
  const check = (what: string, got: number, want: number): void => {
    if (got !== want)
      throw new BundleIntegrityError(dir, `${what}: ${got} values, expected ${want}`);
  };
  check('item_embeddings.f32', itemEmbeddings.length, n * d);
  check('user_embeddings.f32', userEmbeddings.length, userIds.length * d);
  check('cold_user.f32', coldUserEmbedding.length, d);
  check('items_created_at.f64', items.createdAt.length, n);
  check('items_quality.f32', items.quality.length, n);
  check('items_popularity.f32', items.popularity.length, n);
  check('items.json titles', items.titles.length, n);
  check('items.json categories', categoryTable.offsets.length - 1, n);
  check('items.json creator_ids', items.creatorIds.length, n);
  if (c.num_items !== n)
    throw new BundleIntegrityError(dir, `config num_items ${c.num_items} != ${n} items`);
  if (c.num_users !== userIds.length)
    throw new BundleIntegrityError(
      dir,
      `config num_users ${c.num_users} != ${userIds.length} users in users.json`,
    );
  await turn();
  checkItemValues(dir, items);
  if (c.hnsw && !HNSW_CONFIG_METRICS.includes(c.hnsw.metric))
    throw new BundleIntegrityError(
      dir,
      `config hnsw.metric ${JSON.stringify(c.hnsw.metric)} is not one of ${HNSW_CONFIG_METRICS.join(', ')}`,
    );
  const bundle: LoadedBundle = {
    name: c.name,
    version: c.version,
    dir,
    dim: d,
    items,
    itemEmbeddings,
    userIds,
    userIndex: sameUsers
      ? reuse!.userIndex
      : await positionMap(userIds, undefined, (id, first, again) => {
          throw new BundleIntegrityError(
            dir,
            `users.json: user ${JSON.stringify(id)} is at rows ${first} and ${again} (ids must be unique)`,
          );
        }),
    userEmbeddings,
    coldUserEmbedding,
    hnswPath: c.hnsw ? join(dir, c.hnsw.file) : '',
    hnswMetric: c.hnsw?.metric ?? 'inner_product',
    ranker: c.ranker
      ? {
          path: join(dir, c.ranker.file),
          inputs: c.ranker.inputs,
          output: c.ranker.output,
          outputKind: c.ranker.output_kind,
        }
      : { path: '', inputs: [], output: '', outputKind: 'logit' },
    metrics: c.metrics,
    digests: {
      items: manifest.files['items.json']!.sha256,
      users: manifest.files['users.json']!.sha256,
      manifest: manifest.digest,
    },
  };
  if (c.content_model) {
    const cm = (await readJson(dir, c.content_model.file)) as {
      dim: number;
      features: string[];
    };
    if (!isObject(cm) || !Array.isArray(cm.features))
      throw new BundleIntegrityError(dir, `${c.content_model.file} features: expected a list`);
    const weights = await readF32(dir, c.content_model.weights);
    check(c.content_model.weights, weights.length, cm.features.length * d);
    bundle.content = { dim: cm.dim, features: cm.features, weights };
  }
  return bundle;
}

/** The files every version has (config.json names the optional ones). */
const BUNDLE_FILES = [
  'config.json',
  'items.json',
  'items_created_at.f64',
  'items_quality.f32',
  'items_popularity.f32',
  'item_embeddings.f32',
  'users.json',
  'user_embeddings.f32',
  'cold_user.f32',
] as const;

/**
 * The per-item values are what the layout says: quality in [0, 1], popularity finite,
 * created_at finite or NaN (unknown). A NaN quality scored `null`, 1e30 outranked
 * everything, an infinite created_at poisoned recency. One pass over each array.
 */
function checkItemValues(dir: string, items: ItemCatalog): void {
  const refuse = (file: string, r: number, v: number, rule: string): never => {
    throw new BundleIntegrityError(
      dir,
      `${file} row ${r} (item ${JSON.stringify(items.ids[r])}): ${v}; ${rule}`,
    );
  };
  const { quality, popularity, createdAt } = items;
  for (let r = 0; r < quality.length; r++) {
    const q = quality[r]!;
    if (!(q >= 0 && q <= 1)) refuse('items_quality.f32', r, q, 'quality must be in [0, 1]');
  }
  for (let r = 0; r < popularity.length; r++)
    if (!Number.isFinite(popularity[r]!))
      refuse('items_popularity.f32', r, popularity[r]!, 'popularity must be finite');
  for (let r = 0; r < createdAt.length; r++) {
    const t = createdAt[r]!;
    if (t === Infinity || t === -Infinity)
      refuse('items_created_at.f64', r, t, 'created_at must be finite ms, or NaN for unknown');
  }
}

/** Loads the newest complete version of `name` in the repository. */
export async function loadLatest(
  repoDir: string,
  name = DEFAULT_BUNDLE_NAME,
): Promise<LoadedBundle> {
  const v = latestVersion(repoDir, name);
  if (v === undefined)
    throw new Error(`no versions of '${name}' in ${resolve(repoDir)}; run \`recserve build-demo\``);
  return loadBundle(join(repoDir, name, String(v)));
}

/** Removes abandoned temporary directories (from crashed writers) older than `ageMs`. */
export async function cleanTemp(repoDir: string, name: string, ageMs = 3600_000): Promise<number> {
  const base = join(repoDir, name);
  if (!existsSync(base)) return 0;
  let n = 0;
  for (const e of await readdir(base)) {
    if (!e.startsWith('.tmp-')) continue;
    const p = join(base, e);
    if (Date.now() - (await stat(p)).mtimeMs > ageMs) {
      await rm(p, { recursive: true, force: true });
      n++;
    }
  }
  return n;
}
