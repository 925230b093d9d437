"""Test helpers: building `.mosis` packages and driving the API."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        from app.catalog.validation_worker import run_pending

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


class HttpApi:
    """Drives a running appliance over HTTP (through the edge), as a developer,
    an admin and a device would."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def call(self, method: str, path: str, expect: int | None = None, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        r = requests.request(method, self.base + path, **kwargs)
        if expect is not None:
            assert r.status_code == expect, (r.status_code, r.text)
        return r

    def new_developer(self) -> dict:
        r = self.call("POST", "/v1/admin/developers", 201, headers=ADMIN,
                      json={"name": "Dev", "email": f"{uuid.uuid4().hex[:10]}@example.com"})
        return {"id": r.json()["developer"]["id"], "headers": bearer(r.json()["token"])}

    def create_app(self, dev: dict, package_id: str | None = None) -> dict:
        r = self.call("POST", "/v1/apps", 201, headers=dev["headers"],
                      json={"package_id": package_id or unique_package_id(), "name": "Test App"})
        return r.json()["app"]

    def create_version(self, dev: dict, app: dict, code: int, data: bytes) -> dict:
        r = self.call("POST", f"/v1/apps/{app['id']}/versions", 201, headers=dev["headers"], json={
            "version_code": code, "version_name": f"1.0.{code}", "size": len(data), "sha256": sha256(data)})
        return r.json()

    def wait_status(self, dev: dict, app: dict, code: int, wanted: set, timeout: float = 30) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while True:
            version = self.call("GET", f"/v1/apps/{app['id']}/versions/{code}", 200,
                                headers=dev["headers"]).json()["version"]
            if version["status"] in wanted or time.monotonic() > deadline:
                return version
            time.sleep(0.2)

    def ship(self, dev: dict, app: dict, code: int, data: bytes | None = None) -> dict:
        """Create, upload (to the presigned URL), complete, await validation, publish."""
        data = data if data is not None else build_package(app["package_id"], code)
        upload = self.create_version(dev, app, code, data)["upload"]
        put = requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"],
                               timeout=60)
        assert put.status_code == 200, put.text
        self.call("POST", f"/v1/apps/{app['id']}/versions/{code}/complete", 202, headers=dev["headers"])
        version = self.wait_status(dev, app, code, {"draft", "failed"})
        assert version["status"] == "draft", version["error"]
        return self.call("POST", f"/v1/apps/{app['id']}/versions/{code}/publish", 200,
                         headers=dev["headers"]).json()["version"]

    def download_info(self, package_id: str) -> dict:
        return self.call("GET", f"/v1/packages/{package_id}/download", 200).json()


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def reply(handler: BaseHTTPRequestHandler, status: int, body) -> None:
    """Answer `body`: bytes as they are, anything else as JSON."""
    raw = isinstance(body, bytes)
    data = body if raw else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """`handler` served on 127.0.0.1 (a free port) from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class CloudflareStub:
    """Cloudflare's purge API, recorded: the one third party we cannot reach."""

    def __init__(self):
        self.calls: list[dict] = []
        self.fail = False
        stub = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.calls.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                   "body": json.loads(body)})
                status, answer = (500, {"success": False, "errors": [{"code": 10000}]}) if stub.fail else (
                    200, {"success": True, "errors": [], "messages": [], "result": {"id": "purge"}})
                reply(self, status, answer)

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/client/v4"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def bytes_behind_link(services, info: dict) -> bytes:
    """What the edge serves for a download link, without an edge running: the
    link must be one the edge accepts (its signature and expiry), and the bytes
    are the object's in storage. tests/test_edge.py downloads through a real edge."""
    import time
    from urllib.parse import parse_qs, urlsplit

    from app.edge.nginx import signed_link

    link, cdn = info["download_url"], services.settings.resolved_cdn_url
    key = link[len(cdn) + 1:].split("?")[0]
    expires = int(parse_qs(urlsplit(link).query)["expires"][0])
    assert expires > time.time()
    assert link == signed_link(cdn, key, services.download_link_secret, expires)
    return b"".join(services.storage.stream(key))
