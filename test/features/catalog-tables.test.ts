// The catalog's flat tables (models/bundle.ts): categories as offsets + data, creators as
// numbers. Serving code reads only the tables; the per-item arrays older code indexes are
// made from them on first read, and the two forms always agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildCategoryTable,
  buildCreatorTable,
  categoryTableOf,
  creatorTableOf,
  withCategoryTable,
  withCreatorTable,
} from '../../src/models/bundle.js';
import { categoryNamesOf, primaryCategoryOf } from '../../src/pipeline/ranking/shared-bundle.js';

const lists = [Uint16Array.of(2, 0), new Uint16Array(0), Uint16Array.of(1)];

test('buildCategoryTable lays item r at data[offsets[r]..offsets[r+1])', () => {
  const t = buildCategoryTable(lists);
  assert.deepEqual([...t.offsets], [0, 2, 2, 3]);
  assert.deepEqual([...t.data], [2, 0, 1]);
  const s = buildCategoryTable(lists, true);
  assert.ok(s.offsets.buffer instanceof SharedArrayBuffer);
  assert.ok(s.data.buffer instanceof SharedArrayBuffer);
  assert.deepEqual([...s.data], [2, 0, 1]);
  // No categories at all still gives a valid (empty) table.
  assert.deepEqual([...buildCategoryTable([new Uint16Array(0)], true).offsets], [0, 0]);
});

test('withCategoryTable makes the per-item arrays only when read, as views of the table', () => {
  const t = buildCategoryTable(lists);
  const items = withCategoryTable({ categoryNames: ['a', 'b', 'c'] }, t);
  assert.equal(items.categoryTable, t);
  const cats = items.categories;
  assert.deepEqual(
    cats.map((c) => [...c]),
    [[2, 0], [], [1]],
  );
  assert.equal(items.categories, cats, 'made once');
  assert.equal(cats[0]!.buffer, t.data.buffer, 'views, not copies');
  // Replacing the arrays replaces the table too: the two forms never disagree.
  items.categories = [Uint16Array.of(1), Uint16Array.of(0, 1)];
  assert.deepEqual([...items.categoryTable.offsets], [0, 1, 3]);
  assert.deepEqual([...categoryTableOf(items).data], [1, 0, 1]);
});

test('categoryTableOf builds a table for a plain catalog once and reuses it', () => {
  const items = { categories: lists };
  const a = categoryTableOf(items);
  assert.equal(categoryTableOf(items), a);
  assert.deepEqual([...a.data], [2, 0, 1]);
});

test('creator tables number distinct creators and keep "" as none', () => {
  const ids = ['bob', '', 'al', 'bob'];
  const t = buildCreatorTable(ids, true);
  assert.ok(t.of.buffer instanceof SharedArrayBuffer);
  assert.deepEqual([...t.of], [0, -1, 1, 0]);
  assert.deepEqual(t.names, ['bob', 'al']);
  const items = withCreatorTable({}, t);
  assert.deepEqual(items.creatorIds, ids);
  items.creatorIds = ['x', 'x'];
  assert.deepEqual([...creatorTableOf(items).of], [0, 0]);
  const plain = { creatorIds: ids };
  assert.equal(creatorTableOf(plain), creatorTableOf(plain));
});

test('primaryCategoryOf and categoryNamesOf read the shared table', () => {
  const t = buildCategoryTable(lists);
  const s = { catOffsets: t.offsets, catData: t.data, categoryNames: ['a', 'b', 'c'] };
  assert.equal(primaryCategoryOf(s, 0), 2);
  assert.equal(primaryCategoryOf(s, 1), -1);
  assert.deepEqual(categoryNamesOf(s, 0), ['c', 'a']);
  assert.deepEqual(categoryNamesOf(s, 1), []);
});
