#!/usr/bin/env bash
# Recovery benchmark (see bench/recovery.py): replication lag (p50/p99 from
# write to verified copy) while developers ship at the load benchmark's
# upload rate, and `flask --app app replica restore` of 1,000 packages
# (1 GiB) against a plain S3 copy loop of the same objects between the same
# two SeaweedFS servers. Loopback only, bounded: about five minutes.
# Writes bench/results/recovery.json.
# Usage: bench/recovery.sh [--seconds N] [--packages N] [--package-mib MIB] [--rate PER_S]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

ensure_venv native,test
exec "$VENV/bin/python" bench/recovery.py "$@"
