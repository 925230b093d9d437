"""The OpenAPI 3.1 description of the HTTP API, served at /v1/openapi.json.

Built from the Flask app itself: every path, path parameter and method comes
from its URL map, and who may call a route (the bearer scheme, 401 and 403)
from the role its auth decorator records. OPERATIONS below adds, once per
route and method, what no URL map knows: a stable operationId, its tag,
summary and description, its body and answer, and the error codes its own
code raises. The errors many routes share are added here, by rule, from one
place: a JSON body's input errors, an upload's, `body_too_large` (every
route: limit_body runs before any), `not_found` for a path parameter the
route's converter refuses, `rate_limited` under /v1/ (the edge's limit) and
`database_unavailable` for a route that reads the database. Every error
response names its codes (`x-error-codes`) from ERROR_CODES, the one
table of error codes and their statuses.

Routes the edge does not publish (the edge's own question, Prometheus's
/metrics) are left out of the public document; `document(..., internal=True)`
has them too, marked `x-internal: true`.

tests/test_openapi.py holds this to the code: every route has an entry with
an operationId, tag, summary and description; every error code the code
below a route can raise (a static reading of app/, tools/errorcodes.py)
is declared for it, and none that it cannot. tests/test_openapi_tools.py
lints it with Redocly and Spectral and drives the release journey through a
client generated from it. A route without an entry is still listed (so the
document stays whole in production) but fails those tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.routing import IntegerConverter

from app.api.converters import (
    HexIdConverter,
    KeyIdConverter,
    PackageIdConverter,
    PositionConverter,
    VersionCodeConverter,
)
from app.api.inputs import CONTROL_CHARACTERS
from app.catalog.accounts import SCOPES
from app.platform.lifecycle import VersionStatus
from mosis_format.validation import MAX_VERSION_CODE

HEX_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
PACKAGE_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", "maxLength": 128}
VERSION_CODE = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION_CODE}
TIME = {"type": ["string", "null"], "format": "date-time"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
KEY_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}


def text(max_length: int) -> dict:
    """A name or reason: no control characters (nor unpaired surrogates)."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": f"^[^{CONTROL_CHARACTERS}]*$"}


STATUS = {"$ref": "#/components/schemas/VersionStatus"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict, optional: dict | None = None, closed: bool = False) -> dict:
    schema = {"type": "object", "properties": {**required, **(optional or {})},
              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


COUNT = ref("ObjectCount")
ICONS = nullable(ref("Icons"))
MANIFEST = nullable(ref("Manifest"))

SCHEMAS = {
    "VersionStatus": {"type": "string", "enum": list(VersionStatus.ALL)},
    "Error": obj({"error": ref("ErrorDetail")}),
    "ErrorDetail": obj({"code": {"type": "string", "description": "Stable; see the operation's "
                                                                  "x-error-codes and docs/api.md"},
                        "message": {"type": "string", "description": "For people; may change"}},
                       {"details": {"type": "object", "description": "Facts about the error, such as "
                                                                     "`field` or `limit`"}}),
    "App": obj({"id": HEX_ID, "package_id": PACKAGE_ID, "name": STRING,
                "developer_id": HEX_ID, "created_at": TIME}),
    "Version": obj({
        "id": HEX_ID, "app_id": HEX_ID, "version_code": VERSION_CODE,
        "version_name": STRING, "status": STATUS,
        "size": {"type": "integer", "minimum": 0}, "sha256": nullable(SHA256),
        "manifest": MANIFEST, "signature": {"type": ["string", "null"]},
        "error": nullable(ref("VersionFailure")),
        "reason": {"type": ["string", "null"]},
        "created_at": TIME, "uploaded_at": TIME, "validated_at": TIME, "published_at": TIME,
        "superseded_at": TIME, "purged_at": TIME,
    }, {"purge_reason": {"type": ["string", "null"]}}),
    "VersionFailure": obj({"code": {"type": "string", "description": "Why validation failed "
                                                                      "(docs/validation.md)"},
                           "message": STRING}),
    # Small packages: one presigned PUT. Large ones: an S3 multipart upload
    # whose part URLs come from …/upload/parts (docs/cli.md).
    "Upload": {"anyOf": [ref("SingleUpload"), ref("MultipartUpload")]},
    "SingleUpload": obj({"kind": {"const": "single"}, "url": STRING,
                         "method": STRING,
                         "headers": {"type": "object", "additionalProperties": STRING},
                         "expires_at": TIME}, {"max_bytes": INTEGER}),
    "MultipartUpload": obj({"kind": {"const": "multipart"}, "size": INTEGER,
                            "part_size": INTEGER, "part_count": INTEGER,
                            "max_parts_per_request": INTEGER, "expires_at": TIME},
                           {"parts": array(ref("UploadedPart")), "uploaded_bytes": INTEGER}),
    "UploadedPart": obj({"part_number": INTEGER, "size": INTEGER, "etag": STRING, "last_modified": TIME}),
    "PartUrl": obj({"part_number": INTEGER, "url": STRING, "method": STRING,
                    "headers": {"type": "object", "additionalProperties": STRING}, "size": INTEGER}),
    "Developer": obj({"id": HEX_ID, "name": STRING, "email": STRING, "created_at": TIME}),
    "Token": obj({"id": HEX_ID, "developer_id": HEX_ID, "prefix": STRING,
                  "created_at": TIME, "last_used_at": TIME, "revoked_at": TIME,
                  "scopes": array(ref("Scope")), "apps": nullable(array(HEX_ID)), "expires_at": TIME,
                  "parent_id": nullable(HEX_ID)}),
    "Scope": {"type": "string", "enum": list(SCOPES),
              "description": "read: apps and versions; upload: register apps, declare, upload and complete "
                             "versions; publish; assets: icons and screenshots; tokens: issue narrower tokens"},
    "Download": obj({"download_url": STRING, "version": STRING,
                     "version_code": VERSION_CODE, "size": INTEGER, "sha256": SHA256,
                     "signature": STRING, "key_id": STRING, "expires_at": TIME},
                    {"delta": ref("Delta")}),
    # A patch from the version the device has (docs/deltas.md): only when one is ready.
    "Delta": obj({
        "url": {"type": "string", "description": "Signed, expiring edge link to the patch (Range requests work)"},
        "size": INTEGER, "sha256": SHA256,
        "algorithm": {"type": "string", "description": "The patch format; `mosis-zipdelta-v1` (docs/deltas.md)"},
        "from_version_code": VERSION_CODE, "from_sha256": SHA256,
        "signature": {"type": "string", "description": "Ed25519 by the store's key, base64, over "
                                                       "`mosis-delta-v1\\n{package_id}\\n{from_version_code}"
                                                       "\\n{from_sha256}\\n{to_version_code}\\n{to_sha256}"
                                                       "\\n{patch_sha256}\\n{patch_size}`"},
        "key_id": {**KEY_ID, "description": "The keyring key that made `signature` (docs/signing.md); "
                                            "never a revoked one"},
        "expires_at": TIME}),
    "Icons": obj({"32": STRING, "64": STRING, "128": STRING}),
    "Screenshot": obj({
        "position": {"type": "integer", "minimum": 1}, "url": STRING,
        "width": INTEGER, "height": INTEGER, "size": INTEGER,
        "sha256": SHA256, "webp_url": {"type": ["string", "null"]},
        "webp_size": {"type": ["integer", "null"]}}),
    "PackageListing": obj({"package_id": PACKAGE_ID, "name": STRING, "latest": ref("PublishedVersion"),
                           "icons": ICONS, "screenshots": array(ref("Screenshot"))}),
    "PublishedVersion": obj({"version": STRING, "version_code": VERSION_CODE, "size": INTEGER,
                             "sha256": SHA256, "published_at": TIME},
                            {"manifest": MANIFEST}),
    "Manifest": {"type": "object", "description": "The package's manifest.json, as validated "
                                                  "(docs/validation.md)"},
    "ObjectCount": obj({"bytes": INTEGER, "objects": INTEGER}),
    "SigningKey": obj({"algorithm": {"const": "ed25519"}, "key_id": KEY_ID, "public_key": STRING}),
    "Keyring": obj({"version": {"type": "integer", "minimum": 1},
                    "keys": array(ref("KeyringKey")),
                    "signatures": array(ref("DocumentSignature"))}, closed=True),
    "KeyringKey": obj({"key_id": KEY_ID, "algorithm": {"const": "ed25519"}, "public_key": STRING,
                       "status": {"type": "string", "enum": ["active", "retired", "revoked"]},
                       "roles": array({"type": "string", "enum": ["keyring", "packages"]}),
                       "not_before": STRING}, {"not_after": STRING}, closed=True),
    "DocumentSignature": obj({"key_id": KEY_ID, "signature": STRING}, closed=True),
    "CatalogIndex": obj({"keyring_version": {"type": "integer", "minimum": 1},
                         "issued_at": {"type": "string", "format": "date-time"},
                         "expires": {"type": "string", "format": "date-time",
                                     "description": "Devices refuse the index from then on (a freeze attack)"},
                         "packages": array(ref("IndexEntry")),
                         "signatures": array(ref("DocumentSignature"))}, closed=True),
    "IndexEntry": obj({"package_id": PACKAGE_ID, "version_code": VERSION_CODE,
                       "size": {"type": "integer", "minimum": 0}, "sha256": SHA256,
                       "signature": STRING, "key_id": KEY_ID}, closed=True),
    "KeyringChange": obj({"keyring": ref("Keyring"), "active_key": KEY_ID,
                          "resigned": {"type": "integer", "minimum": 0,
                                       "description": "Versions signed again with the active key"}},
                         {"new_key": KEY_ID}),
    "StorageUsage": obj({
        "scanned_at": TIME, "scan_seconds": {"type": "number"},
        "total": COUNT,
        "budget_bytes": INTEGER, "budget_used": {"type": ["number", "null"]},
        "by_prefix": {"type": "object", "additionalProperties": COUNT},
        "by_status": {"type": "object", "additionalProperties": COUNT},
        "versions_by_status": {"type": "object", "additionalProperties": INTEGER},
    }),
    "ReplicaStatus": obj({
        "configured": {"type": "boolean"},
        "pending": {**INTEGER, "description": "copies and deletes due and not yet done"},
        "oldest_pending_age_s": {"type": "number", "description": "seconds since the oldest was queued"},
        "copied": {**INTEGER, "description": "objects on the replica, each read back and verified"},
        "bytes": {**INTEGER, "description": "their bytes"},
        "errors": {**INTEGER, "description": "due rows whose last attempt failed"},
        "last_verified_at": TIME,
        "lag_p99_s": {"type": "number", "description": "99th percentile of write-to-verified-copy, last 24 h"},
    }, closed=True),
    "RetentionReport": obj({
        "dry_run": {"type": "boolean"}, "now": TIME,
        "items": array(ref("RetentionItem")),
        "errors": array(obj({"version_id": HEX_ID, "error": STRING})),
        "totals": obj({"versions": INTEGER, "bytes": INTEGER,
                       "by_status": {"type": "object", "additionalProperties": obj(
                           {"versions": INTEGER, "bytes": INTEGER})}}),
    }),
    "RetentionItem": obj({
        "version_id": HEX_ID, "app_id": HEX_ID, "package_id": PACKAGE_ID,
        "version_code": VERSION_CODE, "version_name": STRING, "status": STATUS,
        "outcome": STATUS, "reason": STRING, "since": TIME, "expired_at": TIME,
        "objects": array(obj({"key": STRING, "size": INTEGER})),
        "bytes": INTEGER}),
    "CostEstimate": obj({
        "generated_at": TIME,
        "prices": obj({"file": STRING, "taken": STRING, "source": STRING, "currency": STRING,
                       "bytes_per_gb": INTEGER}),
        "usage": obj({"storage_gb": {"type": "number"}, "requests": {"type": "number"},
                      "egress_gb": {"type": "number"}, "basis": STRING}),
        "options": array(obj({
            "option": STRING, "name": STRING, "total_usd": {"type": "number"},
            "arithmetic": STRING, "warnings": array(STRING),
            "items": array(obj({
                "item": STRING, "usage": STRING, "quantity": {"type": "number"},
                "unit": STRING, "included": {"type": "number"},
                "usd_per_unit": {"type": "number"}, "usd": {"type": "number"},
                "arithmetic": STRING, "note": STRING}))})),
        "history": array(obj({
            "day": {"type": "string", "format": "date"}, "storage_bytes": INTEGER,
            "storage_objects": INTEGER, "requests": INTEGER,
            "egress_bytes": INTEGER, "downloads": INTEGER})),
        # What delta patches saved over the last 30 days (docs/deltas.md).
        "deltas": obj({"since": {"type": "string", "format": "date"}, "patch_bytes_sent": INTEGER,
                       "full_bytes_replaced": INTEGER, "egress_saved_bytes": INTEGER,
                       "egress_saved_gb": {"type": "number"}}),
    }),
    # What operations answer with: named, so generated clients get these names.
    "Health": obj({"status": {"const": "ok"}}),
    "Readiness": obj({"status": STRING, "checks": {"type": "object", "additionalProperties": STRING}}),
    "AppResult": obj({"app": ref("App")}),
    "AppList": obj({"apps": array(ref("App"))}),
    "VersionResult": obj({"version": ref("Version")}),
    "VersionList": obj({"versions": array(ref("Version"))}),
    "CreatedVersion": obj({"version": ref("Version"), "upload": ref("Upload")}),
    "UploadState": obj({"upload": ref("Upload")}),
    "PartUrls": obj({"parts": array(ref("PartUrl")), "expires_at": TIME}),
    "IconResult": obj({"icons": ICONS}),
    "ScreenshotResult": obj({"screenshot": ref("Screenshot")}),
    "ScreenshotList": obj({"screenshots": array(ref("Screenshot"))}),
    "DeveloperList": obj({"developers": array(ref("Developer"))}),
    "CreatedDeveloper": obj({"developer": ref("Developer"), "token": STRING, "token_id": HEX_ID}),
    "IssuedToken": obj({"token": STRING, "token_id": HEX_ID}, {"details": ref("Token")}),
    "TokenResult": obj({"token": ref("Token")}),
    "TokenList": obj({"tokens": array(ref("Token"))}),
    # What they take.
    "NewDeveloper": obj({"name": text(200), "email": {"type": "string", "format": "email", "maxLength": 320}},
                        closed=True),
    "NewApp": obj({"package_id": PACKAGE_ID, "name": text(80)}, closed=True),
    "NewVersion": obj({"version_code": VERSION_CODE, "version_name": text(64),
                       "size": {"type": "integer", "minimum": 1,
                                "description": "Bytes of the package: at most the appliance's "
                                               "MOSIS_MAX_PACKAGE_BYTES (413 `too_large` past it)"}},
                      {"sha256": nullable(SHA256)}, closed=True),
    "PartNumbers": obj({"part_numbers": {"type": "array", "minItems": 1, "maxItems": 100,
                                         "items": {"type": "integer", "minimum": 1, "maximum": 10000}}},
                       closed=True),
    "ScreenshotOrder": obj({"positions": array(INTEGER)}, closed=True),
    "Reason": obj({"reason": text(2000)}, closed=True),
    "NewToken": obj({}, {"scopes": {**array(ref("Scope")), "description": "Default: every scope (of the issuing "
                                                                          "token, for a token issuing one)"},
                         "apps": {**array(HEX_ID), "maxItems": 1000,
                                  "description": "Only these apps of the developer. Default: every one "
                                                 "(of the issuing token)"},
                         "expires_at": {"type": ["string", "null"], "format": "date-time", "maxLength": 64,
                                        "description": "Refused from then on (401 `token_expired`); a time "
                                                       "already past is 400 `invalid_field`. "
                                                       "Default: never (the issuing token's expiry)"}},
                    closed=True),
    # A forecast may name the time it looks at; a real run always uses the current time.
    "RetentionRun": {"oneOf": [ref("RetentionForecast"), ref("RetentionNow")]},
    "RetentionForecast": obj({"dry_run": {"const": True}},
                             {"now": {"type": ["string", "null"], "format": "date-time", "maxLength": 64,
                                      "description": "RFC 3339 instant to forecast at (default: the "
                                                     "current time)"}},
                             closed=True),
    "RetentionNow": obj({"dry_run": {"const": False}}, {"now": {"type": "null"}}, closed=True),
    "IconUpload": obj({"icon": {"type": "string", "format": "binary",
                                "contentMediaType": "application/octet-stream"}}, closed=True),
    "ScreenshotUpload": obj({"screenshot": {"type": "string", "format": "binary",
                                            "contentMediaType": "application/octet-stream"}}, closed=True),
    "OpenApiDocument": {"type": "object", "description": "An OpenAPI 3.1 document"},
}


# -- error codes ------------------------------------------------------------------------

# Every code an operation may answer with, its status and meaning. A route
# declares the codes its own code raises; the shared ones are added by rule.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not a JSON object"),
    "missing_field": (400, "a required field is missing (`details.field`)"),
    "unknown_field": (400, "a field this route does not take (`details.field`)"),
    "invalid_field": (400, "a field has the wrong type or value (`details.field`)"),
    "missing_file": (400, "the multipart body has not exactly one file in the route's field"),
    "invalid_parameter": (400, "a query parameter has the wrong value (`details.parameter`)"),
    "unknown_parameter": (400, "a query parameter this route does not take (`details.parameter`)"),
    "now_requires_dry_run": (400, "`now` forecasts only: send it with `dry_run` true"),
    "unauthorized": (401, "no valid bearer token: missing, unknown or revoked"),
    "token_expired": (401, "the token's `expires_at` has passed; ask for a new token"),
    "forbidden": (403, "the token's role may not call this route"),
    "insufficient_scope": (403, "the token lacks the scope this call needs (`details.scope`)"),
    "not_found": (404, "no such route: a path parameter is malformed"),
    "app_not_found": (404, "no such app, or not the caller's"),
    "version_not_found": (404, "no such version"),
    "package_not_found": (404, "no published version of that package_id, or no such package"),
    "delta_not_found": (404, "no such delta patch, or one of its versions is no longer servable"),
    "developer_not_found": (404, "no such developer"),
    "token_not_found": (404, "no such token"),
    "keyring_version_not_found": (404, "no such keyring version (yet)"),
    "signing_key_not_found": (404, "no key with this id in the keyring"),
    "icon_not_found": (404, "the app has no icon"),
    "screenshot_not_found": (404, "the app has no screenshot at that position"),
    "asset_not_found": (404, "no such asset key"),
    "package_id_taken": (409, "another app has this package_id"),
    "email_taken": (409, "another developer has this e-mail address"),
    "version_exists": (409, "the app has a version with this version_code"),
    "version_code_not_increasing": (409, "a version with a higher or equal version_code was published"),
    "invalid_state": (409, "the version's status does not allow this (`details.status`)"),
    "upload_missing": (409, "nothing was uploaded for this version, or the multipart upload is gone"),
    "upload_incomplete": (409, "parts of the multipart upload are missing"),
    "size_mismatch": (409, "the upload's size differs from the declared size; the version failed"),
    "not_multipart": (409, "the version uploads with a single PUT, not in parts"),
    "too_many_screenshots": (409, "the app has the most screenshots allowed (`details.limit`)"),
    "screenshots_changed": (409, "the positions do not name every current screenshot once"),
    "keyring_key_missing": (409, "the new keyring version needs the signature of a key that is not at hand "
                                 "(`details.missing`; docs/signing.md, runbook)"),
    "keyring_refused": (409, "devices would refuse this keyring change (`details.reason`), such as "
                             "revoking the only keyring key"),
    "keyring_changed": (409, "the keyring changed meanwhile; try again"),
    "too_large": (413, "the package is over MOSIS_MAX_PACKAGE_BYTES (`details.limit`)"),
    "body_too_large": (413, "the request body is over MOSIS_MAX_JSON_BYTES (`details.limit`)"),
    "file_too_large": (413, "the uploaded image is over MOSIS_MAX_ASSET_BYTES (`details.limit`)"),
    "unsupported_media_type": (415, "the body is not of the content type this route takes"),
    "unsupported_format": (415, "an image format this route does not take"),
    "not_an_image": (422, "the file is no image (also an empty file)"),
    "animated_image": (422, "the image has more than one frame"),
    "decompression_bomb": (422, "the image declares far more pixels or metadata than any accepted one"),
    "truncated_image": (422, "the file ends before the image does"),
    "corrupt_image": (422, "the image data cannot be decoded"),
    "image_not_square": (422, "an icon must be square"),
    "image_too_small": (422, "the image is smaller than allowed (`details.width`, `details.height`)"),
    "image_too_large": (422, "the image is larger than allowed (`details.width`, `details.height`)"),
    "bad_aspect_ratio": (422, "the screenshot's long side is too long for its short side"),
    "rate_limited": (429, "too many requests from this address (the edge's limit); slow down"),
    "storage_unavailable": (503, "object storage is unreachable, not answering, or failing; retry after "
                                 "`Retry-After`"),
    "completion_in_progress": (503, "another completion of this version is still running; retry after "
                                    "`Retry-After`"),
    "database_unavailable": (503, "the database is unreachable; retry after `Retry-After`"),
    "prices_unavailable": (503, "the operator's prices file broke after the start"),
}

STATUS_TEXT = {400: "The request is invalid", 401: "No valid bearer token", 403: "Wrong role or scope for this route",
               404: "Not found (or not the caller's)", 409: "Conflicts with the current state",
               413: "Too large", 415: "Unsupported content type or format",
               422: "The image is not acceptable", 429: "Too many requests",
               503: "A dependency is unavailable"}
# 503 codes that always come with Retry-After (a dependency that comes back).
RETRYABLE = {"storage_unavailable", "database_unavailable", "completion_in_progress"}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer realm=\"mosis\"`", "required": True,
                                         "schema": {"type": "string"}}}

AUTH_ERRORS = ("unauthorized", "token_expired", "forbidden")
SCOPE_ERRORS = ("insufficient_scope",)  # developer routes
JSON_ERRORS = ("invalid_json", "missing_field", "unknown_field", "invalid_field", "unsupported_media_type")
UPLOAD_ERRORS = ("missing_file", "unknown_field", "unsupported_media_type", "file_too_large")
EVERY_ROUTE_ERRORS = ("body_too_large",)
PATH_PARAMETER_ERRORS = ("not_found",)
DATABASE_ERRORS = ("database_unavailable",)
# nginx limits request rates on these paths and prefixes (app/edge/templates/nginx.conf.j2).
RATE_LIMITED_PREFIXES = ("/v1/", "/readyz")
EDGE_ERRORS = ("rate_limited",)


# -- operations ----------------------------------------------------------------------------

TAGS = {
    "developer": "An app developer's apps, versions, uploads and assets (a developer token)",
    "admin": "Developers and their tokens, moderation, retention, usage and costs, signing keys, the replica "
             "(the admin token)",
    "public": "What devices and anyone may read: published packages, download links, the signing keyring, "
              "the catalog index, this document",
    "ops": "Liveness, readiness and the appliance's internal plumbing",
}


@dataclass(frozen=True)
class Operation:
    """One route and method: what the URL map cannot tell."""

    id: str  # operationId: stable, camelCase; SDK method names come from it
    summary: str
    description: str
    answers: dict  # status -> (description, schema or None); the success answers
    errors: tuple[str, ...] = ()  # codes the route's own code raises (shared ones come by rule)
    tag: str = ""  # for routes without a role (a role's routes take its name)
    body: dict | None = None  # the JSON body's schema
    body_optional: bool = False  # the body may be left out altogether
    upload: str = ""  # the schema of a multipart body with one file in it
    query: tuple = ()  # query parameters
    database: bool = True  # reads the database (so it may answer database_unavailable)
    internal: bool = False  # not published by the edge: only in the internal document
    media_type: str = "application/json"  # of the success answers
    shared: bool = False  # a public read caches may keep: ETag, public Cache-Control, 304 (docs/edge.md)


def answer(status: int, schema: str | dict | None, description: str = "OK") -> dict:
    return {status: (description, ref(schema) if isinstance(schema, str) else schema)}


IMAGE_ERRORS = ("unsupported_format", "not_an_image", "animated_image", "decompression_bomb",
                "truncated_image", "corrupt_image", "image_too_small", "image_too_large")
DEVELOPER_VERSION = ("app_not_found", "version_not_found")

OPERATIONS: dict[tuple[str, str], Operation] = {
    # -- ops --------------------------------------------------------------------------------
    ("ops.healthz", "GET"): Operation(
        "checkLiveness", "Liveness",
        "Answers while the API process serves requests. It asks nothing of the database or storage, "
        "so a failing dependency does not get a healthy process restarted; `checkReadiness` asks them.",
        answer(200, "Health"), tag="ops", database=False),
    ("ops.readyz", "GET"): Operation(
        "checkReadiness", "Readiness: database and storage reachable, storage taking writes",
        "The latest of the checks each API process runs in the background (MOSIS_HEALTH_PROBE_SECONDS): "
        "the database and object storage answer, and storage takes a small write. 200 when all pass; "
        "503, with the same body naming the failing check, when one does not: take this instance out "
        "of rotation. It costs no database or storage request.",
        {**answer(200, "Readiness"), **answer(503, "Readiness", "Not ready: a check failed")},
        tag="ops", database=False),
    ("prometheus_metrics", "GET"): Operation(
        "getMetrics", "Prometheus metrics",
        "The API's metrics in Prometheus text format, for Prometheus to scrape on the API's own "
        "address. The edge does not publish it.",
        answer(200, {"type": "string"}, "Prometheus text format"), tag="ops", database=False, internal=True,
        media_type="text/plain"),
    ("edge.origin", "GET"): Operation(
        "authorizeEdgeFetch", "May the edge serve this object? Where from",
        "The edge's question on a cache miss, after it checked the link's signature and expiry: "
        "an `X-Accel-Redirect` to its origin location with a presigned storage query, or 404 for "
        "a package no longer servable (pulled, purged), or a delta patch either of whose versions is "
        "not. The edge never routes a public request here.",
        {200: ("`X-Accel-Redirect` and `X-Mosis-Origin-Query` (a presigned storage query); no body", None)},
        errors=("asset_not_found", "package_not_found", "delta_not_found"), tag="ops", internal=True),
    # -- public -----------------------------------------------------------------------------
    ("public.openapi", "GET"): Operation(
        "getOpenApiDocument", "This document",
        "The OpenAPI 3.1 description of the public API. Routes internal to the appliance are left out.",
        answer(200, "OpenApiDocument"), tag="public", shared=True, database=False),
    ("public.signing_key", "GET"): Operation(
        "getSigningKey", "The key that signs packages now",
        "The keyring's active packages key: Ed25519, base64 of the raw 32 bytes, and its id. A "
        "download's `signature` covers `mosis-package-v1\\n{package_id}\\n{version_code}\\n{sha256}\\n{size}`. "
        "After a rotation it is another key: verify against the keyring (`getKeyring`) instead.",
        answer(200, "SigningKey"), tag="public", shared=True),
    ("public.keyring", "GET"): Operation(
        "getKeyring", "The current signing keyring",
        "Every key the store signs or signed with, its status and roles, signed as docs/signing.md "
        "says: a device that trusts an earlier version checks each version after it in turn "
        "(`getKeyringVersion`) and refuses a rollback.",
        answer(200, "Keyring"), tag="public", shared=True),
    ("public.keyring_version", "GET"): Operation(
        "getKeyringVersion", "One version of the signing keyring",
        "A keyring version as it was made; it never changes.",
        answer(200, "Keyring"), errors=("keyring_version_not_found",), tag="public", shared=True),
    ("public.package", "GET"): Operation(
        "getPackage", "Public listing of a published app",
        "The app's name, its current published version (with its manifest) and its icon and "
        "screenshot URLs. 404 when the app has no published version.",
        answer(200, "PackageListing"), errors=("package_not_found",), tag="public", shared=True),
    ("public.download", "GET"): Operation(
        "getDownloadInfo", "Signed, expiring download link of the current published version",
        "A link through the edge that expires (`expires_at`), the package's size and SHA-256, and "
        "the store's signature over them (`key_id` names the key of `getSigningKey`). Devices "
        "check both before installing. 404 when the app has no published version. With "
        "`from_version_code` or `from_sha256` (the version the device has), the answer also has "
        "`delta` when a signed patch from that version is ready (docs/deltas.md); without one, "
        "no `delta` key, never an error.",
        answer(200, "Download"), errors=("package_not_found", "invalid_parameter"), tag="public", shared=True,
        query=({"name": "from_version_code", "in": "query", "required": False,
                "description": "The version_code of the package the device has: ask for a patch from it",
                "schema": VERSION_CODE},
               {"name": "from_sha256", "in": "query", "required": False,
                "description": "The SHA-256 of the package the device has: ask for a patch from it",
                "schema": SHA256})),
    ("public.catalog_index", "GET"): Operation(
        "getCatalogIndex", "The signed catalog index",
        "Every app's current published version (`package_id`, `version_code`, `size`, `sha256` and the "
        "package `signature` with its `key_id`, as the download answers them) and the keyring version, "
        "signed by the keyring's active packages key over `mosis-index-v1\\n` and the canonical encoding "
        "(docs/signing.md). It expires (`expires`, MOSIS_INDEX_LIFETIME_SECONDS) and the store signs a "
        "fresh one long before: a device refuses an expired index, one older than the last it accepted, "
        "and one under an older keyring version than its own.",
        answer(200, "CatalogIndex"), tag="public", shared=True),
    # -- admin ------------------------------------------------------------------------------
    ("admin.create_developer", "POST"): Operation(
        "createDeveloper", "Create a developer; its token is shown once",
        "Registers a developer and issues its first API token. The token is in this answer only; "
        "the appliance keeps its SHA-256.",
        answer(201, "CreatedDeveloper", "Created"), errors=("email_taken",), body=ref("NewDeveloper")),
    ("admin.list_developers", "GET"): Operation(
        "listDevelopers", "All developers", "Every developer, oldest first.",
        answer(200, "DeveloperList")),
    ("admin.list_tokens", "GET"): Operation(
        "listDeveloperTokens", "A developer's tokens (never the tokens themselves)",
        "Each token's id, prefix, creation, last use (to the minute) and revocation.",
        answer(200, "TokenList"), errors=("developer_not_found",)),
    ("admin.issue_token", "POST"): Operation(
        "issueDeveloperToken", "Issue another token (shown once)",
        "A new token for the developer, shown in this answer only, with the scopes, apps and expiry "
        "asked for (without a body: every scope, every app, no expiry). To rotate, issue one, move "
        "the client to it, then revoke the old one.",
        answer(201, "IssuedToken", "Created"), errors=("developer_not_found", "app_not_found"),
        body=ref("NewToken"), body_optional=True),
    ("admin.revoke_token", "DELETE"): Operation(
        "revokeToken", "Revoke a token",
        "The token, and every token it issued, is refused from the next request on. Revoking a "
        "revoked token changes nothing.",
        answer(200, "TokenResult"), errors=("token_not_found",)),
    ("admin.reject", "POST"): Operation(
        "rejectVersion", "Reject a draft",
        "A validated draft becomes `rejected` with the reason; it can no longer be published. "
        "Rejecting a rejected version again changes nothing.",
        answer(200, "VersionResult"), errors=("version_not_found", "invalid_state"), body=ref("Reason")),
    ("admin.pull", "POST"): Operation(
        "pullVersion", "Pull a published version; caches are purged",
        "The version becomes `pulled`: download links stop working at once, the edge's and "
        "Cloudflare's cached copies are purged, and the app has no downloadable version until a "
        "newer one is published (devices never get a downgrade). Idempotent.",
        answer(200, "VersionResult"), errors=("version_not_found", "invalid_state"), body=ref("Reason")),
    ("admin.storage_usage", "GET"): Operation(
        "getStorageUsage", "Storage by prefix and by version status",
        "Bytes and objects per prefix and per version status from the latest bucket scan, against "
        "the storage budget.",
        answer(200, "StorageUsage"), errors=("storage_unavailable",)),
    ("admin.replica_status", "GET"): Operation(
        "getReplicaStatus", "The off-site replica: what is pending, copied and verified",
        "How far the off-site replica (MOSIS_REPLICA_S3_*) is behind: the copies and deletes due, the "
        "age of the oldest, the objects and bytes it holds verified, failing rows and the replication "
        "lag. `configured` is false, and every count 0, when no replica is set.",
        answer(200, "ReplicaStatus")),
    ("admin.costs", "GET"): Operation(
        "getCostEstimate", "This month's cost under each hosting option, line by line",
        "The month's usage priced under each hosting option from the operator's prices file, with "
        "the arithmetic of every line. Query figures replace the measured ones to price a what-if "
        "month.",
        answer(200, "CostEstimate"), errors=("invalid_parameter", "unknown_parameter", "prices_unavailable"),
        query=tuple({"name": name, "in": "query", "required": False, "description": meaning,
                     "schema": {"type": "number", "minimum": 0, "maximum": 1e15}}
                    for name, meaning in (("storage_gb", "GB stored"), ("requests", "requests in the month"),
                                          ("egress_gb", "GB sent")))),
    ("admin.run_retention", "POST"): Operation(
        "runRetention", "Apply the retention policy now, or forecast it",
        "Deletes what the retention policy says has expired, or with `dry_run` lists what would "
        "be deleted (optionally at a future `now`), with sizes. The current published version of "
        "an app is never deleted.",
        answer(200, "RetentionReport"), errors=("now_requires_dry_run", "storage_unavailable"),
        body=ref("RetentionRun")),
    ("admin.rotate_signing_key", "POST"): Operation(
        "rotateSigningKey", "Rotate the packages signing key",
        "A new key becomes active and the old one retired, in a new keyring version signed by the "
        "keys the previous version trusts and by the new key; then every draft, published and "
        "superseded version is signed again with the new key (resumed by the scheduler if this is "
        "interrupted). Until then a version keeps its old signature, which devices still accept.",
        answer(200, "KeyringChange"), errors=("keyring_key_missing", "keyring_refused", "keyring_changed")),
    ("admin.revoke_signing_key", "POST"): Operation(
        "revokeSigningKey", "Revoke a signing key",
        "The key is revoked in a new keyring version signed by the remaining keyring keys (the only "
        "keyring key cannot be revoked: rotate first); a revoked active key is replaced by a new one; "
        "everything it signed is signed again. Devices refuse its signatures from then on.",
        answer(200, "KeyringChange"),
        errors=("signing_key_not_found", "keyring_key_missing", "keyring_refused", "keyring_changed")),
    # -- developer: apps and versions --------------------------------------------------------
    ("developer.create_app", "POST"): Operation(
        "createApp", "Register an app",
        "Claims a package_id for the developer. A package_id belongs to one app for good.",
        answer(201, "AppResult", "Created"), errors=("package_id_taken",), body=ref("NewApp")),
    ("developer.list_apps", "GET"): Operation(
        "listApps", "The developer's apps", "Every app of the calling developer.", answer(200, "AppList")),
    ("developer.get_app", "GET"): Operation(
        "getApp", "One of the developer's apps",
        "Another developer's app answers 404, as if it did not exist.",
        answer(200, "AppResult"), errors=("app_not_found",)),
    ("developer.create_version", "POST"): Operation(
        "createVersion", "Declare a version and get a presigned upload",
        "Declares the version's code, name and size (and optionally its SHA-256) and answers with "
        "where to upload the package: one presigned PUT for small packages, or a multipart upload "
        "whose part URLs come from `presignUploadParts`. The bytes go straight to storage through "
        "the edge. The version_code must be new for the app and above every published one.",
        answer(201, "CreatedVersion", "Created"),
        errors=("app_not_found", "version_exists", "version_code_not_increasing", "too_large",
                "storage_unavailable"),
        body=ref("NewVersion")),
    ("developer.list_versions", "GET"): Operation(
        "listVersions", "The app's versions",
        "Every version of the app with its status, newest first.",
        answer(200, "VersionList"), errors=("app_not_found",)),
    ("developer.get_version", "GET"): Operation(
        "getVersion", "One version: status, size, sha256, manifest, error",
        "Poll this after `completeUpload`: the status moves from `validating` to `draft`, or to "
        "`failed` with `error.code` saying why.",
        answer(200, "VersionResult"), errors=DEVELOPER_VERSION),
    ("developer.complete_upload", "POST"): Operation(
        "completeUpload", "The upload is done: check it and queue validation",
        "Checks that the upload is there with the declared size, moves it into place and queues "
        "validation; the version is then `validating`. Idempotent: completing a completed version "
        "changes nothing, and of calls made at once one completes while the others wait for it and "
        "answer the same.",
        answer(202, "VersionResult", "Accepted: validation is queued"),
        errors=(*DEVELOPER_VERSION, "invalid_state", "upload_missing", "upload_incomplete", "size_mismatch",
                "too_large", "storage_unavailable", "completion_in_progress")),
    ("developer.publish", "POST"): Operation(
        "publishVersion", "Make a draft the app's current version",
        "The draft becomes `published` and the previous published version `superseded`; devices "
        "get it from `getDownloadInfo` at once. Only a draft can be published; publishing the "
        "published version again changes nothing.",
        answer(200, "VersionResult"),
        errors=(*DEVELOPER_VERSION, "invalid_state", "version_code_not_increasing")),
    ("uploads.upload", "GET"): Operation(
        "getUploadState", "Where an unfinished upload stands",
        "For a multipart upload, the parts storage holds already (to resume); for a single PUT, a "
        "fresh presigned URL.",
        answer(200, "UploadState"),
        errors=(*DEVELOPER_VERSION, "invalid_state", "not_multipart", "upload_missing", "storage_unavailable")),
    ("uploads.upload", "DELETE"): Operation(
        "abortUpload", "Abort an unfinished upload",
        "The version becomes `abandoned`, its uploaded bytes are deleted and its version_code is "
        "free again. Idempotent.",
        answer(200, "VersionResult"), errors=(*DEVELOPER_VERSION, "invalid_state", "storage_unavailable")),
    ("uploads.presign_parts", "POST"): Operation(
        "presignUploadParts", "Presigned PUT URLs for parts of a multipart upload",
        "Up to `max_parts_per_request` part URLs at a time; PUT each part's bytes to its URL. "
        "A part number past this upload's `part_count` is 400 `invalid_field`.",
        answer(200, "PartUrls"), errors=(*DEVELOPER_VERSION, "invalid_state", "not_multipart"),
        body=ref("PartNumbers")),
    # -- developer: tokens -------------------------------------------------------------------
    ("tokens.list_tokens", "GET"): Operation(
        "listIssuedTokens", "The tokens this token issued",
        "Every token the calling token issued, and the ones those issued, oldest first (never the "
        "tokens themselves).",
        answer(200, "TokenList")),
    ("tokens.issue_token", "POST"): Operation(
        "issueNarrowerToken", "Issue a narrower token (shown once)",
        "A token for the same developer, never broader than the calling one: only scopes it holds "
        "(403 `insufficient_scope` names one it lacks), only its apps, and an expiry no later than "
        "its own. Without a body the new token has exactly the caller's rights.",
        answer(201, "IssuedToken", "Created"), errors=("app_not_found",),
        body=ref("NewToken"), body_optional=True),
    ("tokens.revoke_token", "DELETE"): Operation(
        "revokeIssuedToken", "Revoke a token this token issued",
        "The token, and every token it issued, is refused from the next request on. A token the "
        "caller did not issue answers 404.",
        answer(200, "TokenResult"), errors=("token_not_found",)),
    # -- developer: assets -------------------------------------------------------------------
    ("assets.get_icon", "GET"): Operation(
        "getIcon", "The app's icon URLs",
        "Public URLs of the icon at 32, 64 and 128 px, or null when the app has none.",
        answer(200, "IconResult"), errors=("app_not_found",)),
    ("assets.put_icon", "PUT"): Operation(
        "uploadIcon", "Upload the icon",
        "A square PNG, JPEG or WebP of 128 to 4096 px, sent as multipart/form-data in the field "
        "`icon`. It is re-encoded to PNG at 32, 64 and 128 px and replaces the previous icon "
        "(docs/assets.md).",
        answer(200, "IconResult"),
        errors=("app_not_found", *IMAGE_ERRORS, "image_not_square", "storage_unavailable"), upload="IconUpload"),
    ("assets.delete_icon", "DELETE"): Operation(
        "deleteIcon", "Remove the icon", "The app has no icon afterwards.",
        {204: ("Done; no body", None)}, errors=("app_not_found", "icon_not_found")),
    ("assets.list_screenshots", "GET"): Operation(
        "listScreenshots", "The app's screenshots in order", "Each screenshot's position, size and URLs.",
        answer(200, "ScreenshotList"), errors=("app_not_found",)),
    ("assets.add_screenshot", "POST"): Operation(
        "addScreenshot", "Add a screenshot",
        "A PNG or JPEG with sides of 320 to 3840 px, the long one at most twice the short one, "
        "sent as multipart/form-data in the field `screenshot`; it goes last (docs/assets.md).",
        answer(201, "ScreenshotResult", "Created"),
        errors=("app_not_found", "too_many_screenshots", *IMAGE_ERRORS, "bad_aspect_ratio",
                "storage_unavailable"),
        upload="ScreenshotUpload"),
    ("assets.reorder_screenshots", "PUT"): Operation(
        "reorderScreenshots", "Reorder the screenshots",
        "Name every current position once, in the new order.",
        answer(200, "ScreenshotList"), errors=("app_not_found", "screenshots_changed"),
        body=ref("ScreenshotOrder")),
    ("assets.delete_screenshot", "DELETE"): Operation(
        "deleteScreenshot", "Remove a screenshot",
        "Later screenshots move up a place; the answer is the new order.",
        answer(200, "ScreenshotList"), errors=("app_not_found", "screenshot_not_found")),
}


# -- building the document -------------------------------------------------------------

PARAMETER_SCHEMAS = {HexIdConverter: HEX_ID, VersionCodeConverter: VERSION_CODE, PackageIdConverter: PACKAGE_ID,
                     KeyIdConverter: KEY_ID,
                     PositionConverter: {"type": "integer", "minimum": 0, "maximum": MAX_VERSION_CODE}}
PARAMETER_TEXT = {
    "app_id": "The app's id", "version_code": "The version's version_code",
    "version_id": "The version's id", "package_id": "The app's package_id, such as com.example.notes",
    "developer_id": "The developer's id", "token_id": "The token's id",
    "position": "The screenshot's position, from 1", "key": "The object's storage key",
    "version": "The keyring version, from 1", "key_id": "The signing key's id (16 hex digits)",
}
RULE_PARAMETER = re.compile(r"<(?:([a-zA-Z_]+)(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    """`/v1/apps/<hexid:app_id>` as `/v1/apps/{app_id}`."""
    return RULE_PARAMETER.sub(r"{\2}", rule)


def path_parameters(flask_app, rule: str) -> list[dict]:
    """The path parameters of `rule`, typed by their converters."""
    out = []
    for converter, name in RULE_PARAMETER.findall(rule):
        kind = flask_app.url_map.converters[converter or "default"]
        schema = next((s for k, s in PARAMETER_SCHEMAS.items() if issubclass(kind, k)), None)
        if schema is None:
            schema = {"type": "integer", "minimum": 0} if issubclass(kind, IntegerConverter) else STRING
        out.append({"name": name, "in": "path", "required": True,
                    "description": PARAMETER_TEXT.get(name, name), "schema": schema})
    return out


def _error_responses(codes: set[str]) -> dict:
    by_status: dict[int, list[str]] = {}
    for code in sorted(codes):
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    out = {}
    for status, names in sorted(by_status.items()):
        lines = "\n".join(f"- `{name}`: {ERROR_CODES[name][1]}" for name in names)
        response = {"description": f"{STATUS_TEXT[status]}. `error.code` is one of:\n{lines}",
                    "content": {"application/json": {"schema": ref("Error")}},
                    "x-error-codes": names}
        if status == 503:
            response["headers"] = {"Retry-After": {
                "description": "Seconds to wait before retrying", "required": set(names) <= RETRYABLE,
                "schema": {"type": "integer", "minimum": 0}}}
        elif status == 401:
            response["headers"] = WWW_AUTHENTICATE
        out[str(status)] = response
    return out


def error_codes(operation: Operation, path: str, role: str | None, has_parameters: bool) -> set[str]:
    """Every code the operation can answer with: its own and the shared ones."""
    codes = set(operation.errors) | set(EVERY_ROUTE_ERRORS)
    if role:
        codes |= set(AUTH_ERRORS)
    if role == "developer":
        codes |= set(SCOPE_ERRORS)
    if operation.body is not None:
        codes |= set(JSON_ERRORS)
    if operation.upload:
        codes |= set(UPLOAD_ERRORS)
    if has_parameters:
        codes |= set(PATH_PARAMETER_ERRORS)
    if operation.database:
        codes |= set(DATABASE_ERRORS)
    if path.startswith(RATE_LIMITED_PREFIXES) and not operation.internal:
        codes |= set(EDGE_ERRORS)
    return codes


def _operation(flask_app, rule, method: str) -> dict:
    spec = OPERATIONS.get((rule.endpoint, method))
    role = getattr(flask_app.view_functions[rule.endpoint], "required_role", None)
    parameters = path_parameters(flask_app, rule.rule)
    if spec is None:  # a route nobody described: listed, bare (the tests fail on it)
        return {"responses": {"default": {"description": "Not described"}}, "parameters": parameters}
    path = openapi_path(rule.rule)
    out = {"operationId": spec.id, "summary": spec.summary, "description": spec.description,
           "tags": [role or spec.tag]}
    if spec.internal:
        out["x-internal"] = True
    out["security"] = [{"bearer": []}] if role else []
    if role:
        out["x-role"] = role
    scopes = getattr(flask_app.view_functions[rule.endpoint], "required_scope", None)
    if scopes is not None:
        out["x-scope"] = scopes.get(method, scopes[None])
        out["description"] += f"\n\nNeeds a token with the `{out['x-scope']}` scope."
    params = parameters + list(spec.query)
    if params:
        out["parameters"] = params
    if spec.body is not None:
        out["requestBody"] = {"required": not spec.body_optional,
                              "content": {"application/json": {"schema": spec.body}}}
    if spec.upload:
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": ref(spec.upload)}}}
    responses = {}
    for status, (description, schema) in spec.answers.items():
        response = {"description": description}
        if schema is not None:
            response["content"] = {spec.media_type: {"schema": schema}}
        responses[str(status)] = response
    if spec.shared:
        _shared_read(out, responses)
    responses.update(_error_responses(error_codes(spec, path, role, bool(parameters))))
    out["responses"] = responses
    return out


def _shared_read(operation: dict, responses: dict) -> None:
    """A public read any cache may keep a while: its 200 carries an ETag and a
    public Cache-Control; a current If-None-Match answers 304 without a body."""
    responses["200"]["headers"] = {
        "ETag": {"description": "Strong validator of the body", "schema": {"type": "string"}},
        "Cache-Control": {"description": "public, max-age=…, stale-while-revalidate=…",
                          "schema": {"type": "string"}}}
    responses["304"] = {"description": "Not modified: the If-None-Match ETag is current"}
    operation.setdefault("parameters", []).append(
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}})


def operations(flask_app) -> list[tuple[str, str, object]]:
    """(path, method, rule) of every route of the app."""
    found = []
    for rule in flask_app.url_map.iter_rules():
        for method in sorted(rule.methods - IGNORED_METHODS):
            found.append((openapi_path(rule.rule), method, rule))
    return sorted(found, key=lambda item: (item[0], item[1]))


def document(flask_app, settings, *, internal: bool = False) -> dict:
    """The document for `flask_app`, served at `settings.public_url`; with
    `internal`, routes the edge does not publish are in it too."""
    paths: dict[str, dict] = {}
    for path, method, rule in operations(flask_app):
        spec = OPERATIONS.get((rule.endpoint, method))
        if spec is not None and spec.internal and not internal:
            continue
        operation = _operation(flask_app, rule, method)
        paths.setdefault(path, {})[method.lower()] = operation
    contact = {"name": "The operator of this appliance", "url": settings.public_url}
    if settings.contact_email:
        contact["email"] = settings.contact_email
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mosis storage appliance", "version": "1",
            "description": "Packages, assets and downloads of the Mosis developer portal. Errors are "
                           "`{\"error\": {\"code\", \"message\"}}`; each operation lists its codes "
                           "(`x-error-codes` on each error answer), which are stable.",
            "contact": contact,
            "license": {"name": "MIT", "url": "https://spdx.org/licenses/MIT.html"},
        },
        "servers": [{"url": settings.public_url, "description": "This appliance, through its edge"}],
        "tags": [{"name": name, "description": text_} for name, text_ in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The admin token (MOSIS_ADMIN_TOKEN) or a "
                                                          "developer's token"}},
        },
    }
