#!/usr/bin/env bash
# Builds the Worker (wasm + JS shim) into build/. Used by wrangler's [build] command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin="$PWD/node_modules/.bin"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$bin/esbuild}"
exec worker-build --release "$@"
