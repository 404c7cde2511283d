// HNSW search with exclusions and an allow list, applied inside the search: the walk
// passes through filtered items but never returns them, and a query with few admissible
// items scores them all (filterMode 'scan', exact). Checked against the brute-force
// reference on fresh data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HnswIndex, type HnswSearchOptions } from '../../src/retrieval/hnsw.js';
import type { TopK } from '../../src/retrieval/native.js';
import { Rng } from '../../bench/lib/rng.js';
import { clustered, nearRows } from '../../bench/lib/data.js';
import { NO_ID, RefIndex, absDot, assertMatches, distinctIds } from './reference.js';

const K = 10;

/** Float32 rounding bound of one returned score (float64 reference). */
function tolerance(ref: RefIndex, queries: Float32Array) {
  return (q: number, id: number) =>
    1e-5 * (1 + absDot(ref.rows.get(id)!, 0, queries, q * ref.dim, ref.dim));
}

/** Share of the reference's top-k (after the same filters) that `got` returned. */
function recall(
  ref: RefIndex,
  queries: Float32Array,
  got: TopK,
  opts: { exclude?: (Uint32Array | null)[]; allow?: Uint32Array | null },
): number {
  const nq = queries.length / ref.dim;
  let hit = 0;
  let want = 0;
  for (let q = 0; q < nq; q++) {
    const truth = ref.ranked(queries, q, opts.exclude?.[q], opts.allow).slice(0, got.k);
    const ids = new Set(got.ids.subarray(q * got.k, (q + 1) * got.k));
    for (const h of truth) hit += ids.has(h.id) ? 1 : 0;
    want += truth.length;
  }
  return want === 0 ? 1 : hit / want;
}

/** Every returned id is admissible, distinct, scored truly, sorted; padding only at the end. */
function assertAdmissible(
  ref: RefIndex,
  queries: Float32Array,
  got: TopK,
  opts: { exclude?: (Uint32Array | null)[]; allow?: Uint32Array | null },
  label: string,
): void {
  const nq = queries.length / ref.dim;
  const allow = opts.allow ? new Set(opts.allow) : null;
  const tol = tolerance(ref, queries);
  for (let q = 0; q < nq; q++) {
    const ex = new Set(opts.exclude?.[q] ?? []);
    const seen = new Set<number>();
    let padded = false;
    for (let i = 0; i < got.k; i++) {
      const id = got.ids[q * got.k + i]!;
      const s = got.scores[q * got.k + i]!;
      const at = `${label} q=${q} i=${i}`;
      if (id === NO_ID) {
        assert.equal(s, -Infinity, `${at}: padding score`);
        padded = true;
        continue;
      }
      assert.ok(!padded, `${at}: id ${id} after padding`);
      assert.ok(!ex.has(id), `${at}: excluded id ${id} returned`);
      assert.ok(!allow || allow.has(id), `${at}: id ${id} is not allowed`);
      assert.ok(!seen.has(id), `${at}: id ${id} twice`);
      seen.add(id);
      const v = ref.rows.get(id);
      assert.ok(v, `${at}: id ${id} is not in the index`);
      let t = 0;
      for (let j = 0; j < ref.dim; j++) t += v[j]! * queries[q * ref.dim + j]!;
      assert.ok(Math.abs(t - s) <= tol(q, id), `${at}: score ${s} vs true ${t}`);
      if (i > 0) assert.ok(s <= got.scores[q * got.k + i - 1]!, `${at}: not sorted`);
    }
  }
}

function shuffled(rng: Rng, a: Uint32Array): Uint32Array {
  const out = Uint32Array.from(a);
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

test('HNSW filters: scans are exact, walks return only admissible ids and keep their recall', async () => {
  const rng = new Rng(41);
  const n = 20_000;
  const d = 32;
  const vecs = clustered(rng, n, d, 50);
  const ids = Uint32Array.from({ length: n }, (_, i) => 3 * i + 7); // compact: table lookups
  const hnsw = await HnswIndex.build(ids, vecs, d);
  const ref = new RefIndex(d);
  ref.set(ids, vecs);
  const nq = 40;
  const queries = nearRows(rng, vecs, d, nq, 0.3);
  const tol = tolerance(ref, queries);
  const plain = await hnsw.search(queries, K);
  const plainRecall = recall(ref, queries, plain, {});

  // "Already seen": each query's own top 5 plus 30 random ids, unsorted; a few queries
  // without a list.
  const exclude = Array.from({ length: nq }, (_, q) =>
    q % 7 === 3
      ? null
      : shuffled(
          rng,
          Uint32Array.from([
            ...plain.ids.subarray(q * K, q * K + 5),
            ...Array.from({ length: 30 }, () => ids[rng.int(n)]!),
          ]),
        ),
  );
  // A random 30% (given unsorted, with repeats and ids the index does not hold) and a
  // region of the space (the 10% of items furthest along one direction), where a walk
  // from outside must cross unadmitted items.
  const random = shuffled(
    rng,
    Uint32Array.from([
      ...ids.filter(() => rng.next() < 0.3),
      ...ids.subarray(0, 50),
      1,
      2,
      0xfffffffe,
    ]),
  );
  const dir = Float32Array.from({ length: d }, () => rng.normal());
  const along = Array.from(ids, (id, i) => {
    let s = 0;
    for (let j = 0; j < d; j++) s += vecs[i * d + j]! * dir[j]!;
    return { id, s };
  }).sort((a, b) => b.s - a.s);
  const region = Uint32Array.from(along.slice(0, n / 10).map((x) => x.id));
  const tiny = Uint32Array.from(along.slice(0, n / 100).map((x) => x.id));

  const cases: [string, HnswSearchOptions][] = [
    ['exclude', { exclude }],
    ['random 30%', { allow: random }],
    ['random 30% + exclude', { allow: random, exclude }],
    ['region 10%', { allow: region }],
    ['region 1% + exclude', { allow: tiny, exclude }],
  ];
  for (const [name, opts] of cases) {
    const filters = { exclude: opts.exclude, allow: opts.allow };
    // The scan is exact: the reference's top-k after the same filters.
    const scan = await hnsw.search(queries, K, { ...opts, filterMode: 'scan' });
    assertMatches(ref, queries, K, scan, tol, filters, `${name} scan`);
    // The walk returns only admissible ids, each with its true score.
    const walk = await hnsw.search(queries, K, { ...opts, filterMode: 'graph' });
    assertAdmissible(ref, queries, walk, filters, `${name} graph`);
    const r = recall(ref, queries, walk, filters);
    if (name === 'exclude') {
      // Exclusions the size of a user's history cost a walk next to nothing.
      assert.ok(r >= plainRecall - 0.03, `exclude: walk recall ${r} vs unfiltered ${plainRecall}`);
    } else if (name.startsWith('random')) {
      assert.ok(r >= 0.95, `${name}: walk recall ${r}`);
    }
    // auto takes one of the two paths per query: the scan where the admissible items are
    // few (the 1% and 10% lists here), the walk for a history-sized exclusion list.
    const auto = await hnsw.search(queries, K, opts);
    for (let q = 0; q < nq; q++) {
      const row = (t: TopK) => [...t.ids.subarray(q * K, (q + 1) * K)];
      const path = name.startsWith('region') ? scan : name === 'exclude' ? walk : null;
      if (path) assert.deepEqual(row(auto), row(path), `${name}: auto, q=${q}`);
      else assert.ok([row(scan), row(walk)].some((r) => r.join() === row(auto).join()));
    }
    // Single queries give the batch's answers.
    const one = await hnsw.search(queries.subarray(d, 2 * d), K, {
      ...opts,
      exclude: opts.exclude && [opts.exclude[1]!],
    });
    assert.deepEqual(one.ids, auto.ids.subarray(K, 2 * K), `${name}: single query`);
  }
  // The unfiltered search is unchanged by all this.
  assert.deepEqual((await hnsw.search(queries, K)).ids, plain.ids);
});

test('HNSW filters: few admissible items, empty lists, unknown ids, impl faiss, bad arguments', async () => {
  const rng = new Rng(42);
  const d = 8;
  const n = 3000;
  const ids = distinctIds(rng, n); // spread over 2^32: the hash-map lookup
  const vecs = clustered(rng, n, d, 10);
  const hnsw = await HnswIndex.build(ids, vecs, d, { M: 16 });
  const ref = new RefIndex(d);
  ref.set(ids, vecs);
  const q = nearRows(rng, vecs, d, 3, 0.2);
  const tol = tolerance(ref, q);
  const three = Uint32Array.of(ids[5]!, ids[600]!, ids[2999]!);
  for (const filterMode of ['auto', 'graph', 'scan'] as const) {
    // Fewer admissible items than k: all of them, then padding. A walk whose beam never
    // fills crosses the whole graph, and every node is reachable (Reconnect), so it finds
    // them all too.
    const few = await hnsw.search(q, K, { allow: three, filterMode });
    assertMatches(ref, q, K, few, tol, { allow: three }, `three ${filterMode}`);
    // An empty allow list, or one of unknown ids, admits nothing.
    for (const allow of [new Uint32Array(0), Uint32Array.of(0xfffffffe - 1)]) {
      const none = await hnsw.search(q, 4, { allow, filterMode });
      assert.ok(none.ids.every((id) => id === NO_ID));
      assert.ok(none.scores.every((s) => s === -Infinity));
    }
    // Allowed but excluded is not returned.
    const ex = [three.subarray(0, 1), null, three];
    const r = await hnsw.search(q, K, { allow: three, exclude: ex, filterMode });
    assertMatches(ref, q, K, r, tol, { allow: three, exclude: ex }, `three-ex ${filterMode}`);
  }
  // FAISS's own search takes no filters here.
  await assert.rejects(hnsw.search(q, 2, { impl: 'faiss', allow: three }), {
    name: 'RangeError',
    message: /impl 'recserve'/,
  });
  const is = (name: string, re: RegExp) => (e: Error) => e.name === name && re.test(e.message);
  const bad = (opts: unknown) => hnsw.search(q, 2, opts as HnswSearchOptions);
  await assert.rejects(bad({ exclude: three }), is('TypeError', /exclude must be an array/));
  await assert.rejects(bad({ exclude: [null] }), is('RangeError', /exclude\.length \(1\)/));
  await assert.rejects(
    bad({ exclude: [null, new Float32Array(1), null] }),
    is('TypeError', /exclude\[1\] must be a Uint32Array/),
  );
  await assert.rejects(bad({ allow: [1, 2] }), is('TypeError', /allow must be a Uint32Array/));
  await assert.rejects(bad({ filterMode: 'fast' }), is('RangeError', /filterMode/));
  assert.throws(() => hnsw.searchSync(q, 2, { filterMode: 'fast' as 'auto' }), RangeError);

  // The id map survives save and load: filters give the same answers after it.
  const dir = mkdtempSync(join(tmpdir(), 'recserve-hnsw-filters-'));
  try {
    const path = join(dir, 'items.faiss');
    await hnsw.save(path);
    const loaded = await HnswIndex.load(path);
    const allow = ids.filter((_, i) => i % 4 === 1);
    const opts = { allow, exclude: [three, null, null], filterMode: 'scan' as const };
    assert.deepEqual((await loaded.search(q, K, opts)).ids, (await hnsw.search(q, K, opts)).ids);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('HNSW filters: ids that start compact and turn sparse keep their lookups', async () => {
  const rng = new Rng(43);
  const d = 8;
  const vecs = clustered(rng, 1500, d, 5);
  const small = Uint32Array.from({ length: 1000 }, (_, i) => i);
  const hnsw = await HnswIndex.build(small, vecs.subarray(0, 1000 * d), d, { M: 16 });
  // Ids far past the compact range move the lookups to the hash map mid-index.
  const far = Uint32Array.from({ length: 500 }, (_, i) => 4_000_000_000 + 7919 * i);
  await hnsw.add(far, vecs.subarray(1000 * d));
  const ref = new RefIndex(d);
  ref.set(small, vecs.subarray(0, 1000 * d));
  ref.set(far, vecs.subarray(1000 * d));
  // Both kinds of id are still known: adding either again is refused.
  for (const id of [small[999]!, far[499]!])
    await assert.rejects(hnsw.add(Uint32Array.of(id), new Float32Array(d)), /already in the index/);
  const q = nearRows(rng, vecs, d, 4, 0.2);
  const allow = Uint32Array.from([...small.filter((id) => id % 3 === 0), ...far.subarray(0, 250)]);
  const exclude = [far.subarray(0, 5), small.subarray(0, 30), null, null];
  const got = await hnsw.search(q, K, { allow, exclude, filterMode: 'scan' });
  assertMatches(ref, q, K, got, tolerance(ref, q), { allow, exclude }, 'mixed ids');
});

test('HNSW filters: searches running beside an add return only admissible, known ids', async () => {
  // add() takes the index exclusively (FAISS's insert, then Reconnect); searches share it.
  // Searches issued around an add must each resolve with admissible ids the index holds
  // before or after it: a search reading a half-updated graph or id map would return an id
  // out of range or one of neither.
  const rng = new Rng(44);
  const d = 16;
  const vecs = clustered(rng, 6000, d, 20);
  const first = Uint32Array.from({ length: 4000 }, (_, i) => i * 2);
  const later = Uint32Array.from({ length: 2000 }, (_, i) => 100_000 + i);
  const hnsw = await HnswIndex.build(first, vecs.subarray(0, 4000 * d), d, { M: 16 });
  const known = new Set([...first, ...later]);
  const q = nearRows(rng, vecs, d, 4, 0.3);
  const allow = Uint32Array.from([
    ...first.filter((_, i) => i % 3 === 0),
    ...later.subarray(0, 900),
  ]);
  const exclude = [first.subarray(0, 100), null, later.subarray(0, 50), null];
  const searches: Promise<TopK>[] = [];
  let adding: Promise<void> | undefined;
  for (let i = 0; i < 30; i++) {
    const filterMode = (['auto', 'graph', 'scan'] as const)[i % 3];
    searches.push(hnsw.search(q, K, { allow, exclude, filterMode }));
    if (i === 10) adding = hnsw.add(later, vecs.subarray(4000 * d));
  }
  const results = await Promise.all(searches);
  await adding;
  assert.equal(hnsw.size, 6000);
  const allowed = new Set(allow);
  for (const r of results) {
    for (let i = 0; i < r.ids.length; i++) {
      const id = r.ids[i]!;
      if (id === NO_ID) continue;
      assert.ok(known.has(id) && allowed.has(id), `id ${id}`);
      assert.ok(!exclude[Math.floor(i / K)]?.includes(id), `excluded id ${id}`);
    }
  }
  // After the add, the scan is exact over both parts.
  const ref = new RefIndex(d);
  ref.set(first, vecs.subarray(0, 4000 * d));
  ref.set(later, vecs.subarray(4000 * d));
  const after = await hnsw.search(q, K, { allow, exclude, filterMode: 'scan' });
  assertMatches(ref, q, K, after, tolerance(ref, q), { allow, exclude }, 'after add');
});
