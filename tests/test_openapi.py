"""The OpenAPI document matches the routes, and the API matches the document."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.openapi import document
from tests.helpers import ADMIN_TOKEN, build_package, unique_package_id

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def routes_of(flask_app) -> set[tuple[str, str]]:
    found = set()
    for rule in flask_app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            found.add((path, method))
    return found


def documented() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, ops in document()["paths"].items() for method in ops}


def test_every_route_is_documented_and_every_documented_route_exists(app):
    actual, described = routes_of(app), documented()
    assert actual - described == set(), "routes missing from app/openapi.py"
    assert described - actual == set(), "documented paths without a route"


def test_the_document_is_served_and_valid(client):
    from openapi_spec_validator import validate

    doc = client.get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def _schemathesis(base: str, tag: str, headers: list[str], report: Path) -> subprocess.CompletedProcess:
    st = Path(sys.executable).parent / "st"
    argv = [str(st), "run", f"{base}/v1/openapi.json", "--include-tag", tag,
            "--checks", "all", "--max-examples", "12", "--seed", "1", "--workers", "1",
            "--suppress-health-check", "all", "--request-timeout", "20", "--no-color",
            "--report", "junit", "--report-junit-path", str(report)]
    for h in headers:
        argv += ["-H", h]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_schemathesis_finds_no_server_errors_or_schema_violations(live_stack, tmp_path):
    base = live_stack.url
    admin = f"Authorization: Bearer {ADMIN_TOKEN}"
    r = requests.post(f"{base}/v1/admin/developers", json={"name": "Fuzz", "email": "fuzz@example.com"},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    developer = f"Authorization: Bearer {r.json()['token']}"
    failures = []
    for tag, headers in [("public", []), ("ops", []), ("apps", [developer]),
                         ("versions", [developer]), ("assets", [developer]), ("admin", [admin]),
                         ("edge", [])]:
        result = _schemathesis(base, tag, headers, tmp_path / f"{tag}.xml")
        if result.returncode != 0:
            failures.append(f"--- {tag} ---\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
    assert not failures, "\n".join(failures)
