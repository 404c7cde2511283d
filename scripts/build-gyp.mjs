// Builds binding.gyp (the exact index alone, no FAISS) with node-gyp into build-gyp/.
//
// node-gyp always writes to ./build of the directory it runs in, and build/ belongs to
// the CMake addon, so this script stages build-gyp/ with a copy of binding.gyp and a link
// to native/, then runs node-gyp there. Offline: Node's headers come from the install
// prefix (nodedir = <prefix>, holding include/node), never from the network.
// Output: build-gyp/build/Release/recserve_native.node
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'build-gyp');
const nodedir = resolve(dirname(process.execPath), '..');
if (!existsSync(join(nodedir, 'include', 'node', 'common.gypi'))) {
  console.error(`[build-gyp] no Node headers under ${nodedir}/include/node`);
  process.exit(1);
}

// node-gyp: the copy npm ships with (found beside the npm that runs us, or on PATH).
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a project dependency; the npm-bundled copy is the usual one
  }
  return candidates.find((p) => p && existsSync(p));
}
const nodeGyp = findNodeGyp();
if (!nodeGyp) {
  console.error('[build-gyp] node-gyp not found (it ships with npm)');
  process.exit(1);
}

// Up to date when the addon is newer than binding.gyp and every file under native/.
const product = join(out, 'build', 'Release', 'recserve_native.node');
function newestInput(dir, newest) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    newest = st.isDirectory() ? newestInput(p, newest) : Math.max(newest, st.mtimeMs);
  }
  return newest;
}
const inputsTime = newestInput(join(root, 'native'), statSync(join(root, 'binding.gyp')).mtimeMs);
if (
  !process.argv.includes('--force') &&
  existsSync(product) &&
  statSync(product).mtimeMs > inputsTime
) {
  console.error('[build-gyp] up to date');
  process.exit(0);
}

mkdirSync(out, { recursive: true });
copyFileSync(join(root, 'binding.gyp'), join(out, 'binding.gyp'));
rmSync(join(out, 'native'), { force: true, recursive: true });
symlinkSync(join(root, 'native'), join(out, 'native'), 'dir');
execFileSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, '-j', '2'], {
  cwd: out,
  stdio: 'inherit',
  env: { ...process.env, npm_config_nodedir: nodedir },
});
console.error(`[build-gyp] built ${join(out, 'build', 'Release', 'recserve_native.node')}`);
