// What a model swap costs the requests flowing meanwhile
// (`npm run bench:swap [-- --quick --json --items N --rate R --duration S]`).
//
// `recserve serve` on a private copy of a synthetic repository, listing it every 200 ms,
// under open-loop load at R req/s (Poisson arrivals, latency from each request's scheduled
// send time; the answer cache is off, so every request runs the whole pipeline). A third of
// the way in, version 2 is moved into the repository (prepared before the run by
// `importRanker`: the same catalog and embeddings, the ranker imported again, so the server
// loads it in full: bundle, exact index, HNSW graph, ranking workers, warm-up). Two thirds
// in it is moved out again, and the server rolls back to version 1 (a second full load).
//
// Reported per window (steady, each load, between and after), from the server's own log
// lines for when each load began and swapped: answers, p50 / p99 / max latency, failures
// (anything but 200). Plus each load's time and the answers per model version. The figure
// is the ratio of a load window's p99 to the steady one's, measured in the same run.
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { openLoop } from './lib/openloop.js';
import { ensureSyntheticModels, startBenchServer } from './lib/server.js';
import { percentile } from './lib/stats.js';
import { printTable } from './lib/table.js';
import { importRanker } from '../src/models/import.js';
import { latestVersion } from '../src/models/repository.js';

const args = parseBenchArgs();
const quick = args.quick;
const items = numberOption(args, 'items', quick ? 3000 : 20000);
const dim = numberOption(args, 'dim', 64);
const rate = numberOption(args, 'rate', quick ? 60 : 100);
const durationS = numberOption(args, 'duration', quick ? 12 : 30);
const log = (msg: string) => {
  if (!args.json) console.error(`[swap] ${msg}`);
};
const NAME = 'recserve';

interface Answer {
  at: number;
  latency: number;
  status: number | null;
  version: string | undefined;
}

interface Window {
  window: string;
  from_s: number;
  to_s: number;
  answers: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  failures: number;
}

const round = (v: number) => Math.round(v * 100) / 100;

async function main(): Promise<void> {
  const source = ensureSyntheticModels(items, dim, log);
  const v1 = latestVersion(source, NAME)!;
  // The run's repository holds version 1 only; version 2 waits beside it, in the same file
  // system, so that it appears with one rename.
  const repo = mkdtempSync(join(tmpdir(), 'recserve-bench-swap-'));
  const staging = mkdtempSync(join(tmpdir(), 'recserve-bench-swap-staging-'));
  try {
    cpSync(join(source, NAME, String(v1)), join(repo, NAME, '1'), { recursive: true });
    // config.json says the version it was written as; the copy is version 1 here.
    const cfgPath = join(repo, NAME, '1', 'config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as {
      version: number;
      ranker: unknown;
    };
    if (cfg.version !== 1) throw new Error(`${source} holds version ${v1}; use a fresh one`);
    cpSync(join(repo, NAME, '1'), join(staging, NAME, '1'), { recursive: true });
    const rankerConfig = join(staging, 'ranker.json');
    writeFileSync(rankerConfig, JSON.stringify(cfg.ranker));
    log('preparing version 2 (the ranker imported again)');
    await importRanker({
      repoDir: staging,
      name: NAME,
      modelPath: join(staging, NAME, '1', 'model.onnx'),
      configPath: rankerConfig,
    });

    const server = await startBenchServer(repo, ['--model-poll-ms', '200', '--cache-ttl-ms', '0']);
    const base = `http://127.0.0.1:${server.port}`;
    try {
      let users = 0;
      const request = () => ({
        path: '/v1/recommendations',
        body: JSON.stringify({ user_id: `u${users++ % 500}`, num_items: 20 }),
      });
      // Two seconds unrecorded first: the steady window should not hold the first requests'
      // lazy initialisation.
      await openLoop({ url: base, rate, durationS: 2, makeRequest: request });
      // The server's event-loop delay, scraped every 250 ms (each scrape covers the time since
      // the one before): a stall there delays every request in flight.
      const lags: { at: number; maxMs: number }[] = [];
      let scraping = true;
      const scraper = (async () => {
        while (scraping) {
          await new Promise((r) => setTimeout(r, 250));
          const text = await (await fetch(`${base}/metrics`)).text();
          const m = /^recserve_event_loop_lag_seconds\{quantile="1"\} (\S+)$/m.exec(text);
          if (m) lags.push({ at: Date.now(), maxMs: Number(m[1]) * 1000 });
        }
      })();
      const answers: Answer[] = [];
      const t0 = Date.now();
      const swapAt = (durationS * 1000) / 3;
      const backAt = (2 * durationS * 1000) / 3;
      const moves = [
        setTimeout(() => {
          log('version 2 into the repository');
          renameSync(join(staging, NAME, '2'), join(repo, NAME, '2'));
        }, swapAt),
        setTimeout(() => {
          log('version 2 out of it (roll back to 1)');
          renameSync(join(repo, NAME, '2'), join(staging, NAME, '2'));
        }, backAt),
      ];
      log(`open loop at ${rate} req/s for ${durationS} s on ${items} items`);
      const totals = await openLoop({
        url: base,
        rate,
        durationS,
        wantBody: true,
        makeRequest: request,
        onAnswer: (scheduledMs, latency, status, body) => {
          let version: string | undefined;
          try {
            version = (JSON.parse(body) as { metadata?: { model_version?: string } }).metadata
              ?.model_version;
          } catch {
            version = undefined;
          }
          answers.push({ at: performance.timeOrigin + scheduledMs, latency, status, version });
        },
      });
      moves.forEach(clearTimeout);
      scraping = false;
      await scraper;
      // The server's log says when each load began and when it swapped (pino's epoch ms).
      const starts = server.logs.filter((r) => r.msg === 'loading model version').slice(1);
      const swaps = server.logs.filter((r) => r.msg === 'model version swapped in');
      if (starts.length < 2 || swaps.length < 2)
        throw new Error(
          `expected two loads and two swaps in the server's log, saw ${starts.length} and ${swaps.length}`,
        );
      const mark = [
        t0,
        starts[0]!.time as number,
        swaps[0]!.time as number,
        starts[1]!.time as number,
        swaps[1]!.time as number,
        Infinity,
      ];
      const names = [
        'steady (v1)',
        'loading v2',
        'between (v2)',
        'loading v1 (rollback)',
        'after (v1)',
      ];
      const windows: Window[] = names.map((window, i) => {
        const inside = answers.filter((a) => a.at >= mark[i]! && a.at < mark[i + 1]!);
        const ok = inside.filter((a) => a.status === 200).map((a) => a.latency);
        return {
          window,
          from_s: round((mark[i]! - t0) / 1000),
          to_s: round((Math.min(mark[i + 1]!, t0 + durationS * 1000) - t0) / 1000),
          answers: inside.length,
          p50_ms: round(percentile(ok, 50)),
          p99_ms: round(percentile(ok, 99)),
          max_ms: round(ok.reduce((a, b) => Math.max(a, b), 0)),
          failures: inside.length - ok.length,
        };
      });
      // Half-second buckets: where in a window the slow answers fall (the load itself, the
      // swap, or the first answers of the new version).
      const timeline: {
        at_s: number;
        answers: number;
        p99_ms: number;
        max_ms: number;
        loop_lag_max_ms: number;
      }[] = [];
      for (let b = 0; b < durationS * 2; b++) {
        const from = t0 + b * 500;
        const to = from + 500;
        const lat = answers
          .filter((a) => a.status === 200 && a.at >= from && a.at < to)
          .map((a) => a.latency);
        // Scrapes ending inside the bucket or the first after it.
        const lag = lags.filter((l) => l.at >= from && l.at < to + 250).map((l) => l.maxMs);
        timeline.push({
          at_s: b / 2,
          answers: lat.length,
          p99_ms: round(percentile(lat, 99)),
          max_ms: round(lat.reduce((x, y) => Math.max(x, y), 0)),
          loop_lag_max_ms: round(lag.reduce((x, y) => Math.max(x, y), 0)),
        });
      }
      const byVersion: Record<string, number> = {};
      for (const a of answers) {
        const k = a.version ?? `status ${a.status ?? 'failed'}`;
        byVersion[k] = (byVersion[k] ?? 0) + 1;
      }
      const loads = swaps.map((r) => ({
        version: r.version,
        ms: r.ms,
        rollback: r.rollback,
      }));
      const steady = windows[0]!.p99_ms;
      const ratios = {
        loading_v2_p99_vs_steady: round(windows[1]!.p99_ms / steady),
        rollback_p99_vs_steady: round(windows[3]!.p99_ms / steady),
      };
      const out = {
        bench: 'swap',
        date: new Date().toISOString(),
        items,
        dim,
        rate,
        duration_s: durationS,
        totals,
        windows,
        loads,
        answers_by_version: byVersion,
        ratios,
        timeline,
      };
      if (args.json) {
        console.log(JSON.stringify(out));
      } else {
        printTable(
          ['window', 'from s', 'to s', 'answers', 'p50 ms', 'p99 ms', 'max ms', 'failures'],
          windows.map((w) => [
            w.window,
            w.from_s,
            w.to_s,
            w.answers,
            w.p50_ms,
            w.p99_ms,
            w.max_ms,
            w.failures,
          ]),
        );
        console.log(
          `loads: ${loads.map((l) => `v${String(l.version)} ${String(l.ms)} ms${l.rollback ? ' (rollback)' : ''}`).join(', ')}`,
        );
        console.log(`answers by version: ${JSON.stringify(byVersion)}`);
        if (args.options.has('timeline'))
          for (const t of timeline)
            console.log(
              `  ${t.at_s.toFixed(1)} s: ${t.answers} answers, p99 ${t.p99_ms} ms, max ${t.max_ms} ms, event-loop lag max ${t.loop_lag_max_ms} ms`,
            );
        console.log(
          `p99 while loading / steady p99: v2 ${ratios.loading_v2_p99_vs_steady}, rollback ${ratios.rollback_p99_vs_steady}`,
        );
      }
    } finally {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }
  } finally {
    rmSync(repo, { recursive: true, force: true });
    rmSync(staging, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
