#!/usr/bin/env bash
# Load benchmark (see bench/load.py): 200 devices downloading through the
# edge while 10 developers upload, complete and publish, for 60 s; then every
# completed upload is checked (nothing lost). Loopback only, bounded: about
# two minutes. Writes bench/results/load.json.
# Usage: bench/load.sh [--seconds N] [--database sqlite|postgres]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ensure_venv native,test,bench
ensure_nginx
exec "$VENV/bin/python" bench/load.py "$@"
