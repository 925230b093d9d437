#!/usr/bin/env bash
# Delta patch benchmark (see bench/deltas.py): our patches against whole-file
# bsdiff4 and zstd --patch-from on successive releases of real wheels
# (fetched from PyPI into bench/work/wheels) and on synthetic app packages,
# plus applying a 500 MiB package. Writes bench/results/deltas.json.
# Usage: bench/deltas.sh [--packages numpy,click] [--synthetic-mib 20] [--big-mib 500]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ensure_venv native,test
exec "$VENV/bin/python" bench/deltas.py "$@"
