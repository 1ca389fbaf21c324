#!/usr/bin/env bash
# Builds the Worker (wasm + JS module) into build/. Used by wrangler's [build] command and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
# One build at a time: parallel builds would overwrite build/ under each other. (flock is
# util-linux; where it is missing, e.g. macOS, builds are simply not serialized.)
if command -v flock >/dev/null; then
  exec 9>"$target/.roomcast-build.lock"
  flock 9
fi
bin="$PWD/node_modules/.bin"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$bin/esbuild}"
worker-build --release "$@" >"$target/worker-build.log" 2>&1 || { cat "$target/worker-build.log" >&2; exit 1; }
raw=$(wc -c <build/index_bg.wasm)
gz=$(gzip -9c build/index_bg.wasm | wc -c)
echo "build: build/index_bg.wasm $((raw / 1024)) KiB raw, $((gz / 1024)) KiB gzipped" >&2
