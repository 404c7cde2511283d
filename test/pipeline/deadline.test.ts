// The caller's deadline bounds ranking: a request whose deadline leaves no ranking budget is
// answered from the cosine fallback (marked, counted as reason="deadline") instead of
// waiting on the worker past the point the caller gave up.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RunningServer } from '../../src/cli/serve.js';
import { startTestServer } from '../http/harness.js';

let server: RunningServer;
let base: string;

before(async () => {
  ({ server, base } = await startTestServer(['--cache-ttl-ms', '0']));
  await server.ready;
});

after(async () => {
  await server.close();
});

test('a deadline that leaves no ranking budget falls back to cosine scores', async () => {
  const b = server.registry.current()!.bundle;
  const exclude = [b.items.ids[0]!];
  // 2 ms ahead: the request starts (the deadline has not passed), but by the ranking stage
  // less than the reserve kept for the fallback re-rank is left, whatever the machine's speed.
  const r = await server.service.recommend(
    { user_id: b.userIds[1]!, num_items: 10, exclude_items: exclude },
    { deadline: Date.now() + 2 },
  );
  assert.equal(r.metadata.ranking_fallback, true);
  assert.equal(r.recommendations.length, 10);
  for (const x of r.recommendations) assert.notEqual(x.item_id, exclude[0]);
  const text = await (await fetch(base + '/metrics')).text();
  assert.match(text, /recserve_ranking_fallback_total\{reason="deadline"\} [1-9]/);
});

test('without a deadline the same request is ranked by the model', async () => {
  const b = server.registry.current()!.bundle;
  let ranked = 0;
  // The default ranking timeout (50 ms) is generous; allow a slow machine a few tries.
  for (let i = 0; i < 5 && ranked === 0; i++) {
    const r = await server.service.recommend({ user_id: b.userIds[1]!, num_items: 10 });
    if (r.metadata.ranking_fallback !== true) ranked++;
  }
  assert.ok(ranked > 0, 'every request fell back without a deadline');
});
