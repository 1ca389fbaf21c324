#!/usr/bin/env bash
# Brings .dev.vars up to date with .dev.vars.example (run by scripts/setup.sh):
#
#   bash scripts/dev-vars.sh [example] [target]     # defaults: .dev.vars.example .dev.vars
#
# A missing target is copied from the example. Otherwise every key of the example that the
# target lacks is appended, with the comment lines just above it in the example, and named on
# stderr; nothing already in the target is changed. A key the target has commented out
# (`# KEY=…`) counts as present: someone turned it off on purpose. Says nothing when nothing
# is missing.
set -euo pipefail
example=${1:-.dev.vars.example}
target=${2:-.dev.vars}
say() { echo "setup: $*" >&2; }

if [ ! -f "$target" ]; then
  cp "$example" "$target"
  say "created $target from $example"
  exit 0
fi

added=()
block=""   # the example's comment lines since its last key or blank line
while IFS= read -r line || [ -n "$line" ]; do
  if [[ $line =~ ^[[:space:]]*# ]]; then
    block+="$line"$'\n'
    continue
  fi
  if [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*= ]]; then
    key=${BASH_REMATCH[2]}
    if ! grep -Eq "^[#[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=" "$target"; then
      # The target's last line may lack its newline.
      if [ ${#added[@]} -eq 0 ] && [ -s "$target" ] && [ -n "$(tail -c1 "$target")" ]; then echo >>"$target"; fi
      printf '%s%s\n' "$block" "$line" >>"$target"
      added+=("$key")
    fi
  fi
  block=""
done <"$example"

if [ ${#added[@]} -gt 0 ]; then
  keys=$(IFS=,; echo "${added[*]}")
  say "added ${keys//,/, } to $target from $example (the keys it had are unchanged)"
fi
