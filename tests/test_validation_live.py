"""Hostile uploads against the real processes: gunicorn API, scheduler, S3.

A representative part of the corpus goes over HTTP through the presigned
upload and the scheduler's validation queue. The scheduler must survive
all of it, count each outcome in its /metrics, and write no temporary file.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.corpus import CASES
from tests.helpers import ADMIN, bearer, build_package, sha256, unique_package_id
from tests.monitoring_helpers import scraped_by
from tests.stack import edge_settings, start_live_stack

LIVE_CASES = ["bomb_nested_recursive", "bomb_nested_junk_prefix", "bomb_many_small_entries", "bomb_quoted_overlap",
              "path_fullwidth_solidus", "path_unicode_path_field", "symlink_unix_mode",
              "duplicate_unicode_forms", "local_name_differs", "encrypted_aes",
              "crc_mismatch_deflated", "manifest_deep_nesting", "manifest_missing",
              "too_many_entries", "valid_data_descriptors", "valid_zip64_end_records"]


@pytest.fixture
def database_url(tmp_path):
    # The queue's SQL runs on both databases in test_validation_api; here the
    # processes are what is under test.
    return f"sqlite:///{tmp_path / 'mosis.db'}"


@pytest.fixture
def stack(settings, tmp_path):
    """The live stack (behind its edge), its processes' temporary files in `scratch`."""
    from app.native import free_ports

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    running = start_live_stack(edge_settings(settings, *free_ports(2)), extra_env={"TMPDIR": str(scratch)})
    running.scratch = scratch
    yield running
    running.stop()


def counts(url: str) -> dict[str, float]:
    return scraped_by(requests.get(f"{url}/metrics", timeout=10).text, "mosis_validations_total", "result")


def settle(base: str, app_id: str, code: int, dev: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = requests.get(f"{base}/v1/apps/{app_id}/versions/{code}", headers=dev,
                               timeout=10).json()["version"]
        if version["status"] not in ("uploading", "validating"):
            return version
        time.sleep(0.1)
    raise AssertionError(f"version {code} is still {version['status']}")


def ship(base: str, dev: dict, app_id: str, code: int, data: bytes, publish: bool) -> dict:
    r = requests.post(f"{base}/v1/apps/{app_id}/versions", headers=dev, timeout=10, json={
        "version_code": code, "version_name": str(code), "size": len(data), "sha256": sha256(data)})
    assert r.status_code == 201, r.text
    upload = r.json()["upload"]
    put = requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"],
                           timeout=60)
    assert put.status_code == 200
    assert requests.post(f"{base}/v1/apps/{app_id}/versions/{code}/complete", headers=dev,
                         timeout=30).status_code == 202
    version = settle(base, app_id, code, dev)
    if publish:
        assert version["status"] == "draft", version
        assert requests.post(f"{base}/v1/apps/{app_id}/versions/{code}/publish", headers=dev,
                             timeout=10).status_code == 200
    return version


def new_app(base: str) -> tuple[dict, str, str]:
    r = requests.post(f"{base}/v1/admin/developers", headers=ADMIN, timeout=10,
                      json={"name": "Live", "email": f"{unique_package_id()}@example.com"})
    dev = bearer(r.json()["token"])
    package_id = unique_package_id()
    r = requests.post(f"{base}/v1/apps", headers=dev, timeout=10,
                      json={"package_id": package_id, "name": "Live"})
    return dev, r.json()["app"]["id"], package_id


def test_hostile_uploads_through_the_live_stack(stack):
    base = stack.url
    bystander_dev, bystander_app, bystander_pid = new_app(base)
    bystander = build_package(bystander_pid, 5)
    ship(base, bystander_dev, bystander_app, 5, bystander, publish=True)
    dev, app_id, package_id = new_app(base)
    before = counts(stack.scheduler_url)

    cases = [c for c in CASES if c.name in LIVE_CASES]
    assert len(cases) == len(LIVE_CASES)
    wanted: dict[str, int] = {}
    for code, case in enumerate(cases, start=1):
        version = ship(base, dev, app_id, code, case.build(package_id, code), publish=False)
        result = case.code or "ok"
        wanted[result] = wanted.get(result, 0) + 1
        if case.code is None:
            assert version["status"] == "draft", (case.name, version["error"])
        else:
            assert version["status"] == "failed", (case.name, version)
            assert version["error"]["code"] == case.code, (case.name, version["error"])
            assert case.says in version["error"]["message"]

    assert stack.scheduler.alive() and stack.api.alive()
    assert "crashed" not in stack.scheduler.tail(2000)
    after = counts(stack.scheduler_url)
    for result, n in wanted.items():
        assert after.get(result, 0) - before.get(result, 0) == n, result
    assert list(stack.scratch.iterdir()) == []
    info = requests.get(f"{base}/v1/packages/{bystander_pid}/download", timeout=10).json()
    assert info["version_code"] == 5
    assert requests.get(info["download_url"], timeout=30).content == bystander
