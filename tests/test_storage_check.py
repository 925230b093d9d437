"""The storage conformance check (app/platform/conformance.py, `flask --app app storage check`).

Against the session's SeaweedFS every check passes, one by one and through
the command as an operator runs it. Against a proxy in front of SeaweedFS
that refuses one capability (tests/s3_proxy.py), the command names that
check and the proxy's answer, and fails only when the check is required.
Whatever happens, nothing the check wrote stays in the bucket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from app.platform.conformance import CHECKS, Check, Web, cleanup, new_prefix, run, run_check
from app.platform.storage import ASSETS, Storage
from tests.stack import stack_env
from tests.s3_proxy import NOT_IMPLEMENTED

# Storage is what is checked; one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# One bucket for the module: SeaweedFS has few volume slots for new buckets.
BUCKET = f"mosis-check-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def checked(settings):
    here = settings.replace(bucket=BUCKET)
    store = Storage(here)
    store.ensure_bucket()
    web = Web.for_settings(here)
    yield here, store, web
    web.close()


def left_behind(store: Storage, prefix: str) -> list[str]:
    """Objects and unfinished uploads under the check's prefixes."""
    found = []
    for base in (prefix, f"{ASSETS}/{prefix}"):
        found += [o.key for o in store.list(base)]
        found += [f"upload {u.key}" for u in store.list_multipart_uploads(base)]
    return found


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_each_check_passes_on_seaweedfs(checked, check):
    _, store, web = checked
    prefix = new_prefix()
    try:
        result = run_check(check, store, prefix, web)
    finally:
        report = cleanup(store, prefix)
    assert result.status == "pass", result.answer
    assert report["problems"] == [] and left_behind(store, prefix) == []


def test_private_assets_skip_the_policy_rows(checked):
    here, _, web = checked
    store = Storage(here.replace(s3_public_assets=False))
    report = run(store, web)
    statuses = {r.name: r.status for r in report.results}
    assert statuses.pop("bucket-policy") == "skip" and statuses.pop("anonymous-read-assets") == "skip"
    assert set(statuses.values()) == {"pass"}, report.as_dict()
    assert report.ok and left_behind(store, report.prefix) == []


def test_a_check_that_breaks_off_is_cleaned_up_after(checked):
    _, store, web = checked

    def breaks_off(store, prefix, web):
        store.put(f"{prefix}a.txt", b"a")
        store.put(f"{ASSETS}/{prefix}b.txt", b"b")
        store.create_multipart(f"{prefix}c.bin")
        raise RuntimeError("the provider said something unexpected")

    report = run(store, web, checks=(Check("breaks-off", True, "writes, then fails", breaks_off),))
    [result] = report.results
    assert result.status == "fail" and "RuntimeError: the provider said something unexpected" in result.answer
    assert not report.ok
    assert report.cleanup == {"removed": 2, "problems": []}
    assert left_behind(store, report.prefix) == []


# -- the command, as an operator runs it ---------------------------------------------------------


def storage_check(settings, repo_root, *args: str) -> subprocess.CompletedProcess:
    env = stack_env(settings, 0, 0)
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "storage", "check", *args],
                          env=env, cwd=repo_root, capture_output=True, text=True, timeout=180, check=False)


def rows(output: str) -> dict[str, str]:
    """The table's rows by check name."""
    names = {c.name for c in CHECKS}
    return {line.split()[0]: line for line in output.splitlines() if line.split() and line.split()[0] in names}


def test_the_command_passes_on_seaweedfs(checked, repo_root):
    here, store, _ = checked
    human = storage_check(here, repo_root)
    assert human.returncode == 0, human.stdout + human.stderr
    table = rows(human.stdout)
    assert set(table) == {c.name for c in CHECKS}
    for check in CHECKS:
        need = "required" if check.required else "advisory"
        assert table[check.name].split()[1:3] == [need, "PASS"], table[check.name]
    assert "the appliance can run on this storage" in human.stdout

    out = storage_check(here, repo_root, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["bucket"] == BUCKET
    assert {c["name"]: c["status"] for c in report["checks"]} == {c.name: "pass" for c in CHECKS}
    assert report["prefix"].startswith("conformance-check/") and report["cleanup"]["problems"] == []
    assert report["cleanup"]["removed"] > 0 and left_behind(store, report["prefix"]) == []


def test_a_provider_without_multipart_uploads_fails_the_command(checked, refusing, repo_root):
    here, store, _ = checked
    proxy = refusing({"uploads": NOT_IMPLEMENTED})
    out = storage_check(here.replace(s3_endpoint=proxy.url), repo_root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "uploads" in proxy.refused
    table = rows(out.stdout)
    failing = table.pop("multipart")
    assert failing.split()[1:3] == ["required", "FAIL"]
    assert "create: HTTP 501 NotImplemented: not supported here" in failing
    assert all(line.split()[2] == "PASS" for line in table.values()), out.stdout
    assert "FAILED: multipart: multipart upload" in out.stderr
    assert "the appliance cannot run on this storage" in out.stdout
    prefix = out.stdout.split("(under ", 1)[1].split(")", 1)[0]
    assert left_behind(store, prefix) == []


def test_a_provider_without_object_tags_passes_with_a_warning(checked, refusing, repo_root):
    here, store, _ = checked
    proxy = refusing({"tagging": NOT_IMPLEMENTED})
    out = storage_check(here.replace(s3_endpoint=proxy.url), repo_root, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    tags = by_name.pop("object-tags")
    assert tags["status"] == "fail" and tags["required"] is False
    assert tags["answer"] == "set tags: HTTP 501 NotImplemented: not supported here"
    assert {c["status"] for c in by_name.values()} == {"pass"}
    assert report["ok"] is True and left_behind(store, report["prefix"]) == []
