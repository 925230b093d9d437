#!/bin/sh
# One-shot setup of the MinIO cluster for the appliance (compose service
# `minio-init`): the bucket, the app's own user and policy, anonymous reads of
# assets/, and the lifecycle safety net. Safe to run again.
#
# The image is minimal (no sed, awk or grep): besides mc, this uses only the
# shell's builtins, cat, dirname and sleep.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MOSIS_S3_BUCKET:=mosis}" "${MOSIS_S3_ACCESS_KEY:?}" "${MOSIS_S3_SECRET_KEY:?}"
endpoint="${MINIO_ENDPOINT:-http://minio1:9000}"
here="$(dirname "$0")"
placeholder='${MOSIS_S3_BUCKET}'

# A policy template with the bucket's name in place of the placeholder.
render() {
    while IFS= read -r line || [ -n "$line" ]; do
        while :; do
            case "$line" in
                *"$placeholder"*) line="${line%%"$placeholder"*}$MOSIS_S3_BUCKET${line#*"$placeholder"}" ;;
                *) break ;;
            esac
        done
        printf '%s\n' "$line"
    done < "$1"
}

# The nodes answer their liveness check before they have formed the
# cluster: retry the first steps for a minute.
retry() {
    tries=0
    until "$@"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 30 ]; then
            echo "minio-init: the cluster did not answer: $*" >&2
            return 1
        fi
        sleep 2
    done
}

retry mc alias set mosis "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
retry mc mb --ignore-existing "mosis/$MOSIS_S3_BUCKET"

# The app gets a user limited to its bucket, never the root credentials.
render "$here/policies/mosis-app.json" > /tmp/mosis-app.json
mc admin policy create mosis mosis-app /tmp/mosis-app.json
mc admin user add mosis "$MOSIS_S3_ACCESS_KEY" "$MOSIS_S3_SECRET_KEY"
# Attaching again answers an error: the policy is attached either way.
mc admin policy attach mosis mosis-app --user "$MOSIS_S3_ACCESS_KEY" 2>/dev/null || true

# Assets are public; packages and temp uploads need a signature made with
# the app's credentials (the edge fetches packages with URLs the app
# presigns, docs/edge.md). The app sets the same policy and rule at start.
render "$here/public-read.json.tmpl" > /tmp/public-read.json
mc anonymous set-json /tmp/public-read.json "mosis/$MOSIS_S3_BUCKET"
mc ilm rule import "mosis/$MOSIS_S3_BUCKET" < "$here/lifecycle.json"
echo "minio-init: bucket $MOSIS_S3_BUCKET ready"
