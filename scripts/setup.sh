#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 / Node 20 machine, run by `npm start` and
# `npm test` before anything else: Debian packages the addon and the tests need, npm
# dependencies, the native addon, the TypeScript build, and the demo model repository.
# Each step is skipped when its output is already current, so a second run costs seconds.
set -euo pipefail
export ONNXRUNTIME_NODE_INSTALL=skip
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------
# libfaiss-dev (static libfaiss.a) + libopenblas-dev + OpenMP for the addon;
# redis-server for the tests that run a real Redis; flatbuffers-compiler (flatc, the
# reference the FlatBuffers codec is tested against) and python3-grpcio +
# python3-grpc-tools (a second gRPC toolchain the .proto contract is tested with);
# nghttp2-client (h2load, the C load generator bench/grpc-load.ts drives both front ends with).
need_pkgs=()
for p in libfaiss-dev libopenblas-dev libomp-dev redis-server cmake g++ make \
  flatbuffers-compiler python3-grpcio python3-grpc-tools nghttp2-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- npm dependencies ------------------------------------------------------------------
stamp=node_modules/.recserve-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

# --- native addon + TypeScript -----------------------------------------------------------
node scripts/build-native.mjs
log "compiling TypeScript"
npx tsc -p tsconfig.json

# --- demo model repository ---------------------------------------------------------------
if [ -f dist/src/cli/main.js ] && node dist/src/cli/main.js help 2>/dev/null | grep -q build-demo; then
  node dist/src/cli/main.js build-demo --if-missing
fi
