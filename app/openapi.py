"""The OpenAPI 3.1 description of the HTTP API, served at /v1/openapi.json.

Written by hand next to the routes it describes; tests/test_openapi.py fails
when a route is missing here or a path here has no route, and schemathesis
checks every response against these schemas.
"""

from __future__ import annotations

from app.validation import MAX_VERSION_CODE

HEX_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
PACKAGE_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", "maxLength": 128}
VERSION_CODE = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION_CODE}
TIME = {"type": ["string", "null"], "format": "date-time"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
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
    "Upload": obj({"url": {"type": "string"}, "method": {"type": "string"},
                   "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                   "expires_at": TIME}, {"max_bytes": {"type": "integer"}}),
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

ERROR_TEXT = {400: "Invalid input", 401: "No valid bearer token", 403: "Wrong role for this route",
              404: "Not found (or not yours)", 409: "Conflicts with the current state",
              413: "Too large", 415: "Body is not JSON", 503: "A dependency is down; retry after Retry-After"}
JSON_INPUT_ERRORS = (400, 413, 415)


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


def path_param(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


APP = path_param("app_id", HEX_ID)
CODE = path_param("version_code", VERSION_CODE)
VERSION_ID = path_param("version_id", HEX_ID)
PKG = path_param("package_id", PACKAGE_ID)
DEV_ERRORS = (401, 403, 404)
REASON_BODY = obj({"reason": {"type": "string", "minLength": 1, "maxLength": 2000}}, closed=True)


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
        body=obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
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
                             "name": {"type": "string", "minLength": 1, "maxLength": 80}}, closed=True)),
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
                      "version_name": {"type": "string", "minLength": 1, "maxLength": 64},
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
}


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
