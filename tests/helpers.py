"""Test helpers: building `.mosis` packages and driving the API."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile

import requests


ADMIN_TOKEN = "adm_test_" + uuid.uuid4().hex


def manifest_for(package_id: str, version_code: int, **extra) -> dict:
    m = {"package_id": package_id, "version_code": version_code,
         "version_name": f"1.0.{version_code}", "name": "Test App", "permissions": ["network"],
         "min_platform": 1}
    m.update(extra)
    return m


def build_package(package_id: str, version_code: int, files: dict[str, bytes] | None = None,
                  compression: int = zipfile.ZIP_DEFLATED, **manifest_extra) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        z.writestr("manifest.json", json.dumps(manifest_for(package_id, version_code, **manifest_extra)))
        for name, data in (files or {"app/main.js": b"console.log('hello');\n" * 50}).items():
            z.writestr(name, data)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unique_package_id() -> str:
    return f"com.test.app{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


class Api:
    """Drives the Flask test client through the developer journey."""

    def __init__(self, client, services):
        self.client = client
        self.services = services

    def new_developer(self, name: str = "Dev") -> dict:
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        r = self.client.post("/v1/admin/developers", json={"name": name, "email": email}, headers=ADMIN)
        assert r.status_code == 201, r.json
        return {"id": r.json["developer"]["id"], "headers": bearer(r.json["token"]), **r.json}

    def create_app(self, dev: dict, package_id: str | None = None) -> dict:
        r = self.client.post("/v1/apps", json={"package_id": package_id or unique_package_id(),
                                               "name": "Test App"}, headers=dev["headers"])
        assert r.status_code == 201, r.json
        return r.json["app"]

    def create_version(self, dev, app, code: int, data: bytes, with_sha: bool = True):
        body = {"version_code": code, "version_name": f"1.0.{code}", "size": len(data)}
        if with_sha:
            body["sha256"] = sha256(data)
        return self.client.post(f"/v1/apps/{app['id']}/versions", json=body, headers=dev["headers"])

    def upload(self, upload: dict, data: bytes) -> requests.Response:
        return requests.request(upload["method"], upload["url"], data=data,
                                headers=upload["headers"], timeout=60)

    def complete(self, dev, app, code: int):
        return self.client.post(f"/v1/apps/{app['id']}/versions/{code}/complete", headers=dev["headers"])

    def version(self, dev, app, code: int) -> dict:
        r = self.client.get(f"/v1/apps/{app['id']}/versions/{code}", headers=dev["headers"])
        assert r.status_code == 200, r.json
        return r.json["version"]

    def publish(self, dev, app, code: int):
        return self.client.post(f"/v1/apps/{app['id']}/versions/{code}/publish", headers=dev["headers"])

    def validate_queue(self) -> list[str]:
        from app.validation_worker import run_pending

        return run_pending(self.services)

    def upload_and_complete(self, dev, app, code: int, data: bytes | None = None) -> dict:
        """Create, upload and complete a version (queued for validation); return it."""
        data = data if data is not None else build_package(app["package_id"], code)
        r = self.create_version(dev, app, code, data)
        assert r.status_code == 201, r.json
        assert self.upload(r.json["upload"], data).status_code == 200
        r = self.complete(dev, app, code)
        assert r.status_code == 202, r.json
        return r.json["version"]

    def submit(self, dev, app, code: int, data: bytes | None = None) -> dict:
        """Create, upload, complete and validate a version; return it."""
        self.upload_and_complete(dev, app, code, data)
        self.validate_queue()
        return self.version(dev, app, code)

    def ship(self, dev, app, code: int, data: bytes | None = None) -> dict:
        """submit() then publish; return the published version."""
        version = self.submit(dev, app, code, data)
        assert version["status"] == "draft", version
        r = self.publish(dev, app, code)
        assert r.status_code == 200, r.json
        return r.json["version"]
