"""Authentication, ownership and hostile input: clear 4xx codes, nothing changed."""

from __future__ import annotations

import io
import json
import re

import pytest

from app.platform.models import ApiToken, App, Version
from tests.helpers import ADMIN, bearer, build_package, unique_package_id
from tests.monitoring_helpers import scraped


def test_anonymous_callers_get_401(client):
    for method, path in [("get", "/v1/apps"), ("post", "/v1/apps"),
                         ("post", "/v1/admin/developers"), ("get", f"/v1/apps/{'a' * 32}")]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, (method, path)
        assert r.json["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_tokens_are_refused(client, api):
    dev = api.new_developer()
    assert client.get("/v1/apps", headers=bearer("mos_not_a_real_token")).status_code == 401
    assert client.get("/v1/apps", headers={"Authorization": "Basic abc"}).status_code == 401
    # a developer is not an admin, and the admin is not a developer
    r = client.post("/v1/admin/developers", json={"name": "x", "email": "x@example.com"},
                    headers=dev["headers"])
    assert r.status_code == 403
    assert client.get("/v1/apps", headers=ADMIN).status_code == 403


def test_tokens_are_stored_hashed(api):
    dev = api.new_developer()
    token = dev["token"]
    rows = list(ApiToken.select())
    assert rows and all(token not in (r.token_hash, r.prefix) for r in rows)
    assert any(token.startswith(r.prefix) for r in rows)


def test_a_developer_cannot_see_or_touch_another_developers_app(api, client):
    owner, other = api.new_developer(), api.new_developer()
    app = api.create_app(owner)
    api.submit(owner, app, 1)
    base = f"/v1/apps/{app['id']}"
    calls = [("get", base, None), ("get", f"{base}/versions", None), ("get", f"{base}/versions/1", None),
             ("post", f"{base}/versions", {"version_code": 2, "version_name": "2", "size": 10}),
             ("post", f"{base}/versions/1/complete", None), ("post", f"{base}/versions/1/publish", None)]
    for method, path, body in calls:
        r = getattr(client, method)(path, json=body, headers=other["headers"])
        assert r.status_code == 404, (method, path, r.json)
        assert r.json["error"]["code"] == "app_not_found"
    assert client.get("/v1/apps", headers=other["headers"]).json == {"apps": []}
    assert api.version(owner, app, 1)["status"] == "draft"


@pytest.mark.parametrize("body, code", [
    ({"version_code": 0, "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": -5, "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": 2**31, "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": "7", "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": True, "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": 1.5, "version_name": "x", "size": 10}, "invalid_field"),
    ({"version_code": 1, "version_name": "", "size": 10}, "invalid_field"),
    ({"version_code": 1, "version_name": "x" * 65, "size": 10}, "invalid_field"),
    ({"version_code": 1, "version_name": "x", "size": 0}, "invalid_field"),
    ({"version_code": 1, "version_name": "x", "size": 10, "sha256": "nothex"}, "invalid_field"),
    ({"version_code": 1, "version_name": "x"}, "missing_field"),
    ({"version_code": 1, "version_name": "x", "size": 10, "evil": 1}, "unknown_field"),
    ([1, 2, 3], "invalid_json"),
])
def test_bad_version_requests_get_stable_codes(api, client, body, code):
    dev = api.new_developer()
    app = api.create_app(dev)
    r = client.post(f"/v1/apps/{app['id']}/versions", json=body, headers=dev["headers"])
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code
    assert Version.select().count() == 0


def test_malformed_and_oversized_bodies(api, client):
    dev = api.new_developer()
    h = dev["headers"]
    r = client.post("/v1/apps", data="{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    r = client.post("/v1/apps", data="package_id=x", headers={**h, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json["error"]["code"] == "unsupported_media_type"
    big = '{"package_id": "com.a.b", "name": "' + "x" * 200_000 + '"}'
    r = client.post("/v1/apps", data=big, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json["error"]["code"] == "body_too_large"
    assert App.select().count() == 0


# Raw JSON text: the escapes reach the server as written.
UNSTORABLE = [r"a\ud800b", r"\udfff", r"N\u0000ul", r"\u001b[31mred"]


@pytest.mark.parametrize("text", UNSTORABLE)
def test_strings_no_database_can_store_are_refused(api, client, text):
    """A NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 for it)
    would fail the write with a 500; control characters have no place in a
    name. Each is a 400 naming the field, and nothing is written."""
    dev = api.new_developer()
    app = api.create_app(dev)
    h = {**dev["headers"], "Content-Type": "application/json"}
    admin = {**ADMIN, "Content-Type": "application/json"}
    developers, apps = len(client.get("/v1/admin/developers", headers=ADMIN).json["developers"]), App.select().count()
    for path, headers, body, field in [
        ("/v1/admin/developers", admin, '{"name": "%s", "email": "n@example.com"}' % text, "name"),
        ("/v1/apps", h, '{"package_id": "%s", "name": "%s"}' % (unique_package_id(), text), "name"),
        (f"/v1/apps/{app['id']}/versions", h, '{"version_code": 1, "version_name": "%s", "size": 10}' % text,
         "version_name"),
    ]:
        r = client.post(path, data=body, headers=headers)
        assert r.status_code == 400, (path, r.json)
        assert r.json["error"]["code"] == "invalid_field" and r.json["error"]["details"]["field"] == field, r.json
    assert len(client.get("/v1/admin/developers", headers=ADMIN).json["developers"]) == developers
    assert App.select().count() == apps and Version.select().count() == 0


def test_oversized_package_is_refused_before_upload(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    limit = services.settings.limits.max_package_bytes
    r = api.client.post(f"/v1/apps/{app['id']}/versions", headers=dev["headers"],
                        json={"version_code": 1, "version_name": "1", "size": limit + 1})
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"


@pytest.mark.parametrize("package_id", ["Com.Upper.Case", "nodots", "com..double", "com.-x.y",
                                        "com.x." + "a" * 130, "1com.x", "com.x y"])
def test_bad_package_ids(api, client, package_id):
    dev = api.new_developer()
    r = client.post("/v1/apps", json={"package_id": package_id, "name": "x"}, headers=dev["headers"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_field"


def test_unknown_routes_and_methods_answer_json(client, api):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    r = client.delete("/v1/signing-key")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"
    assert "GET" in r.headers["Allow"]
    dev = api.new_developer()
    for path in ["/v1/apps/not-an-id", "/v1/apps/" + "g" * 32, f"/v1/apps/{'a' * 32}/versions/0",
                 f"/v1/apps/{'a' * 32}/versions/99999999999", "/v1/packages/..%2Fetc/download"]:
        r = client.get(path, headers=dev["headers"])
        assert r.status_code == 404 and r.is_json, path


def test_duplicate_email_is_a_conflict(client):
    body = {"name": "A", "email": "same@example.com"}
    assert client.post("/v1/admin/developers", json=body, headers=ADMIN).status_code == 201
    r = client.post("/v1/admin/developers", json=body, headers=ADMIN)
    assert r.status_code == 409 and r.json["error"]["code"] == "email_taken"


def test_readyz_and_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["checks"] == {"database": "ok", "storage": "ok"}


def test_readyz_reports_storage_down(settings, tmp_path):
    from app import create_app

    dead = settings.replace(s3_endpoint="http://127.0.0.1:9", data_dir=tmp_path / "d2")
    client = create_app(dead).test_client()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json["checks"]["storage"].startswith("error")
    # and an API call that needs storage says so with a retry hint
    r = client.get("/v1/admin/storage", headers=ADMIN)
    assert r.status_code == 503 and r.json["error"]["code"] == "storage_unavailable", r.json
    assert int(r.headers.get("Retry-After", "0")) > 0, r.headers
    assert client.get("/healthz").status_code == 200  # liveness does not depend on storage


def test_metrics_endpoint(client, api):
    def started() -> float:
        return scraped(client.get("/metrics").get_data(as_text=True), "mosis_uploads_started_total")

    dev = api.new_developer()
    app = api.create_app(dev)
    before = started()
    data = build_package(app["package_id"], 1)
    assert api.create_version(dev, app, 1, data).status_code == 201  # an upload URL issued
    assert started() == before + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert scraped(text, "flask_http_request_total", method="POST", status="201") >= 3


def test_request_ids_and_security_headers(client):
    r = client.get("/v1/signing-key", headers={"X-Request-ID": "edge-abc-123"})
    assert r.headers["X-Request-ID"] == "edge-abc-123"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    # A public read is shareable (docs/edge.md); anything else nobody stores.
    assert r.headers["Cache-Control"].startswith("public, max-age=")
    assert client.get("/healthz").headers["Cache-Control"] == "no-store"
    # an id that could forge log lines is replaced
    r = client.get("/healthz", headers={"X-Request-ID": "bad id {level=error}"})
    assert r.headers["X-Request-ID"] != "bad id {level=error}" and len(r.headers["X-Request-ID"]) == 32


def test_access_log_is_json_with_request_id_and_no_secrets(client, api, capsys):
    import json
    import logging

    from app.platform.weblog import configure_logging

    dev = api.new_developer()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO", "json")
    try:
        client.get("/v1/apps", headers={**dev["headers"], "X-Request-ID": "rid-42"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(l) for l in capsys.readouterr().err.splitlines() if l.startswith("{")]
    access = [l for l in lines if l["logger"] == "mosis.access"]
    assert access and access[-1]["request_id"] == "rid-42" and access[-1]["status"] == 200
    assert access[-1]["actor"] == f"developer:{dev['id']}"
    assert dev["token"] not in json.dumps(lines)


def test_errors_never_show_stack_traces(app, client):
    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("secret internals")

    r = client.get("/boom-for-test")
    assert r.status_code == 500 and r.json["error"]["code"] == "internal_error"
    assert "secret internals" not in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)


# -- bodies on every route -----------------------------------------------------------

# Values that fill each converter of a rule; the routes need not find anything:
# the body is refused before the route runs.
_ARGS = {"hexid": "0" * 32, "code": "1", "package_id": "com.example.none", "path": "x/y", "int": "1"}
UPLOAD_ROUTES = {("PUT", "/v1/apps/<hexid:app_id>/icon"), ("POST", "/v1/apps/<hexid:app_id>/screenshots")}


def _routes_taking_bodies(flask_app) -> list[tuple[str, str, str]]:
    """(method, rule, a URL it matches) for every POST, PUT and DELETE route."""
    out = []
    for rule in flask_app.url_map.iter_rules():
        url = re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", lambda m: _ARGS.get(m.group(1) or "default", "x"),
                     rule.rule)
        out += [(m, rule.rule, url) for m in sorted(rule.methods & {"POST", "PUT", "DELETE"})]
    return out


def _chunked(client, method, url, body: bytes, headers=None):
    return client.open(url, method=method, input_stream=io.BytesIO(body),
                       headers={**(headers or {}), "Transfer-Encoding": "chunked"},
                       content_type="application/json",
                       environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it


def test_every_route_refuses_a_body_over_the_json_limit_before_anything_else(app, client, services):
    limit = services.settings.max_json_bytes
    body = b"{" + b" " * limit + b"}"  # limit + 2 bytes
    routes = _routes_taking_bodies(app)
    assert len(routes) >= 15 and UPLOAD_ROUTES <= {(m, r) for m, r, _ in routes}
    wrong = []
    for method, rule, url in routes:
        if (method, rule) in UPLOAD_ROUTES:
            continue  # read_upload's own limit (tests/test_assets.py)
        for how, r in (("declared", client.open(url, method=method, data=body, content_type="application/json")),
                       ("chunked", _chunked(client, method, url, body))):
            code = (r.json or {}).get("error", {}).get("code") if r.is_json else None
            if (r.status_code, code) != (413, "body_too_large"):
                wrong.append(f"{method} {url} ({how}): {r.status_code} {code}")
    assert not wrong, "\n".join(wrong)


def test_upload_routes_keep_their_own_limit(client, services):
    # A body over the JSON limit is an upload's normal size: it reaches the
    # route, which asks who is calling.
    body = b"x" * (services.settings.max_json_bytes + 1)
    for method, rule in UPLOAD_ROUTES:
        r = client.open(rule.replace("<hexid:app_id>", "0" * 32), method=method, data=body,
                        content_type="multipart/form-data; boundary=b")
        assert r.status_code == 401, (method, rule, r.json)


def test_an_oversized_body_changes_nothing_even_for_the_admin(api, client, services):
    dev = api.new_developer()
    tokens = ApiToken.select().count()
    big = b"x" * (20 * 1024 * 1024)
    for path in (f"/v1/admin/developers/{dev['id']}/tokens",):
        r = client.post(path, data=big, headers={**ADMIN, "Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and r.json["error"]["code"] == "body_too_large"
    assert ApiToken.select().count() == tokens


def test_a_chunked_json_body_within_the_limit_is_read(api, client):
    dev = api.new_developer()
    body = json.dumps({"package_id": unique_package_id(), "name": "Chunked"}).encode()
    r = _chunked(client, "POST", "/v1/apps", body, dev["headers"])
    assert r.status_code == 201, r.json
    assert r.json["app"]["name"] == "Chunked"


def test_hostile_inputs_get_a_4xx_never_a_500(api, client):
    """Inputs built to crash a handler: JSON nested past the parser's
    recursion limit, a screenshot position no database integer holds, and
    names with a trailing newline (which `$` lets through and no URL can
    address)."""
    dev = api.new_developer()
    app = api.create_app(dev)
    deep = b"[" * 2000  # 2 KB: far below the body limit
    for path in ("/v1/apps", f"/v1/apps/{app['id']}/versions"):
        r = client.post(path, data=deep, content_type="application/json", headers=dev["headers"])
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json", (path, r.json)
    r = client.post("/v1/admin/developers", data=b'{"name": ' + b"[" * 5000, content_type="application/json",
                    headers=ADMIN)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    for position in ("99999999999999999999", "2147483648", "9" * 400):
        r = client.delete(f"/v1/apps/{app['id']}/screenshots/{position}", headers=dev["headers"])
        assert r.status_code == 404 and r.is_json, (position, r.status_code, r.get_data(as_text=True)[:200])
    r = client.delete(f"/v1/apps/{app['id']}/screenshots/2147483647", headers=dev["headers"])
    assert r.status_code == 404 and r.is_json
    r = client.post("/v1/apps", json={"package_id": "com.example.newline\n", "name": "N"}, headers=dev["headers"])
    assert r.status_code == 400 and r.json["error"] == {
        "code": "invalid_field", "message": r.json["error"]["message"], "details": {"field": "package_id"}}
    r = client.post("/v1/admin/developers", json={"name": "N", "email": "n@example.com\n"}, headers=ADMIN)
    assert r.status_code == 400 and r.json["error"]["details"] == {"field": "email"}
    r = client.post(f"/v1/apps/{app['id']}/versions", headers=dev["headers"], json={
        "version_code": 1, "version_name": "1", "size": 10, "sha256": "0" * 64 + "\n"})
    assert r.status_code == 400 and r.json["error"]["details"] == {"field": "sha256"}


def test_a_manifest_package_id_with_a_trailing_newline_is_refused():
    from app.platform.config import PackageLimits
    from mosis_format.validation import PackageInvalid, parse_manifest

    manifest = {"package_id": "com.example.notes\n", "version_code": 1, "version_name": "1", "name": "N"}
    with pytest.raises(PackageInvalid) as failure:
        parse_manifest(json.dumps(manifest).encode(), PackageLimits())
    assert failure.value.code == "manifest_invalid" and "package_id" in failure.value.message
