"""The OpenAPI document matches the routes, and the API matches the document.

The document is built from the Flask app's URL map and app/api/openapi.py's
table; these tests hold the table to the code: every route described,
every error its code can raise declared (read statically by
tools/errorcodes.py), nothing declared that it cannot raise, and the
API's answers (schemathesis) within the document, error codes included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.api import openapi
from app.api.openapi import ERROR_CODES, OPERATIONS, TAGS, document, operations
from app.edge import nginx as edge
from app.platform.config import Settings
from tests.helpers import ADMIN_TOKEN
from tools.errorcodes import Reader, route_errors

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"get", "put", "post", "delete", "patch"}
# Errors no route declares: a route the app does not have for this method,
# and a bug (logged, and a failed test wherever it shows).
UNDECLARED = {"method_not_allowed": 405, "internal_error": 500}


def documented(doc: dict) -> dict[tuple[str, str], dict]:
    return {(path, method.upper()): op for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS}


# The tests that need an app take it on SQLite only: the document does not
# depend on the database.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def full(app, settings):
    return document(app, settings, internal=True)


@pytest.fixture
def public(app, settings):
    return document(app, settings)


@SQLITE
def test_every_route_is_documented_and_every_documented_route_exists(app, full, public):
    routes = {(path, method) for path, method, _ in operations(app)}
    assert set(documented(full)) == routes
    internal = {key for key, op in documented(full).items() if op.get("x-internal")}
    assert internal == {("/metrics", "GET"), ("/edge/objects/{key}", "GET")}
    assert set(documented(public)) == routes - internal, "internal routes stay out of the public document"


@SQLITE
def test_every_route_has_an_entry_and_every_entry_a_route(app):
    endpoints = {(rule.endpoint, method) for _, method, rule in operations(app)}
    assert endpoints - set(OPERATIONS) == set(), "routes without an entry in app/api/openapi.py OPERATIONS"
    assert set(OPERATIONS) - endpoints == set(), "entries in OPERATIONS without a route"


@SQLITE
def test_every_operation_has_a_stable_id_a_summary_a_description_and_one_declared_tag(full):
    declared_tags = [t["name"] for t in full["tags"]]
    assert declared_tags == list(TAGS) and set(TAGS) == {"developer", "admin", "public", "ops"}
    assert all(t["description"] for t in full["tags"])
    ids = []
    for (path, method), op in documented(full).items():
        where = f"{method} {path}"
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]+", op.get("operationId", "")), where
        assert op.get("summary") and op.get("description") and op["description"] != op["summary"], where
        assert len(op.get("tags", [])) == 1 and op["tags"][0] in declared_tags, where
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), "operationIds are unique"
    # SDK method names: these are promised to stay.
    by_id = {op["operationId"]: key for key, op in documented(full).items()}
    assert by_id["createVersion"] == ("/v1/apps/{app_id}/versions", "POST")
    assert by_id["completeUpload"] == ("/v1/apps/{app_id}/versions/{version_code}/complete", "POST")
    assert by_id["getDownloadInfo"] == ("/v1/packages/{package_id}/download", "GET")


@SQLITE
def test_a_route_without_an_entry_is_listed_bare_and_fails_the_checks(services):
    """A route added later without an entry: the document stays whole, and
    the checks above fail on it."""
    from app import create_app

    later = create_app(services.settings, services=services)

    @later.get("/v1/keyring")
    def keyring():
        return {}

    op = document(later, services.settings)["paths"]["/v1/keyring"]["get"]
    assert "operationId" not in op and "tags" not in op and "description" not in op
    endpoints = {(rule.endpoint, method) for _, method, rule in operations(later)}
    assert endpoints - set(OPERATIONS) == {("keyring", "GET")}


@SQLITE
def test_security_and_roles_come_from_the_routes_auth(app, full):
    for (path, method), op in documented(full).items():
        rule = next(r for p, m, r in operations(app) if (p, m) == (path, method))
        role = getattr(app.view_functions[rule.endpoint], "required_role", None)
        assert op["security"] == ([{"bearer": []}] if role else []), path
        assert op.get("x-role") == role
        if role:
            assert op["tags"] == [role]


@SQLITE
def test_error_answers_use_the_error_schema_and_name_their_codes(full):
    for (path, method), op in documented(full).items():
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")) or path == "/readyz":
                continue
            where = f"{method} {path} {status}"
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            codes = response["x-error-codes"]
            assert codes and all(ERROR_CODES[c][0] == int(status) for c in codes), where
            assert all(f"`{c}`" in response["description"] for c in codes), where
            if status == "503":
                assert response["headers"]["Retry-After"]["required"] == (set(codes) <= openapi.RETRYABLE), where


def declared_codes(op: dict) -> dict[str, int]:
    return {code: int(status) for status, response in op["responses"].items()
            for code in response.get("x-error-codes", [])}


@SQLITE
def test_every_error_a_route_can_raise_is_declared_and_nothing_else(app, full):
    """From each view (with its auth wrapper and the before_request hooks)
    down through everything it calls: each ApiError it can raise is in the
    document under its status, and each declared code is one it can raise,
    or one the document adds by rule for what no Python raises (the edge's
    rate limit, a converter refusing a path parameter)."""
    reader = Reader(ROOT)
    problems = []
    for path, method, rule in operations(app):
        op = documented(full)[(path, method)]
        declared = declared_codes(op)
        raised = route_errors(reader, app, rule.endpoint, method)
        for r in raised:
            if not r.known:
                problems.append(f"{method} {path}: a code or status that is not a literal at {r.where}")
            elif declared.get(r.code) != r.status:
                problems.append(f"{method} {path}: raises {r.status} {r.code!r} at {r.where}, "
                                f"declared {declared.get(r.code)}")
        by_rule = set(openapi.EDGE_ERRORS) | set(openapi.PATH_PARAMETER_ERRORS)
        for code in sorted(set(declared) - {r.code for r in raised} - by_rule):
            problems.append(f"{method} {path}: declares {code!r}, which nothing below it raises")
        if "not_found" in declared:
            assert "{" in path, f"{path}: not_found is for a path parameter a converter refuses"
        assert ("rate_limited" in declared) == (path.startswith(openapi.RATE_LIMITED_PREFIXES)
                                               and not op.get("x-internal")), path
    assert not problems, "\n".join(problems)


def test_every_raised_code_has_one_status_and_is_catalogued():
    """The catalogue (ERROR_CODES) agrees with every construction in app/."""
    reader = Reader(ROOT)
    seen: dict[str, set[int]] = {}
    for key in reader.funcs:
        for r in reader.errors_of(key):
            if r.known:
                seen.setdefault(r.code, set()).add(r.status)
    seen.pop("internal_error")
    assert {code: statuses for code, statuses in seen.items() if len(statuses) > 1} == {}
    answered = {code: statuses.pop() for code, statuses in seen.items()}
    uncatalogued = {c: s for c, s in answered.items() if c not in ERROR_CODES and c not in UNDECLARED}
    assert uncatalogued == {}
    assert {c: s for c, s in answered.items() if c in ERROR_CODES and ERROR_CODES[c][0] != s} == {}


def test_the_reader_follows_calls_and_drops_what_is_caught():
    reader = Reader(ROOT)

    def codes(key):
        return {r.code for r in reader.errors_of(key)}

    # Through a module call, a context manager's __exit__ and a typed attribute.
    assert {"upload_missing", "size_mismatch", "storage_unavailable"} <= codes("app.catalog.packages:complete_upload")
    # A callback handed to another function counts as called.
    assert "image_not_square" in codes("app.catalog.assets:set_icon")
    # `except ApiError: pass` swallows what storage raises; `except Exception: ...; raise` does not.
    assert "storage_unavailable" in codes("app.platform.storage:Storage.delete")
    assert "storage_unavailable" not in codes("app.catalog.assets:_retire")
    assert "storage_unavailable" in codes("app.catalog.assets:_put_all")


def test_the_reader_finds_a_new_raise_deep_below_a_route(tmp_path):
    """What the check above rests on: a raise added three calls below a
    view is found, so an undeclared code fails it."""
    import shutil

    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    packages = tmp_path / "app" / "catalog" / "packages.py"
    source = packages.read_text()
    target = "def app_of(developer: Developer, app_id: str) -> App:\n"
    assert target in source
    packages.write_text(source.replace(
        target, target + '    if app_id == "0" * 32:\n        raise Conflict("new", code="brand_new_code")\n'))
    before = {r.code for r in Reader(ROOT).errors_of("app.api.developer:publish")}
    after = {r.code: r.status for r in Reader(tmp_path).errors_of("app.api.developer:publish")}
    assert "brand_new_code" not in before and after["brand_new_code"] == 409


@SQLITE
def test_internal_routes_are_exactly_those_the_edge_does_not_publish(full, tmp_path):
    """The public document is what the edge routes to the app, and the
    edge's rate limit covers the prefix the document says (429)."""
    # Private assets: the edge's locations that reach the app are then all there.
    settings = Settings(data_dir=tmp_path, s3_public_assets=False)
    target = edge.native_target(settings, http_port=18080, internal_port=18081, app_bind="127.0.0.1:18000",
                                prefix=tmp_path / "edge")
    public_server = edge.render(settings, target, "s" * 43).split("# Internal:")[0]
    locations = re.findall(r"location (=\s*)?(\S+) \{([^{}]*)\}", public_server)
    to_app = [(exact.strip(), prefix) for exact, prefix, body in locations if "proxy_pass http://mosis_app" in body]
    limited = [prefix for exact, prefix, body in locations if "limit_req " in body]
    assert limited == list(openapi.RATE_LIMITED_PREFIXES)

    def published(path: str) -> bool:
        return any(path == prefix if exact else path.startswith(prefix) for exact, prefix in to_app)

    for (path, method), op in documented(full).items():
        assert published(path) != bool(op.get("x-internal")), path


def test_the_docs_list_every_error_code_with_its_status():
    text = (ROOT / "docs" / "api.md").read_text().split("## Error codes")[1].split("\n## ")[0]
    listed = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1].isdigit():
            for code in re.findall(r"`([a-z_]+)`", cells[0]):
                listed[code] = int(cells[1])
    assert listed == {**{c: s for c, (s, _) in ERROR_CODES.items()}, **UNDECLARED}


@SQLITE
def test_the_document_is_served_and_valid(client, settings):
    from openapi_spec_validator import validate

    doc = client.get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert doc["servers"] == [{"url": settings.public_url, "description": "This appliance, through its edge"}]
    assert doc["info"]["license"]["name"] == "MIT"
    assert doc["info"]["contact"] == {"name": "The operator of this appliance", "url": settings.public_url}
    assert "/edge/objects/{key}" not in doc["paths"] and "/metrics" not in doc["paths"]


@SQLITE
def test_the_contact_address_is_the_operators(app, settings):
    doc = document(app, settings.replace(contact_email="api@store.example.org"))
    assert doc["info"]["contact"]["email"] == "api@store.example.org"


@SQLITE
def test_the_internal_document_validates(full):
    from openapi_spec_validator import validate

    validate(full)


# -- the API against the document -------------------------------------------------------

def _schemathesis(location: str, base: str, tag: str, headers: list[str], report: Path) -> subprocess.CompletedProcess:
    st = Path(sys.executable).parent / "st"
    argv = [str(st), "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run", location, "--url", base, "--include-tag", tag,
            "--checks", "all", "--max-examples", "12", "--seed", "1", "--workers", "1",
            "--suppress-health-check", "all", "--request-timeout", "20", "--no-color",
            "--report", "junit", "--report-junit-path", str(report)]
    for h in headers:
        argv += ["-H", h]
    # The check that each error code answered is one the operation declares.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_schemathesis_finds_no_server_errors_or_schema_violations(live_stack, app, tmp_path):
    base = live_stack.url
    admin = f"Authorization: Bearer {ADMIN_TOKEN}"
    r = requests.post(f"{base}/v1/admin/developers", json={"name": "Fuzz", "email": "fuzz@example.com"},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    developer = f"Authorization: Bearer {r.json()['token']}"
    # The internal routes are only in the internal document.
    internal = tmp_path / "internal.json"
    internal.write_text(json.dumps(document(app, live_stack.settings, internal=True)))
    failures = []
    for location, tag, headers in [(f"{base}/v1/openapi.json", "public", []),
                                   (f"{base}/v1/openapi.json", "developer", [developer]),
                                   (f"{base}/v1/openapi.json", "admin", [admin]),
                                   (str(internal), "ops", [])]:
        result = _schemathesis(location, base, tag, headers, tmp_path / f"{tag}.xml")
        if result.returncode != 0:
            failures.append(f"--- {tag} ---\n{result.stdout[-30000:]}\n{result.stderr[-2000:]}")
    assert not failures, "\n".join(failures)


# -- what the document promises about bodies, the API keeps -------------------------------

def test_an_integer_written_as_a_whole_float_is_taken(api, client):
    """JSON Schema's integer admits 438.0 (and generated clients may send
    it); the API takes what its document promises. 1.5 stays refused."""
    dev = api.new_developer()
    app = api.create_app(dev)
    r = client.post(f"/v1/apps/{app['id']}/versions", headers=dev["headers"],
                    json={"version_code": 3.0, "version_name": "1.0.3", "size": 438.0})
    assert r.status_code == 201, r.json
    assert (r.json["version"]["version_code"], r.json["version"]["size"]) == (3, 438)
    assert isinstance(r.json["version"]["size"], int)
    r = client.post(f"/v1/apps/{app['id']}/versions", headers=dev["headers"],
                    json={"version_code": 4.5, "version_name": "1.0.4", "size": 438})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_field"


def test_an_optional_field_sent_as_null_is_taken_as_absent(api, client, app, settings):
    """The API reads null as absent for optional fields; the document says so."""
    dev = api.new_developer()
    created = api.create_app(dev)
    r = client.post(f"/v1/apps/{created['id']}/versions", headers=dev["headers"],
                    json={"version_code": 1, "version_name": "1.0.1", "size": 10, "sha256": None})
    assert r.status_code == 201, r.json
    schema = document(app, settings)["components"]["schemas"]["NewVersion"]["properties"]["sha256"]
    assert {"type": "null"} in schema["anyOf"]
