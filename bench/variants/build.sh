#!/usr/bin/env bash
# Builds a variant of roomcast for pricing a change (bench/diag.mjs --roomcast=NAME:DIR, or
# bench/profile.mjs --dir=DIR) without touching the work tree: copies Cargo.*, src/, client/
# and demo/ to $VARIANTS/NAME, applies the named patches (bench/variants/<patch>.py, run in
# the copy), and builds there with worker-build. The first build of a copy reuses a copy of
# target/wasm32-unknown-unknown, so it is about a minute.
#
#   bash bench/variants/build.sh NAME [PATCH...]   e.g.  bash bench/variants/build.sh lean passthru nolog noprune
#   -> $VARIANTS/NAME/build/{index.js,index_bg.wasm}   (VARIANTS defaults to /tmp/roomcast-variants)
#
# The patches match the source text they were written against and fail loudly (assert) once
# src/ has moved on; that is intended.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
variants="${VARIANTS:-/tmp/roomcast-variants}"
name=$1; shift
dest="$variants/$name"
rm -rf "$dest"; mkdir -p "$dest/target"
cp -r "$root/Cargo.toml" "$root/Cargo.lock" "$root/src" "$root/client" "$root/demo" "$dest/"
[ -d "$root/target/wasm32-unknown-unknown" ] && cp -r "$root/target/wasm32-unknown-unknown" "$dest/target/"
cd "$dest"
for p in "$@"; do python3 "$here/$p.py"; done
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$root/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$root/node_modules/.bin/esbuild}"
start=$(date +%s)
worker-build --release >build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
echo "variant $name ($*): $dest/build, $(wc -c <build/index_bg.wasm) bytes wasm, built in $(( $(date +%s) - start )) s" >&2
