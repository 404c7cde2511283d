// "Loses nothing, counts nothing twice" under a misbehaving Redis: clients send feedback to
// a real server on a real redis-server that is paused (SIGSTOP) and has its connections
// killed at random moments, retrying every 503 and every dropped connection as a client
// should. Afterwards every user's state must hold each event exactly once: an event whose
// first attempt landed after the client gave up on it is recognised by its idempotency key
// when the retry comes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisFeatureStore } from '../../src/features/redis-store.js';
import { hasRedisServer, startRedisServer } from '../support/redis-server.js';
import { startTestServer } from './harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (!hasRedisServer()) {
  test('feedback through a misbehaving Redis', { skip: 'redis-server is not installed' });
} else {
  const redis = await startRedisServer();
  after(() => redis.stop());

  test('feedback through a paused, connection-killing Redis: every event counted exactly once', async () => {
    const { server, base } = await startTestServer([
      '--store',
      'redis',
      '--redis-url',
      redis.url,
      '--redis-prefix',
      'chaos:',
      '--redis-timeout-ms',
      '150',
    ]);
    await server.ready;
    const pid = Number(/process_id:(\d+)/.exec(await redis.admin.info('server'))![1]);
    const USERS = 12;
    const ITEMS = 8;
    const t0 = Date.now() - 60_000;
    const jobs: { user: string; item: string; ts: string }[] = [];
    for (let u = 0; u < USERS; u++)
      for (let i = 0; i < ITEMS; i++)
        jobs.push({
          user: `chaos-u${u}`,
          item: `item-${i}`,
          ts: new Date(t0 + i * 1000).toISOString(),
        });
    const outcomes = { attempts: 0, unavailable: 0, dropped: 0, duplicates: 0 };
    let chaos = true;
    let paused = false;
    const chaosLoop = (async () => {
      let n = 0;
      while (chaos) {
        // The first pause comes at once: on a fast host the clients could otherwise finish
        // before any chaos began.
        if (n > 0) await sleep(40 + Math.random() * 80);
        if (!chaos) break;
        if (n++ % 2 === 0) {
          process.kill(pid, 'SIGSTOP');
          paused = true;
          await sleep(100 + Math.random() * 250);
          process.kill(pid, 'SIGCONT');
          paused = false;
        } else {
          await redis.admin.call('CLIENT', 'KILL', 'TYPE', 'normal').catch(() => undefined);
        }
      }
    })();
    try {
      let next = 0;
      const worker = async () => {
        while (next < jobs.length) {
          const job = jobs[next++]!;
          for (;;) {
            outcomes.attempts++;
            let status = 0;
            let body: { duplicates_ignored?: number; error?: { code: string } } = {};
            try {
              const r = await fetch(base + '/v1/feedback', {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({
                  user_id: job.user,
                  events: [{ item_id: job.item, event_type: 'like', timestamp: job.ts }],
                }),
              });
              status = r.status;
              body = (await r.json()) as typeof body;
            } catch {
              outcomes.dropped++;
            }
            if (status === 200) {
              outcomes.duplicates += body.duplicates_ignored ?? 0;
              break;
            }
            assert.ok(status === 0 || status === 503, `status ${status}: ${JSON.stringify(body)}`);
            if (status === 503) {
              assert.equal(body.error?.code, 'store_unavailable', JSON.stringify(body));
              outcomes.unavailable++;
            }
            await sleep(20 + Math.random() * 30);
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));
    } finally {
      chaos = false;
      await chaosLoop;
      if (paused) process.kill(pid, 'SIGCONT');
      // Let attempts that were still queued in the server's client settle.
      await sleep(500);
      await server.close();
    }
    // The chaos did something: some attempts failed and were retried.
    assert.ok(outcomes.unavailable > 0, JSON.stringify(outcomes));
    const store = new RedisFeatureStore({ redis: redis.url, prefix: 'chaos:' });
    try {
      const states = await store.getUsers(Array.from({ length: USERS }, (_, u) => `chaos-u${u}`));
      for (const [u, st] of states.entries()) {
        assert.ok(st, `chaos-u${u} has no state`);
        assert.equal(st.interactionCount, ITEMS, `chaos-u${u}: ${JSON.stringify(outcomes)}`);
        for (let i = 0; i < ITEMS; i++) assert.equal(st.itemCounts.get(`item-${i}`), 1);
        assert.equal(st.recent.length, ITEMS);
      }
    } finally {
      await store.close();
    }
  });
}
