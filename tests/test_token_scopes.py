"""Scoped, expiring tokens: every developer route against a token of each
scope, an expired, a revoked and an app-limited token, generated from the
app's own route table (so a new route is in the matrix by being a route),
and the rules of tokens issuing tokens.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from app.api.auth import scope_for
from app.api.openapi import document, operations
from app.catalog.accounts import SCOPES
from app.platform.clock import utcnow
from app.platform.models import ApiToken, AuditEvent
from tests.helpers import ADMIN, bearer

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def developer_routes(flask_app) -> list[tuple[str, str, str]]:
    """(method, path template, scope) of every developer route."""
    out = []
    for path, method, rule in operations(flask_app):
        scope = scope_for(flask_app.view_functions[rule.endpoint], method)
        if scope is not None:
            out.append((method, path, scope))
    return out


def fill(path: str, values: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def token(client, dev, **grant) -> dict:
    r = client.post(f"/v1/admin/developers/{dev['id']}/tokens", headers=ADMIN, json=grant)
    assert r.status_code == 201, r.json
    return r.json


@pytest.fixture
def setup(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    other = api.create_app(dev)
    sub = client.post("/v1/tokens", headers=dev["headers"], json={"scopes": ["read"]}).json
    values = {"app_id": app["id"], "version_code": 1, "position": 1, "token_id": sub["token_id"]}
    return {"dev": dev, "app": app, "other": other, "values": values}


@SQLITE
def test_every_developer_route_declares_a_known_scope_in_the_document(app, settings):
    routes = developer_routes(app)
    assert len(routes) >= 20
    assert {scope for _, _, scope in routes} == set(SCOPES)
    doc = document(app, settings)
    for method, path, scope in routes:
        op = doc["paths"][path][method.lower()]
        assert op["x-scope"] == scope, (method, path)
        assert "insufficient_scope" in op["responses"]["403"]["x-error-codes"]
        assert "token_expired" in op["responses"]["401"]["x-error-codes"]
    assert ("PUT", "/v1/apps/{app_id}/icon", "assets") in routes
    assert ("POST", "/v1/apps/{app_id}/versions/{version_code}/publish", "publish") in routes


def test_scope_by_route_matrix(client, setup):
    """Each scope's token is refused by exactly the routes needing another
    scope, with the missing scope named, and let through by the others."""
    dev, values = setup["dev"], setup["values"]
    tokens = {scope: bearer(token(client, dev, scopes=[scope])["token"]) for scope in SCOPES}
    wrong = []
    routes = developer_routes(client.application)
    # Refusals first: nothing changes before every refusal is checked.
    for method, path, needed in routes:
        for scope in SCOPES:
            if scope == needed:
                continue
            r = client.open(fill(path, values), method=method, headers=tokens[scope])
            error = (r.json or {}).get("error", {}) if r.is_json else {}
            if (r.status_code, error.get("code"), error.get("details")) != \
                    (403, "insufficient_scope", {"scope": needed}):
                wrong.append(f"{method} {path} with {scope}: {r.status_code} {error}")
    for method, path, needed in routes:
        r = client.open(fill(path, values), method=method, headers=tokens[needed])
        if r.status_code in (401, 403):
            wrong.append(f"{method} {path} with {needed}: refused {r.status_code} {r.json}")
    assert not wrong, "\n".join(wrong)


def test_expired_revoked_and_app_limited_tokens_on_every_route(client, setup):
    dev, values = setup["dev"], setup["values"]
    later = (utcnow() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = token(client, dev, expires_at=later)
    ApiToken.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
        ApiToken.id == expired["token_id"]).execute()
    revoked = token(client, dev)
    assert client.delete(f"/v1/admin/tokens/{revoked['token_id']}", headers=ADMIN).status_code == 200
    limited = token(client, dev, apps=[setup["other"]["id"]])
    wrong = []
    for method, path, _ in developer_routes(client.application):
        url = fill(path, values)
        for name, tok, status, code in (("expired", expired, 401, "token_expired"),
                                        ("revoked", revoked, 401, "unauthorized")):
            r = client.open(url, method=method, headers=bearer(tok["token"]))
            if (r.status_code, r.json["error"]["code"]) != (status, code):
                wrong.append(f"{method} {path} {name}: {r.status_code} {r.json}")
        r = client.open(url, method=method, headers=bearer(limited["token"]))
        want = (404, "app_not_found") if "{app_id}" in path else \
            (403, "forbidden") if (method, path) == ("POST", "/v1/apps") else None
        if want and (r.status_code, r.json["error"]["code"]) != want:
            wrong.append(f"{method} {path} limited to another app: {r.status_code} {r.json}")
    assert not wrong, "\n".join(wrong)
    # The limited token sees only its app.
    r = client.get("/v1/apps", headers=bearer(limited["token"]))
    assert [a["id"] for a in r.json["apps"]] == [setup["other"]["id"]]


def test_a_token_issues_only_narrower_tokens_and_revoking_it_revokes_them(client, setup):
    dev, app, other = setup["dev"], setup["app"], setup["other"]
    soon = utcnow() + dt.timedelta(days=1)
    parent = token(client, dev, scopes=["read", "upload", "tokens"], apps=[app["id"]],
                   expires_at=soon.strftime("%Y-%m-%dT%H:%M:%SZ"))
    h = bearer(parent["token"])
    r = client.post("/v1/tokens", headers=h, json={"scopes": ["publish"]})
    assert r.status_code == 403 and r.json["error"]["details"] == {"scope": "publish"}
    r = client.post("/v1/tokens", headers=h, json={"apps": [other["id"]]})
    assert r.status_code == 404 and r.json["error"]["code"] == "app_not_found"
    r = client.post("/v1/tokens", headers=h, json={"expires_at": "2999-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json["error"]["details"] == {"field": "expires_at"}
    r = client.post("/v1/tokens", headers=h, json={"scopes": ["nope"]})
    assert r.status_code == 400 and r.json["error"]["details"] == {"field": "scopes"}
    # Without a body: the parent's own rights, expiry included.
    child = client.post("/v1/tokens", headers=h)
    assert child.status_code == 201, child.json
    details = child.json["details"]
    assert details["scopes"] == ["read", "upload", "tokens"] and details["apps"] == [app["id"]]
    assert details["expires_at"] == soon.replace(microsecond=0).isoformat() + "Z"
    assert details["parent_id"] == parent["token_id"]
    grandchild = client.post("/v1/tokens", headers=bearer(child.json["token"]), json={"scopes": ["read"]}).json
    listed = client.get("/v1/tokens", headers=h).json["tokens"]
    assert [t["id"] for t in listed] == [child.json["token_id"], grandchild["token_id"]]
    # Another token of the developer cannot revoke what it did not issue.
    assert client.delete(f"/v1/tokens/{grandchild['token_id']}", headers=dev["headers"]).status_code == 404
    assert client.get("/v1/apps", headers=bearer(grandchild["token"])).status_code == 200
    assert client.delete(f"/v1/admin/tokens/{parent['token_id']}", headers=ADMIN).status_code == 200
    for t in (parent["token"], child.json["token"], grandchild["token"]):
        assert client.get("/v1/apps", headers=bearer(t)).status_code == 401


def test_every_state_changing_call_is_audited_with_its_token(client, setup):
    dev, app = setup["dev"], setup["app"]
    builder = token(client, dev, scopes=["read", "upload"])
    r = client.post(f"/v1/apps/{app['id']}/versions", headers=bearer(builder["token"]),
                    json={"version_code": 5, "version_name": "5", "size": 100})
    assert r.status_code == 201
    client.get(f"/v1/apps/{app['id']}", headers=bearer(builder["token"]))
    used = list(AuditEvent.select().where((AuditEvent.action == "token.used")
                                          & (AuditEvent.subject_id == builder["token_id"])))
    assert [(e.details["method"], e.details["path"], e.details["status"]) for e in used] == \
        [("POST", f"/v1/apps/{app['id']}/versions", 201)]
    r = client.post(f"/v1/apps/{app['id']}/versions/5/publish", headers=bearer(builder["token"]))
    assert r.status_code == 403 and r.json["error"]["details"] == {"scope": "publish"}
    assert AuditEvent.select().where(AuditEvent.subject_id == builder["token_id"]).count() == 1
