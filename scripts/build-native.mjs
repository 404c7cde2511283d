// Builds the native addon with CMake, skipping the work when nothing under native/ or
// CMakeLists.txt changed since the last build.
//
// Why plain cmake and not the cmake-js CLI: cmake-js downloads Node's headers from
// nodejs.org, which these machines cannot reach. Node's own headers ship beside the
// binary (<prefix>/include/node), so we hand CMake the same variables cmake-js would
// (CMAKE_JS_INC, CMAKE_JS_SRC, CMAKE_JS_LIB) and the CMakeLists works with either.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = join(root, 'build');
const force = process.argv.includes('--force');

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

if (!existsSync(join(root, 'CMakeLists.txt'))) {
  console.error('[build-native] no CMakeLists.txt; nothing to build');
  process.exit(0);
}
const inputs = [
  join(root, 'CMakeLists.txt'),
  fileURLToPath(import.meta.url),
  ...walk(join(root, 'native'), []),
].sort();
const hash = createHash('sha256');
for (const f of inputs) hash.update(f).update(readFileSync(f));
hash.update(process.version).update(process.env.RECSERVE_CUDA ?? '');
const digest = hash.digest('hex');
const stampFile = join(buildDir, '.inputs-sha256');
if (!force && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === digest) {
  console.error('[build-native] addon up to date');
  process.exit(0);
}

const nodeInclude = resolve(dirname(process.execPath), '..', 'include', 'node');
const addonApi = dirname(fileURLToPath(import.meta.resolve('node-addon-api/package.json')));
mkdirSync(buildDir, { recursive: true });
const configure = [
  '-S',
  root,
  '-B',
  buildDir,
  '-DCMAKE_BUILD_TYPE=Release',
  `-DCMAKE_JS_INC=${nodeInclude}`,
  `-DNODE_ADDON_API_DIR=${addonApi}`,
];
// Always passed: CMake caches the value, so a one-off RECSERVE_CUDA=OFF must not stick.
configure.push(`-DRECSERVE_CUDA=${process.env.RECSERVE_CUDA || 'AUTO'}`);
console.error('[build-native] cmake', configure.join(' '));
execFileSync('cmake', configure, { stdio: 'inherit' });
execFileSync('cmake', ['--build', buildDir, '--config', 'Release', '-j', '2'], {
  stdio: 'inherit',
});
writeFileSync(stampFile, digest);
