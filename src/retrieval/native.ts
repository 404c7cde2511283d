// Loads the compiled addon once. Every other module reaches native code through the typed
// wrappers in this folder, never through `require` of the .node file.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

export interface EngineInfo {
  avx2: boolean;
  fma: boolean;
  f16c: boolean;
}

/** The raw surface the addon exports; each engine adds its own entries. */
export interface NativeAddon {
  engineInfo(): EngineInfo;
}

/** Repository root, found from this file whether it runs from src/ (tsx) or dist/src/. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'CMakeLists.txt')))
      return dir;
    dir = resolve(dir, '..');
  }
  throw new Error('recserve: cannot find the project root from ' + import.meta.url);
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const path =
    process.env.RECSERVE_ADDON ?? join(projectRoot(), 'build', 'Release', 'recserve_native.node');
  if (!existsSync(path)) {
    throw new Error(
      `recserve: native addon not found at ${path}; run \`npm run build:native\` (or \`npm run setup\`)`,
    );
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}
