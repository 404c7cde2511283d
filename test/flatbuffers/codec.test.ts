// The FlatBuffers payloads: round trips, agreement with proto/recserve.fbs, interop with
// flatc (the reference implementation: it must read what we write and we must read what it
// writes), and hostile bytes rejected as malformed_body without crashing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiError } from '../../src/api/errors.js';
import type {
  RecommendationRequest,
  RecommendationResponse,
  SimilarResponse,
} from '../../src/api/types.js';
import { validateRecommendationRequest } from '../../src/api/validate.js';
import { projectRoot } from '../../src/retrieval/native.js';
import * as fb from '../../src/transport/flatbuffers/codec.js';
import { ALL_TABLES, type FieldType } from '../../src/transport/flatbuffers/schema.js';

const FBS = join(projectRoot(), 'proto', 'recserve.fbs');

const request: RecommendationRequest = {
  user_id: 'user_123',
  context: {
    device_type: 'mobile',
    platform: 'ios',
    timestamp: '2026-01-24T10:30:00Z',
    location: { country: 'US', region: 'CA' },
    session_id: 'sess_abc',
  },
  request_type: 'home_feed',
  num_items: 0, // present zero: must survive as 0 so validation rejects it like JSON does
  exclude_items: ['item_1', 'item_2'],
  filters: { categories: ['action', 'comedy'], min_quality_score: 0 },
  diversity_settings: { category_diversity: 0.3 },
};

const response: RecommendationResponse = {
  request_id: 'req_xyz',
  recommendations: [
    {
      item_id: 'item_456',
      score: 0.1 + 0.2, // a double that float32 could not carry exactly
      rank: 1,
      explanation: { reason: 'similar_to_recent', source_items: ['item_100'] },
      metadata: { title: 'Ünïcødé ✓', categories: ['action'], creator_id: 'c9', year: 1999 },
    },
    {
      item_id: 'item_7',
      score: 0,
      rank: 2,
      explanation: { reason: 'trending', source_items: [] },
      metadata: {},
    },
  ],
  metadata: {
    model_version: 'v2.3.1',
    experiment_id: null,
    variant: 'treatment_a',
    retrieval_sources: { collaborative: 35, trending: 5 },
    latency_ms: { total: 8.25, retrieval: 1.5, ranking: 4.75, feature_fetch: 0.5 },
    cache_hit: false,
  },
};

test('requests round-trip to the same JSON-shaped object, absent and zero kept apart', () => {
  const back = fb.decodeRecommendationRequest(fb.encodeRecommendationRequest(request));
  assert.deepEqual(back, request);
  // ...so validation judges it exactly as it judges JSON.
  assert.throws(() => validateRecommendationRequest(back), {
    code: 'invalid_argument',
    field: 'num_items',
  });
  const minimal = fb.decodeRecommendationRequest(fb.encodeRecommendationRequest({ user_id: 'u' }));
  assert.deepEqual(minimal, { user_id: 'u' });
  assert.equal(validateRecommendationRequest(minimal).num_items, 20);

  const sim = {
    item_id: 'i',
    user_id: 'u',
    num_items: 5,
    similarity_type: 'content' as const,
    exclude_items: [],
  };
  assert.deepEqual(fb.decodeSimilarRequest(fb.encodeSimilarRequest(sim)), sim);
});

test('responses round-trip; open metadata keys come back as strings', () => {
  const back = fb.decodeRecommendationResponse(fb.encodeRecommendationResponse(response));
  const expected = structuredClone(response) as unknown as {
    recommendations: { metadata: Record<string, unknown> }[];
  };
  expected.recommendations[0]!.metadata.year = '1999';
  assert.deepEqual(back, expected);
  assert.equal(back.recommendations[0]!.score, 0.1 + 0.2);

  const sim: SimilarResponse = {
    request_id: 'r',
    source_item: 'item_1',
    similar_items: [
      {
        item_id: 'a',
        similarity_score: 0.92,
        similarity_type: 'content',
        common_attributes: ['category:action'],
      },
      { item_id: 'b', similarity_score: 0, similarity_type: 'hybrid', common_attributes: [] },
    ],
  };
  assert.deepEqual(fb.decodeSimilarResponse(fb.encodeSimilarResponse(sim)), sim);
});

test('a cached answer (item list encoded once, copied behind a fresh head) decodes the same', () => {
  // A flatbuffers upgrade that renamed Builder's fields would silently lose the splice.
  assert.equal(fb.splicesCachedItems(), true);
  const base = { ...response, metadata: { ...response.metadata, cache_hit: true } };
  const fresh = fb.decodeRecommendationResponse(
    fb.encodeRecommendationResponse({ ...base, recommendations: [...base.recommendations] }),
  );
  for (let i = 0; i < 3; i++) {
    // Same list object each time, as cache hits share it; head fields differ per request,
    // and a long request id forces the builder to grow past its first buffer.
    const hit = {
      ...base,
      request_id: `req_${i}_${'x'.repeat(i * 400)}`,
      metadata: { ...base.metadata, latency_ms: { ...base.metadata.latency_ms, total: i } },
    };
    const back = fb.decodeRecommendationResponse(fb.encodeRecommendationResponse(hit));
    assert.deepEqual(back.recommendations, fresh.recommendations);
    assert.equal(back.request_id, hit.request_id);
    assert.equal(back.metadata.latency_ms.total, i);
    assert.equal(back.metadata.cache_hit, true);
  }
});

test('a value the schema cannot carry is invalid_argument naming the field', () => {
  assert.throws(
    () => fb.encodeRecommendationRequest({ user_id: 'u', num_items: 2.5 }),
    (e: unknown) =>
      e instanceof ApiError && e.code === 'invalid_argument' && e.field === 'num_items',
  );
  assert.throws(
    () =>
      fb.encodeRecommendationRequest({
        user_id: 'u',
        exclude_items: ['a', 7 as unknown as string],
      }),
    (e: unknown) => e instanceof ApiError && e.field === 'exclude_items[1]',
  );
});

test('truncated, corrupt and foreign bodies are malformed_body, never a crash', () => {
  const good = fb.encodeRecommendationResponse(response);
  for (let n = 0; n < good.length; n++) {
    try {
      fb.decodeRecommendationResponse(good.subarray(0, n));
    } catch (e) {
      assert.ok(e instanceof ApiError && e.code === 'malformed_body', `length ${n}: ${String(e)}`);
    }
  }
  // Flip bytes one at a time (keeping the identifier so the decoder gets past it).
  for (let i = 8; i < good.length; i += 3) {
    const bad = Uint8Array.from(good);
    bad[i] ^= 0xa5;
    try {
      fb.decodeRecommendationResponse(bad);
    } catch (e) {
      assert.ok(e instanceof ApiError && e.code === 'malformed_body', `byte ${i}: ${String(e)}`);
    }
  }
  const json = new TextEncoder().encode(JSON.stringify({ user_id: 'u' }));
  assert.throws(() => fb.decodeRecommendationRequest(json), { code: 'malformed_body' });
  assert.throws(() => fb.decodeRecommendationRequest(new Uint8Array(0)), {
    code: 'malformed_body',
  });
});

/** `table Name { field:type ...; }` blocks of the .fbs, as name → [field, type, optional]. */
function parseFbs(text: string): Map<string, [string, string, boolean][]> {
  const out = new Map<string, [string, string, boolean][]>();
  const noComments = text.replace(/\/\/.*$/gm, '');
  for (const m of noComments.matchAll(/table\s+(\w+)\s*\{([^}]*)\}/g)) {
    const fields: [string, string, boolean][] = [];
    for (const f of m[2]!.matchAll(/(\w+)\s*:\s*([\w[\]]+)\s*(=\s*null)?[^;]*;/g)) {
      fields.push([f[1]!, f[2]!, f[3] !== undefined]);
    }
    out.set(m[1]!, fields);
  }
  return out;
}

function fbsType(t: FieldType): string {
  if (typeof t === 'string') return t === 'strings' ? '[string]' : t;
  if ('table' in t) return t.table.name;
  if ('tables' in t) return `[${t.tables.name}]`;
  return t.map === 'string' ? '[StringEntry]' : '[NumberEntry]';
}

test('the codec descriptors match proto/recserve.fbs field for field, in slot order', () => {
  const tables = parseFbs(readFileSync(FBS, 'utf8'));
  assert.equal(tables.size, ALL_TABLES.length);
  for (const desc of ALL_TABLES) {
    const fields = tables.get(desc.name);
    assert.ok(fields, `table ${desc.name} missing from the .fbs`);
    assert.deepEqual(
      desc.fields.map((f) => [f.name, fbsType(f.type), f.optional === true]),
      fields,
      desc.name,
    );
  }
});

const flatc = spawnSync('flatc', ['--version'], { encoding: 'utf8' });
const noFlatc =
  flatc.status === 0
    ? false
    : 'flatc not installed (Debian: flatbuffers-compiler; scripts/setup.sh installs it)';

test('flatc reads what we write and we read what flatc writes', { skip: noFlatc }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'recserve-fbs-'));
  try {
    const run = (args: string[]): void => {
      const r = spawnSync('flatc', args, { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr + r.stdout);
    };
    // Ours → flatc's JSON.
    writeFileSync(join(dir, 'ours.bin'), fb.encodeRecommendationResponse(response));
    run(['--json', '--strict-json', '--raw-binary', '-o', 'out', FBS, '--', 'ours.bin']);
    const seen = JSON.parse(readFileSync(join(dir, 'out', 'ours.json'), 'utf8'));
    assert.equal(seen.request_id, 'req_xyz');
    // flatc prints doubles to 12 significant digits; the exact bits were checked above.
    assert.ok(Math.abs(seen.recommendations[0].score - 0.3) < 1e-12);
    assert.equal(seen.recommendations[0].metadata.title, 'Ünïcødé ✓');
    assert.deepEqual(seen.recommendations[0].metadata.attributes, [{ key: 'year', value: '1999' }]);
    assert.equal(seen.metadata.cache_hit, false);
    assert.equal(seen.metadata.experiment_id, undefined);
    assert.deepEqual(seen.metadata.retrieval_sources, [
      { key: 'collaborative', value: 35 },
      { key: 'trending', value: 5 },
    ]);

    // A cached answer's spliced buffer (its second encoding) is read by flatc too.
    const hit = { ...response, metadata: { ...response.metadata, cache_hit: true } };
    fb.encodeRecommendationResponse(hit);
    writeFileSync(join(dir, 'hit.bin'), fb.encodeRecommendationResponse(hit));
    run(['--json', '--strict-json', '--raw-binary', '-o', 'out', FBS, '--', 'hit.bin']);
    const hitSeen = JSON.parse(readFileSync(join(dir, 'out', 'hit.json'), 'utf8'));
    assert.deepEqual(hitSeen.recommendations, seen.recommendations);
    assert.equal(hitSeen.metadata.cache_hit, true);

    // flatc's binary (from JSON) → ours, for a request type (a different root).
    const reqJson = { ...request, context: { ...request.context } };
    writeFileSync(join(dir, 'req.json'), JSON.stringify(reqJson));
    run(['-b', '--root-type', 'recserve.fb.RecommendationRequest', '-o', 'out', FBS, 'req.json']);
    const decoded = fb.decodeRecommendationRequest(readFileSync(join(dir, 'out', 'req.bin')));
    assert.deepEqual(decoded, request);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
