// Random argument lists against both indexes, from fixed seeds: valid calls with one or two
// arguments (or option fields) swapped for hostile values: wrong types, NaN and infinities,
// huge and fractional numbers, detached and shared buffers, typed arrays of other kinds,
// ids past 2^31. Every failure must be a TypeError or RangeError (FAISS's own file errors
// for bad paths), thrown or rejected, and must leave the index as it was: the exact index's
// contents are mirrored in a reference that only successful writes change, and searches are
// checked against it, during the storm (synchronous ones) and after it. The exact index's
// writes go a third of the time through buildAsync, upsertAsync and removeAsync, whose
// failures must reject the same way. A crash fails the test by killing its process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExactIndex, NO_ID, type Storage } from '../../src/retrieval/exact.js';
import { HnswIndex } from '../../src/retrieval/hnsw.js';
import { Rng } from '../../bench/lib/rng.js';
import { RefIndex, absDot, assertMatches, f16RoundArray } from './reference.js';

const D = 8;

function detachedFloats(n: number): Float32Array {
  const buf = new ArrayBuffer(n * 4);
  const view = new Float32Array(buf);
  structuredClone(buf, { transfer: [buf] });
  return view;
}

// Values no argument of either index accepts in the place they land, or accepts only as
// an edge (k = 2^31 - 1, an empty list).
function hostile(rng: Rng): unknown {
  const pool: (() => unknown)[] = [
    () => undefined,
    () => null,
    () => 0,
    () => -1,
    () => 2.5,
    () => NaN,
    () => Infinity,
    () => -Infinity,
    () => 2 ** 31 - 1,
    () => 2 ** 31,
    () => 2 ** 32,
    () => 2 ** 53,
    () => 1e300,
    () => '',
    () => '8',
    () => true,
    () => ({}),
    () => [],
    () => [1, 2, 3],
    () => 10n,
    () => Symbol('s'),
    () => () => 1,
    () => new Float32Array(0),
    () => new Float32Array(D * 3 + 1),
    () => Float32Array.of(NaN, 0, 0, 0, 0, 0, 0, 0),
    () => Float32Array.of(Infinity, 0, 0, 0, 0, 0, 0, 0),
    () => new Float64Array(D),
    () => new Int32Array(3),
    () => new Uint8Array(32),
    () => new Uint32Array(0),
    () => Uint32Array.of(5, 5),
    () => Uint32Array.of(0xffffffff),
    () => Uint32Array.of(0xfffffffe, 2 ** 31 + 7),
    () => new Float32Array(new SharedArrayBuffer(D * 4)),
    () => new Float32Array(new ArrayBuffer(64), 4, D),
    () => new DataView(new ArrayBuffer(32)),
    () => new ArrayBuffer(32),
    () => detachedFloats(D * 2),
    () => [Uint32Array.of(1), null],
    () => new Array(40).fill(Uint32Array.of(0, 1, 2, 3)),
    () => new Array(40).fill(null),
  ];
  return pool[rng.int(pool.length)]();
}

// Replaces one or two of args (an argument, or a field of the options object at the end).
function mutate(rng: Rng, args: unknown[]): boolean {
  const n = rng.int(3);
  for (let j = 0; j < n; j++) {
    const last = args[args.length - 1];
    if (
      last !== null &&
      typeof last === 'object' &&
      !ArrayBuffer.isView(last) &&
      rng.next() < 0.3
    ) {
      const keys = Object.keys(last);
      if (keys.length > 0)
        (last as Record<string, unknown>)[keys[rng.int(keys.length)]] = hostile(rng);
    } else {
      args[rng.int(args.length)] = hostile(rng);
    }
  }
  return n > 0;
}

// A value for a message (a detached typed array cannot be joined into a string).
function describe(x: unknown): string {
  if (ArrayBuffer.isView(x)) return `${x.constructor.name}(${(x as Uint8Array).length ?? '?'})`;
  try {
    return String(x);
  } catch {
    return typeof x;
  }
}

function assertArgumentError(err: unknown, what: string): void {
  assert.ok(
    err instanceof TypeError || err instanceof RangeError,
    `${what}: ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : describe(err)}`,
  );
}

for (const storage of ['f32', 'f16'] as Storage[]) {
  test(`exact index (${storage}): random bad arguments throw TypeError/RangeError and change nothing`, async () => {
    const rng = new Rng(storage === 'f32' ? 11 : 12);
    const index = ExactIndex.create({ dim: D, storage });
    const stored = (v: Float32Array) => (storage === 'f16' ? f16RoundArray(v) : v);
    let ref = new RefIndex(D);
    let nextId = 0;
    const fresh = (n: number) => {
      const ids = new Uint32Array(n);
      for (let i = 0; i < n; i++) ids[i] = nextId++;
      return ids;
    };
    const start = fresh(300);
    const startVecs = rng.uniformArray(300 * D);
    index.build(start, startVecs);
    ref.set(start, stored(startVecs));
    const tol = (queries: Float32Array) => (q: number, id: number) =>
      1e-5 * absDot(ref.rows.get(id)!, 0, queries, q * D, D) + 1e-6;
    const someIds = (n: number) => {
      const all = [...ref.rows.keys()];
      return Uint32Array.from({ length: n }, () => all[rng.int(all.length)] ?? 0);
    };

    const pending: Promise<void>[] = [];
    let failures = 0;
    let mostOutliers = 0;
    let checked = 0;
    // Runs fn; a failure must be an argument error. Whether fn succeeded.
    const attempt = (what: string, fn: () => void): boolean => {
      try {
        fn();
        return true;
      } catch (err) {
        assertArgumentError(err, what);
        failures++;
        return false;
      }
    };
    // The same for the async writes: a failure must reject (or throw) an argument error.
    // Awaited before the storm goes on, so the reference follows them in order.
    const asyncCalls = { ok: 0, failed: 0 };
    const attemptAsync = async (what: string, fn: () => Promise<void>): Promise<boolean> => {
      try {
        await fn();
        asyncCalls.ok++;
        return true;
      } catch (err) {
        assertArgumentError(err, `${what} (async)`);
        failures++;
        asyncCalls.failed++;
        return false;
      }
    };
    for (let i = 0; i < 3000; i++) {
      const op = rng.int(6);
      // A third of the writes go through buildAsync, upsertAsync and removeAsync.
      const viaAsync = op <= 2 && rng.next() < 0.35;
      if (op === 0 || op === 1) {
        // build (rarely) or upsert: new and existing ids
        const n = 1 + rng.int(op === 0 ? 200 : 6);
        const ids = op === 0 || rng.next() < 0.5 ? fresh(n) : Uint32Array.from(new Set(someIds(n)));
        // One row in eight far out (3x to 30x): the int8 screen leaves such rows out and
        // scores them exactly, and the storm's removes, overwrites and refits move them.
        const vecs = rng.uniformArray(ids.length * D);
        for (let r = 0; r < ids.length; r++) {
          if (rng.next() < 0.125) {
            const x = 3 + rng.int(28);
            for (let j = r * D; j < (r + 1) * D; j++) vecs[j] *= x;
          }
        }
        const args: unknown[] = [ids, vecs];
        const bad = mutate(rng, args);
        if (op === 0 && !bad && rng.next() > 0.1) continue;
        const what = op === 0 ? 'build' : 'upsert';
        const a = [args[0] as Uint32Array, args[1] as Float32Array] as const;
        const ok = viaAsync
          ? await attemptAsync(what, () =>
              op === 0 ? index.buildAsync(...a) : index.upsertAsync(...a),
            )
          : attempt(what, () => (op === 0 ? index.build(...a) : index.upsert(...a)));
        if (!ok) continue;
        mostOutliers = Math.max(mostOutliers, index.screenOutliers);
        if (args[0] instanceof Uint32Array && args[1] instanceof Float32Array) {
          if (op === 0) ref = new RefIndex(D);
          ref.set(args[0], stored(args[1]));
        } else {
          assert.fail(`${what} accepted ${describe(args[0])}, ${describe(args[1])}`);
        }
      } else if (op === 2) {
        const ids = Uint32Array.from(new Set(someIds(1 + rng.int(3))));
        const args: unknown[] = [ids];
        mutate(rng, args);
        const ok = viaAsync
          ? await attemptAsync('remove', () => index.removeAsync(args[0] as Uint32Array))
          : attempt('remove', () => index.remove(args[0] as Uint32Array));
        if (!ok) continue;
        assert.ok(args[0] instanceof Uint32Array, `remove accepted ${describe(args[0])}`);
        for (const id of args[0]) ref.rows.delete(id);
      } else if (op === 3) {
        const tuning = {
          blockBytes: 1024 * (1 + rng.int(64)),
          guessRank: rng.int(20),
          screenMinBatch: rng.int(6),
          screenStepBytes: rng.int(3) * 4096,
          packMinBatch: rng.int(20),
          minRowsPerTask: 1 + rng.int(200),
          guessMinRows: 1 + rng.int(100),
        };
        const args: unknown[] = [tuning];
        mutate(rng, args);
        attempt('setTuning', () => index.setTuning(args[0] as object));
      } else {
        const b = 1 + rng.int(40);
        const queries = rng.uniformArray(b * D);
        const k = 1 + rng.int(120);
        const opts = {
          exclude:
            rng.next() < 0.3 ? Array.from({ length: b }, () => someIds(3).sort()) : undefined,
          allow: rng.next() < 0.3 ? someIds(50) : undefined,
        };
        const args: unknown[] = [queries, k, opts];
        const bad = mutate(rng, args);
        const sync = op === 4;
        const what = `search${sync ? 'Sync' : ''} B=${b} k=${describe(args[1])}`;
        const shape = (r: { ids: Uint32Array; scores: Float32Array; k: number }) => {
          assert.equal(r.ids.length, r.scores.length, what);
          assert.equal(r.ids.length % r.k, 0, what);
          for (let j = 0; j < r.ids.length; j++) {
            if (r.ids[j] === NO_ID) assert.equal(r.scores[j], -Infinity, what);
            else assert.ok(!Number.isNaN(r.scores[j]), what);
          }
        };
        const call = [
          args[0] as Float32Array,
          args[1] as number,
          args[2] as Parameters<ExactIndex['search']>[2],
        ] as const;
        if (sync) {
          let r: ReturnType<ExactIndex['searchSync']> | undefined;
          if (!attempt(what, () => (r = index.searchSync(...call)))) continue;
          shape(r!);
          if (!bad) {
            assertMatches(ref, queries, k, r!, tol(queries), opts, what);
            checked++;
          }
        } else {
          // Checked for shape only: writes issued after it may land before it runs.
          pending.push(
            index.search(...call).then(shape, (err: unknown) => {
              assertArgumentError(err, what);
              failures++;
            }),
          );
        }
      }
    }
    await Promise.all(pending);
    assert.ok(failures > 500, `only ${failures} calls failed: the storm is too mild`);
    assert.ok(checked > 100, `only ${checked} searches checked`);
    assert.ok(
      asyncCalls.ok > 50 && asyncCalls.failed > 50,
      `async writes: ${JSON.stringify(asyncCalls)}`,
    );
    if (index.screen === 'int8')
      assert.ok(mostOutliers > 0, 'no row was ever left out of the screen');
    // After the storm: the contents are exactly what the successful writes made them.
    assert.equal(index.size, ref.rows.size);
    const queries = rng.uniformArray(5 * D);
    assertMatches(ref, queries, 50, index.searchSync(queries, 50), tol(queries), {}, 'after');
  });
}

test('HNSW index: random bad arguments throw TypeError/RangeError and change nothing', async () => {
  const rng = new Rng(21);
  const dir = mkdtempSync(join(tmpdir(), 'recserve-fuzz-'));
  try {
    const junk = join(dir, 'junk.idx');
    writeFileSync(junk, 'not an index');
    const good = join(dir, 'good.idx');
    let next = 0;
    const fresh = (n: number) => Uint32Array.from({ length: n }, () => next++);
    const ids = fresh(300);
    const index = await HnswIndex.build(ids, rng.uniformArray(300 * D), D);
    const present = new Set(ids);
    let failures = 0;
    for (let i = 0; i < 1500; i++) {
      const op = rng.int(6);
      if (op === 5) {
        const held = [...present];
        const gone = Uint32Array.from(
          { length: 1 + rng.int(3) },
          () => held[rng.int(held.length)]!,
        );
        const args: unknown[] = [gone];
        mutate(rng, args);
        try {
          await index.remove(args[0] as Uint32Array);
        } catch (err) {
          assertArgumentError(err, 'remove');
          failures++;
          continue;
        }
        assert.ok(args[0] instanceof Uint32Array, `remove accepted ${describe(args[0])}`);
        // Accepted: every id it named was held (listed twice, it goes once).
        for (const id of new Set(args[0])) assert.ok(present.delete(id), `removed unheld ${id}`);
        assert.equal(index.size, present.size);
      } else if (op === 0) {
        const add = fresh(1 + rng.int(5));
        const args: unknown[] = [add, rng.uniformArray(add.length * D)];
        mutate(rng, args);
        try {
          await index.add(args[0] as Uint32Array, args[1] as Float32Array);
        } catch (err) {
          assertArgumentError(err, 'add');
          failures++;
          continue;
        }
        assert.ok(args[0] instanceof Uint32Array, `add accepted ${describe(args[0])}`);
        for (const id of args[0]) present.add(id);
      } else if (op === 1 || op === 2) {
        const b = 1 + rng.int(8);
        const someIds = () => Uint32Array.from({ length: rng.int(30) }, () => rng.int(next + 5));
        const args: unknown[] = [
          rng.uniformArray(b * D),
          1 + rng.int(40),
          {
            efSearch: 1 + rng.int(200),
            threads: rng.int(3),
            impl: rng.next() < 0.2 ? 'faiss' : 'ours',
            // Filters (impl 'faiss' refuses them with a RangeError).
            exclude:
              rng.next() < 0.4
                ? Array.from({ length: b }, () => (rng.next() < 0.5 ? someIds() : null))
                : undefined,
            allow: rng.next() < 0.4 ? someIds() : undefined,
            filterMode: ['auto', 'graph', 'scan'][rng.int(3)],
          },
        ];
        mutate(rng, args);
        let r;
        try {
          const a = [args[0] as Float32Array, args[1] as number, args[2] as object] as const;
          r = op === 1 ? await index.search(...a) : index.searchSync(...a);
        } catch (err) {
          assertArgumentError(err, 'search');
          failures++;
          continue;
        }
        for (const id of r.ids) assert.ok(id === NO_ID || present.has(id), `unknown id ${id}`);
        // Filters that were accepted held.
        const o = args[2] as { exclude?: unknown; allow?: unknown };
        if (o?.allow instanceof Uint32Array) {
          for (const id of r.ids) assert.ok(id === NO_ID || o.allow.includes(id), `allow`);
        }
        if (Array.isArray(o?.exclude)) {
          o.exclude.forEach((ex: unknown, q: number) => {
            if (!(ex instanceof Uint32Array)) return;
            for (const id of r.ids.subarray(q * r.k, (q + 1) * r.k))
              assert.ok(id === NO_ID || !ex.includes(id), `exclude`);
          });
        }
      } else if (op === 3) {
        const args: unknown[] = [good];
        mutate(rng, args);
        // A hostile string ('8') is a path relative to the working directory: not written.
        if (typeof args[0] === 'string' && args[0] !== good && args[0] !== '') continue;
        try {
          await index.save(args[0] as string);
        } catch (err) {
          // Only `good` and '' get here as strings; a write to `good` failing would be
          // FAISS's writer.
          if (typeof args[0] === 'string' && args[0] !== '') assert.match(String(err), /FAISS/);
          else assertArgumentError(err, 'save');
          failures++;
        }
      } else {
        const args: unknown[] = [rng.next() < 0.5 ? junk : join(dir, 'missing.idx')];
        mutate(rng, args);
        await assert.rejects(HnswIndex.load(args[0] as string), (err: unknown) => {
          if (typeof args[0] === 'string' && args[0] !== '') return /FAISS/.test(String(err));
          assertArgumentError(err, 'load');
          return true;
        });
        failures++;
      }
    }
    assert.ok(failures > 300, `only ${failures} calls failed`);
    assert.equal(index.size, present.size);
    // Still searchable, and a good file still loads.
    const r = await index.search(rng.uniformArray(D), 10);
    assert.equal(r.ids.filter((id) => present.has(id)).length, 10);
    await index.save(good);
    assert.equal((await HnswIndex.load(good)).size, present.size);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
