// A model version that cannot be loaded: the server stays up and not ready, and says why on
// /readyz and in every call's error, where it said "not loaded yet; retry shortly" for good.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ensureTestModels, post, startTestServer } from './harness.js';

test('a version that fails to load: /readyz says failed and why, calls say it too', async () => {
  const models = mkdtempSync(join(tmpdir(), 'recserve-broken-models-'));
  cpSync(ensureTestModels(), models, { recursive: true });
  // One value short: the manifest's size check refuses the version.
  truncateSync(join(models, 'recserve', '1', 'items_quality.f32'), 4);
  // Polling off: nothing will change, so the server says it will not turn ready.
  const { server, base } = await startTestServer(['--models', models, '--model-poll-ms', '0']);
  try {
    let body: { status: string; reason?: string } = { status: 'not_ready' };
    for (let i = 0; i < 200 && body.status === 'not_ready'; i++) {
      const r = await fetch(`${base}/readyz`);
      assert.equal(r.status, 503);
      body = (await r.json()) as typeof body;
      if (body.status === 'not_ready') await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(body.status, 'failed');
    assert.match(body.reason ?? '', /items_quality\.f32/);
    const call = await post(base, '/v1/recommendations', { user_id: 'u1' });
    assert.equal(call.status, 503);
    assert.match(
      call.json.error.message,
      /failed to load.*items_quality\.f32.*will not turn ready/,
    );
    const fb = await post(base, '/v1/feedback', {
      user_id: 'u1',
      events: [{ item_id: 'i1', event_type: 'view' }],
    });
    assert.equal(fb.status, 503);
    assert.match(fb.json.error.message, /failed to load/);
  } finally {
    await server.close();
    rmSync(models, { recursive: true, force: true });
  }
});

test('with polling on, a server whose only version failed turns ready once the version is fixed', async () => {
  const models = mkdtempSync(join(tmpdir(), 'recserve-broken-models-'));
  cpSync(ensureTestModels(), models, { recursive: true });
  const quality = join(models, 'recserve', '1', 'items_quality.f32');
  const good = readFileSync(quality);
  truncateSync(quality, 4);
  const { server, base } = await startTestServer(['--models', models, '--model-poll-ms', '100']);
  try {
    let body: { status: string; reason?: string } = { status: 'not_ready' };
    for (let i = 0; i < 200 && body.status === 'not_ready'; i++) {
      body = (await (await fetch(`${base}/readyz`)).json()) as typeof body;
      if (body.status === 'not_ready') await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(body.status, 'failed');
    assert.match(body.reason ?? '', /items_quality\.f32/);
    const call = await post(base, '/v1/recommendations', { user_id: 'u1' });
    assert.equal(call.status, 503);
    assert.match(call.json.error.message, /watched for a version that loads/);
    writeFileSync(quality, good);
    await server.ready;
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    const r = await post(base, '/v1/recommendations', { user_id: 'u1' });
    assert.equal(r.status, 200);
  } finally {
    await server.close();
    rmSync(models, { recursive: true, force: true });
  }
});
