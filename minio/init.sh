#!/bin/sh
# One-shot setup of the MinIO cluster for the appliance (compose service
# `minio-init`): the bucket, the app's own user and policy, anonymous reads of
# public prefixes, and the lifecycle safety net. Safe to run again.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MOSIS_S3_BUCKET:=mosis}" "${MOSIS_S3_ACCESS_KEY:?}" "${MOSIS_S3_SECRET_KEY:?}"
endpoint="${MINIO_ENDPOINT:-http://minio1:9000}"
here="$(dirname "$0")"

mc alias set mosis "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "mosis/$MOSIS_S3_BUCKET"

# The app gets a user limited to its bucket, never the root credentials.
sed "s/\${MOSIS_S3_BUCKET}/$MOSIS_S3_BUCKET/g" "$here/policies/mosis-app.json" > /tmp/mosis-app.json
mc admin policy create mosis mosis-app /tmp/mosis-app.json
mc admin user add mosis "$MOSIS_S3_ACCESS_KEY" "$MOSIS_S3_SECRET_KEY"
mc admin policy attach mosis mosis-app --user "$MOSIS_S3_ACCESS_KEY" 2>/dev/null || true

# nginx fetches assets anonymously (packages with URLs the app presigns, see
# docs/edge.md); storage itself is reachable only on the internal network.
sed "s/\${MOSIS_S3_BUCKET}/$MOSIS_S3_BUCKET/g" "$here/public-read.json.tmpl" > /tmp/public-read.json
mc anonymous set-json /tmp/public-read.json "mosis/$MOSIS_S3_BUCKET"
mc ilm import "mosis/$MOSIS_S3_BUCKET" < "$here/lifecycle.json"
echo "minio-init: bucket $MOSIS_S3_BUCKET ready"
