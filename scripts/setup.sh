#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, run and test roomcast. Idempotent, and quiet and
# fast (a few version checks) when everything is already there. Run by `npm run dev` and
# `npm test`; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
lock_version() { # version of a crate in Cargo.lock
  awk -v n="$1" '$0=="name = \""n"\""{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock
}

command -v cargo >/dev/null || { say "cargo is required (https://rustup.rs)"; exit 1; }
command -v node >/dev/null || { say "Node.js >= 20 is required"; exit 1; }

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown >&2
fi

# worker-build must match the `worker` crate; wasm-bindgen-cli must match Cargo.lock exactly.
# Both are built from crates.io: worker-build's own downloads of them reach GitHub, which many
# networks (and CI here) cannot.
worker_v=$(lock_version worker)
bindgen_v=$(lock_version wasm-bindgen)
version_of() { "$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1; }
if [ "$(version_of worker-build)" != "$worker_v" ]; then
  say "installing worker-build $worker_v (once; a few minutes)"
  cargo install -q worker-build --version "$worker_v" >&2
fi
if [ "$(version_of wasm-bindgen)" != "$bindgen_v" ]; then
  say "installing wasm-bindgen-cli $bindgen_v (once; a few minutes)"
  cargo install -q wasm-bindgen-cli --version "$bindgen_v" >&2
fi

# npm packages (wrangler, miniflare, binaryen's wasm-opt, test deps), pinned by package-lock.json.
stamp=node_modules/.roomcast-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi

# The Python client (python/) and its test tools, in a venv at .venv: installed editable, so
# only a changed python/pyproject.toml (dependencies, pins) needs a reinstall. Without Python
# 3.11+ this is skipped (`npm run dev` does not need it); `npm test` then fails and says why.
py_stamp=.venv/.roomcast-pyproject
if command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  if [ ! -x .venv/bin/python ]; then
    say "creating the Python venv .venv"
    python3 -m venv .venv >&2
  fi
  if ! cmp -s python/pyproject.toml "$py_stamp"; then
    say "installing the Python client and its test tools into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "./python[test]" >&2
    cp python/pyproject.toml "$py_stamp"
  fi
elif [ ! -x .venv/bin/python ]; then
  say "no python3 >= 3.11: skipping the Python client's venv (its tests need it)"
fi

# Local development settings: copied once; later, keys new in the example are added, and the
# ones already there are left as they are.
bash scripts/dev-vars.sh .dev.vars.example .dev.vars

# Headless Chromium for the browser test (tests/client/browser.test.mjs), from Debian's packages
# (playwright's own browser downloads cannot be reached). Only as root, only when missing, and
# not when ROOMCAST_BROWSER_TESTS=0. Without it the browser test fails and says so.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && [ "${ROOMCAST_BROWSER_TESTS:-1}" != 0 ] \
  && command -v apt-get >/dev/null; then
  say "installing chromium (once; a few minutes)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
