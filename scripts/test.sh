#!/usr/bin/env bash
# Runs every test: formatting and lints, native unit tests, then the end-to-end suites against
# the compiled worker in workerd (Miniflare and wrangler dev) with real sockets: the Node suites,
# then the Python client's (python/tests, pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== cargo fmt / clippy" >&2
cargo fmt --all -- --check
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --target wasm32-unknown-unknown --release -- -D warnings

echo "== native unit tests" >&2
cargo test --quiet

echo "== build" >&2
bash scripts/build.sh

echo "== end-to-end tests (workerd)" >&2
shopt -s globstar nullglob
node --test --test-concurrency=1 tests/**/*.test.mjs

echo "== Python client tests (workerd)" >&2
[ -x .venv/bin/python ] || { echo "the Python client tests need python3 >= 3.11 (scripts/setup.sh makes .venv)" >&2; exit 1; }
(cd python && ../.venv/bin/python -m pytest)
