#!/usr/bin/env bash
# Starts roomcast locally with wrangler dev (settings from .dev.vars). Extra args go to wrangler,
# e.g. `npm run dev -- --port 8790`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx wrangler dev "$@"
