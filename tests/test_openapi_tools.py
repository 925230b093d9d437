"""The API document as the tools people use on it see it.

Redocly CLI (recommended rules) and Spectral (`spectral:oas`) lint the
served document, public and internal; any error or warning not in
tests/openapi-lint-allow.yaml fails. openapi-python-client generates a client
from the document a running stack serves, and a release ships through that
client alone: developer, app, version, upload, complete, validation,
publish, download info, download. scripts/test installs the linters under
tools/ (pinned in tools/package-lock.json) and the generator with the test
extras.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from app.api.openapi import document
from app.platform.signing import signed_message, verify
from tests.helpers import ADMIN_TOKEN, build_package, unique_package_id

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
ALLOW_LIST = Path(__file__).with_name("openapi-lint-allow.yaml")
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Finding:
    tool: str
    rule: str
    at: str  # JSON pointer
    message: str = ""

    def __str__(self):
        return f"{self.tool} {self.rule} at {self.at}: {self.message}"


def _pointer(parts) -> str:
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _tool(name: str) -> Path:
    path = TOOLS / "node_modules" / ".bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: scripts/test installs it (npm ci in tools/)")
    return path


# Neither linter may call home from a test run.
QUIET = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
         "SCARF_ANALYTICS": "false", "NO_COLOR": "1"}


def redocly(doc_path: Path) -> list[Finding]:
    result = subprocess.run([str(_tool("redocly")), "lint", str(doc_path), "--format=json",
                             f"--config={TOOLS / 'redocly.yaml'}"],
                            capture_output=True, text=True, timeout=120, env=QUIET, cwd=doc_path.parent)
    report = json.loads(result.stdout[result.stdout.index("{"):])
    return [Finding("redocly", p["ruleId"], p["location"][0]["pointer"] if p.get("location") else "",
                    p["message"]) for p in report["problems"] if p["severity"] in ("error", "warn")]


def spectral(doc_path: Path) -> list[Finding]:
    result = subprocess.run([str(_tool("spectral")), "lint", str(doc_path), "--format=json",
                             f"--ruleset={TOOLS / 'spectral.yaml'}", "--quiet"],
                            capture_output=True, text=True, timeout=120, env=QUIET, cwd=doc_path.parent)
    start = result.stdout.find("[")
    assert start >= 0, f"spectral said nothing readable: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    report = json.JSONDecoder().raw_decode(result.stdout[start:])[0]
    # Severity 0 is an error, 1 a warning (2 and 3: information and hints).
    return [Finding("spectral", p["code"], _pointer(p["path"]), p["message"]) for p in report
            if p["severity"] <= 1]


def allowed() -> list[dict]:
    entries = yaml.safe_load(ALLOW_LIST.read_text())["allowed"] or []
    for entry in entries:
        assert set(entry) == {"tool", "rule", "at", "reason"} and entry["reason"].strip(), entry
    return entries


def unexpected(findings: list[Finding], used: set[int]) -> list[Finding]:
    entries = allowed()
    out = []
    for finding in findings:
        matches = [i for i, e in enumerate(entries)
                   if (e["tool"], e["rule"], e["at"]) == (finding.tool, finding.rule, finding.at)]
        used.update(matches)
        if not matches:
            out.append(finding)
    return out


def lint(doc: dict, directory: Path) -> list[Finding]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "openapi.json"
    path.write_text(json.dumps(doc, indent=1))
    return redocly(path) + spectral(path)


@pytest.fixture
def settings(settings):
    """As an operator sets it up: with a contact address."""
    return settings.replace(contact_email="api@store.example.org")


@SQLITE
def test_redocly_and_spectral_find_nothing_not_allowed(client, app, settings, tmp_path):
    used: set[int] = set()
    served = client.get("/v1/openapi.json").json
    problems = unexpected(lint(served, tmp_path / "public"), used)
    problems += unexpected(lint(document(app, settings, internal=True), tmp_path / "internal"), used)
    assert not problems, "\n".join(map(str, problems))
    stale = [e for i, e in enumerate(allowed()) if i not in used and e["tool"] != "openapi-python-client"]
    assert not stale, f"allow-list entries nothing matches any more: {stale}"


@SQLITE
def test_the_linters_do_report_a_flaw(app, settings, tmp_path):
    """The clean result above comes from tools that look: an operation
    without operationId and description is reported by both."""
    doc = copy.deepcopy(document(app, settings))
    op = doc["paths"]["/v1/apps/{app_id}/versions"]["post"]
    del op["operationId"], op["description"]
    at = _pointer(["paths", "/v1/apps/{app_id}/versions", "post"])
    found = {(f.tool, f.rule) for f in lint(doc, tmp_path) if f.at.startswith(at)}
    assert {("redocly", "operation-operationId"), ("spectral", "operation-operationId"),
            ("spectral", "operation-description")} <= found


# -- a generated client --------------------------------------------------------------------

def generate_client(doc: dict, directory: Path, name: str):
    """Generate a client package `name` from `doc` into `directory` and import it."""
    (directory / "openapi.json").write_text(json.dumps(doc))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    result = subprocess.run([str(bin_dir / "openapi-python-client"), "generate",
                             "--path", str(directory / "openapi.json"), "--meta", "none",
                             "--output-path", str(directory / name)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=directory)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    warnings = [Finding("openapi-python-client", block.strip().splitlines()[0], "", block.strip())
                for block in output.split("\n\n")
                if block.strip() and not block.strip().startswith(("Generating", "If you believe",
                                                                     "Warning(s) encountered"))]
    problems = unexpected(warnings, set())
    assert not problems, "the generator warned:\n" + "\n".join(map(str, problems))
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


@pytest.fixture
def sdk(tmp_path):
    """A fresh name per test; forgotten afterwards."""
    name = f"mosis_sdk_{uuid.uuid4().hex[:8]}"
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


@SQLITE
def test_a_release_ships_through_a_client_generated_from_the_document(live_stack, tmp_path, sdk):
    doc = requests.get(f"{live_stack.edge_url}/v1/openapi.json", timeout=10).json()
    base = doc["servers"][0]["url"]
    assert base == live_stack.edge_url  # the document tells clients where the API is
    client_module = generate_client(doc, tmp_path, sdk)

    def api(tag: str, operation: str):
        return importlib.import_module(f"{sdk}.api.{tag}.{operation}")

    models = importlib.import_module(f"{sdk}.models")
    admin = client_module.AuthenticatedClient(base_url=base, token=ADMIN_TOKEN, raise_on_unexpected_status=True)
    anyone = client_module.Client(base_url=base, raise_on_unexpected_status=True)

    r = api("admin", "create_developer").sync_detailed(
        client=admin, body=models.NewDeveloper(name="SDK", email=f"{uuid.uuid4().hex[:8]}@example.com"))
    assert r.status_code == 201
    developer = client_module.AuthenticatedClient(base_url=base, token=r.parsed.token,
                                                  raise_on_unexpected_status=True)

    package_id = unique_package_id()
    app = api("developer", "create_app").sync(client=developer,
                                              body=models.NewApp(package_id=package_id, name="Notes")).app
    data = build_package(package_id, 7, files={"big.bin": bytes(range(256)) * 4000})
    digest = hashlib.sha256(data).hexdigest()
    created = api("developer", "create_version").sync(
        app.id, client=developer,
        body=models.NewVersion(version_code=7, version_name="1.0.7", size=len(data), sha256=digest))
    assert isinstance(created, models.CreatedVersion), created
    assert created.version.status == models.VersionStatus.UPLOADING
    upload = created.upload
    assert isinstance(upload, models.SingleUpload)
    put = requests.request(upload.method, upload.url, data=data,
                           headers=upload.headers.additional_properties, timeout=60)
    assert put.status_code == 200, put.text

    # An error answer comes back typed, with its stable code.
    again = api("developer", "create_version").sync_detailed(
        app.id, client=developer,
        body=models.NewVersion(version_code=7, version_name="1.0.7", size=len(data)))
    assert again.status_code == 409 and isinstance(again.parsed, models.Error)
    assert again.parsed.error.code == "version_exists"

    completed = api("developer", "complete_upload").sync_detailed(app.id, 7, client=developer)
    assert completed.status_code == 202
    assert completed.parsed.version.status == models.VersionStatus.VALIDATING

    deadline = time.monotonic() + 60
    while True:
        version = api("developer", "get_version").sync(app.id, 7, client=developer).version
        if version.status != models.VersionStatus.VALIDATING or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert version.status == models.VersionStatus.DRAFT, version.error

    published = api("developer", "publish_version").sync(app.id, 7, client=developer).version
    assert published.status == models.VersionStatus.PUBLISHED

    info = api("public", "get_download_info").sync(package_id, client=anyone)
    assert isinstance(info, models.Download)
    assert (info.version_code, info.size, info.sha256) == (7, len(data), digest)
    body = requests.get(info.download_url, timeout=60).content
    assert hashlib.sha256(body).hexdigest() == digest
    key = api("public", "get_signing_key").sync(client=anyone)
    assert key.key_id == info.key_id
    assert verify(key.public_key, info.signature, signed_message(package_id, 7, info.sha256, info.size))
