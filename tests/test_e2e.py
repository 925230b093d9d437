"""The whole journey over HTTP against real processes: the edge (nginx), gunicorn,
scheduler, S3 — everything through the edge, as `scripts/run` serves it."""

from __future__ import annotations

import time

import requests

from mosis_format.signing import package_message, verify_raw
from tests.helpers import ADMIN, bearer, build_package, sha256, unique_package_id
from tests.monitoring_helpers import scraped


def wait_for_status(url, headers, wanted, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = requests.get(url, headers=headers, timeout=10).json()["version"]
        if version["status"] in wanted:
            return version
        time.sleep(0.2)
    raise AssertionError(f"version stayed {version['status']}")


def test_developer_ships_and_device_downloads(live_stack):
    base = live_stack.edge_url
    r = requests.post(f"{base}/v1/admin/developers", json={"name": "Ada", "email": "ada@example.com"},
                      headers=ADMIN, timeout=10)
    assert r.status_code == 201
    dev = bearer(r.json()["token"])

    package_id = unique_package_id()
    r = requests.post(f"{base}/v1/apps", json={"package_id": package_id, "name": "Notes"},
                      headers=dev, timeout=10)
    assert r.status_code == 201
    app_id = r.json()["app"]["id"]

    data = build_package(package_id, 42, files={"big.bin": bytes(range(256)) * 20000})
    r = requests.post(f"{base}/v1/apps/{app_id}/versions", headers=dev, timeout=10, json={
        "version_code": 42, "version_name": "1.4.2", "size": len(data), "sha256": sha256(data)})
    assert r.status_code == 201
    upload = r.json()["upload"]
    assert upload["url"].startswith(f"{base}/{live_stack.settings.bucket}/temp/")  # through the edge
    put = requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"], timeout=60)
    assert put.status_code == 200

    r = requests.post(f"{base}/v1/apps/{app_id}/versions/42/complete", headers=dev, timeout=30)
    assert r.status_code == 202
    version = wait_for_status(f"{base}/v1/apps/{app_id}/versions/42", dev, {"draft", "failed"})
    assert version["status"] == "draft", version["error"]

    r = requests.post(f"{base}/v1/apps/{app_id}/versions/42/publish", headers=dev, timeout=10)
    assert r.status_code == 200

    info = requests.get(f"{base}/v1/packages/{package_id}/download", timeout=10).json()
    assert info["download_url"].startswith(f"{base}/packages/")
    body = requests.get(info["download_url"], timeout=60).content
    assert body == data and sha256(body) == info["sha256"] and info["size"] == len(data)
    key = requests.get(f"{base}/v1/signing-key", timeout=10).json()
    assert verify_raw(key["public_key"], info["signature"],
                  package_message(package_id, 42, info["sha256"], info["size"]))

    metrics = requests.get(f"{live_stack.url}/metrics", timeout=10).text  # the API's own, not public
    assert scraped(metrics, "mosis_download_links_total") == 1
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    # The scheduler validated this stack's one version, and counted it as passed.
    scheduler = requests.get(f"{live_stack.scheduler_url}/metrics", timeout=10).text
    assert scraped(scheduler, "mosis_validations_total", result="ok") == 1
    assert scraped(scheduler, "mosis_validations_total") == 1  # and nothing else
