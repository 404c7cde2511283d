// The REST API end to end: a real server (uWebSockets.js, the built addon, the real ONNX
// ranker in Piscina workers, the memory store) on an ephemeral port, called with fetch.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { RunningServer } from '../../src/cli/serve.js';
import { post, startTestServer, type Json } from './harness.js';
import { similarToRecent } from '../../src/pipeline/candidates/sources.js';
import { buildUserContext } from '../../src/pipeline/user.js';

let server: RunningServer;
let base: string;
let warmUser: string;

before(async () => {
  ({ server, base } = await startTestServer());
  await server.ready;
  warmUser = server.registry.current()!.bundle.userIds[0]!;
});

after(async () => {
  await server.close();
});

function primaryCategory(itemId: string): string {
  const b = server.registry.current()!.bundle;
  const row = b.items.index.get(itemId)!;
  return b.items.categoryNames[b.items.categories[row]![0]!]!;
}

describe('health, readiness, metrics', () => {
  test('healthz and readyz answer 200 once the model is loaded', async () => {
    assert.equal((await fetch(base + '/healthz')).status, 200);
    const r = await fetch(base + '/readyz');
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { status: 'ready' });
  });

  test('a server with no model stays not ready and refuses /v1 with 503', async () => {
    const { server: s2, base: b2 } = await startTestServer([
      '--models',
      '/nonexistent-models',
      // Polling off: start-up gives up (polling on, it would watch for a version).
      '--model-poll-ms',
      '0',
    ]);
    try {
      await assert.rejects(s2.ready);
      assert.equal((await fetch(b2 + '/healthz')).status, 200);
      assert.equal((await fetch(b2 + '/readyz')).status, 503);
      const r = await post(b2, '/v1/recommendations', { user_id: 'u' });
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'unavailable');
    } finally {
      await s2.close();
    }
  });

  test('metrics expose requests, stage latencies, batch sizes, queue depths, the exact index, loop lag', async () => {
    await post(base, '/v1/recommendations', { user_id: warmUser, num_items: 5 });
    const text = await (await fetch(base + '/metrics')).text();
    assert.match(text, /recserve_http_requests_total\{route="recommendations",status="200"\} \d+/);
    assert.match(text, /recserve_pipeline_stage_duration_seconds_bucket\{stage="ranking",le=/);
    assert.match(text, /recserve_batch_size_count\{stage="retrieval"\} \d+/);
    assert.match(text, /recserve_queue_depth\{queue="ranking"\} \d+/);
    assert.match(text, /recserve_event_loop_lag_seconds\{quantile="0.99"\}/);
    // The exact index's figures: its rows are the bundle's items.
    const rows = /recserve_exact_index\{stat="rows"\} (\d+)/.exec(text);
    assert.ok(rows, 'no exact index rows in /metrics');
    assert.equal(Number(rows[1]), server.registry.current()!.bundle.items.index.size);
    assert.match(text, /recserve_exact_index\{stat="screen_outliers"\} \d+/);
    assert.match(text, /recserve_exact_index\{stat="screen_prunes"\} \d+/);
    assert.match(text, /recserve_exact_index\{stat="screened_batches"\} \d+/);
  });
});

describe('POST /v1/recommendations', () => {
  test('a warm user gets a ranked list with explanations and a latency breakdown', async () => {
    const r = await post(base, '/v1/recommendations', {
      user_id: warmUser,
      num_items: 10,
      context: { device_type: 'mobile', timestamp: '2026-01-01T10:00:00Z' },
    });
    assert.equal(r.status, 200);
    const recs = r.json.recommendations;
    assert.equal(recs.length, 10);
    assert.deepEqual(
      recs.map((x: { rank: number }) => x.rank),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.equal(new Set(recs.map((x: { item_id: string }) => x.item_id)).size, 10);
    for (const x of recs) {
      assert.equal(typeof x.score, 'number');
      assert.ok(
        typeof x.explanation.reason === 'string' && Array.isArray(x.explanation.source_items),
      );
      assert.ok(Array.isArray(x.metadata.categories));
    }
    const md = r.json.metadata;
    assert.equal(md.cold_start, false);
    assert.match(md.model_version, /^recserve-v\d+$/);
    assert.ok(md.retrieval_sources.collaborative > 0);
    for (const k of ['total', 'retrieval', 'ranking', 'feature_fetch']) {
      assert.equal(typeof md.latency_ms[k], 'number', k);
    }
    assert.match(r.json.request_id, /^req_/);
  });

  test('an unknown user gets the cold-start mix, marked, 200', async () => {
    const r = await post(base, '/v1/recommendations', {
      user_id: 'never-seen-user',
      num_items: 12,
    });
    assert.equal(r.status, 200);
    assert.equal(r.json.metadata.cold_start, true);
    assert.equal(r.json.recommendations.length, 12);
    for (const x of r.json.recommendations) assert.equal(x.metadata.cold_start, true);
    assert.ok(r.json.metadata.retrieval_sources.popular > 0);
  });

  test('the second identical request is a cache hit with a fresh request id', async () => {
    const body = { user_id: warmUser, num_items: 7 };
    const a = await post(base, '/v1/recommendations', body);
    const b = await post(base, '/v1/recommendations', body);
    assert.equal(b.json.metadata.cache_hit, true);
    assert.notEqual(a.json.request_id, b.json.request_id);
    assert.deepEqual(
      b.json.recommendations.map((x: { item_id: string }) => x.item_id),
      a.json.recommendations.map((x: { item_id: string }) => x.item_id),
    );
  });

  test('exclude_items never come back', async () => {
    const first = await post(base, '/v1/recommendations', { user_id: warmUser, num_items: 10 });
    const top = first.json.recommendations.slice(0, 5).map((x: { item_id: string }) => x.item_id);
    const r = await post(base, '/v1/recommendations', {
      user_id: warmUser,
      num_items: 10,
      exclude_items: top,
    });
    assert.equal(r.status, 200);
    for (const x of r.json.recommendations) assert.ok(!top.includes(x.item_id), x.item_id);
  });

  test('filters: categories and min_quality_score hold for every item', async () => {
    const b = server.registry.current()!.bundle;
    const cats = b.items.categoryNames.slice(0, 2);
    const r = await post(base, '/v1/recommendations', {
      user_id: warmUser,
      num_items: 15,
      filters: { categories: cats, min_quality_score: 0.3 },
    });
    assert.equal(r.status, 200);
    assert.ok(r.json.recommendations.length > 0);
    for (const x of r.json.recommendations) {
      assert.ok(
        x.metadata.categories.some((c: string) => cats.includes(c)),
        `${x.item_id} ${x.metadata.categories}`,
      );
      assert.ok(b.items.quality[b.items.index.get(x.item_id)!]! >= 0.3);
    }
  });

  test('category_diversity caps items per category', async () => {
    // cap = ceil(10 × (1 − 0.8)) = 2 per primary category.
    const r = await post(base, '/v1/recommendations', {
      user_id: warmUser,
      num_items: 10,
      diversity_settings: { category_diversity: 0.8 },
    });
    assert.equal(r.status, 200);
    const counts = new Map<string, number>();
    for (const x of r.json.recommendations) {
      const c = primaryCategory(x.item_id);
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    for (const [c, n] of counts) assert.ok(n <= 2, `${c}: ${n}`);
  });

  test('feedback changes the next answer: seen items go, blocked items never return', async () => {
    const user = server.registry.current()!.bundle.userIds[1]!;
    const first = await post(base, '/v1/recommendations', { user_id: user, num_items: 10 });
    const ids = first.json.recommendations.map((x: { item_id: string }) => x.item_id);
    const fb = await post(base, '/v1/feedback', {
      user_id: user,
      events: ids.slice(0, 3).map((item_id: string) => ({ item_id, event_type: 'click' })),
    });
    assert.equal(fb.status, 200);
    assert.deepEqual(fb.json, { status: 'accepted', events_processed: 3, duplicates_ignored: 0 });
    const neg = await post(base, '/v1/feedback/negative', {
      user_id: user,
      item_id: ids[3],
      feedback_type: 'not_interested',
    });
    assert.deepEqual(neg.json, { status: 'accepted', action_taken: 'item_blocked' });
    const gone = new Set(ids.slice(0, 4));
    for (let i = 0; i < 3; i++) {
      const r = await post(base, '/v1/recommendations', { user_id: user, num_items: 30 });
      assert.equal(r.json.metadata.cache_hit, undefined);
      for (const x of r.json.recommendations) assert.ok(!gone.has(x.item_id), x.item_id);
      // Invalidate the cache the way a client would: new feedback.
      await post(base, '/v1/feedback', {
        user_id: user,
        events: [{ item_id: ids[5 + i], event_type: 'view' }],
      });
    }
    const sim = await post(base, '/v1/similar', { item_id: ids[0], user_id: user, num_items: 50 });
    for (const x of sim.json.similar_items) assert.notEqual(x.item_id, ids[3]);
  });

  test('request_type continue_watching and similar follow the user’s recent items', async () => {
    const b = server.registry.current()!.bundle;
    const user = 'fresh-viewer';
    const watched = [b.items.ids[20]!, b.items.ids[21]!, b.items.ids[22]!];
    const now = Date.now();
    await post(base, '/v1/feedback', {
      user_id: user,
      events: watched.map((item_id, i) => ({
        item_id,
        event_type: 'view',
        timestamp: new Date(now - (3 - i) * 1000).toISOString(),
      })),
    });
    const cw = await post(base, '/v1/recommendations', {
      user_id: user,
      request_type: 'continue_watching',
      num_items: 5,
      exclude_items: [watched[0]],
    });
    assert.equal(cw.status, 200);
    assert.deepEqual(
      cw.json.recommendations.map((x: { item_id: string }) => x.item_id),
      [watched[2], watched[1]],
    );
    // Resumed items say so (not "similar to" themselves).
    for (const x of cw.json.recommendations) {
      assert.equal(x.explanation.reason, 'continue_watching');
      assert.deepEqual(x.explanation.source_items, [x.item_id]);
    }
    await post(base, '/v1/feedback', {
      user_id: b.userIds[2]!,
      events: [{ item_id: watched[1], event_type: 'like' }],
    });
    const sim = await post(base, '/v1/recommendations', {
      user_id: b.userIds[2]!,
      request_type: 'similar',
      num_items: 5,
    });
    assert.equal(sim.status, 200);
    assert.deepEqual(
      Object.keys(sim.json.metadata.retrieval_sources).filter(
        (k) => sim.json.metadata.retrieval_sources[k] > 0,
      ),
      ['similar_to_recent'],
    );
    for (const x of sim.json.recommendations) {
      assert.ok(['similar_to_recent', 'exploration'].includes(x.explanation.reason));
    }
    const home = await post(base, '/v1/recommendations', { user_id: user, num_items: 5 });
    assert.equal(home.json.metadata.cold_start, true);
    for (const x of home.json.recommendations) assert.ok(!watched.includes(x.item_id));
  });

  test('similar-to-recent fills its quota with items the user has not seen', async () => {
    // The source filters inside the HNSW search: a user who has watched the 40 nearest
    // neighbours of their recent item still gets a full quota of new ones (over-fetching
    // and dropping seen items afterwards would leave it nearly empty).
    const m = server.registry.current()!;
    const { dim, items } = m.bundle;
    const seed = 7;
    const vec = m.items.itemEmbeddings.subarray(seed * dim, (seed + 1) * dim);
    const near = await m.hnsw.search(vec, 40, { efSearch: 200 });
    const seen = Uint32Array.from(new Set([seed, ...near.ids])).sort();
    const u = {
      ...buildUserContext(m, 'sim-quota', null, undefined, Date.now()),
      recentRows: [seed],
      recentIds: [items.ids[seed]!],
      exclude: seen,
      excludeSet: new Set(seen),
    };
    const got = await similarToRecent(m, u, 1, 10, 50, null);
    assert.equal(got.length, 10);
    for (const c of got) {
      assert.ok(!u.excludeSet.has(c.row), `seen row ${c.row} returned`);
      assert.deepEqual(c.sourceItems, [items.ids[seed]]);
    }
    // A category filter is applied inside the search too.
    const cat = items.categories[seed]![0]!;
    const allow = Uint32Array.from(m.categoryRows[cat]!).sort();
    const inCat = await similarToRecent(m, u, 1, 10, 50, allow);
    assert.ok(inCat.length > 0);
    const allowed = new Set(allow);
    for (const c of inCat) assert.ok(allowed.has(c.row) && !u.excludeSet.has(c.row));
    assert.deepEqual(await similarToRecent(m, u, 1, 10, 50, new Uint32Array(0)), []);
  });

  test('a repeated feedback event is reported as a duplicate', async () => {
    const item = server.registry.current()!.bundle.items.ids[5]!;
    const body = {
      user_id: 'dup-user',
      events: [{ item_id: item, event_type: 'like', timestamp: new Date().toISOString() }],
    };
    const a = await post(base, '/v1/feedback', body);
    const b = await post(base, '/v1/feedback', body);
    assert.equal(a.json.events_processed, 1);
    assert.deepEqual(b.json, { status: 'accepted', events_processed: 0, duplicates_ignored: 1 });
    const n1 = await post(base, '/v1/feedback/negative', {
      user_id: 'dup-user',
      item_id: item,
      feedback_type: 'report',
    });
    const n2 = await post(base, '/v1/feedback/negative', {
      user_id: 'dup-user',
      item_id: item,
      feedback_type: 'report',
    });
    assert.equal(n1.json.status, 'accepted');
    assert.equal(n2.json.status, 'duplicate_ignored');
  });

  test('a warm user asking for 500 gets 500 distinct items', async () => {
    const r = await post(base, '/v1/recommendations', { user_id: warmUser, num_items: 500 });
    assert.equal(r.status, 200);
    assert.equal(r.json.metadata.cold_start, false);
    const ids = r.json.recommendations.map((x: { item_id: string }) => x.item_id);
    assert.equal(ids.length, 500);
    assert.equal(new Set(ids).size, 500);
  });

  test('a quality filter the collaborative candidates mostly fail is topped up with popular items', async () => {
    const b = server.registry.current()!.bundle;
    // Of the 150 collaborative candidates only a handful reach 0.8 on this model; hundreds
    // of catalog items do.
    assert.ok(b.items.quality.filter((q) => q >= 0.8).length >= 100);
    const r = await post(base, '/v1/recommendations', {
      user_id: warmUser,
      num_items: 20,
      filters: { min_quality_score: 0.8 },
    });
    assert.equal(r.status, 200);
    assert.equal(r.json.recommendations.length, 20);
    assert.ok(r.json.metadata.retrieval_sources.popular > 0);
    for (const x of r.json.recommendations) {
      assert.ok(b.items.quality[b.items.index.get(x.item_id)!]! >= 0.8, x.item_id);
    }
  });
});

describe('POST /v1/similar', () => {
  for (const type of ['content', 'collaborative', 'hybrid']) {
    test(`${type}: similar items with common attributes`, async () => {
      const b = server.registry.current()!.bundle;
      const item = b.items.ids[b.items.index.size >> 1]!;
      const r = await post(base, '/v1/similar', {
        item_id: item,
        num_items: 8,
        similarity_type: type,
        exclude_items: [b.items.ids[0]],
      });
      assert.equal(r.status, 200);
      assert.equal(r.json.source_item, item);
      assert.equal(r.json.similar_items.length, 8);
      for (const x of r.json.similar_items) {
        assert.notEqual(x.item_id, item);
        assert.notEqual(x.item_id, b.items.ids[0]);
        assert.equal(x.similarity_type, type);
        assert.ok(Array.isArray(x.common_attributes));
      }
      const scores = r.json.similar_items.map(
        (x: { similarity_score: number }) => x.similarity_score,
      );
      assert.deepEqual(
        scores,
        [...scores].sort((a: number, c: number) => c - a),
      );
    });
  }

  test('collaborative: the nearest items by cosine, not the largest vectors', async () => {
    const m = server.registry.current()!;
    const b = m.bundle;
    assert.equal(b.hnswMetric, 'cosine');
    assert.equal(m.hnsw.metric, 'cosine');
    const d = b.dim;
    const E = b.itemEmbeddings;
    const n = b.items.ids.length;
    const norm = (r: number) => m.itemNorms[r]!; // the serving model's, computed at load
    const cosineTo = (a: number, r: number) => {
      let dot = 0;
      for (let j = 0; j < d; j++) dot += E[a * d + j]! * E[r * d + j]!;
      return dot / ((norm(a) || 1) * (norm(r) || 1));
    };
    let matched = 0;
    let byIp = 0;
    const seeds = [7, 101, 555, 1234, 2900].filter((r) => r < n);
    for (const row of seeds) {
      const r = await post(base, '/v1/similar', {
        item_id: b.items.ids[row],
        num_items: 10,
        similarity_type: 'collaborative',
      });
      assert.equal(r.status, 200);
      const got = (r.json.similar_items as { item_id: string; similarity_score: number }[]).map(
        (x) => b.items.index.get(x.item_id)!,
      );
      const others = Array.from({ length: n }, (_, i) => i).filter((i) => i !== row);
      const truth = new Set(
        others.sort((x, y) => cosineTo(row, y) - cosineTo(row, x)).slice(0, 10),
      );
      matched += got.filter((g) => truth.has(g)).length;
      // What the inner product would have picked: the top 30 by dot product.
      const dot = (r2: number) => cosineTo(row, r2) * norm(r2);
      const ip = new Set(others.sort((x, y) => dot(y) - dot(x)).slice(0, 30));
      byIp += [...truth].filter((t) => ip.has(t)).length;
      r.json.similar_items.forEach((x: { similarity_score: number }, i: number) =>
        assert.ok(Math.abs(x.similarity_score - cosineTo(row, got[i]!)) < 1e-4),
      );
    }
    // HNSW is approximate; 0.9 of the true top 10 on this small graph (1.0 measured).
    assert.ok(matched >= 0.9 * 10 * seeds.length, `${matched} of ${10 * seeds.length}`);
    // The data makes the difference: a pool of the top 30 by inner product would hold
    // fewer of them.
    assert.ok(byIp < matched, `inner-product pool held ${byIp}, the answers ${matched}`);
  });

  test('content similarity names shared categories', async () => {
    const b = server.registry.current()!.bundle;
    const r = await post(base, '/v1/similar', {
      item_id: b.items.ids[10],
      num_items: 5,
      similarity_type: 'content',
    });
    assert.ok(
      r.json.similar_items.some((x: { common_attributes: string[] }) =>
        x.common_attributes.some((a) => a.startsWith('category:')),
      ),
    );
    // Exactly the categories both items have, then the creator when it is the same one.
    const catsOf = (row: number) => new Set(b.items.categories[row]!);
    const src = b.items.index.get(b.items.ids[10]!)!;
    for (const x of r.json.similar_items as { item_id: string; common_attributes: string[] }[]) {
      const row = b.items.index.get(x.item_id)!;
      const shared = [...catsOf(src)]
        .filter((c) => catsOf(row).has(c))
        .map((c) => `category:${b.items.categoryNames[c]}`);
      const creator = b.items.creatorIds[src];
      if (creator && creator === b.items.creatorIds[row]) shared.push(`creator:${creator}`);
      assert.deepEqual(x.common_attributes, shared, x.item_id);
    }
  });

  test('unknown item → 404 naming item_id', async () => {
    const r = await post(base, '/v1/similar', { item_id: 'no-such-item' });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'not_found');
    assert.equal(r.json.error.field, 'item_id');
  });
});

describe('bad input', () => {
  const cases: [string, string, unknown, number, string | undefined][] = [
    ['num_items 0', '/v1/recommendations', { user_id: 'u', num_items: 0 }, 400, 'num_items'],
    ['num_items 501', '/v1/recommendations', { user_id: 'u', num_items: 501 }, 400, 'num_items'],
    ['num_items 2.5', '/v1/recommendations', { user_id: 'u', num_items: 2.5 }, 400, 'num_items'],
    ['user_id number', '/v1/recommendations', { user_id: 5 }, 400, 'user_id'],
    ['user_id missing', '/v1/recommendations', {}, 400, 'user_id'],
    ['body array', '/v1/recommendations', [], 400, 'body'],
    [
      'unknown request_type',
      '/v1/recommendations',
      { user_id: 'u', request_type: 'x' },
      400,
      'request_type',
    ],
    [
      'unknown device',
      '/v1/recommendations',
      { user_id: 'u', context: { device_type: 'fridge' } },
      400,
      'context.device_type',
    ],
    [
      'bad timestamp',
      '/v1/recommendations',
      { user_id: 'u', context: { timestamp: 'yesterday' } },
      400,
      'context.timestamp',
    ],
    // Not ISO-8601 date-times with an offset, each of which Date.parse accepted: no offset
    // (read in the server's zone), a day that does not exist (rolled into March), free text.
    ...['2026-01-24T10:00:00', '2026-02-30T10:00:00Z', '2026-12-07 10:00 GMT+0000 (hi)'].map(
      (timestamp): [string, string, unknown, number, string] => [
        `timestamp ${timestamp}`,
        '/v1/feedback',
        { user_id: 'u', events: [{ item_id: 'i1', event_type: 'view', timestamp }] },
        400,
        'events[0].timestamp',
      ],
    ),
    [
      'quality out of range',
      '/v1/recommendations',
      { user_id: 'u', filters: { min_quality_score: 2 } },
      400,
      'filters.min_quality_score',
    ],
    [
      'exclude_items not strings',
      '/v1/recommendations',
      { user_id: 'u', exclude_items: [1] },
      400,
      'exclude_items[0]',
    ],
    [
      'similarity_type',
      '/v1/similar',
      { item_id: 'x', similarity_type: 'visual' },
      400,
      'similarity_type',
    ],
    ['events empty', '/v1/feedback', { user_id: 'u', events: [] }, 400, 'events'],
    [
      'event_type unknown',
      '/v1/feedback',
      { user_id: 'u', events: [{ item_id: 'i', event_type: 'stare' }] },
      400,
      'events[0].event_type',
    ],
    [
      'completion_rate > 1',
      '/v1/feedback',
      { user_id: 'u', events: [{ item_id: 'i', event_type: 'view', completion_rate: 3 }] },
      400,
      'events[0].completion_rate',
    ],
    [
      'feedback_type unknown',
      '/v1/feedback/negative',
      { user_id: 'u', item_id: 'i', feedback_type: 'meh' },
      400,
      'feedback_type',
    ],
  ];
  test('a timestamp with an offset or a fraction is accepted', async () => {
    const at = (ms: number) => new Date(Date.now() - ms).toISOString();
    for (const timestamp of [
      at(60_000),
      at(120_000).replace('Z', '+00:00'),
      at(180_000).slice(0, 19) + '.123456789Z',
    ]) {
      const r = await post(base, '/v1/feedback', {
        user_id: 'u-ts',
        events: [{ item_id: 'i1', event_type: 'view', timestamp }],
      });
      assert.equal(r.status, 200, `${timestamp}: ${JSON.stringify(r.json)}`);
    }
  });

  test('an X-Timeout-Ms that is not a number of milliseconds is a 400 naming it', async () => {
    for (const value of ['abc', '-5', '1e309']) {
      const r = await post(
        base,
        '/v1/recommendations',
        { user_id: 'u' },
        { 'x-timeout-ms': value },
      );
      assert.equal(r.status, 400, value);
      assert.equal(r.json.error.field, 'X-Timeout-Ms', value);
    }
    const ok = await post(
      base,
      '/v1/recommendations',
      { user_id: 'u' },
      { 'x-timeout-ms': '5000' },
    );
    assert.equal(ok.status, 200);
  });

  for (const [name, path, body, status, field] of cases) {
    test(`${name} → ${status} naming ${field}`, async () => {
      const r = await post(base, path, body);
      assert.equal(r.status, status);
      assert.equal(r.json.error.code, 'invalid_argument');
      assert.equal(r.json.error.field, field);
      assert.equal(typeof r.json.error.message, 'string');
    });
  }

  // JSON's \ud800 escape is a lone surrogate: no UTF-8 store or key can hold it, so every
  // route refuses it in any string field (ids and free text alike), naming the field.
  const lone: [string, string, string][] = [
    ['/v1/recommendations', '{"user_id":"\\ud800"}', 'user_id'],
    ['/v1/recommendations', '{"user_id":"u","exclude_items":["ok","\\udfff"]}', 'exclude_items[1]'],
    [
      '/v1/recommendations',
      '{"user_id":"u","context":{"session_id":"a\\ud800"}}',
      'context.session_id',
    ],
    ['/v1/recommendations', '{"user_id":"u","context":{"platform":"\\udc00"}}', 'context.platform'],
    [
      '/v1/recommendations',
      '{"user_id":"u","filters":{"categories":["\\ud800"]}}',
      'filters.categories[0]',
    ],
    ['/v1/similar', '{"item_id":"i1","user_id":"\\ud800"}', 'user_id'],
    ['/v1/similar', '{"item_id":"\\ud800"}', 'item_id'],
    [
      '/v1/feedback',
      '{"user_id":"\\ud800","events":[{"item_id":"i1","event_type":"like"}]}',
      'user_id',
    ],
    [
      '/v1/feedback',
      '{"user_id":"u","events":[{"item_id":"\\ud800","event_type":"like"}]}',
      'events[0].item_id',
    ],
    [
      '/v1/feedback',
      '{"user_id":"u","events":[{"item_id":"i1","event_type":"like","context":{"surface":"\\ud800"}}]}',
      'events[0].context.surface',
    ],
    [
      '/v1/feedback/negative',
      '{"user_id":"\\ud800","item_id":"i1","feedback_type":"hide"}',
      'user_id',
    ],
    [
      '/v1/feedback/negative',
      '{"user_id":"u","item_id":"\\udfff","feedback_type":"hide"}',
      'item_id',
    ],
    [
      '/v1/feedback/negative',
      '{"user_id":"u","item_id":"i1","feedback_type":"report","reason":"\\ud800"}',
      'reason',
    ],
  ];
  for (const [path, body, field] of lone) {
    test(`a lone surrogate in ${field} on ${path} → 400 naming it`, async () => {
      const r = await post(base, path, body);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.code, 'invalid_argument');
      assert.equal(r.json.error.field, field);
    });
  }

  test('a surrogate pair (an emoji) is a well-formed id, on every route', async () => {
    const user = 'emoji-\ud83d\ude00';
    const item = server.registry.current()!.bundle.items.ids[3]!;
    const neg = await post(base, '/v1/feedback/negative', {
      user_id: user,
      item_id: item,
      feedback_type: 'hide',
    });
    assert.equal(neg.status, 200);
    const recs = await post(base, '/v1/recommendations', { user_id: user, num_items: 50 });
    assert.equal(recs.status, 200);
    const ids = recs.json.recommendations.map((x: { item_id: string }) => x.item_id);
    assert.ok(ids.length > 0 && !ids.includes(item));
  });

  test('malformed JSON → 400 malformed_body', async () => {
    const r = await post(base, '/v1/recommendations', '{"user_id": ');
    assert.equal(r.status, 400);
    assert.equal(r.json.error.code, 'malformed_body');
  });

  test('a body over 1 MiB → 413', async () => {
    const big = JSON.stringify({ user_id: 'u', pad: 'x'.repeat(1024 * 1024 + 10) });
    const r = await post(base, '/v1/recommendations', big).catch(() => null);
    // uWS answers 413 and closes; fetch may see the answer or the closed socket.
    if (r) assert.equal(r.status, 413);
    assert.equal((await fetch(base + '/healthz')).status, 200);
  });

  test('unsupported media type → 415, unknown route → 404, wrong method → 405', async () => {
    const r = await post(base, '/v1/recommendations', '{"user_id":"u"}', {
      'content-type': 'text/csv',
    });
    assert.equal(r.status, 415);
    assert.equal((await post(base, '/v2/nothing', {})).status, 404);
    const wrong = await fetch(base + '/v1/recommendations');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get('allow'), 'POST');
    assert.equal(((await wrong.json()) as Json).error.code, 'method_not_allowed');
  });

  test('clients that disconnect mid-request never crash the server', async () => {
    const aborts = Array.from({ length: 20 }, (_, i) => {
      const ac = new AbortController();
      const p = fetch(base + '/v1/recommendations', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: `${warmUser}`, num_items: 50 + i }),
        signal: ac.signal,
      }).catch(() => null);
      setTimeout(() => ac.abort(), i % 5);
      return p;
    });
    await Promise.all(aborts);
    await new Promise((r) => setTimeout(r, 200));
    const r = await post(base, '/v1/recommendations', { user_id: warmUser, num_items: 3 });
    assert.equal(r.status, 200);
  });
});

/**
 * One keep-alive connection, one request at a time, read with HTTP/1.1 framing: a response
 * to HEAD has no body whatever its Content-Length says, any other one has Content-Length
 * bytes. Stray bytes (a body after a HEAD answer) show up as garbage before the next status
 * line, or as bytes left over at the end.
 */
class RawConnection {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const sock = connect(port, '127.0.0.1', () => resolve(new RawConnection(sock)));
      sock.once('error', reject);
    });
  }

  async request(
    method: string,
    path: string,
    body = '',
  ): Promise<{ status: number; headers: Map<string, string>; body: string }> {
    let head = `${method} ${path} HTTP/1.1\r\nHost: test\r\n`;
    if (body) head += `content-type: application/json\r\ncontent-length: ${body.length}\r\n`;
    this.sock.write(head + '\r\n' + body);
    const end = await this.until(() => this.buf.indexOf('\r\n\r\n'));
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]!);
    assert.ok(status, `not a status line: ${JSON.stringify(lines[0])}`);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
    }
    const length = method === 'HEAD' ? 0 : Number(headers.get('content-length') ?? 0);
    await this.until(() => (this.buf.length >= end + 4 + length ? 0 : -1));
    const out = this.buf.subarray(end + 4, end + 4 + length).toString();
    this.buf = this.buf.subarray(end + 4 + length);
    return { status: Number(status[1]), headers, body: out };
  }

  /** Bytes received past the last response read (a HEAD answer's body would be here). */
  async leftover(): Promise<number> {
    await new Promise((r) => setTimeout(r, 50));
    return this.buf.length;
  }

  close(): void {
    this.sock.destroy();
  }

  private async until(found: () => number): Promise<number> {
    for (;;) {
      const at = found();
      if (at >= 0) return at;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no complete response in 5 s')), 5000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

describe('methods, HEAD and keep-alive framing (raw socket)', () => {
  test('HEAD on a GET route answers like GET, without the body, and the connection goes on', async () => {
    const c = await RawConnection.open(server.http.port);
    try {
      for (const path of ['/healthz', '/readyz', '/metrics']) {
        const h = await c.request('HEAD', path);
        const g = await c.request('GET', path);
        assert.equal(h.status, 200, path);
        assert.equal(g.status, 200, path);
        assert.equal(h.body, '');
        assert.ok(g.body.length > 0);
        assert.equal(h.headers.get('content-type'), g.headers.get('content-type'));
        if (path !== '/metrics') {
          assert.equal(h.headers.get('content-length'), String(Buffer.byteLength(g.body)));
        }
      }
      assert.equal(await c.leftover(), 0);
    } finally {
      c.close();
    }
  });

  test('a wrong method → 405 method_not_allowed with Allow; HEAD gets it bodiless', async () => {
    const c = await RawConnection.open(server.http.port);
    try {
      const cases: [string, string, string, string][] = [
        ['HEAD', '/v1/recommendations', '', 'POST'],
        ['OPTIONS', '/v1/similar', '', 'POST'],
        ['PUT', '/v1/feedback', '{"user_id":"u"}', 'POST'],
        ['DELETE', '/v1/feedback/negative', '', 'POST'],
        ['POST', '/healthz', '{}', 'GET, HEAD'],
        ['PATCH', '/metrics', '{}', 'GET, HEAD'],
      ];
      for (const [method, path, body, allow] of cases) {
        const r = await c.request(method, path, body);
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.equal(r.headers.get('allow'), allow, `${method} ${path}`);
        if (method === 'HEAD') assert.equal(r.body, '');
        else assert.equal(JSON.parse(r.body).error.code, 'method_not_allowed');
        // The next request on the same connection still parses.
        const next = await c.request('GET', '/healthz');
        assert.deepEqual([next.status, next.body], [200, '{"status":"ok"}']);
      }
      const missing = await c.request('HEAD', '/v2/nothing');
      assert.deepEqual(
        [missing.status, missing.body, missing.headers.has('allow')],
        [404, '', false],
      );
      assert.equal((await c.request('GET', '/healthz')).status, 200);
      assert.equal(await c.leftover(), 0);
    } finally {
      c.close();
    }
  });
});
