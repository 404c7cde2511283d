// gRPC load benchmark (`npm run bench:grpc [-- --quick --json]`), built to run beside the
// HTTP one (bench/load.ts): it starts ONE `recserve serve` child, drives the same scenarios
// through both front ends in the same run, and reports them side by side, so the ratios
// compare like with like on a machine whose absolute numbers drift with its neighbours.
//
//   grpc          raw HTTP/2 (node:http2, h2GrpcLoad), closed loop: `connections` callers
//                 over `--channels` HTTP/2 connections, each sending its next request when
//                 the last one answered; requests serialised and framed before the clock
//                 starts, responses drained unparsed (only grpc-status is read), as
//                 autocannon does on HTTP: the cheapest generator, so the row measures the
//                 server rather than the client competing with it for two shared cores.
//   grpc_jsclient (cached) the cheapest grpc-js client: pre-serialised bytes,
//                 makeUnaryRequest with identity (de)serialisers. Its client µs/req beside
//                 the grpc row's is what a grpc-js generator costs.
//   grpc_sdk      (cached) through the SDK (RecommendationClient): serialised and decoded
//                 into the JSON contract's objects, as an application would.
//   grpc_bare     (cached) a bare grpc-js server (child process, identity serialisers, no
//                 pipeline) answering the bytes of a real cached answer, driven like `grpc`:
//                 grpc-js's own per-call floor under recserve's, in the same run.
//   http      autocannon (the same generator bench/load.ts uses), same connection count.
//   http_fb   autocannon with FlatBuffers bodies both ways (Content-Type and Accept).
//
// h2load rows (nghttp2-client's C load generator; scripts/setup.sh installs it): the same
// request body on every call (h2load cannot vary it), `--h2load-clients` connections each
// carrying `--h2load-streams` concurrent streams for gRPC, and clients x streams HTTP/1.1
// connections with one request in flight each for HTTP (as autocannon), so both front ends
// see the same number of calls in flight. A C generator costs a fraction of any Node one per
// call, which matters when it shares the server's two cores.
//   grpc_h2load       cached: one hot user's request, answered from the cache.
//   grpc_bare_h2load  cached: the bare grpc-js server above, same bytes.
//   http_h2load       cached: the same request as JSON through uWebSockets.js.
//   grpc_h2load / http_h2load in scenario `uncached_fixed`: a second server started with
//                     --cache-ttl-ms 0 (no recommendation cache), so every call runs the
//                     whole pipeline for the one warm user in the body.
// h2load counts HTTP statuses, not grpc-status: gRPC rows count as errors every call the
// server's recserve_grpc_requests_total did not record as OK (read before and after the
// row), the bare server answers OK or nothing. Latency percentiles come from h2load's
// per-request log; client µs/req is h2load's own CPU (bash `times`).
//
// Scenarios (as bench/load.ts): cached (50 hot users, answers from the recommendation
// cache) and warm_uncached (a random excluded item gives every request its own cache key).
// Then payload costs for one real 20- and 100-item response: bytes on the wire and encode /
// decode time for JSON, FlatBuffers and protobuf.
//
// Options: --models DIR (default: the bench/load.ts repository for --items), --items N,
// --duration S per scenario, --connections C, --channels K, --warmup S (untimed load per
// scenario and front end before its rows), --only grpc|http, --generators node,h2load
// (default both when h2load is installed), --h2load-clients N (default 4),
// --h2load-streams M (default 8), --rounds K (alternating gRPC/HTTP rounds of
// uncached_fixed, default 2), --rate R (the fixed-rate cached rows, default 8200: h2load ramps up, so 8,000 is offered with a little to spare; 0: none).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import autocannon from 'autocannon';
import { numberOption, parseBenchArgs } from './lib/args.js';
import { percentile, nowMs } from './lib/stats.js';
import { printTable } from './lib/table.js';
import { ensureSyntheticModels, startBenchServer, type BenchServer } from './lib/server.js';
import type { RecommendationRequest, RecommendationResponse } from '../src/api/types.js';
import { latestVersion, loadBundle } from '../src/models/repository.js';
import { RecommendationClient } from '../src/sdk/index.js';
import { RecserveGrpcClient } from '../src/transport/grpc/client.js';
import * as fb from '../src/transport/flatbuffers/codec.js';
import { serverServiceDefinition, serviceDefinition } from '../src/transport/grpc/proto.js';

const args = parseBenchArgs();
const quick = args.quick;
const duration = numberOption(args, 'duration', quick ? 3 : 10);
const connections = numberOption(args, 'connections', 16);
const channels = numberOption(args, 'channels', 2);
// Uncached gRPC requests serialised ahead: more than a run of --duration sends at ~2k req/s.
const uncachedPool = Math.max(5000, duration * 2500);
// Seconds of untimed load through each front end before a scenario's rows.
const warmup = numberOption(args, 'warmup', quick ? 2 : 5);
const items = numberOption(args, 'items', quick ? 3000 : 20000);
// Embedding dimension of the synthetic bundle built when --models is not given.
const dim = numberOption(args, 'dim', 64);
const only = args.options.get('only');
const h2loadClients = numberOption(args, 'h2load-clients', 4);
const h2loadStreams = numberOption(args, 'h2load-streams', 8);
// Alternating gRPC/HTTP rounds of the uncached_fixed scenario (--rounds; default 2).
const uncachedRounds = numberOption(args, 'rounds', 2);
/** The p99 budget both front ends must hold when their uncached rates are compared. */
const UNCACHED_P99_BUDGET_MS = 50;
// Offered calls/s of the fixed-rate cached rows (the 8,000 plus what h2load's ramp-up
// loses); 0 leaves them out.
const rate = numberOption(args, 'rate', 8200);
const hasH2load = spawnSync('h2load', ['--version']).status === 0;
const generators = new Set(
  (args.options.get('generators') ?? (hasH2load ? 'node,h2load' : 'node')).split(','),
);
if (generators.has('h2load') && !hasH2load) {
  throw new Error('--generators h2load: h2load not found (apt-get install nghttp2-client)');
}
const log = (msg: string) => {
  if (!args.json) console.error(`[grpc-load] ${msg}`);
};

/** The repository bench/load.ts builds for the same --items (shared, built once). */
function ensureModels(): string {
  return args.options.get('models') ?? ensureSyntheticModels(items, dim, log);
}

async function startServer(models: string): Promise<BenchServer> {
  const server = await startBenchServer(models);
  if (!server.grpcPort) throw new Error('the server did not report a gRPC port');
  return server;
}

export interface LoadRow {
  scenario: string;
  transport: string;
  rps: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  /** Server CPU (user + system, all threads) per request, µs. */
  server_cpu_us?: number;
  /** Load generator CPU per request, µs (this process, or h2load's). */
  client_cpu_us?: number;
  /** Calls answered in the timed part (when the generator counts them itself). */
  requests?: number;
  /** Generator settings, for the record: "h2load -c 4 -m 8", "autocannon -c 16", ... */
  generator?: string;
}

/**
 * CPU seconds a process has used, from /proc (Linux). On a machine shared with other
 * work, CPU per request is the figure that compares front ends fairly: req/s depends on
 * how much of the cores the neighbours leave, CPU time per request much less so.
 */
function procCpuSec(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in USER_HZ (100 on Linux)
  } catch {
    return NaN;
  }
}

/** Runs one load, adding server and client CPU per request to its row. */
async function measured(serverPid: number, load: () => Promise<LoadRow>): Promise<LoadRow> {
  const s0 = procCpuSec(serverPid);
  const c0 = process.cpuUsage();
  const t0 = nowMs();
  const row = await load();
  const c = process.cpuUsage(c0);
  const requests = row.requests ?? (row.rps * (nowMs() - t0)) / 1000;
  row.server_cpu_us = Math.round(((procCpuSec(serverPid) - s0) * 1e6) / requests);
  row.client_cpu_us ??= Math.round((c.user + c.system) / requests);
  return row;
}

/** A gRPC request body as it goes on the wire: flag byte 0 (uncompressed), length, message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const f = Buffer.allocUnsafe(5 + message.length);
  f[0] = 0;
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
}

/**
 * A closed loop: `connections` callers, caller i on calls[i % calls.length], each sending its
 * next call when the last one answers, for `seconds`. A call resolves true when it succeeded;
 * latency percentiles are over the successful calls.
 */
async function closedLoop(
  calls: (() => Promise<boolean>)[],
  connections: number,
  seconds: number,
): Promise<Pick<LoadRow, 'rps' | 'p50_ms' | 'p99_ms' | 'errors'>> {
  const lat: number[] = [];
  let errors = 0;
  const end = nowMs() + seconds * 1000;
  const t0 = nowMs();
  await Promise.all(
    Array.from({ length: connections }, async (_, i) => {
      const call = calls[i % calls.length]!;
      while (nowMs() < end) {
        const t = nowMs();
        if (await call()) lat.push(nowMs() - t);
        else errors++;
      }
    }),
  );
  const secs = (nowMs() - t0) / 1000;
  return {
    rps: Math.round(lat.length / secs),
    p50_ms: round2(percentile(lat, 50)),
    p99_ms: round2(percentile(lat, 99)),
    errors,
  };
}

/**
 * Closed-loop gRPC load from raw HTTP/2 (node:http2), the gRPC counterpart of autocannon:
 * request bodies are framed once beforehand, each call is one HTTP/2 stream carrying those
 * bytes, and only the grpc-status (trailers, or headers for a trailers-only answer) is read;
 * the response body is drained unparsed. `connections` callers share `channels` HTTP/2
 * sessions, so many calls ride one connection as a gRPC client's would. On two shared
 * cores the generator competes with the server for CPU: a grpc-js client costs ~3x this
 * per call (measured in the same run: the `grpc_jsclient` row), which is what the first
 * figures of this benchmark were really measuring.
 */
export async function h2GrpcLoad(
  address: string,
  path: string,
  scenario: string,
  transport: string,
  nextBody: () => Buffer,
  o: { seconds: number; connections: number; channels: number },
): Promise<LoadRow> {
  const sessions = Array.from({ length: o.channels }, () =>
    http2.connect(`http://${address}`, { settings: { initialWindowSize: 1 << 20 } }),
  );
  for (const s of sessions) s.on('error', () => undefined);
  const headers = {
    ':method': 'POST',
    ':path': path,
    'content-type': 'application/grpc',
    te: 'trailers',
  };
  // Resolves true for grpc-status 0; any other status, or a stream error, is false.
  const call = (s: http2.ClientHttp2Session): Promise<boolean> =>
    new Promise((resolve) => {
      const req = s.request(headers, { endStream: false });
      let status: unknown;
      req.on('response', (h) => (status = h['grpc-status']));
      req.on('trailers', (t) => (status = t['grpc-status']));
      req.on('error', () => undefined);
      req.on('close', () => resolve(status === '0'));
      req.resume();
      req.end(nextBody());
    });
  await Promise.all(sessions.map(call));
  const stats = await closedLoop(
    sessions.map((s) => () => call(s)),
    o.connections,
    o.seconds,
  );
  for (const s of sessions) s.close();
  return {
    scenario,
    transport,
    ...stats,
    generator: `node:http2 ${o.connections} over ${o.channels}`,
  };
}

/** recserve_grpc_requests_total from /metrics: calls by code (all methods). */
async function grpcCallsByCode(base: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(
    /^recserve_grpc_requests_total\{[^}]*code="(\w+)"[^}]*\} (\S+)$/gm,
  )) {
    out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[2]));
  }
  return out;
}

/**
 * One closed-loop h2load run: `clients` connections, `streams` requests in flight on each
 * (HTTP/2 streams; with `h1`, HTTP/1.1 and streams must be 1), the same `body` POSTed on
 * every call, for `seconds`. Returns the row without server figures; `errors` counts
 * h2load's failed, errored, timed-out and non-2xx calls.
 */
export function h2loadRun(o: {
  url: string;
  body: Buffer;
  headers: string[];
  clients: number;
  streams: number;
  seconds: number;
  h1?: boolean;
  /** Total requests/s to offer (h2load --rps, split evenly over the clients); none: closed loop. */
  rate?: number;
  scenario: string;
  transport: string;
}): Promise<LoadRow> {
  const dir = mkdtempSync(join(tmpdir(), 'recserve-bench-h2load-'));
  const bodyFile = join(dir, 'body.bin');
  const logFile = join(dir, 'requests.log');
  writeFileSync(bodyFile, o.body);
  const flags = [
    ...(o.h1 ? ['--h1'] : []),
    '-c',
    String(o.clients),
    '-m',
    String(o.streams),
    '-D',
    String(o.seconds),
    ...(o.rate ? [`--rps=${Math.ceil(o.rate / o.clients)}`] : []),
    '-d',
    bodyFile,
    ...o.headers.flatMap((h) => ['-H', h]),
    `--log-file=${logFile}`,
    o.url,
  ];
  // bash's `times` prints its children's user and system CPU: h2load's own cost per call.
  const script = 'h2load "$@"; rc=$?; times; exit $rc';
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script, 'h2load', ...flags], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`h2load exited ${code}:\n${out}`);
        const fin = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
        const reqs =
          /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
            out,
          );
        const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
        const times = [...out.matchAll(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/g)].at(-1);
        if (!fin || !reqs || !codes) throw new Error(`cannot read h2load's summary:\n${out}`);
        const done = Number(reqs[3]);
        const lat: number[] = [];
        for (const line of readFileSync(logFile, 'utf8').split('\n')) {
          const f = line.split('\t');
          if (f.length >= 3 && f[1] !== '-1') lat.push(Number(f[2]) / 1000);
        }
        const cpuSec = times
          ? Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4])
          : NaN;
        resolve({
          scenario: o.scenario,
          transport: o.transport,
          rps: Math.round(Number(fin[2])),
          p50_ms: round2(percentile(lat, 50)),
          p99_ms: round2(percentile(lat, 99)),
          errors:
            Number(reqs[5]) +
            Number(reqs[6]) +
            Number(reqs[7]) +
            Number(codes[2]) +
            Number(codes[3]) +
            Number(codes[4]),
          requests: done,
          client_cpu_us: Math.round((cpuSec * 1e6) / done),
          generator:
            `h2load${o.h1 ? ' --h1' : ''} -c ${o.clients} -m ${o.streams}` +
            (o.rate ? ` --rps ${Math.ceil(o.rate / o.clients)}` : ''),
        });
      } catch (err) {
        reject(err as Error);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

/** The gRPC request headers h2load sends (gRPC over HTTP/2 needs these two). */
const GRPC_HEADERS = ['content-type: application/grpc', 'te: trailers'];

/**
 * h2load against recserve's gRPC port, with the calls the server did not answer OK (its own
 * counter, read around the run) added to the row's errors: h2load only sees HTTP 200.
 */
async function grpcH2load(
  base: string,
  address: string,
  path: string,
  frame: Buffer,
  scenario: string,
  rate?: number,
): Promise<LoadRow> {
  const before = await grpcCallsByCode(base);
  const row = await h2loadRun({
    url: `http://${address}${path}`,
    body: frame,
    headers: GRPC_HEADERS,
    clients: h2loadClients,
    streams: h2loadStreams,
    seconds: duration,
    ...(rate ? { rate } : {}),
    scenario,
    transport: 'grpc_h2load',
  });
  const after = await grpcCallsByCode(base);
  let notOk = 0;
  for (const [code, n] of after) if (code !== 'OK') notOk += n - (before.get(code) ?? 0);
  const ok = (after.get('OK') ?? 0) - (before.get('OK') ?? 0);
  row.errors += notOk + Math.max(0, (row.requests ?? 0) - ok);
  return row;
}

/** The same body as JSON over HTTP/1.1, one request in flight per connection. */
function httpH2load(base: string, json: string, scenario: string, rate?: number): Promise<LoadRow> {
  return h2loadRun({
    url: `${base}/v1/recommendations`,
    body: Buffer.from(json),
    headers: ['content-type: application/json'],
    clients: h2loadClients * h2loadStreams,
    streams: 1,
    seconds: duration,
    ...(rate ? { rate } : {}),
    h1: true,
    scenario,
    transport: 'http_h2load',
  });
}

/**
 * A bare grpc-js server (no pipeline, no validation, identity serializers) answering every
 * call with the same canned bytes: grpc-js's own per-call cost, the floor under ours.
 * Started as a child (`--bare-server FILE`) so its CPU is counted apart from this process.
 */
async function bareServerMain(responseFile: string): Promise<void> {
  const canned = readFileSync(responseFile);
  const id = (b: Buffer): Buffer => b;
  const server = new grpc.Server({
    'grpc.max_concurrent_streams': 256,
    'grpc.enable_channelz': 0,
  });
  server.addService(
    {
      Get: {
        path: BARE_PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: id,
        requestDeserialize: id,
        responseSerialize: id,
        responseDeserialize: id,
      },
    },
    { Get: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, canned) },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  console.log(JSON.stringify({ barePort: port }));
  process.on('SIGTERM', () => server.forceShutdown());
}

const BARE_PATH = '/bench.Bare/Get';

async function startBareServer(
  response: Buffer,
): Promise<{ child: ChildProcess; address: string }> {
  const file = join(mkdtempSync(join(tmpdir(), 'recserve-bench-bare-')), 'response.bin');
  writeFileSync(file, response);
  const child = spawn(process.execPath, [process.argv[1]!, '--bare-server', file], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (c: Buffer) =>
      resolve((JSON.parse(c.toString()) as { barePort: number }).barePort),
    );
    child.once('exit', (code) => reject(new Error(`bare server exited (${code})`)));
  });
  return { child, address: `127.0.0.1:${port}` };
}

/**
 * Closed-loop gRPC load through grpc-js clients: `connections` callers spread over
 * `channels` clients (separate HTTP/2 connections). `sdk` goes through the SDK
 * (RecommendationClient: serialize, decode into the contract's objects); otherwise it is the
 * cheapest grpc-js client can be: pre-serialised request bytes, `makeUnaryRequest` with
 * identity (de)serialisers, one shared Metadata, response bytes left undecoded.
 */
export async function grpcLoad(
  address: string,
  scenario: string,
  makeRequest: () => RecommendationRequest,
  nextMessage: () => Buffer,
  o: { seconds: number; connections: number; channels: number; sdk: boolean },
): Promise<LoadRow> {
  // A private subchannel pool each: otherwise grpc-js shares one connection among clients.
  const channelOptions = { 'grpc.use_local_subchannel_pool': 1 };
  const calls: (() => Promise<unknown>)[] = [];
  const closers: (() => void)[] = [];
  const path = serviceDefinition().GetRecommendations!.path;
  const id = (b: Buffer): Buffer => b;
  const md = new grpc.Metadata();
  for (let i = 0; i < o.channels; i++) {
    if (o.sdk) {
      const c = new RecommendationClient({
        transport: 'grpc',
        address,
        timeoutMs: 10_000,
        retry: { maxAttempts: 1 },
        channelOptions,
      });
      calls.push(() => {
        const r = makeRequest();
        return c.getRecommendations(r.user_id, {
          numItems: r.num_items!,
          ...(r.exclude_items ? { excludeItems: r.exclude_items } : {}),
        });
      });
      closers.push(() => c.close());
    } else {
      const c = new grpc.Client(address, grpc.credentials.createInsecure(), {
        ...channelOptions,
        'grpc.enable_channelz': 0,
      });
      calls.push(
        () =>
          new Promise((resolve, reject) =>
            c.makeUnaryRequest(path, id, id, nextMessage(), md, {}, (err, res) =>
              err ? reject(err) : resolve(res),
            ),
          ),
      );
      closers.push(() => c.close());
    }
  }
  // Warm every channel (connection set-up is not what is measured).
  await Promise.all(calls.map((call) => call().catch(() => undefined)));
  const stats = await closedLoop(
    calls.map(
      (call) => () =>
        call().then(
          () => true,
          () => false,
        ),
    ),
    o.connections,
    o.seconds,
  );
  for (const close of closers) close();
  return {
    scenario,
    transport: o.sdk ? 'grpc_sdk' : 'grpc_jsclient',
    ...stats,
    generator: `grpc-js ${o.connections} over ${o.channels}`,
  };
}

async function httpLoad(
  base: string,
  scenario: string,
  transport: 'http' | 'http_fb',
  body: () => string | Buffer,
  seconds: number,
): Promise<LoadRow> {
  const type = transport === 'http' ? 'application/json' : 'application/x-flatbuffers';
  const result = await autocannon({
    url: base,
    connections,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        path: '/v1/recommendations',
        headers: { 'content-type': type, accept: type },
        setupRequest: (req) => ({ ...req, body: body() as string }),
      },
    ],
  });
  return {
    scenario,
    transport,
    rps: Math.round(result.requests.average),
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
    generator: `autocannon -c ${connections}`,
  };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function pick<T>(a: T[]): T {
  return a[Math.floor(Math.random() * a.length)]!;
}

/** CPU µs per call of f (this process's user + system time: robust to busy neighbours). */
function usPer(f: () => unknown, ms: number): number {
  // Warm-up as long as the measurement: process CPU time counts V8's compiler threads too,
  // so the hot functions must be optimised before the clock starts.
  const w0 = nowMs();
  while (nowMs() - w0 < ms) f();
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = nowMs();
  while (nowMs() - t0 < ms) {
    for (let i = 0; i < 20; i++) f();
    n += 20;
  }
  const c = process.cpuUsage(c0);
  return round2((c.user + c.system) / n);
}

interface PayloadRow {
  num_items: number;
  format: string;
  bytes: number;
  encode_us: number;
  decode_us: number;
}

function payloadCosts(res: RecommendationResponse): PayloadRow[] {
  // Serialized as the server does (serverServiceDefinition), decoded as a client does.
  const ser = serverServiceDefinition().GetRecommendations!.responseSerialize as (
    v: unknown,
  ) => Buffer;
  const deser = serviceDefinition().GetRecommendations!.responseDeserialize;
  const ms = quick ? 300 : 1000;
  const json = JSON.stringify(res);
  const fbBytes = fb.encodeRecommendationResponse(res);
  const pbBytes = ser(res);
  const n = res.recommendations.length;
  return [
    {
      num_items: n,
      format: 'json',
      bytes: Buffer.byteLength(json),
      encode_us: usPer(() => JSON.stringify(res), ms),
      decode_us: usPer(() => JSON.parse(json), ms),
    },
    {
      num_items: n,
      format: 'flatbuffers',
      bytes: fbBytes.length,
      encode_us: usPer(() => fb.encodeRecommendationResponse(res), ms),
      decode_us: usPer(() => fb.decodeRecommendationResponse(fbBytes), ms),
    },
    {
      num_items: n,
      format: 'protobuf',
      bytes: pbBytes.length,
      encode_us: usPer(() => ser(res), ms),
      decode_us: usPer(() => deser(pbBytes), ms),
    },
  ];
}

async function main(): Promise<void> {
  const models = ensureModels();
  const v = latestVersion(models, 'recserve')!;
  const bundle = await loadBundle(join(models, 'recserve', String(v)));
  const users = bundle.userIds;
  const itemIds = bundle.items.ids;
  const { child, port, grpcPort } = await startServer(models);
  const base = `http://127.0.0.1:${port}`;
  const address = `127.0.0.1:${grpcPort}`;
  const pid = child.pid!;
  const rows: LoadRow[] = [];
  let payload: PayloadRow[] = [];
  const run = { seconds: duration, connections, channels };
  try {
    log(`${duration}s per scenario, ${connections} connections (${channels} gRPC channels)`);
    const hot = users.slice(0, 50);
    const http = new RecommendationClient({ transport: 'http', baseUrl: base, timeoutMs: 10_000 });
    for (const u of hot) await http.getRecommendations(u, { numItems: 20 });
    // Codec costs first, while this process is not also generating load.
    // Users outside the hot set: fresh answers, so no cache shortcut is measured.
    const cold = users.slice(hot.length);
    const r20 = await http.getRecommendations(cold[0] ?? 'bench-payload-20', { numItems: 20 });
    const r100 = await http.getRecommendations(cold[1] ?? 'bench-payload-100', { numItems: 100 });
    payload = [...payloadCosts(r20), ...payloadCosts(r100)];
    const reqOf = (u: string, extra: Partial<RecommendationRequest> = {}) => ({
      user_id: u,
      num_items: 20,
      ...extra,
    });
    const scenarios: [string, () => RecommendationRequest][] = [
      ['cached', () => reqOf(pick(hot))],
      ['warm_uncached', () => reqOf(pick(users), { exclude_items: [pick(itemIds)] })],
    ];
    const serReq = serviceDefinition().GetRecommendations!.requestSerialize as (
      v: unknown,
    ) => Buffer;
    const path = serviceDefinition().GetRecommendations!.path;
    for (const [name, make] of generators.has('node') ? scenarios : []) {
      // Untimed warm-up through both front ends: the first load on a path pays V8's
      // compilation of it (and of the pipeline's uncached stages), which otherwise lands
      // on whichever row happens to run first (measured: 1.4-1.9x the server CPU per
      // request of the same row run second).
      const warm = { seconds: warmup, connections, channels };
      const warmFrames = Array.from({ length: 2000 }, () => grpcFrame(serReq(make())));
      let w = 0;
      if (warmup > 0 && only !== 'http') {
        await h2GrpcLoad(address, path, name, 'warmup', () => warmFrames[w++ % 2000]!, warm);
      }
      if (warmup > 0 && only !== 'grpc') {
        await httpLoad(base, name, 'http', () => JSON.stringify(make()), warmup);
      }
      if (only !== 'http') {
        // Requests are serialised before the clock starts, as autocannon's bodies are
        // strings: the hot set whole, or (uncached) more distinct requests than a run sends,
        // taken in turn so none repeats (a repeat would be a cache hit).
        const pool = Array.from({ length: name === 'cached' ? 1000 : uncachedPool }, () =>
          serReq(make()),
        );
        let next = 0;
        const nextMessage = () => pool[next++ % pool.length]!;
        const frames = pool.map(grpcFrame);
        const nextBody = () => frames[next++ % frames.length]!;
        rows.push(
          await measured(pid, () => h2GrpcLoad(address, path, name, 'grpc', nextBody, run)),
        );
        if (name === 'cached') {
          rows.push(
            await measured(pid, () =>
              grpcLoad(address, name, make, nextMessage, { ...run, sdk: false }),
            ),
          );
          rows.push(
            await measured(pid, () =>
              grpcLoad(address, name, make, nextMessage, { ...run, sdk: true }),
            ),
          );
          // grpc-js alone, answering the bytes of a real cached answer, in the same run.
          const probe = new RecserveGrpcClient(address);
          const sample = await probe.unaryBytes('GetRecommendations', reqOf(hot[0]!));
          probe.close();
          const bare = await startBareServer(sample);
          try {
            rows.push(
              await measured(bare.child.pid!, () =>
                h2GrpcLoad(bare.address, BARE_PATH, name, 'grpc_bare', nextBody, run),
              ),
            );
          } finally {
            bare.child.kill('SIGTERM');
          }
        }
      }
      if (only !== 'grpc') {
        const json = () => JSON.stringify(make());
        const flat = () => Buffer.from(fb.encodeRecommendationRequest(make()));
        rows.push(await measured(pid, () => httpLoad(base, name, 'http', json, duration)));
        rows.push(await measured(pid, () => httpLoad(base, name, 'http_fb', flat, duration)));
      }
    }
    if (generators.has('h2load')) {
      // One hot user's request, the same bytes on every call (h2load cannot vary them).
      const req = reqOf(hot[0]!);
      const frame = grpcFrame(serReq(req));
      const json = JSON.stringify(req);
      const warmH2 = async (b: string, a: string) => {
        if (warmup <= 0) return;
        if (only !== 'http') await grpcH2load(b, a, path, frame, 'warmup');
        if (only !== 'grpc') await httpH2load(b, json, 'warmup');
      };
      await warmH2(base, address);
      if (only !== 'http') {
        rows.push(await measured(pid, () => grpcH2load(base, address, path, frame, 'cached')));
        const probe = new RecserveGrpcClient(address);
        const sample = await probe.unaryBytes('GetRecommendations', req);
        probe.close();
        const bare = await startBareServer(sample);
        try {
          const bareRow = await measured(bare.child.pid!, () =>
            h2loadRun({
              url: `http://${bare.address}${BARE_PATH}`,
              body: frame,
              headers: GRPC_HEADERS,
              clients: h2loadClients,
              streams: h2loadStreams,
              seconds: duration,
              scenario: 'cached',
              transport: 'grpc_bare_h2load',
            }),
          );
          rows.push(bareRow);
        } finally {
          bare.child.kill('SIGTERM');
        }
      }
      if (only !== 'grpc') rows.push(await measured(pid, () => httpH2load(base, json, 'cached')));
      // The figure is a rate AND a tail: offered at exactly --rate calls/s (open
      // loop per client), the p99 is read where the server is not saturated by design.
      if (rate > 0) {
        const at = `cached@${rate}`;
        if (only !== 'http') {
          rows.push(await measured(pid, () => grpcH2load(base, address, path, frame, at, rate)));
        }
        if (only !== 'grpc') rows.push(await measured(pid, () => httpH2load(base, json, at, rate)));
      }

      // No recommendation cache: every call runs the pipeline, with one body.
      log('uncached_fixed: a second server with --cache-ttl-ms 0');
      const nc = await startBenchServer(models, ['--cache-ttl-ms', '0']);
      try {
        const ncBase = `http://127.0.0.1:${nc.port}`;
        const ncAddress = `127.0.0.1:${nc.grpcPort}`;
        const ncPid = nc.child.pid!;
        await warmH2(ncBase, ncAddress);
        // Rounds alternate gRPC and HTTP, so drift in the neighbours' load or in the
        // server's heap over the scenario falls on both front ends alike (one round each
        // read 0.86 and then, alternated by hand, 0.99 on the same build).
        for (let round = 0; round < uncachedRounds; round++) {
          if (only !== 'http') {
            rows.push(
              await measured(ncPid, () =>
                grpcH2load(ncBase, ncAddress, path, frame, 'uncached_fixed'),
              ),
            );
          }
          if (only !== 'grpc') {
            rows.push(await measured(ncPid, () => httpH2load(ncBase, json, 'uncached_fixed')));
          }
        }
      } finally {
        nc.child.kill('SIGTERM');
        await new Promise((r) => nc.child.once('exit', r));
      }
    }
    http.close();
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }

  const find = (s: string, t: string) => rows.find((r) => r.scenario === s && r.transport === t);
  const ratio = (s: string) => {
    const g = find(s, 'grpc');
    const h = find(s, 'http');
    return g && h ? round2(g.rps / h.rps) : null;
  };
  const cpuRatio = (s: string) => {
    const g = find(s, 'grpc');
    const h = find(s, 'http');
    return g?.server_cpu_us && h?.server_cpu_us ? round2(g.server_cpu_us / h.server_cpu_us) : null;
  };
  // Mean over the scenario's rounds (uncached_fixed runs several, alternating).
  const meanOf = (s: string, t: string, f: (r: LoadRow) => number) => {
    const rs = rows.filter((r) => r.scenario === s && r.transport === t);
    return rs.length ? rs.reduce((a, r) => a + f(r), 0) / rs.length : null;
  };
  const h2Ratio = (s: string) => {
    const g = meanOf(s, 'grpc_h2load', (r) => r.rps);
    const h = meanOf(s, 'http_h2load', (r) => r.rps);
    return g !== null && h !== null ? round2(g / h) : null;
  };
  // "At the same p99 budget": both front ends' uncached p99 inside the HTTP issue's 50 ms.
  const worstP99 = (s: string, t: string) =>
    Math.max(...rows.filter((r) => r.scenario === s && r.transport === t).map((r) => r.p99_ms));
  // The figures are read from the h2load rows when there are any (the cheapest generator,
  // the same for both front ends), else from the Node-generator rows.
  const cached = find('cached', 'grpc_h2load') ?? find('cached', 'grpc');
  const atRate = find(`cached@${rate}`, 'grpc_h2load');
  const uncachedRatio = h2Ratio('uncached_fixed') ?? ratio('warm_uncached');
  const summary = {
    items: bundle.items.ids.length,
    models,
    connections,
    grpc_channels: channels,
    h2load: generators.has('h2load') ? { clients: h2loadClients, streams: h2loadStreams } : null,
    duration_s: duration,
    scenarios: rows,
    payload,
    grpc_vs_http_rps: {
      cached: ratio('cached'),
      warm_uncached: ratio('warm_uncached'),
      cached_h2load: h2Ratio('cached'),
      uncached_fixed_h2load: h2Ratio('uncached_fixed'),
    },
    grpc_vs_http_server_cpu: {
      cached: cpuRatio('cached'),
      warm_uncached: cpuRatio('warm_uncached'),
    },
    targets: {
      // Met when either the closed-loop row or the fixed-rate row does both at once.
      grpc_cached_8k_rps_p99_under_10ms: [cached, atRate].some(
        (r) => r !== undefined && r.rps >= 8000 && r.p99_ms < 10 && r.errors === 0,
      ),
      grpc_uncached_within_15pct_of_http:
        uncachedRatio === null
          ? null
          : uncachedRatio >= 0.85 &&
            (h2Ratio('uncached_fixed') === null ||
              (worstP99('uncached_fixed', 'grpc_h2load') < UNCACHED_P99_BUDGET_MS &&
                worstP99('uncached_fixed', 'http_h2load') < UNCACHED_P99_BUDGET_MS)),
    },
    date: new Date().toISOString(),
  };
  if (args.json) {
    console.log(JSON.stringify(summary, null, 2));
    return;
  }
  printTable(
    [
      'scenario',
      'transport',
      'req/s',
      'p50 ms',
      'p99 ms',
      'errors',
      'server µs/req',
      'client µs/req',
      'generator',
    ],
    rows.map((r) => [
      r.scenario,
      r.transport,
      r.rps,
      r.p50_ms,
      r.p99_ms,
      r.errors,
      r.server_cpu_us,
      r.client_cpu_us,
      r.generator ?? '',
    ]),
  );
  console.log('');
  printTable(
    ['items', 'format', 'bytes', 'encode µs', 'decode µs'],
    payload.map((p) => [p.num_items, p.format, p.bytes, p.encode_us, p.decode_us]),
  );
  console.log(`\ngRPC / HTTP req/s: ${JSON.stringify(summary.grpc_vs_http_rps)}`);
  console.log(
    `gRPC / HTTP server CPU per request: ${JSON.stringify(summary.grpc_vs_http_server_cpu)}`,
  );
  console.log(`targets: ${JSON.stringify(summary.targets)}`);
}

// Run only as a script (grpcLoad is importable without starting a benchmark).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const bareFile = args.options.get('bare-server');
  (bareFile ? bareServerMain(bareFile) : main()).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
