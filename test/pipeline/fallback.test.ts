// The seed's fallback: when ranking misses its deadline, cosine scores order the list and
// the answer says so; exclusions and the list length still hold.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RunningServer } from '../../src/cli/serve.js';
import { post, startTestServer } from '../http/harness.js';

let server: RunningServer;
let base: string;

before(async () => {
  // 1 ms is shorter than any worker round trip (message + assembly + ONNX run).
  ({ server, base } = await startTestServer(['--ranking-timeout-ms', '1', '--cache-ttl-ms', '0']));
  await server.ready;
});

after(async () => {
  await server.close();
});

test('a ranking timeout falls back to cosine scores, marked, still well-formed', async () => {
  const b = server.registry.current()!.bundle;
  let fellBack = 0;
  for (let i = 0; i < 5; i++) {
    const exclude = [b.items.ids[i]!];
    const r = await post(base, '/v1/recommendations', {
      user_id: b.userIds[i]!,
      num_items: 10,
      exclude_items: exclude,
    });
    assert.equal(r.status, 200);
    assert.equal(r.json.recommendations.length, 10);
    for (const x of r.json.recommendations) assert.notEqual(x.item_id, exclude[0]);
    if (r.json.metadata.ranking_fallback === true) fellBack++;
  }
  assert.ok(fellBack > 0, 'no request fell back');
  const text = await (await fetch(base + '/metrics')).text();
  assert.match(text, /recserve_ranking_fallback_total\{reason="timeout"\} [1-9]/);
});
