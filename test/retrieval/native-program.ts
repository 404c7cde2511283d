// Builds a C++ test program from the indexes' own sources, for the tests that check the
// native code below the addon (screen-bounds, concurrency): each source compiled with
// the flags CMakeLists.txt gives it, in parallel, then linked.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../../src/retrieval/native.js';

const AVX2 = ['-mavx2', '-mfma', '-mf16c'];
/** The kernel sets' sources and their flags (CMakeLists.txt's set_source_files_properties). */
export const KERNEL_SOURCES: [string, string[]][] = [
  ['native/exact/kernels_scalar.cc', []],
  ['native/exact/kernels_avx2.cc', AVX2],
  [
    'native/exact/kernels_avx512.cc',
    [...AVX2, '-mavx512f', '-mavx512vl', '-mavx512bw', '-mavx512dq'],
  ],
];
/** The exact index itself, beside its kernels: the index, the pool, the CUDA stub. */
export const INDEX_SOURCES: [string, string[]][] = [
  ...KERNEL_SOURCES,
  ['native/exact/exact_index.cc', []],
  ['native/common/thread_pool.cc', []],
  ['native/cuda/exact_cuda_stub.cc', []],
];

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs cmd to its end, collecting its output. */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The HNSW index beside the kernels it scores with and the pool it splits batches over. */
export const HNSW_SOURCES: [string, string[]][] = [
  ...KERNEL_SOURCES,
  ['native/common/thread_pool.cc', []],
  ['native/hnsw/hnsw_index.cc', ['-fopenmp']],
  ['native/hnsw/reconnect.cc', []],
];
/** What a program with HNSW_SOURCES links after its objects (FAISS is a static library). */
export const HNSW_LIBS = ['-lfaiss', '-lopenblas', '-fopenmp'];

/**
 * Compiles sources (paths from the project root, each with its own flags) with `flags`
 * added to every one, links them into dir/name with `linkFlags` (and `libs` after the
 * objects), and returns the program's path. A compiler error fails the calling test with
 * g++'s message.
 */
export async function buildProgram(
  dir: string,
  name: string,
  sources: [string, string[]][],
  flags: string[],
  linkFlags: string[] = [],
  libs: string[] = [],
): Promise<string> {
  const root = projectRoot();
  const objects = await Promise.all(
    sources.map(async ([src, own], i) => {
      const obj = join(dir, `${i}.o`);
      const r = await run(
        'g++',
        ['-std=c++17', '-Inative', ...flags, ...own, '-c', src, '-o', obj],
        { cwd: root },
      );
      assert.equal(r.code, 0, `g++ ${src}:\n${r.stderr}`);
      return obj;
    }),
  );
  const exe = join(dir, name);
  const link = await run('g++', [...linkFlags, ...objects, ...libs, '-o', exe]);
  assert.equal(link.code, 0, `linking ${name}:\n${link.stderr}`);
  return exe;
}
