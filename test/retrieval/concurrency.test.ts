// Searches racing writes, under sanitizers, on both indexes' own C++ (below the addon):
// - test/retrieval/native/exact-concurrency.cc: the exact index's searches against
//   upserts, removes, rebuilds and tuning changes;
// - test/retrieval/native/hnsw-concurrency.cc: the HNSW index's walks and scans against
//   adds, removes, saves and loads, once by inner product and once by cosine (FAISS itself
//   is not instrumented; our walk, scan, Reconnect and locks are).
// Each is built with -fsanitize=..., then run. A test fails on any sanitizer report and on
// any result that a torn row, a lost row or a broken filter would produce (each program's
// header says what it checks). The JS tests cannot race the indexes' threads this way, and
// nothing else watches the locks, the shared floors and the pool for races.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join } from 'node:path';
import {
  HNSW_LIBS,
  HNSW_SOURCES,
  INDEX_SOURCES,
  buildProgram,
  run,
  type Run,
} from './native-program.js';

// The same storm under two builds: ThreadSanitizer (races), and AddressSanitizer with
// UndefinedBehaviorSanitizer (out-of-bounds and freed memory, leaks, undefined arithmetic),
// which cannot share one build.
const SANITIZERS = [
  {
    name: 'ThreadSanitizer',
    flags: ['-fsanitize=thread'],
    report: /ThreadSanitizer/,
    // FAISS builds its graph on OpenMP threads, and neither FAISS nor libgomp is
    // instrumented: their memsets looked like races against Reconnect, which reads what
    // they wrote after the parallel region has joined. One OpenMP thread keeps the build
    // on the calling thread; every race between our threads is still watched.
    env: { TSAN_OPTIONS: 'exitcode=66 second_deadlock_stack=1', OMP_THREAD_LIMIT: '1' },
  },
  {
    name: 'AddressSanitizer and UndefinedBehaviorSanitizer',
    flags: ['-fsanitize=address,undefined', '-fno-omit-frame-pointer'],
    report: /AddressSanitizer|LeakSanitizer|runtime error/,
    env: { UBSAN_OPTIONS: 'halt_on_error=1 print_stacktrace=1' },
  },
];

type Sanitizer = (typeof SANITIZERS)[number];

/**
 * Builds the program under the sanitizer, runs it once per argument list, and fails on a
 * report or exit code.
 */
async function sanitized(
  san: Sanitizer,
  name: string,
  sources: [string, string[]][],
  libs: string[],
  argLists: (dir: string) => string[][],
): Promise<Run[]> {
  const dir = mkdtempSync(join(tmpdir(), 'recserve-sanitized-'));
  try {
    // Every source instrumented, the kernels included.
    const exe = await buildProgram(
      dir,
      name,
      [...sources, [`test/retrieval/native/${name}.cc`, []]],
      // -g1: file and line in reports, at a third of -g's compile time here.
      ['-O1', '-g1', ...san.flags],
      [...san.flags, '-pthread'],
      libs,
    );
    const env = { ...process.env, ...san.env };
    const runs: Run[] = [];
    for (const args of argLists(dir)) {
      let r = await run(exe, args, { env });
      // Kernels with more ASLR entropy than a sanitizer expects refuse to start it; without
      // randomisation it runs.
      if (/unexpected memory mapping/.test(r.stderr))
        r = await run('setarch', [arch() === 'x64' ? 'x86_64' : arch(), '-R', exe, ...args], {
          env,
        });
      // The first report (the message shows it, not the whole of stderr).
      assert.ok(!san.report.test(r.stderr), r.stderr.slice(0, 6000));
      assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr.slice(0, 4000)}`);
      runs.push(r);
    }
    return runs;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const san of SANITIZERS) {
  test(`exact index: searches racing writes under ${san.name}: no report, every result whole and exact`, async () => {
    const [r] = await sanitized(san, 'exact-concurrency', INDEX_SOURCES, [], () => [['1.5']]);
    // One line per kernel set and storage; scalar, avx2 and the CPU's best are always built.
    const lines = r.stdout.trim().split('\n');
    assert.ok(lines.length >= 4, r.stdout);
    for (const line of lines) {
      const m =
        /^(\S+) (f32|f16) writes (\d+) prunes \d+ searches (\d+) results (\d+) problems (\d+) grows (\d+) moved (\d+) copied (\d+) refits (\d+|-) outliers (\d+|-)/.exec(
          line,
        );
      assert.ok(m, `unexpected line: ${line}`);
      assert.ok(Number(m[3]) > 10, `${line}: too few writes to race`);
      assert.ok(Number(m[4]) > 10, `${line}: too few searches`);
      assert.equal(Number(m[6]), 0, line);
      assert.ok(Number(m[7]) > 0, `${line}: no upsert grew the buffers beside the searches`);
      assert.equal(Number(m[8]) + Number(m[9]), Number(m[7]), `${line}: growths uncounted`);
      // Float32 rows fill buffers of 1 MiB and up, which are mappings that move their pages
      // (Linux); float16 ones stay below and copy: both ways race the searchers.
      if (process.platform === 'linux' && m[2] === 'f32')
        assert.ok(Number(m[8]) > 0, `${line}: no growth moved the rows' pages`);
      // Rows spread wider than the build's came back: the int8 screen left some to exact
      // scores, and past its cap was fitted again.
      if (m[10] !== '-') assert.ok(Number(m[10]) > 0, `${line}: the screen was never refitted`);
      if (m[11] !== '-') assert.ok(Number(m[11]) > 0, `${line}: no row was left out of the screen`);
    }
  });

  test(`HNSW index: searches racing adds, removes, compactions, saves and loads under ${san.name}, inner product and cosine: no report, every result whole`, async () => {
    // 3 s each: under ThreadSanitizer on a busy host a write step took up to 250 ms.
    // A folder each: the program loads the files it finds there.
    const runs = await sanitized(san, 'hnsw-concurrency', HNSW_SOURCES, HNSW_LIBS, (dir) =>
      ['ip', 'cosine'].map((metric) => {
        mkdirSync(join(dir, metric));
        return [join(dir, metric), '3', metric];
      }),
    );
    for (const [i, r] of runs.entries()) {
      const metric = i === 0 ? 'ip' : 'cosine';
      const m = new RegExp(
        `^hnsw ${metric} writes (\\d+) removes (\\d+) compacts (\\d+)/\\d+ saves \\d+ loads (\\d+) searches (\\d+) results \\d+ problems (\\d+)`,
        'm',
      ).exec(r.stdout);
      assert.ok(m, r.stdout);
      const [writes, removes, compacts, loads, searches, problems] = m.slice(1).map(Number);
      assert.ok(writes! > 5 && removes! > 2 && loads! > 2, `${m[0]}: too few writes`);
      assert.ok(compacts! >= 1, `${m[0]}: no compaction finished`);
      assert.ok(searches! > 50, `${m[0]}: too few searches`);
      assert.equal(problems, 0, m[0]);
      assert.match(r.stdout, /^after: problems 0$/m);
      // The small adds took the incremental reconnection, and the batches the whole-graph one.
      const rc = /^after: reconnects full (\d+) incremental (\d+)$/m.exec(r.stdout);
      assert.ok(rc && Number(rc[1]) > 0 && Number(rc[2]) > 0, r.stdout);
    }
  });
}
