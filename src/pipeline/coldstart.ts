// Cold start (the seed's ColdStartHandler.get_cold_start_recommendations): for users with
// too few interactions, a mix of popular (30%), trending (20%), diverse-category (30%) and
// exploration (20%) items, lightly ranked by 0.4·popularity + 0.3·quality + 0.3·freshness,
// then spread across categories by the same caps as warm lists.
import type { FeatureStore } from '../features/store.js';
import type { ServingModel } from '../models/registry.js';
import { passes, type ItemFilter } from './candidates/sources.js';
import { primaryCategoryOf } from './ranking/shared-bundle.js';

export type ColdSource = 'popular' | 'trending' | 'popular_in_category' | 'exploration';

export interface ColdPick {
  row: number;
  score: number;
  source: ColdSource;
}

const FRESHNESS_TAU_HOURS = 168;

export async function coldStartPicks(
  m: ServingModel,
  store: Pick<FeatureStore, 'trending'>,
  n: number,
  exclude: Set<number>,
  filter: ItemFilter,
  nowMs: number,
  rng: () => number,
  caps: { maxPerCategory: number },
): Promise<{ picks: ColdPick[]; sources: Record<string, number> }> {
  const { items } = m.bundle;
  const numItems = items.ids.length;
  const taken = new Set<number>();
  const pool: ColdPick[] = [];
  const sources: Record<string, number> = {};
  const ok = (row: number) => !taken.has(row) && !exclude.has(row) && passes(m, row, filter);
  const take = (row: number, source: ColdSource) => {
    taken.add(row);
    pool.push({ row, score: 0, source });
    sources[source] = (sources[source] ?? 0) + 1;
  };
  const quota = (share: number) => Math.max(1, Math.ceil(n * share));

  // Popular (30%).
  let want = quota(0.3);
  for (let i = 0; i < m.popular.length && want > 0; i++) {
    if (ok(m.popular[i]!)) {
      take(m.popular[i]!, 'popular');
      want--;
    }
  }
  // Trending (20%): the store's live counters.
  want = quota(0.2);
  for (const t of await store.trending('24h', quota(0.2) * 3, nowMs)) {
    if (want <= 0) break;
    const row = items.index.get(t.itemId);
    if (row !== undefined && ok(row)) {
      take(row, 'trending');
      want--;
    }
  }
  // Diverse categories (30%): the most popular remaining item of each category in turn.
  want = quota(0.3);
  const nc = m.popularByCategory.length;
  const cursor = new Int32Array(nc);
  let progressed = true;
  while (want > 0 && progressed) {
    progressed = false;
    for (let c = 0; c < nc && want > 0; c++) {
      const list = m.popularByCategory[c]!;
      while (cursor[c]! < list.length) {
        const row = list[cursor[c]!++]!;
        if (ok(row)) {
          take(row, 'popular_in_category');
          want--;
          progressed = true;
          break;
        }
      }
    }
  }
  // Exploration (20%): random items outside the head of the popularity list.
  want = quota(0.2);
  for (let tries = 0; want > 0 && tries < want * 20; tries++) {
    const row = Math.floor(rng() * numItems);
    if (ok(row)) {
      take(row, 'exploration');
      want--;
    }
  }
  // Backfill from the popularity list when filters or exclusions left the mix short.
  for (let i = 0; i < m.popular.length && pool.length < n; i++) {
    if (ok(m.popular[i]!)) take(m.popular[i]!, 'popular');
  }

  const logMax = Math.log1p(m.maxPopularity) || 1;
  for (const p of pool) {
    const ageH = Math.max(0, (nowMs - items.createdAt[p.row]!) / 3_600_000);
    p.score =
      0.4 * (Math.log1p(items.popularity[p.row]!) / logMax) +
      0.3 * items.quality[p.row]! +
      0.3 * Math.exp(-ageH / FRESHNESS_TAU_HOURS);
  }
  pool.sort((a, b) => b.score - a.score);
  // Category caps with the seed's backfill.
  const counts = new Map<number, number>();
  const picks: ColdPick[] = [];
  const overflow: ColdPick[] = [];
  for (const p of pool) {
    const cat = primaryCategoryOf(m.items, p.row);
    if ((counts.get(cat) ?? 0) < caps.maxPerCategory) {
      counts.set(cat, (counts.get(cat) ?? 0) + 1);
      picks.push(p);
    } else overflow.push(p);
    if (picks.length >= n) break;
  }
  while (picks.length < n && overflow.length > 0) picks.push(overflow.shift()!);
  return { picks: picks.slice(0, n), sources };
}
