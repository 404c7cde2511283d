// What serving on Redis costs, and what a Redis outage looks like to callers
// (`npm run bench:serve-redis [-- --quick --json --duration S --connections C --items N]`).
//
// In one run, on one machine: `recserve serve` on the embedded store, then on a
// redis-server started here (loopback, no persistence), each driven by the same autocannon
// scenarios (cached answers, uncached answers, feedback, a 15% feedback mix). The redis/memory
// ratios are the figures; absolute numbers move with the host's noise.
//
// Then the outage: closed-loop load (half recommendations, half feedback) on the Redis-backed
// server while Redis is shut down for --outage seconds and started again on the same port.
// Reported: answers by status during the outage (degraded 503 lists, 503 store_unavailable
// feedback, and anything else, which should be nothing), the slowest answer during it, and
// how long after the restart feedback was accepted again.
import { join } from 'node:path';
import autocannon from 'autocannon';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { printTable } from './lib/table.js';
import { ensureSyntheticModels, startBenchServer, type BenchServer } from './lib/server.js';
import { latestVersion, loadBundle } from '../src/models/repository.js';
import { freePort, startRedisServer } from '../test/support/redis-server.js';

const args = parseBenchArgs();
const quick = args.quick;
const duration = numberOption(args, 'duration', quick ? 3 : 10);
const connections = numberOption(args, 'connections', 16);
const items = numberOption(args, 'items', quick ? 3000 : 20000);
const outageS = numberOption(args, 'outage', quick ? 2 : 5);
const log = (msg: string) => {
  if (!args.json) console.error(`[serve-redis] ${msg}`);
};

interface Row {
  store: string;
  scenario: string;
  rps: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  non2xx: number;
}

function pick<T>(a: T[]): T {
  return a[Math.floor(Math.random() * a.length)]!;
}

type Req = { path: string; body: string };

async function drive(
  base: string,
  store: string,
  name: string,
  make: (() => Req) | Req[],
): Promise<Row> {
  const headers = { 'content-type': 'application/json' };
  const r = await autocannon({
    url: base,
    connections,
    duration,
    requests: Array.isArray(make)
      ? make.map((x) => ({ method: 'POST' as const, headers, ...x }))
      : [
          {
            method: 'POST',
            headers,
            setupRequest: (req) => ({ ...req, ...make() }),
          },
        ],
  });
  return {
    store,
    scenario: name,
    rps: Math.round(r.requests.average),
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
  };
}

async function stop(s: BenchServer): Promise<void> {
  s.child.kill('SIGTERM');
  await new Promise((r) => s.child.once('exit', r));
}

async function main(): Promise<void> {
  const models = ensureSyntheticModels(items, 64, log);
  const bundle = await loadBundle(
    join(models, 'recserve', String(latestVersion(models, 'recserve'))),
  );
  const users = bundle.userIds;
  const itemIds = bundle.items.ids;
  const recs = (user: string, extra: Record<string, unknown> = {}): Req => ({
    path: '/v1/recommendations',
    body: JSON.stringify({ user_id: user, num_items: 20, ...extra }),
  });
  const feedback = (user: string): Req => ({
    path: '/v1/feedback',
    body: JSON.stringify({
      user_id: user,
      events: [{ item_id: pick(itemIds), event_type: pick(['view', 'click', 'like']) }],
    }),
  });
  const redisPort = await freePort();
  let redis = await startRedisServer({ port: redisPort });
  const rows: Row[] = [];
  const stores: [string, string[]][] = [
    ['memory', []],
    ['redis', ['--store', 'redis', '--redis-url', redis.url]],
  ];
  let outage: Record<string, unknown> | null = null;
  try {
    for (const [store, flags] of stores) {
      log(`${store}: starting the server`);
      const server = await startBenchServer(models, ['--no-grpc', ...flags]);
      const base = `http://127.0.0.1:${server.port}`;
      try {
        // Untimed warm-up: JIT, the first collections, the Redis connection's first scripts.
        await drive(base, store, 'warmup', () =>
          recs(pick(users), { exclude_items: [pick(itemIds)] }),
        );
        const hot = users.slice(0, 50);
        for (const u of hot)
          await fetch(base + '/v1/recommendations', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: recs(u).body,
          });
        rows.push(
          await drive(
            base,
            store,
            'cached',
            hot.map((u) => recs(u)),
          ),
        );
        rows.push(
          await drive(base, store, 'warm_uncached', () =>
            recs(pick(users), { exclude_items: [pick(itemIds)] }),
          ),
        );
        rows.push(await drive(base, store, 'feedback', () => feedback(pick(users))));
        rows.push(
          await drive(base, store, 'mixed_feedback', () => {
            const u = pick(users);
            return Math.random() < 0.15 ? feedback(u) : recs(u);
          }),
        );
        if (store === 'redis') {
          outage = await outageRun(base, users, recs, feedback, async (down) => {
            if (down) await redis.stop();
            else redis = await startRedisServer({ port: redisPort });
          });
        }
      } finally {
        await stop(server);
      }
    }
  } finally {
    await redis.stop();
  }

  const ratios: Record<string, { rps: number; p99: number }> = {};
  for (const r of rows.filter((x) => x.store === 'redis')) {
    const m = rows.find((x) => x.store === 'memory' && x.scenario === r.scenario)!;
    ratios[r.scenario] = {
      rps: Math.round((r.rps / m.rps) * 100) / 100,
      p99: Math.round((r.p99_ms / Math.max(m.p99_ms, 1)) * 100) / 100,
    };
  }
  const summary = {
    items,
    connections,
    duration_s: duration,
    scenarios: rows,
    redis_vs_memory: ratios,
    outage,
    date: new Date().toISOString(),
  };
  if (args.json) {
    console.log(JSON.stringify(summary, null, 2));
    return;
  }
  printTable(
    ['store', 'scenario', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'],
    rows.map((r) => [r.store, r.scenario, r.rps, r.p50_ms, r.p99_ms, r.errors, r.non2xx]),
  );
  console.log(`\nredis / memory (req/s, p99): ${JSON.stringify(ratios)}`);
  console.log(`outage: ${JSON.stringify(outage)}`);
}

/**
 * Closed-loop load for 3 phases (before, Redis down for outageS, after) with one record per
 * answer: when it was sent, how long it took, its status and error code.
 */
async function outageRun(
  base: string,
  users: string[],
  recs: (u: string) => Req,
  feedback: (u: string) => Req,
  toggle: (down: boolean) => Promise<void>,
): Promise<Record<string, unknown>> {
  log(`outage: ${outageS} s of Redis down under load`);
  type Rec = { t: number; ms: number; status: number; kind: 'recs' | 'feedback'; code: string };
  const recsOut: Rec[] = [];
  let running = true;
  const worker = async (i: number) => {
    for (let n = 0; running; n++) {
      const kind = (i + n) % 2 === 0 ? 'recs' : 'feedback';
      const req = kind === 'recs' ? recs(pick(users)) : feedback(pick(users));
      const t = performance.now();
      let status = 0;
      let code = '';
      try {
        const r = await fetch(base + req.path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: req.body,
        });
        status = r.status;
        const body = (await r.json()) as {
          error?: { code: string };
          metadata?: { degraded?: string };
        };
        code = body.error?.code ?? body.metadata?.degraded ?? '';
      } catch {
        status = -1;
      }
      recsOut.push({ t, ms: performance.now() - t, status, kind, code });
    }
  };
  const workers = Array.from({ length: Math.min(connections, 8) }, (_, i) => worker(i));
  const pause = (s: number) => new Promise((r) => setTimeout(r, s * 1000));
  await pause(1);
  const tDown = performance.now();
  await toggle(true);
  await pause(outageS);
  const tUp = performance.now();
  await toggle(false);
  await pause(Math.max(2, outageS));
  running = false;
  await Promise.all(workers);
  const during = recsOut.filter((r) => r.t >= tDown && r.t < tUp);
  const count = (f: (r: Rec) => boolean) => during.filter(f).length;
  const firstOk = recsOut.find((r) => r.t >= tUp && r.kind === 'feedback' && r.status === 200);
  const after = recsOut.filter((r) => firstOk && r.t >= firstOk.t);
  return {
    outage_s: outageS,
    answers_during: during.length,
    degraded_recs_503: count(
      (r) => r.kind === 'recs' && r.status === 503 && r.code === 'store_unavailable',
    ),
    recs_200: count((r) => r.kind === 'recs' && r.status === 200),
    feedback_503_store_unavailable: count(
      (r) => r.kind === 'feedback' && r.status === 503 && r.code === 'store_unavailable',
    ),
    feedback_200: count((r) => r.kind === 'feedback' && r.status === 200),
    other: count(
      (r) => !(r.status === 200 || (r.status === 503 && r.code === 'store_unavailable')),
    ),
    max_ms_during: Math.round(Math.max(0, ...during.map((r) => r.ms)) * 10) / 10,
    recovered_after_restart_ms: firstOk ? Math.round(firstOk.t - tUp) : null,
    non_200_after_recovery: after.filter((r) => r.status !== 200).length,
  };
}

await main();
