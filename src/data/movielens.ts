// MovieLens adapter (ml-latest-small layout: ratings.csv + movies.csv). Genres become
// categories; the release year in the title becomes created_at (1 January of that year);
// ratings stay explicit (event 'rating') and training/weights turns them into confidence.
// The project ships no MovieLens data: callers pass the directory, tests skip without it.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadInteractions, loadItems, type InteractionStats, type ItemStats } from './loaders.js';
import type { InteractionLog } from './types.js';
import type { ItemCatalog } from '../models/bundle.js';

/** Where the shared ml-latest-small copy lives relative to the project root. */
export function defaultMovieLensDir(projectRoot: string): string {
  return resolve(projectRoot, '..', 'shared', 'datasets', 'ml-latest-small');
}

export function hasMovieLens(dir: string): boolean {
  return existsSync(join(dir, 'ratings.csv')) && existsSync(join(dir, 'movies.csv'));
}

/** "Toy Story (1995)" → 1995; undefined when the title carries no year. */
export function yearFromTitle(title: string): number | undefined {
  const m = /\((\d{4})(?:[-–]\d{0,4})?\)\s*$/.exec(title.trim());
  return m ? Number(m[1]) : undefined;
}

export interface MovieLens {
  log: InteractionLog;
  items: ItemCatalog;
  stats: InteractionStats;
  itemStats: ItemStats;
}

export async function loadMovieLens(dir: string): Promise<MovieLens> {
  if (!hasMovieLens(dir))
    throw new Error(`MovieLens data not found in ${dir} (need ratings.csv and movies.csv)`);
  const { catalog, stats: itemStats } = await loadItems(join(dir, 'movies.csv'), {
    categorySeparator: /\|/,
  });
  for (let r = 0; r < catalog.size; r++) {
    const y = yearFromTitle(catalog.titles[r]);
    if (y !== undefined) catalog.setCreatedAt(r, Date.UTC(y, 0, 1));
  }
  const { log, items, stats } = await loadInteractions(join(dir, 'ratings.csv'), { catalog });
  return { log, items, stats, itemStats };
}
