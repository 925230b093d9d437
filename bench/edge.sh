#!/usr/bin/env bash
# Edge benchmark (see bench/edge.py): the edge's cache hits vs nginx serving
# the same file from disk vs a presigned GET straight to storage, for a
# 50 MiB package and a 1 KiB asset; the micro-cached download info vs a 1 KiB
# file from the same edge vs the uncached route; plus slice vs full-object
# Range caching.
# Loopback only, bounded: about two minutes. Writes bench/results/edge.json.
# Usage: bench/edge.sh [--duration SECONDS]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ensure_venv test
ensure_nginx
command -v wrk >/dev/null || ensure_apt wrk
exec "$VENV/bin/python" bench/edge.py "$@"
