// A seeded synthetic interaction generator with enough structure for models to learn:
// items belong to latent taste clusters (which also drive their categories, creators and
// title words), popularity is Zipf-distributed, users prefer one or two clusters, and
// events arrive in sessions on a preferred device, with event types (view < click < like
// < share < purchase, plus skip) that depend on whether an item matches the user's taste.
// Same options + seed → byte-identical output. Everything lives in typed arrays, so 1M
// items and 10M events fit in a few hundred MB.
import type { ItemCatalog } from '../models/bundle.js';
import { CatalogBuilder, LogBuilder, eventCode, setPopularity } from './log.js';
import type { InteractionLog } from './types.js';

export interface SyntheticOptions {
  users?: number;
  items?: number;
  events?: number;
  seed?: number;
  /** Latent taste clusters (default: items/400 clamped to 8..64). */
  clusters?: number;
  categories?: number;
  /** Zipf exponent of item popularity (default 0.9). */
  zipf?: number;
  /** Days of history (default 90); the last event is at `end`. */
  days?: number;
  /** ms since epoch of the end of the history (default 2026-01-01T00:00:00Z). */
  end?: number;
}

export interface SyntheticData {
  log: InteractionLog;
  items: ItemCatalog;
  /** Ground truth, for tests: cluster of each item row and each user's preferred cluster. */
  itemCluster: Int32Array;
  userCluster: Int32Array;
}

/** mulberry32: a tiny, fast 32-bit PRNG; good enough for data generation, not for crypto. */
export function rng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = [
  'amber',
  'blaze',
  'cedar',
  'delta',
  'ember',
  'fable',
  'glint',
  'haven',
  'iris',
  'jade',
  'kite',
  'lumen',
  'maple',
  'nova',
  'onyx',
  'pulse',
  'quill',
  'raven',
  'sable',
  'tide',
  'umbra',
  'vale',
  'willow',
  'xenon',
  'yarrow',
  'zephyr',
  'atlas',
  'bloom',
  'coral',
  'dune',
  'echo',
  'flint',
  'grove',
  'harbor',
  'ivory',
  'jolt',
  'karma',
  'lotus',
  'mirth',
  'nectar',
];
const GENERIC = ['story', 'show', 'guide', 'mix', 'live', 'review', 'episode', 'special'];
const CATEGORY_NAMES = [
  'action',
  'comedy',
  'drama',
  'documentary',
  'music',
  'sports',
  'news',
  'kids',
  'gaming',
  'cooking',
  'travel',
  'science',
  'tech',
  'fashion',
  'fitness',
  'history',
  'art',
  'nature',
  'finance',
  'horror',
  'romance',
  'thriller',
  'animation',
  'education',
];
const DAY = 86_400_000;

// Event type probabilities (view, click, like, share, purchase, skip) for an item that
// matches the user's taste and for one that does not.
const P_MATCH = [0.5, 0.25, 0.11, 0.03, 0.08, 0.03];
const P_OTHER = [0.62, 0.18, 0.04, 0.01, 0.02, 0.13];
const EVENT_ORDER = ['view', 'click', 'like', 'share', 'purchase', 'skip'].map(eventCode);

function cdf(p: number[]): Float64Array {
  const c = new Float64Array(p.length);
  let s = 0;
  for (let i = 0; i < p.length; i++) c[i] = s += p[i];
  for (let i = 0; i < p.length; i++) c[i] /= s;
  return c;
}

/** First index with c[i] >= x, within [lo, hi). */
function search(c: Float64Array, x: number, lo: number, hi: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (c[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function generateSynthetic(opts: SyntheticOptions = {}): SyntheticData {
  const numUsers = opts.users ?? 5000;
  const numItems = opts.items ?? 20000;
  const numEvents = opts.events ?? 300000;
  const seed = opts.seed ?? 42;
  const K = opts.clusters ?? Math.max(8, Math.min(64, Math.round(numItems / 400)));
  const numCats = Math.min(opts.categories ?? 24, CATEGORY_NAMES.length * 4);
  const s = opts.zipf ?? 0.9;
  const days = opts.days ?? 90;
  const end = opts.end ?? Date.UTC(2026, 0, 1);
  const start = end - days * DAY;
  for (const [k, v] of Object.entries({
    users: numUsers,
    items: numItems,
    events: numEvents,
    clusters: K,
  }))
    if (!Number.isInteger(v) || v < 1)
      throw new RangeError(`synthetic option '${k}' must be a positive integer: ${v}`);
  const rand = rng(seed);
  const randInt = (n: number): number => Math.floor(rand() * n);

  const catName = (c: number): string =>
    c < CATEGORY_NAMES.length
      ? CATEGORY_NAMES[c]
      : `${CATEGORY_NAMES[c % CATEGORY_NAMES.length]}-${Math.floor(c / CATEGORY_NAMES.length)}`;
  // Each cluster: three favourite categories, a pool of creators and four title words.
  const clusterCats: number[][] = [];
  const clusterWords: string[][] = [];
  for (let k = 0; k < K; k++) {
    clusterCats.push([randInt(numCats), randInt(numCats), randInt(numCats)]);
    clusterWords.push([0, 1, 2, 3].map(() => WORDS[randInt(WORDS.length)]));
  }
  const creatorsPerCluster = Math.max(2, Math.round(numItems / 25 / K));

  // Popularity: a random permutation of Zipf ranks.
  const rank = new Int32Array(numItems);
  for (let i = 0; i < numItems; i++) rank[i] = i;
  for (let i = numItems - 1; i > 0; i--) {
    const j = randInt(i + 1);
    const t = rank[i];
    rank[i] = rank[j];
    rank[j] = t;
  }
  const itemCluster = new Int32Array(numItems);
  const cat = new CatalogBuilder();
  for (let i = 0; i < numItems; i++) {
    const k = randInt(K);
    itemCluster[i] = k;
    const cats = [catName(rand() < 0.85 ? clusterCats[k][randInt(3)] : randInt(numCats))];
    if (rand() < 0.4)
      cats.push(catName(rand() < 0.7 ? clusterCats[k][randInt(3)] : randInt(numCats)));
    const words = clusterWords[k];
    const title = `${words[randInt(4)]} ${words[randInt(4)]} ${GENERIC[randInt(GENERIC.length)]} ${i}`;
    const creator = `creator_${k}_${randInt(creatorsPerCluster)}`;
    // Most items predate the window; ~5% are fresh (last 14 days) and start cold.
    const createdAt = rand() < 0.05 ? end - rand() * 14 * DAY : start - rand() * 365 * DAY;
    const quality = Math.round(((rand() + rand() + rand()) / 3) * 1000) / 1000;
    cat.add(`i${i}`, title, cats, creator, Math.round(createdAt), quality);
  }
  const items = cat.finish();

  // Per-cluster item lists with cumulative Zipf weights (fresh items start with a small
  // share so the popularity head is made of established items).
  const byCluster: Int32Array[] = [];
  const clusterCdf: Float64Array[] = [];
  {
    const counts = new Int32Array(K);
    for (let i = 0; i < numItems; i++) counts[itemCluster[i]]++;
    for (let k = 0; k < K; k++) byCluster.push(new Int32Array(counts[k]));
    const fill = new Int32Array(K);
    for (let i = 0; i < numItems; i++) byCluster[itemCluster[i]][fill[itemCluster[i]]++] = i;
    for (let k = 0; k < K; k++) {
      const list = byCluster[k];
      const c = new Float64Array(list.length);
      let acc = 0;
      for (let j = 0; j < list.length; j++) c[j] = acc += Math.pow(rank[list[j]] + 1, -s);
      for (let j = 0; j < list.length; j++) c[j] /= acc;
      clusterCdf.push(c);
    }
  }
  const globalCdf = new Float64Array(numItems);
  const globalOrder = new Int32Array(numItems);
  {
    let acc = 0;
    for (let i = 0; i < numItems; i++) globalOrder[rank[i]] = i;
    for (let r = 0; r < numItems; r++) globalCdf[r] = acc += Math.pow(r + 1, -s);
    for (let r = 0; r < numItems; r++) globalCdf[r] /= acc;
  }
  const pickIn = (k: number): number => {
    const c = clusterCdf[k];
    if (c.length === 0) return globalOrder[search(globalCdf, rand(), 0, numItems)];
    return byCluster[k][Math.min(c.length - 1, search(c, rand(), 0, c.length))];
  };

  // Users: a primary and a secondary cluster, an activity level (log-normal) and a device.
  const userCluster = new Int32Array(numUsers);
  const userSecond = new Int32Array(numUsers);
  const userDevice = new Uint8Array(numUsers);
  const activity = new Float64Array(numUsers);
  const deviceCdf = cdf([0.55, 0.3, 0.1, 0.05]);
  let actSum = 0;
  for (let u = 0; u < numUsers; u++) {
    userCluster[u] = randInt(K);
    userSecond[u] = randInt(K);
    userDevice[u] = search(deviceCdf, rand(), 0, 4);
    // Box-Muller normal for a log-normal activity level.
    const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
    activity[u] = Math.exp(0.8 * z);
    actSum += activity[u];
  }
  // Events per user: at least 3, the rest proportional to activity (largest remainders).
  const perUser = new Int32Array(numUsers);
  {
    const base = Math.min(3, Math.floor(numEvents / numUsers));
    let left = numEvents - base * numUsers;
    const share = left;
    for (let u = 0; u < numUsers; u++) {
      const n = Math.floor((activity[u] / actSum) * share);
      perUser[u] = base + n;
      left -= n;
    }
    for (let u = 0; left > 0; u = (u + 1) % numUsers, left--) perUser[u]++;
  }

  const pMatch = cdf(P_MATCH);
  const pOther = cdf(P_OTHER);
  const log = new LogBuilder(numEvents);
  for (let u = 0; u < numUsers; u++) log.userRow(`u${u}`);
  let sessionId = 0;
  for (let u = 0; u < numUsers; u++) {
    let n = perUser[u];
    // Session start times, sorted, inside the window.
    const sessions: { t: number; len: number }[] = [];
    while (n > 0) {
      const len = Math.min(n, 1 + Math.floor(-Math.log(1 - rand()) * 5));
      sessions.push({ t: start + rand() * (days * DAY - 3 * 3600_000), len });
      n -= len;
    }
    sessions.sort((a, b) => a.t - b.t);
    // Sessions may not overlap: a session starts after the previous one ended.
    let lastT = -Infinity;
    for (const sess of sessions) {
      let t = Math.max(sess.t, lastT + 600_000);
      const device = rand() < 0.8 ? userDevice[u] : randInt(4);
      // A session leans towards one cluster: mostly the primary taste.
      const r0 = rand();
      const sessCluster = r0 < 0.65 ? userCluster[u] : r0 < 0.9 ? userSecond[u] : randInt(K);
      for (let e = 0; e < sess.len; e++) {
        t += 30_000 + rand() * 270_000;
        const r = rand();
        let item: number;
        if (r < 0.75) item = pickIn(sessCluster);
        else if (r < 0.85) item = pickIn(userCluster[u]);
        else item = globalOrder[search(globalCdf, rand(), 0, numItems)];
        // Nobody interacts with an item before it exists: redraw a few times, then fall
        // back to the globally most popular (established) item.
        for (let tries = 0; items.createdAt[item] > t && tries < 4; tries++)
          item = pickIn(sessCluster);
        if (items.createdAt[item] > t) item = globalOrder[0];
        const match = itemCluster[item] === userCluster[u] || itemCluster[item] === userSecond[u];
        const ev = EVENT_ORDER[search(match ? pMatch : pOther, rand(), 0, 6)];
        const duration = Math.round((match ? 40 : 15) + rand() * 120 * items.quality[item]);
        log.push(u, item, Math.round(t), ev, NaN, NaN, device, duration, sessionId);
        lastT = t;
      }
      sessionId++;
    }
  }
  const out = log.finish();
  setPopularity(items, out);
  return { log: out, items, itemCluster, userCluster };
}
