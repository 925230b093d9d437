"""The OpenAPI 3.1 description of the HTTP API, served at /v1/openapi.json.

Written by hand next to the routes it describes; tests/test_openapi.py fails
when a route is missing here or a path here has no route, and schemathesis
checks every response against these schemas.
"""

from __future__ import annotations

from app.api.inputs import CONTROL_CHARACTERS
from app.validation import MAX_VERSION_CODE

HEX_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
PACKAGE_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", "maxLength": 128}
VERSION_CODE = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION_CODE}
TIME = {"type": ["string", "null"], "format": "date-time"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def text(max_length: int) -> dict:
    """A name or reason: no control characters (nor unpaired surrogates)."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": f"^[^{CONTROL_CHARACTERS}]*$"}

STATUS = {"type": "string", "enum": ["uploading", "validating", "draft", "published", "superseded",
                                     "failed", "rejected", "pulled", "abandoned", "purged", "purging"]}


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


SCHEMAS = {
    "Error": obj({"error": obj({"code": {"type": "string"}, "message": {"type": "string"}},
                               {"details": {"type": "object"}})}),
    "App": obj({"id": HEX_ID, "package_id": PACKAGE_ID, "name": {"type": "string"},
                "developer_id": HEX_ID, "created_at": TIME}),
    "Version": obj({
        "id": HEX_ID, "app_id": HEX_ID, "version_code": VERSION_CODE,
        "version_name": {"type": "string"}, "status": STATUS,
        "size": {"type": "integer", "minimum": 0}, "sha256": nullable(SHA256),
        "manifest": nullable({"type": "object"}), "signature": {"type": ["string", "null"]},
        "error": nullable(obj({"code": {"type": "string"}, "message": {"type": "string"}})),
        "reason": {"type": ["string", "null"]},
        "created_at": TIME, "uploaded_at": TIME, "validated_at": TIME, "published_at": TIME,
        "superseded_at": TIME, "purged_at": TIME,
    }, {"purge_reason": {"type": ["string", "null"]}}),
    # Small packages: one presigned PUT. Large ones: an S3 multipart upload
    # whose part URLs come from …/upload/parts (docs/cli.md).
    "Upload": {"anyOf": [ref("SingleUpload"), ref("MultipartUpload")]},
    "SingleUpload": obj({"kind": {"const": "single"}, "url": {"type": "string"},
                         "method": {"type": "string"},
                         "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                         "expires_at": TIME}, {"max_bytes": {"type": "integer"}}),
    "MultipartUpload": obj({"kind": {"const": "multipart"}, "size": {"type": "integer"},
                            "part_size": {"type": "integer"}, "part_count": {"type": "integer"},
                            "max_parts_per_request": {"type": "integer"}, "expires_at": TIME},
                           {"parts": {"type": "array", "items": ref("UploadedPart")},
                            "uploaded_bytes": {"type": "integer"}}),
    "UploadedPart": obj({"part_number": {"type": "integer"}, "size": {"type": "integer"},
                         "etag": {"type": "string"}, "last_modified": TIME}),
    "PartUrl": obj({"part_number": {"type": "integer"}, "url": {"type": "string"},
                    "method": {"type": "string"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "size": {"type": "integer"}}),
    "Developer": obj({"id": HEX_ID, "name": {"type": "string"}, "email": {"type": "string"},
                      "created_at": TIME}),
    "Download": obj({"download_url": {"type": "string"}, "version": {"type": "string"},
                     "version_code": VERSION_CODE, "size": {"type": "integer"}, "sha256": SHA256,
                     "signature": {"type": "string"}, "key_id": {"type": "string"},
                     "expires_at": TIME}),
    "PackageListing": obj({"package_id": PACKAGE_ID, "name": {"type": "string"},
                           "latest": obj({"version": {"type": "string"}, "version_code": VERSION_CODE,
                                          "size": {"type": "integer"}, "sha256": SHA256,
                                          "published_at": TIME})}),
    "SigningKey": obj({"algorithm": {"const": "ed25519"}, "key_id": {"type": "string"},
                       "public_key": {"type": "string"}}),
    "StorageUsage": obj({
        "scanned_at": TIME, "scan_seconds": {"type": "number"},
        "total": obj({"bytes": {"type": "integer"}, "objects": {"type": "integer"}}),
        "budget_bytes": {"type": "integer"}, "budget_used": {"type": ["number", "null"]},
        "by_prefix": {"type": "object", "additionalProperties": obj(
            {"bytes": {"type": "integer"}, "objects": {"type": "integer"}})},
        "by_status": {"type": "object", "additionalProperties": obj(
            {"bytes": {"type": "integer"}, "objects": {"type": "integer"}})},
        "versions_by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
    }),
    "RetentionReport": obj({
        "dry_run": {"type": "boolean"}, "now": TIME,
        "items": {"type": "array", "items": obj({
            "version_id": HEX_ID, "app_id": HEX_ID, "package_id": PACKAGE_ID,
            "version_code": VERSION_CODE, "version_name": {"type": "string"}, "status": STATUS,
            "outcome": STATUS, "reason": {"type": "string"}, "since": TIME, "expired_at": TIME,
            "objects": {"type": "array", "items": obj({"key": {"type": "string"},
                                                       "size": {"type": "integer"}})},
            "bytes": {"type": "integer"}})},
        "errors": {"type": "array", "items": obj({"version_id": HEX_ID, "error": {"type": "string"}})},
        "totals": obj({"versions": {"type": "integer"}, "bytes": {"type": "integer"},
                       "by_status": {"type": "object", "additionalProperties": obj(
                           {"versions": {"type": "integer"}, "bytes": {"type": "integer"}})}}),
    }),
    "CostEstimate": obj({
        "generated_at": TIME,
        "prices": obj({"file": {"type": "string"}, "taken": {"type": "string"},
                       "source": {"type": "string"}, "currency": {"type": "string"},
                       "bytes_per_gb": {"type": "integer"}}),
        "usage": obj({"storage_gb": {"type": "number"}, "requests": {"type": "number"},
                      "egress_gb": {"type": "number"}, "basis": {"type": "string"}}),
        "options": {"type": "array", "items": obj({
            "option": {"type": "string"}, "name": {"type": "string"}, "total_usd": {"type": "number"},
            "arithmetic": {"type": "string"}, "warnings": {"type": "array", "items": {"type": "string"}},
            "items": {"type": "array", "items": obj({
                "item": {"type": "string"}, "usage": {"type": "string"}, "quantity": {"type": "number"},
                "unit": {"type": "string"}, "included": {"type": "number"},
                "usd_per_unit": {"type": "number"}, "usd": {"type": "number"},
                "arithmetic": {"type": "string"}, "note": {"type": "string"}})}})},
        "history": {"type": "array", "items": obj({
            "day": {"type": "string", "format": "date"}, "storage_bytes": {"type": "integer"},
            "storage_objects": {"type": "integer"}, "requests": {"type": "integer"},
            "egress_bytes": {"type": "integer"}, "downloads": {"type": "integer"}})},
    }),
}

SCHEMAS["Screenshot"] = obj({
    "position": {"type": "integer", "minimum": 1}, "url": {"type": "string"},
    "width": {"type": "integer"}, "height": {"type": "integer"}, "size": {"type": "integer"},
    "sha256": SHA256, "webp_url": {"type": ["string", "null"]},
    "webp_size": {"type": ["integer", "null"]}})
SCHEMAS["Token"] = obj({"id": HEX_ID, "developer_id": HEX_ID, "prefix": {"type": "string"},
                        "created_at": TIME, "last_used_at": TIME, "revoked_at": TIME})
ICONS = nullable(obj({"32": {"type": "string"}, "64": {"type": "string"}, "128": {"type": "string"}}))
SCREENSHOT_LIST = obj({"screenshots": {"type": "array", "items": ref("Screenshot")}})

ERROR_TEXT = {400: "Invalid input", 401: "No valid bearer token", 403: "Wrong role for this route",
              404: "Not found (or not yours)", 409: "Conflicts with the current state",
              413: "Too large", 415: "Body is not JSON", 503: "A dependency is down; retry after Retry-After"}
JSON_INPUT_ERRORS = (400, 413, 415)


def no_content(*errors: int) -> dict:
    out = responses(204, {}, *errors)
    out["204"] = {"description": "Done; no body"}
    return out


def json_response(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def responses(status: int, schema: dict, *errors: int) -> dict:
    out = {str(status): json_response(schema)}
    for code in sorted(set(errors) | {503}):
        out[str(code)] = json_response(ref("Error"), ERROR_TEXT[code])
    return out


def op(summary: str, resp: dict, *, auth: str | None = None, body: dict | None = None,
       params: list | None = None, tag: str = "") -> dict:
    operation = {"summary": summary, "responses": resp}
    if tag:
        operation["tags"] = [tag]
    if auth:
        operation["security"] = [{"bearer": []}]
        operation["x-role"] = auth
    else:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    return operation


def file_body(field: str) -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": obj(
        {field: {"type": "string", "contentMediaType": "application/octet-stream"}})}}}


def path_param(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


APP = path_param("app_id", HEX_ID)
CODE = path_param("version_code", VERSION_CODE)
VERSION_ID = path_param("version_id", HEX_ID)
PKG = path_param("package_id", PACKAGE_ID)
DEV_ERRORS = (401, 403, 404)
REASON_BODY = obj({"reason": text(2000)}, closed=True)


def with_body(operation: dict, body: dict) -> dict:
    operation["requestBody"] = body
    return operation


POSITION = path_param("position", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})
UPLOAD_ERRORS = (*DEV_ERRORS, 400, 413, 415)


def version_route(summary: str, status: int, *errors: int) -> dict:
    return {"post": op(summary, responses(status, obj({"version": ref("Version")}), *DEV_ERRORS, *errors),
                       auth="developer", params=[APP, CODE], tag="versions")}


PATHS = {
    "/healthz": {"get": op("Liveness", {"200": json_response(obj({"status": {"const": "ok"}}))},
                           tag="ops")},
    "/readyz": {"get": op("Readiness: database and storage reachable", {
        "200": json_response(obj({"status": {"type": "string"}, "checks": {"type": "object"}})),
        "503": json_response(obj({"status": {"type": "string"}, "checks": {"type": "object"}}),
                             "Not ready")}, tag="ops")},
    "/metrics": {"get": op("Prometheus metrics", {"200": {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        tag="ops")},
    "/v1/openapi.json": {"get": op("This document", {"200": json_response({"type": "object"})},
                                   tag="ops")},
    # The edge's question on a cache miss (docs/edge.md); nginx never routes it publicly.
    "/edge/objects/{key}": {"get": op(
        "May the edge serve this package? An X-Accel-Redirect to its origin location, or 404",
        {"200": {"description": "X-Accel-Redirect and X-Mosis-Origin-Query (a presigned storage query); "
                                "no body"},
         "404": json_response(ref("Error"), "No such package, or no longer servable (e.g. pulled)"),
         "503": json_response(ref("Error"), ERROR_TEXT[503])},
        params=[path_param("key", {"type": "string"})], tag="edge")},
    "/v1/signing-key": {"get": op("The key devices verify packages with",
                                  responses(200, ref("SigningKey")), tag="public")},
    "/v1/packages/{package_id}": {"get": op("Public listing of a published app",
                                            responses(200, ref("PackageListing"), 404), params=[PKG],
                                            tag="public")},
    "/v1/packages/{package_id}/download": {"get": op(
        "Signed, expiring download link of the current published version",
        responses(200, ref("Download"), 404), params=[PKG], tag="public")},
    "/v1/admin/developers": {"post": op(
        "Create a developer; its token is shown once",
        responses(201, obj({"developer": ref("Developer"), "token": {"type": "string"},
                            "token_id": HEX_ID}), 401, 403, 409, *JSON_INPUT_ERRORS),
        auth="admin", tag="admin",
        body=obj({"name": text(200),
                  "email": {"type": "string", "format": "email", "maxLength": 320}}, closed=True))},
    "/v1/admin/versions/{version_id}/reject": {"post": op(
        "Reject a draft", responses(200, obj({"version": ref("Version")}), 401, 403, 404, 409,
                                    *JSON_INPUT_ERRORS),
        auth="admin", params=[VERSION_ID], body=REASON_BODY, tag="admin")},
    "/v1/admin/versions/{version_id}/pull": {"post": op(
        "Pull a published version; caches are purged",
        responses(200, obj({"version": ref("Version")}), 401, 403, 404, 409, *JSON_INPUT_ERRORS),
        auth="admin", params=[VERSION_ID], body=REASON_BODY, tag="admin")},
    "/v1/admin/storage": {"get": op(
        "Storage by prefix and by version status (the latest bucket scan)",
        responses(200, ref("StorageUsage"), 401, 403), auth="admin", tag="admin")},
    "/v1/admin/costs": {"get": op(
        "This month's cost under each hosting option, line by line; query figures price a what-if month",
        responses(200, ref("CostEstimate"), 400, 401, 403), auth="admin", tag="admin",
        params=[{"name": name, "in": "query", "required": False, "description": text,
                 "schema": {"type": "number", "minimum": 0, "maximum": 1e15}}
                for name, text in (("storage_gb", "GB stored"), ("requests", "requests in the month"),
                                   ("egress_gb", "GB sent"))])},
    "/v1/admin/retention/run": {"post": op(
        "Apply the retention policy now, or forecast it with sizes (dry_run, at now)",
        responses(200, ref("RetentionReport"), 401, 403, *JSON_INPUT_ERRORS), auth="admin", tag="admin",
        # A forecast may name the time it looks at; a real run always uses the current time.
        body={"oneOf": [
            obj({"dry_run": {"const": True}},
                {"now": {"type": ["string", "null"], "format": "date-time", "maxLength": 64,
                         "description": "RFC 3339 instant to forecast at (default: the current time)"}},
                closed=True),
            obj({"dry_run": {"const": False}}, {"now": {"type": "null"}}, closed=True),
        ]})},
    "/v1/apps": {
        "get": op("The developer's apps", responses(200, obj({"apps": {"type": "array", "items": ref("App")}}),
                                                    401, 403), auth="developer", tag="apps"),
        "post": op("Register an app", responses(201, obj({"app": ref("App")}), 401, 403, 409,
                                                *JSON_INPUT_ERRORS),
                   auth="developer", tag="apps",
                   body=obj({"package_id": PACKAGE_ID,
                             "name": text(80)}, closed=True)),
    },
    "/v1/apps/{app_id}": {"get": op("One of the developer's apps",
                                    responses(200, obj({"app": ref("App")}), *DEV_ERRORS),
                                    auth="developer", params=[APP], tag="apps")},
    "/v1/apps/{app_id}/versions": {
        "get": op("The app's versions", responses(
            200, obj({"versions": {"type": "array", "items": ref("Version")}}), *DEV_ERRORS),
            auth="developer", params=[APP], tag="versions"),
        "post": op("Declare a version and get a presigned upload", responses(
            201, obj({"version": ref("Version"), "upload": ref("Upload")}), *DEV_ERRORS, 409,
            *JSON_INPUT_ERRORS), auth="developer", params=[APP], tag="versions",
            body=obj({"version_code": VERSION_CODE,
                      "version_name": text(64),
                      "size": {"type": "integer", "minimum": 1}}, {"sha256": SHA256}, closed=True)),
    },
    "/v1/apps/{app_id}/versions/{version_code}": {"get": op(
        "One version: status, size, sha256, manifest, error",
        responses(200, obj({"version": ref("Version")}), *DEV_ERRORS),
        auth="developer", params=[APP, CODE], tag="versions")},
    "/v1/apps/{app_id}/versions/{version_code}/complete": version_route(
        "The upload is done: check it and queue validation (idempotent)", 202, 409, 413),
    "/v1/apps/{app_id}/versions/{version_code}/publish": version_route(
        "Make a draft the app's current version (idempotent)", 200, 409),
    "/v1/apps/{app_id}/versions/{version_code}/upload": {
        "get": op("Where an unfinished upload stands: the parts storage holds (multipart) or a "
                  "fresh URL (single PUT)", responses(200, obj({"upload": ref("Upload")}), *DEV_ERRORS, 409),
                  auth="developer", params=[APP, CODE], tag="versions"),
        "delete": op("Abort an unfinished upload: the version is abandoned, its code free (idempotent)",
                     responses(200, obj({"version": ref("Version")}), *DEV_ERRORS, 409),
                     auth="developer", params=[APP, CODE], tag="versions"),
    },
    "/v1/apps/{app_id}/versions/{version_code}/upload/parts": {"post": op(
        "Presigned PUT URLs for parts of a multipart upload",
        responses(200, obj({"parts": {"type": "array", "items": ref("PartUrl")}, "expires_at": TIME}),
                  *DEV_ERRORS, 409, *JSON_INPUT_ERRORS),
        auth="developer", params=[APP, CODE], tag="versions",
        body=obj({"part_numbers": {"type": "array", "minItems": 1, "maxItems": 100,
                                   "items": {"type": "integer", "minimum": 1, "maximum": 10000}}},
                 closed=True))},
}


PATHS.update({
    "/v1/apps/{app_id}/icon": {
        "get": op("The app's icon URLs (null when it has none)", responses(200, obj({"icons": ICONS}),
                                                                           *DEV_ERRORS),
                  auth="developer", params=[APP], tag="assets"),
        "put": with_body(op("Upload the icon (PNG, JPEG or WebP; square, 128-4096 px)",
                            responses(200, obj({"icons": ICONS}), *UPLOAD_ERRORS),
                            auth="developer", params=[APP], tag="assets"), file_body("icon")),
        "delete": op("Remove the icon", no_content(*DEV_ERRORS),
                     auth="developer", params=[APP], tag="assets"),
    },
    "/v1/apps/{app_id}/screenshots": {
        "get": op("The app's screenshots in order", responses(200, SCREENSHOT_LIST, *DEV_ERRORS),
                  auth="developer", params=[APP], tag="assets"),
        "post": with_body(op("Add a screenshot (PNG or JPEG; sides 320-3840 px, at most 2:1)",
                             responses(201, obj({"screenshot": ref("Screenshot")}), *UPLOAD_ERRORS, 409),
                             auth="developer", params=[APP], tag="assets"), file_body("screenshot")),
    },
    "/v1/apps/{app_id}/screenshots/order": {"put": op(
        "Reorder: name every current position once, in the new order",
        responses(200, SCREENSHOT_LIST, *DEV_ERRORS, 409, *JSON_INPUT_ERRORS),
        auth="developer", params=[APP], tag="assets",
        body=obj({"positions": {"type": "array", "items": {"type": "integer"}}}, closed=True))},
    "/v1/apps/{app_id}/screenshots/{position}": {"delete": op(
        "Remove a screenshot; later ones move up a place", responses(200, SCREENSHOT_LIST, *DEV_ERRORS),
        auth="developer", params=[APP, POSITION], tag="assets")},
})
DEVELOPER_ID = path_param("developer_id", HEX_ID)
PATHS["/v1/admin/developers"]["get"] = op(
    "All developers", responses(200, obj({"developers": {"type": "array", "items": ref("Developer")}}),
                                401, 403), auth="admin", tag="admin")
PATHS.update({
    "/v1/admin/developers/{developer_id}/tokens": {
        "get": op("A developer's tokens (never the tokens themselves)", responses(
            200, obj({"tokens": {"type": "array", "items": ref("Token")}}), 401, 403, 404),
            auth="admin", params=[DEVELOPER_ID], tag="admin"),
        "post": op("Issue another token (shown once); revoke the old one to rotate", responses(
            201, obj({"token": {"type": "string"}, "token_id": HEX_ID}), 401, 403, 404),
            auth="admin", params=[DEVELOPER_ID], tag="admin"),
    },
    "/v1/admin/tokens/{token_id}": {"delete": op(
        "Revoke a token: refused from the next request on (idempotent)",
        responses(200, obj({"token": ref("Token")}), 401, 403, 404),
        auth="admin", params=[path_param("token_id", HEX_ID)], tag="admin")},
})
PATHS["/v1/packages/{package_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
    "allOf": [ref("PackageListing"), obj({"icons": ICONS, "screenshots": {
        "type": "array", "items": ref("Screenshot")}})]}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mosis storage appliance", "version": "1",
                 "description": "Packages, assets and downloads of the Mosis developer portal. "
                                "Errors are {\"error\": {\"code\", \"message\"}} with stable codes."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
