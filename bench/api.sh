#!/usr/bin/env bash
# API benchmark (see bench/api.py): GET /v1/packages/{id}/download under the
# production gunicorn settings vs a bare WSGI app under the same settings,
# on SQLite and PostgreSQL. Loopback only, bounded: about four minutes with
# the defaults. Writes bench/results/api.json.
# Usage: bench/api.sh [--duration SECONDS] [--rounds N] [--databases sqlite,postgres]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ensure_venv native,test
command -v wrk >/dev/null || ensure_apt wrk
exec "$VENV/bin/python" bench/api.py "$@"
