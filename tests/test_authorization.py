"""Who may call what: every route, called as every kind of caller.

Callers: anonymous, a revoked token (of the owner), another developer, the
admin, and the owner of the resources (for admin routes the admin is the
owner). Each cell names the exact status. Calls that must fail run before
the one that may succeed, so a wrongly allowed call shows up as a wrong
status, and state changes only through the expected caller.
"""

from __future__ import annotations

import io
import itertools
import uuid

import pytest
from PIL import Image

from app.api.openapi import document
from tests.helpers import ADMIN, bearer, build_package, unique_package_id

ROLES = ("anonymous", "revoked", "other", "admin", "owner")
_counter = itertools.count()


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def developer_route(owner: int, *, other: int = 404):
    return {"anonymous": 401, "revoked": 401, "other": other, "admin": 403, "owner": owner}


def admin_route(admin: int):
    return {"anonymous": 401, "revoked": 401, "other": 403, "owner": 403, "admin": admin}


PUBLIC = {role: 200 for role in ROLES}


@pytest.fixture
def world(api, client):
    """Developer A with an app in every state the routes need, developer B, a revoked token."""
    a, b = api.new_developer("A"), api.new_developer("B")
    app = api.create_app(a)
    v1 = api.ship(a, app, 1)
    v2 = api.submit(a, app, 2)
    data3 = build_package(app["package_id"], 3)
    r = api.create_version(a, app, 3, data3)
    api.upload(r.json["upload"], data3)
    v4 = api.submit(a, app, 4)
    assert client.put(f"/v1/apps/{app['id']}/icon", headers=a["headers"],
                      data={"icon": (io.BytesIO(png(256, 256)), "icon.png")}).status_code == 200
    assert client.post(f"/v1/apps/{app['id']}/screenshots", headers=a["headers"],
                       data={"screenshot": (io.BytesIO(png(720, 1280)), "s.png")}).status_code == 201
    # A's second token, revoked through the API: refused even on A's own things.
    r = client.post(f"/v1/admin/developers/{a['id']}/tokens", headers=ADMIN)
    revoked = r.json
    assert client.get("/v1/apps", headers=bearer(revoked["token"])).status_code == 200
    assert client.delete(f"/v1/admin/tokens/{revoked['token_id']}", headers=ADMIN).status_code == 200
    spare = client.post(f"/v1/admin/developers/{b['id']}/tokens", headers=ADMIN).json
    # A token A's token issued, for A's token to revoke.
    sub = client.post("/v1/tokens", headers=a["headers"], json={"scopes": ["read"]}).json
    headers = {"anonymous": {}, "revoked": bearer(revoked["token"]), "other": b["headers"],
               "admin": ADMIN, "owner": a["headers"]}
    first_key = client.get("/v1/signing-key").json["key_id"]
    return {"a": a, "b": b, "app": app, "v1": v1, "v2": v2, "v4": v4, "spare": spare, "sub": sub,
            "first_key": first_key, "headers": headers}


def new_app_body():
    return {"json": {"package_id": unique_package_id(), "name": "Matrix"}}


def new_developer_body():
    return {"json": {"name": "M", "email": f"{uuid.uuid4().hex[:10]}@example.com"}}


def image_body(field: str, w: int, h: int):
    return lambda: {"data": {field: (io.BytesIO(png(w, h)), f"{field}.png")}}


def table(w) -> list[tuple[str, str, object, dict]]:
    """(method, path, request kwargs or a factory of them, expected status by role)."""
    app, pkg = w["app"]["id"], w["app"]["package_id"]
    v = f"/v1/apps/{app}/versions"
    new_version = {"json": {"version_code": 10, "version_name": "10", "size": 1000}}
    return [
        ("GET", "/healthz", {}, PUBLIC),
        ("GET", "/readyz", {}, PUBLIC),
        ("GET", "/metrics", {}, PUBLIC),
        ("GET", "/v1/openapi.json", {}, PUBLIC),
        ("GET", "/v1/signing-key", {}, PUBLIC),
        ("GET", "/v1/signing-keys", {}, PUBLIC),
        ("GET", "/v1/signing-keys/1", {}, PUBLIC),
        ("GET", "/v1/index.json", {}, PUBLIC),
        ("GET", f"/v1/packages/{pkg}", {}, PUBLIC),
        ("GET", f"/v1/packages/{pkg}/download", {}, PUBLIC),
        # The edge's question on a cache miss; nginx never routes it publicly.
        ("GET", f"/edge/objects/packages/{w['a']['id']}/{app}/1/package.mosis", {}, PUBLIC),
        ("GET", "/v1/apps", {}, developer_route(200, other=200)),
        ("POST", "/v1/apps", new_app_body, developer_route(201, other=201)),
        ("GET", f"/v1/apps/{app}", {}, developer_route(200)),
        ("GET", v, {}, developer_route(200)),
        ("POST", v, new_version, developer_route(201)),
        ("GET", f"{v}/1", {}, developer_route(200)),
        ("GET", f"{v}/3/upload", {}, developer_route(200)),
        ("POST", f"{v}/3/upload/parts", {"json": {"part_numbers": [1]}}, developer_route(409)),
        ("POST", f"{v}/2/publish", {}, developer_route(200)),
        ("POST", f"{v}/3/complete", {}, developer_route(202)),
        ("DELETE", f"{v}/10/upload", {}, developer_route(200)),
        ("GET", f"/v1/apps/{app}/icon", {}, developer_route(200)),
        ("PUT", f"/v1/apps/{app}/icon", image_body("icon", 300, 300), developer_route(200)),
        ("GET", f"/v1/apps/{app}/screenshots", {}, developer_route(200)),
        ("POST", f"/v1/apps/{app}/screenshots", image_body("screenshot", 720, 1280), developer_route(201)),
        ("PUT", f"/v1/apps/{app}/screenshots/order", {"json": {"positions": [2, 1]}}, developer_route(200)),
        ("DELETE", f"/v1/apps/{app}/screenshots/1", {}, developer_route(200)),
        ("DELETE", f"/v1/apps/{app}/icon", {}, developer_route(204)),
        ("GET", "/v1/tokens", {}, developer_route(200, other=200)),
        ("POST", "/v1/tokens", {"json": {"scopes": ["read"]}}, developer_route(201, other=201)),
        ("DELETE", f"/v1/tokens/{w['sub']['token_id']}", {}, developer_route(200)),
        ("POST", "/v1/admin/developers", new_developer_body, admin_route(201)),
        ("GET", "/v1/admin/developers", {}, admin_route(200)),
        ("GET", f"/v1/admin/developers/{w['a']['id']}/tokens", {}, admin_route(200)),
        ("POST", f"/v1/admin/developers/{w['a']['id']}/tokens", {}, admin_route(201)),
        ("DELETE", f"/v1/admin/tokens/{w['spare']['token_id']}", {}, admin_route(200)),
        ("POST", f"/v1/admin/versions/{w['v4']['id']}/reject", {"json": {"reason": "spam"}}, admin_route(200)),
        ("POST", f"/v1/admin/versions/{w['v1']['id']}/pull", {"json": {"reason": "bad"}}, admin_route(200)),
        ("POST", "/v1/admin/retention/run", {"json": {"dry_run": True}}, admin_route(200)),
        ("GET", "/v1/admin/storage", {}, admin_route(200)),
        ("GET", "/v1/admin/costs", {}, admin_route(200)),
        ("GET", "/v1/admin/replica", {}, admin_route(200)),
        # Rotation retires the first key, which may then be revoked.
        ("POST", "/v1/admin/signing-keys/rotate", {}, admin_route(200)),
        ("POST", f"/v1/admin/signing-keys/{w['first_key']}/revoke", {}, admin_route(200)),
    ]




def test_the_matrix_covers_every_documented_route(api, client, world):
    covered = set()
    ids = {world["app"]["id"]: "{app_id}", world["app"]["package_id"]: "{package_id}",
           world["a"]["id"]: "{developer_id}", world["spare"]["token_id"]: "{token_id}",
           world["sub"]["token_id"]: "{token_id}", world["first_key"]: "{key_id}",
           world["v4"]["id"]: "{version_id}", world["v1"]["id"]: "{version_id}"}
    for method, path, _, _ in table(world):
        parts = [ids.get(p, p) for p in path.split("/")]
        if len(parts) > 5 and parts[3] == "{app_id}" and parts[4] == "versions" and parts[5].isdigit():
            parts[5] = "{version_code}"
        if len(parts) > 5 and parts[4] == "screenshots" and parts[5].isdigit():
            parts[5] = "{position}"
        if path == "/v1/signing-keys/1":
            parts[-1] = "{version}"
        if path.startswith("/edge/objects/"):
            parts = ["", "edge", "objects", "{key}"]
        covered.add((method, "/".join(parts)))
    # Every route, the ones the edge does not publish included.
    doc = document(client.application, api.services.settings, internal=True)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented - covered == set(), "routes missing from the authorization matrix"


def test_every_caller_gets_exactly_the_right_status(client, world):
    wrong = []
    for method, path, kwargs, expected in table(world):
        for role in ROLES:  # owner (or admin) last: the only call allowed to change state
            request = kwargs() if callable(kwargs) else kwargs
            r = client.open(path, method=method, headers=world["headers"][role], **request)
            if r.status_code != expected[role]:
                wrong.append(f"{method} {path} as {role}: {r.status_code} (want {expected[role]}) "
                             f"{(r.json or {}).get('error') if r.is_json else ''}")
    assert not wrong, "\n".join(wrong)


def test_revocation_takes_effect_at_once(client, api):
    dev = api.new_developer()
    assert client.get("/v1/apps", headers=dev["headers"]).status_code == 200
    assert client.delete(f"/v1/admin/tokens/{dev['token_id']}", headers=ADMIN).status_code == 200
    r = client.get("/v1/apps", headers=dev["headers"])
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    # revoking again is harmless; unknown tokens are 404
    assert client.delete(f"/v1/admin/tokens/{dev['token_id']}", headers=ADMIN).status_code == 200
    assert client.delete(f"/v1/admin/tokens/{'0' * 32}", headers=ADMIN).status_code == 404
    # a rotated token works while the old one does not
    fresh = client.post(f"/v1/admin/developers/{dev['id']}/tokens", headers=ADMIN).json
    assert client.get("/v1/apps", headers=bearer(fresh["token"])).status_code == 200
    listed = client.get(f"/v1/admin/developers/{dev['id']}/tokens", headers=ADMIN).json["tokens"]
    assert [t["revoked_at"] is not None for t in listed] == [True, False]
    assert all(fresh["token"] not in str(t) for t in listed)


def test_token_cli_revokes(app, api, client):
    dev = api.new_developer()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tokens", "revoke", dev["token_id"]])
    assert result.exit_code == 0, result.output
    assert client.get("/v1/apps", headers=dev["headers"]).status_code == 401
    result = runner.invoke(args=["tokens", "revoke", "nope"])
    assert result.exit_code != 0 and "token_not_found" in result.output
