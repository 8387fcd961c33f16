#!/usr/bin/env bash
# Create the separate virtual environment with PGQueuer and Procrastinate that
# bench/bench_jobs.py runs its baselines in (as subprocesses). Usage:
#   bench/make_queues_venv.sh [DIR]      (default: $BENCH_QUEUES_VENV or /tmp/mediagrid-bench-queues)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-${BENCH_QUEUES_VENV:-/tmp/mediagrid-bench-queues}}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r "$here/requirements-queues.txt"
echo "$venv"
