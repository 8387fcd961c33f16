#!/usr/bin/env bash
# Compares protos/ with the API at the commit named in protos/BREAKING_BASELINE.
# A deliberate break is made visible by committing a new baseline: the commit that carries
# the break becomes what later changes are compared against (CONTRIBUTING.md, "API stability").
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-node_modules/.bin/buf}
BASELINE_FILE=protos/BREAKING_BASELINE

baseline=$(grep -v '^[[:space:]]*#' "$BASELINE_FILE" | tr -d '[:space:]')
if [[ ! "$baseline" =~ ^[0-9a-f]{40}$ ]]; then
  echo "$BASELINE_FILE must hold one full commit hash, found '$baseline'" >&2
  exit 2
fi

if ! git cat-file -e "${baseline}^{commit}" 2>/dev/null; then
  # A shallow CI clone lacks older commits: fetch just the baseline.
  echo "baseline $baseline is not in this clone; fetching it from origin" >&2
  if ! git fetch --quiet --depth=1 origin "$baseline" 2>/dev/null \
    || ! git cat-file -e "${baseline}^{commit}" 2>/dev/null; then
    echo "cannot compare the API: commit $baseline (from $BASELINE_FILE) is not in this" >&2
    echo "clone and could not be fetched from origin; clone with full history" >&2
    echo "(git fetch --unshallow) or fetch that commit, then run 'make buf-breaking' again" >&2
    exit 2
  fi
fi

echo "buf breaking against $baseline ($BASELINE_FILE)"
"$BUF" breaking --against ".git#ref=${baseline}"
