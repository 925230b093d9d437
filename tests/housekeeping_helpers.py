"""Helpers for the retention, integrity and backup tests."""

from __future__ import annotations

import uuid

from app.platform.models import Version, VersionStatus as S
from app.catalog.packages import keys_of
from app.platform.storage import temp_key
from tests.helpers import ADMIN, build_package


def unique_bucket() -> str:
    return f"mosis-{uuid.uuid4().hex[:12]}"


def objects_of(svc, version_id: str) -> dict[str, bool]:
    """Which of a version's keys (package, manifest, temp) exist in storage."""
    v = Version.get_by_id(version_id)
    package, manifest = keys_of(v)
    return {name: svc.storage.exists(key) for name, key in
            (("package", package), ("manifest", manifest), ("temp", temp_key(v.upload_id)))}


def version_in(api, status: str) -> tuple[dict, dict, str]:
    """(developer, app, version id) of a fresh version brought to `status` through the API."""
    dev = api.new_developer()
    app = api.create_app(dev)
    client = api.client
    if status == S.UPLOADING:
        data = build_package(app["package_id"], 1)
        r = api.create_version(dev, app, 1, data)
        assert api.upload(r.json["upload"], data).status_code == 200
        return dev, app, r.json["version"]["id"]
    if status == S.FAILED:
        bad = build_package("com.other.package", 1)
        v = api.submit(dev, app, 1, bad)
        assert v["status"] == S.FAILED, v
        return dev, app, v["id"]
    if status in (S.DRAFT, S.REJECTED):
        v = api.submit(dev, app, 1)
        if status == S.REJECTED:
            r = client.post(f"/v1/admin/versions/{v['id']}/reject", json={"reason": "spam"}, headers=ADMIN)
            assert r.status_code == 200, r.json
        return dev, app, v["id"]
    if status == S.SUPERSEDED:
        old = api.ship(dev, app, 1)
        api.ship(dev, app, 2)
        return dev, app, old["id"]
    if status == S.PULLED:
        v = api.ship(dev, app, 1)
        r = client.post(f"/v1/admin/versions/{v['id']}/pull", json={"reason": "malware"}, headers=ADMIN)
        assert r.status_code == 200, r.json
        return dev, app, v["id"]
    raise ValueError(status)
