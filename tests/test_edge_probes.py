"""Hostile requests at the edge, through real nginx, gunicorn and SeaweedFS.

Every location that talks to storage takes only the key shapes it serves,
checked on the raw request line; what it forwards to storage is built from
those checks only, and only the headers it means to pass go either way.
Public reads are cacheable by design and micro-cached by the edge. Nothing
a client sends makes a signature or a token reach a log file.
"""

from __future__ import annotations

import concurrent.futures
from http.client import HTTPConnection, HTTPResponse
import json
import os
import socket
import time
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import requests

from app.edge.nginx import signed_link
from app.native import free_ports, start_edge
from app.platform.storage import Storage, icon_key, screenshot_key, temp_key
from tests.helpers import ADMIN, HttpApi, build_package, sha256
from tests.stack import edge_settings, start_live_stack
from tests.test_edge import base_settings, package_key_of, reached_upstream

# What a storage response may carry to a client, and what the edge adds itself.
STORAGE_ALLOWED = {"content-type", "content-length", "etag", "last-modified", "accept-ranges", "content-range",
                   "content-disposition"}
EDGE_OWN = {"server", "date", "connection", "keep-alive", "transfer-encoding", "x-request-id", "x-cache-status",
            "cache-control", "x-content-type-options", "content-security-policy"}
ASSET_CSP = "default-src 'none'; sandbox"

# Escapes that must never reach storage, decoded or not, and where they go.
PROBES = {
    "crlf header injection": "%20HTTP/1.1%0d%0aRange:%20bytes=0-3%0d%0aX-Pad:%20x",
    "cr": "%0dX",
    "lf": "%0aX",
    "nul": "%00.png",
    "encoded ?": "%3Fresponse-content-type=text/html",
    "encoded #": "%23x",
    "encoded ..": "/%2e%2e/x",
    "encoded /": "%2fx",
    "encoded backslash": "%5cx",
}


# -- raw HTTP ----------------------------------------------------------------------------


class Raw:
    """A response read off the socket as sent: every header line kept."""

    def __init__(self, response: HTTPResponse):
        self.status = response.status
        self.headers = response.getheaders()
        self.body = response.read()

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    @property
    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def json(self) -> dict:
        return json.loads(self.body)


def raw(base_url: str, target: str, method: str = "GET", headers: dict | None = None,
        body: bytes | None = None) -> Raw:
    """Send `target` exactly as written (no quoting, no normalisation)."""
    u = urlparse(base_url)
    conn = HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", u.netloc)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return Raw(conn.getresponse())
    finally:
        conn.close()


def raw_bytes(base_url: str, data: bytes) -> Raw:
    """Send a request byte for byte, whatever it holds."""
    u = urlparse(base_url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(data)
        response = HTTPResponse(sock)
        response.begin()
        return Raw(response)


def log_line(stack, response: Raw) -> dict:
    request_id = response.one("X-Request-ID")
    for _ in range(50):
        found = [e for e in stack.log_entries() if e["request_id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line for request {request_id}")


def assert_refused_at_the_edge(stack, response: Raw, name: str, statuses=(400, 404)) -> None:
    """Refused with a JSON error before the app, storage or the cache saw it."""
    assert response.status in statuses, (name, response.status, response.body[:300])
    assert response.one("Content-Type").startswith("application/json"), name
    assert response.json()["error"]["code"], name
    assert response.one("Cache-Control") == "no-store", name
    entry = log_line(stack, response)
    assert reached_upstream(entry) == [] and entry["cache"] == "", (name, entry)


# -- stacks --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(weed, tmp_path_factory):
    base = tmp_path_factory.mktemp("probes")
    http_port, internal_port = free_ports(2)
    running = start_live_stack(edge_settings(base_settings(weed, base), http_port, internal_port))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def private_stack(weed, tmp_path_factory):
    """The bucket without a public policy: asset misses ask the app first."""
    base = tmp_path_factory.mktemp("probes-private")
    http_port, internal_port = free_ports(2)
    running = start_live_stack(edge_settings(base_settings(weed, base, s3_public_assets=False),
                                             http_port, internal_port), scheduler=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def storage(stack):
    return Storage(stack.settings)


@pytest.fixture(scope="module")
def http(stack):
    return HttpApi(stack.edge_url)


@pytest.fixture(scope="module")
def shipped_app(http):
    """A published app with a package, an icon and a screenshot in storage."""
    dev = http.new_developer()
    app = http.create_app(dev)
    data = build_package(app["package_id"], 1, files={"payload.bin": os.urandom(100_000)},
                         compression=zipfile.ZIP_STORED)
    version = http.ship(dev, app, 1, data)
    return {"dev": dev, "app": app, "version": version, "data": data}


@pytest.fixture(scope="module")
def icon(stack, storage, shipped_app):
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    key = icon_key(shipped_app["app"]["id"], 1, 64)
    storage.put(key, data, content_type="image/png")
    return key, data


def fresh_package(http, size: int = 50_000):
    dev = http.new_developer()
    app = http.create_app(dev)
    data = build_package(app["package_id"], 1, files={"payload.bin": os.urandom(size)},
                         compression=zipfile.ZIP_STORED)
    version = http.ship(dev, app, 1, data)
    return dev, app, version, data


# -- probes on every storage-facing location -------------------------------------------------


def probe_paths(clean: str) -> dict[str, str]:
    """`clean` (a key's path) with each probe put where it would do harm."""
    head, _, last = clean.rpartition("/")
    out = {}
    for name, probe in PROBES.items():
        if probe.startswith("/"):  # a path segment of its own
            out[name] = f"{head}{probe}/{last}"
        elif probe.startswith("%2f") or probe.startswith("%5c"):
            out[name] = f"{head}{probe[:3]}{last}"
        else:
            out[name] = f"{clean}{probe}"
    return out


@pytest.mark.parametrize("which", ["public", "private"])
def test_asset_probes_never_reach_storage_or_the_cache(request, which, weed):
    stack = request.getfixturevalue("stack" if which == "public" else "private_stack")
    store = Storage(stack.settings)
    app_id = os.urandom(16).hex()
    key = icon_key(app_id, 1, 64)
    shot = screenshot_key(app_id, 1)
    for k in (key, shot):
        store.put(k, b"\x89PNG\r\n\x1a\n" + os.urandom(100), content_type="image/png")
    cases = {f"icon, {n}": t for n, t in probe_paths(f"/{key}").items()}
    cases.update({f"screenshot, {n}": t for n, t in probe_paths(f"/{shot}").items()})
    cases.update({
        "query override": f"/{shot}?response-content-type=text/html",
        "query cache buster": f"/{key}?x=1",
        "encoded ? in the query": f"/{key}?a=%3F",
        "not an asset key": f"/assets/{app_id}/other.html",
        "dot segment": f"/assets/{app_id}/icons/1/../1/icon-64.png",
        "double slash": f"/assets/{app_id}//icons/1/icon-64.png",
    })
    for name, target in cases.items():
        assert_refused_at_the_edge(stack, raw(stack.edge_url, target), name)
    # The clean key is served, with the type it was stored with.
    ok = raw(stack.edge_url, f"/{shot}")
    assert ok.status == 200 and ok.one("Content-Type") == "image/png"


def test_package_probes_are_refused_even_when_signed(stack, http, shipped_app):
    secret, cdn = stack.settings.download_link_secret, stack.settings.resolved_cdn_url
    url = http.download_info(shipped_app["app"]["package_id"])["download_url"]
    key = package_key_of(url, cdn)
    expires = int(time.time()) + 600

    def signed(target_path: str) -> str:
        # Signed the way today's nginx checks it: over the decoded path.
        link = signed_link("", unquote(target_path).lstrip("/"), secret, expires)
        return target_path + link[link.index("?"):]

    cases = {name: signed(t) for name, t in probe_paths(f"/{key}").items()}
    query = url[url.index("?"):]
    cases.update({
        "extra query parameter": f"/{key}{query}&response-content-type=text/html",
        "crlf in the query": f"/{key}{query}%0d%0aX-Pad:%20x",
        "manifest with a package's signature": f"/{key.replace('package.mosis', 'manifest.json')}{query}",
    })
    for name, target in cases.items():
        assert_refused_at_the_edge(stack, raw(stack.edge_url, target), name, statuses=(400, 403, 404))
    ok = raw(stack.edge_url, f"/{key}{query}")
    assert ok.status == 200 and ok.body == shipped_app["data"]


def test_upload_probes_never_reach_storage(stack, http, storage):
    dev = http.new_developer()
    app = http.create_app(dev)
    data = build_package(app["package_id"], 1)
    upload = http.create_version(dev, app, 1, data)["upload"]
    parsed = urlparse(upload["url"])
    clean, query = parsed.path, parsed.query
    cases = {name: f"{t}?{query}" for name, t in probe_paths(clean).items()}
    cases.update({
        "crlf in the query": f"{clean}?{query}%0d%0aX-Injected:%20y",
        "extra query parameter": f"{clean}?{query}&response-content-type=text/html",
        "another bucket's key": f"/other-bucket{clean[clean.index('/temp/'):]}?{query}",
        "a package key": f"/{stack.settings.bucket}/packages/x/y/1/package.mosis?{query}",
    })
    for name, target in cases.items():
        r = raw(stack.edge_url, target, "PUT", headers={"Content-Type": "application/octet-stream"}, body=data)
        assert_refused_at_the_edge(stack, r, name, statuses=(400, 403, 404))
    temp = clean.split(f"/{stack.settings.bucket}/", 1)[1]
    assert storage.stat(temp) is None
    ok = raw(stack.edge_url, f"{clean}?{query}", "PUT", headers={"Content-Type": "application/octet-stream"},
             body=data)
    assert ok.status == 200 and storage.stat(temp).size == len(data)


# -- what goes to storage, and what comes back -----------------------------------------------


def assert_only_allowed_headers(response: Raw, name: str) -> None:
    extra = response.names - STORAGE_ALLOWED - EDGE_OWN
    assert not extra, (name, extra, response.headers)
    for header in response.names:
        assert not header.startswith(("x-amz-", "seaweed-", "x-minio-")), (name, header)
    assert response.one("Server") in (None, "nginx"), name


def test_storage_headers_are_allow_listed(stack, private_stack, http, storage, icon, shipped_app):
    key, data = icon
    url = http.download_info(shipped_app["app"]["package_id"])["download_url"]
    target = url[len(stack.settings.resolved_cdn_url):]
    miss = raw(stack.edge_url, target)
    hit = raw(stack.edge_url, target)
    etag = hit.one("ETag")
    responses = {
        "asset miss": raw(stack.edge_url, f"/{key}"),
        "asset hit": raw(stack.edge_url, f"/{key}"),
        "asset range": raw(stack.edge_url, f"/{key}", headers={"Range": "bytes=0-3"}),
        "asset multi-range": raw(stack.edge_url, f"/{key}", headers={"Range": "bytes=0-3,10-12"}),
        "asset head": raw(stack.edge_url, f"/{key}", "HEAD"),
        "missing asset": raw(stack.edge_url, f"/{icon_key(os.urandom(16).hex(), 1, 64)}"),
        "package miss": miss,
        "package hit": hit,
        "package range": raw(stack.edge_url, target, headers={"Range": "bytes=5-9"}),
        "package multi-range": raw(stack.edge_url, target, headers={"Range": "bytes=0-9,20-29"}),
        "package not modified": raw(stack.edge_url, target, headers={"If-None-Match": etag}),
    }
    priv_key = icon_key(os.urandom(16).hex(), 1, 32)
    Storage(private_stack.settings).put(priv_key, data, content_type="image/png")
    responses["private asset miss"] = raw(private_stack.edge_url, f"/{priv_key}")
    responses["private asset hit"] = raw(private_stack.edge_url, f"/{priv_key}")
    dev = http.new_developer()
    app = http.create_app(dev)
    pkg = build_package(app["package_id"], 1)
    upload = urlparse(http.create_version(dev, app, 1, pkg)["upload"]["url"])
    responses["upload"] = raw(stack.edge_url, f"{upload.path}?{upload.query}", "PUT",
                              headers={"Content-Type": "application/octet-stream"}, body=pkg)
    for name, r in responses.items():
        assert_only_allowed_headers(r, name)
    assert responses["asset multi-range"].status == 206
    assert responses["package not modified"].status == 304
    assert responses["upload"].status == 200 and responses["upload"].one("ETag")


def test_one_content_type_on_every_range_answer(stack, http, icon, shipped_app):
    key, data = icon
    url = http.download_info(shipped_app["app"]["package_id"])["download_url"]
    target = url[len(stack.settings.resolved_cdn_url):]
    package = shipped_app["data"]
    raw(stack.edge_url, target)  # cached
    for what, path, body, single_type in (("package", target, package, "application/octet-stream"),
                                          ("asset", f"/{key}", data, "image/png")):
        multi = raw(stack.edge_url, path, headers={"Range": "bytes=0-9,20-29"})
        assert multi.status == 206, what
        (content_type,) = multi.all("Content-Type")
        assert content_type.startswith("multipart/byteranges; boundary="), (what, content_type)
        boundary = content_type.split("boundary=", 1)[1]
        parts = multi.body.split(b"--" + boundary.encode())[1:-1]
        assert [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts] == [body[0:10], body[20:30]], what
        assert all(f"Content-Type: {single_type}".encode() in p for p in parts), what
        single = raw(stack.edge_url, path, headers={"Range": "bytes=0-9"})
        assert single.status == 206 and single.all("Content-Type") == [single_type], what
        assert single.body == body[:10], what


def test_packages_carry_their_file_name_and_assets_cannot_run(stack, http, icon):
    _, app, _, data = fresh_package(http)
    url = http.download_info(app["package_id"])["download_url"]
    target = url[len(stack.settings.resolved_cdn_url):]
    disposition = f'attachment; filename="{app["package_id"]}-1.mosis"'
    for attempt in ("MISS", "HIT"):
        r = raw(stack.edge_url, target)
        assert r.status == 200 and r.body == data and r.one("X-Cache-Status") == attempt
        assert r.one("Content-Disposition") == disposition, attempt
        assert r.one("Content-Type") == "application/octet-stream"
        assert r.one("X-Content-Type-Options") == "nosniff"
    key, _ = icon
    for attempt in range(2):
        a = raw(stack.edge_url, f"/{key}")
        assert a.status == 200 and a.one("Content-Type") == "image/png"
        assert a.one("X-Content-Type-Options") == "nosniff"
        assert a.one("Content-Security-Policy") == ASSET_CSP
        assert a.one("Content-Disposition") is None


def test_client_headers_do_not_reach_storage(stack, http, storage):
    """A device's own Authorization header (or any other) is not storage's business."""
    app_id = os.urandom(16).hex()
    key = icon_key(app_id, 1, 32)
    storage.put(key, b"\x89PNG\r\n\x1a\n" + os.urandom(100), content_type="image/png")
    bogus = {"Authorization": "AWS4-HMAC-SHA256 Credential=nobody/20260101/us-east-1/s3/aws4_request, "
                              "SignedHeaders=host, Signature=" + "0" * 64,
             "X-Amz-Expected-Bucket-Owner": "999999999999"}
    r = raw(stack.edge_url, f"/{key}", headers=bogus)
    assert r.status == 200 and r.one("X-Cache-Status") == "MISS"
    _, app, _, data = fresh_package(http)
    url = http.download_info(app["package_id"])["download_url"]
    p = raw(stack.edge_url, url[len(stack.settings.resolved_cdn_url):],
            headers={"Authorization": "Bearer mos_device_token"})
    assert p.status == 200 and p.body == data


def test_uploads_pass_only_the_headers_meant_for_storage(stack, http, storage):
    dev = http.new_developer()
    app = http.create_app(dev)
    data = build_package(app["package_id"], 1)
    upload = http.create_version(dev, app, 1, data)["upload"]
    temp = urlparse(upload["url"]).path.split(f"/{stack.settings.bucket}/", 1)[1]
    bucket = stack.settings.bucket

    gz = requests.put(upload["url"], data=data, headers={**upload["headers"], "Content-Encoding": "gzip"},
                      timeout=30)
    assert gz.status_code == 400 and gz.json()["error"]["code"] == "content_encoding_not_allowed"
    assert storage.stat(temp) is None

    hostile = {"Content-Type": "text/html", "X-Amz-Meta-Evil": "1", "Cache-Control": "max-age=9",
               "Content-Disposition": "inline", "X-Amz-Website-Redirect-Location": "/x",
               "X-Amz-Tagging": "a=b", "Content-Language": "xx"}
    r = requests.put(upload["url"], data=data, headers=hostile, timeout=30)
    assert r.status_code == 200, r.text
    stat = storage.client.stat_object(bucket, temp)
    assert stat.content_type == "application/octet-stream"
    meta = {k.lower(): v for k, v in stat.metadata.items()}
    assert not any(k.startswith("x-amz-meta-") for k in meta), meta
    assert "cache-control" not in meta and "content-disposition" not in meta and "content-language" not in meta
    assert storage.read_range(temp, 0, 10**6) == data

    chunked = requests.put(upload["url"], data=iter([data]), headers=upload["headers"], timeout=30)
    assert chunked.status_code == 411 and chunked.json()["error"]["code"] == "length_required"
    http.call("POST", f"/v1/apps/{app['id']}/versions/1/complete", 202, headers=dev["headers"])
    assert http.wait_status(dev, app, 1, {"draft", "failed"})["status"] == "draft"


# -- malformed requests, edge errors ----------------------------------------------------------


def test_malformed_urls_get_a_json_400_not_an_html_page(stack):
    targets = ["/v1/signing-key%00", "/assets/x%00y", "/%00", "/v1/apps%0d%0aX:%20y", "/v1/%zz",
               "/healthz%5c", "/v1/packages/com.example.x%2f..%2fdownload", "/v1/../metrics"]
    for target in targets:
        r = raw(stack.edge_url, target)
        assert r.status == 400, (target, r.status, r.body[:200])
        assert r.one("Content-Type").startswith("application/json"), target
        assert r.json()["error"]["code"] in ("bad_request", "malformed_url"), target
    # A request line nginx cannot even parse.
    r = raw_bytes(stack.edge_url, b"GET /v1/signing-key%00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 400 and r.json()["error"]["code"] in ("bad_request", "malformed_url")
    r = raw_bytes(stack.edge_url, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 414 and r.json()["error"]["code"] == "uri_too_long"
    r = raw_bytes(stack.edge_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n")
    assert r.status == 400 and r.json()["error"]["code"] == "bad_request"
    r = raw_bytes(stack.edge_url, b"GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n")
    assert r.status == 505 and r.json()["error"]["code"] == "http_version_not_supported"
    r = raw_bytes(stack.edge_url, b"POST /v1/apps HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert r.status == 501 and r.json()["error"]["code"] == "not_implemented"


def test_tokens_in_query_strings_are_refused(stack):
    r = raw(stack.edge_url, "/v1/apps?access_token=mos_secret_in_query")
    assert r.status == 400 and r.json()["error"]["code"] == "token_in_query"
    assert reached_upstream(log_line(stack, r)) == []


# -- public reads: cacheable, micro-cached, purged ---------------------------------------------


def public_reads(package_id: str) -> list[str]:
    return [f"/v1/packages/{package_id}", f"/v1/packages/{package_id}/download", "/v1/signing-key",
            "/v1/openapi.json"]


def test_public_reads_carry_etags_and_answer_304(stack, http):
    _, app, _, _ = fresh_package(http)
    settings = stack.settings
    for path in public_reads(app["package_id"]):
        first = raw(stack.edge_url, path)
        assert first.status == 200, path
        etag = first.one("ETag")
        assert etag and etag.startswith('"'), path
        cache_control = first.one("Cache-Control")
        assert cache_control.startswith("public, max-age="), (path, cache_control)
        assert "stale-while-revalidate=" in cache_control, path
        again = raw(stack.edge_url, path)
        assert again.status == 200 and again.one("X-Cache-Status") == "HIT", path
        assert again.body == first.body and again.one("ETag") == etag, path
        assert reached_upstream(log_line(stack, again)) == [], path
        not_modified = raw(stack.edge_url, path, headers={"If-None-Match": etag})
        assert not_modified.status == 304 and not_modified.body == b"", path
        # The app answers the same question the same way (without the edge).
        direct = requests.get(stack.url + path, headers={"If-None-Match": etag}, timeout=10)
        assert direct.status_code == 304, path
    listing = raw(stack.edge_url, f"/v1/packages/{app['package_id']}").one("Cache-Control")
    assert f"max-age={settings.public_read_max_age}" in listing
    # The active key and the keyring change on a rotation: kept as briefly as
    # the listing (and purged); a keyring version never changes.
    key = raw(stack.edge_url, "/v1/signing-key").one("Cache-Control")
    assert f"max-age={settings.public_read_max_age}" in key
    version = raw(stack.edge_url, "/v1/signing-keys/1").one("Cache-Control")
    assert f"max-age={settings.public_static_max_age}" in version


def test_a_burst_of_reads_asks_the_app_once(stack, http):
    _, app, _, _ = fresh_package(http)
    path = f"/v1/packages/{app['package_id']}/download"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: raw(stack.edge_url, path), range(16)))
    assert {r.status for r in answers} == {200}
    assert len({r.body for r in answers}) == 1
    asked = [r for r in answers if reached_upstream(log_line(stack, r))]
    assert len(asked) == 1, [log_line(stack, r) for r in answers]


def test_a_query_string_is_not_a_cache_entry(stack, http):
    _, app, _, _ = fresh_package(http)
    path = f"/v1/packages/{app['package_id']}"
    for n in range(3):
        r = raw(stack.edge_url, f"{path}?n={n}")
        assert r.status == 200 and r.one("X-Cache-Status") in ("BYPASS", None)
        assert reached_upstream(log_line(stack, r))


def test_download_links_from_the_cache_stay_valid(stack, http):
    _, app, _, data = fresh_package(http)
    settings = stack.settings
    interval = settings.public_read_max_age + settings.public_read_stale
    path = f"/v1/packages/{app['package_id']}/download"
    raw(stack.edge_url, path)
    cached = raw(stack.edge_url, path)
    assert cached.one("X-Cache-Status") == "HIT"
    info = cached.json()
    expires = int(info["download_url"].split("expires=")[1].split("&")[0])
    assert expires - time.time() >= settings.download_url_ttl - interval
    assert requests.get(info["download_url"], timeout=30).content == data


def test_a_publish_is_visible_within_the_interval(stack, http):
    dev, app, _, _ = fresh_package(http)
    settings = stack.settings
    interval = settings.public_read_max_age + settings.public_read_stale
    paths = public_reads(app["package_id"])[:2]
    for path in paths:
        raw(stack.edge_url, path)
        assert raw(stack.edge_url, path).one("X-Cache-Status") == "HIT", path
    data = build_package(app["package_id"], 2)
    http.ship(dev, app, 2, data)
    published = time.monotonic()
    for path in paths:
        while True:
            r = raw(stack.edge_url, path)
            code = r.json()["latest"]["version_code"] if path.endswith(app["package_id"]) \
                else r.json()["version_code"]
            if code == 2:
                break
            assert time.monotonic() - published <= interval, (path, r.json())
            time.sleep(0.2)
    info = http.download_info(app["package_id"])
    assert sha256(requests.get(info["download_url"], timeout=30).content) == sha256(data)


def test_a_pull_purges_the_cached_listing_and_download_info(stack, http):
    _, app, version, _ = fresh_package(http)
    paths = public_reads(app["package_id"])[:2]
    for path in paths:
        raw(stack.edge_url, path)
        assert raw(stack.edge_url, path).one("X-Cache-Status") == "HIT", path
    http.call("POST", f"/v1/admin/versions/{version['id']}/pull", 200, headers=ADMIN, json={"reason": "malware"})
    for path in paths:
        r = raw(stack.edge_url, path)
        assert r.status == 404 and r.json()["error"]["code"] == "package_not_found", (path, r.status)


# -- secrets never reach a log ----------------------------------------------------------------


def test_no_signature_or_token_reaches_any_log(stack, http, tmp_path, weed):
    """413s, rate limiting, a refused token and storage that is away: every
    condition that makes nginx log a request, with secrets in the URLs."""
    settings = stack.settings.replace(edge_api_rate=1, edge_api_burst=1,
                                      edge_access_log=str(tmp_path / "logs" / "edge-access.log"))
    port, internal = free_ports(2)
    edge = start_edge(settings.replace(public_url=f"http://127.0.0.1:{port}"), http_port=port,
                      internal_port=internal, app_bind=stack.env["MOSIS_APP_BIND"],
                      log_dir=tmp_path / "logs", prefix=tmp_path / "edge")
    dead_port, dead_internal, dead_storage = free_ports(3)
    dead = start_edge(settings.replace(public_url=f"http://127.0.0.1:{dead_port}",
                                       s3_endpoint=f"http://127.0.0.1:{dead_storage}",
                                       edge_access_log=str(tmp_path / "dead-logs" / "edge-access.log")),
                      http_port=dead_port, internal_port=dead_internal, app_bind=stack.env["MOSIS_APP_BIND"],
                      log_dir=tmp_path / "dead-logs", prefix=tmp_path / "dead-edge")
    secrets: list[str] = ["mos_secret_in_query"]
    try:
        edge.wait_ready(30)
        dead.wait_ready(30)
        base, dead_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dead_port}"
        dev = http.new_developer()
        app = http.create_app(dev)
        limit = stack.settings.limits.max_package_bytes
        upload = http.create_version(dev, app, 1, b"x" * limit)["upload"]
        u = urlparse(upload["url"])
        secrets.append(u.query.split("X-Amz-Signature=")[1].split("&")[0])
        # Too large, declared and streamed.
        r = raw(base, f"{u.path}?{u.query}", "PUT", body=b"x" * (limit + 1))
        assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"
        # Rate limited, with a token in the query and in the header.
        token = dev["headers"]["Authorization"].split()[1]
        secrets.append(token)
        statuses = [raw(base, "/v1/apps?access_token=mos_secret_in_query").status for _ in range(3)]
        statuses += [raw(base, "/v1/apps", headers=dev["headers"]).status for _ in range(6)]
        assert 429 in statuses and 400 in statuses, statuses
        readiness = [raw(base, "/readyz") for _ in range(12)]
        limited = [r for r in readiness if r.status == 429]
        assert limited and limited[0].json()["error"]["code"] == "rate_limited"
        # Storage away: the upload and a package miss fail upstream.
        r = raw(dead_base, f"{u.path}?{u.query}", "PUT", body=b"x" * 100)
        assert r.status == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        _, papp, _, _ = fresh_package(http)
        link = http.download_info(papp["package_id"])["download_url"]
        secrets.append(link.split("md5=")[1])
        r = raw(dead_base, link[len(stack.settings.resolved_cdn_url):])
        assert r.status == 502
        secrets.append(link.split("expires=")[1].split("&")[0] + "&md5")
    finally:
        edge.stop()
        dead.stop()
    logs = [p for d in (tmp_path / "logs", tmp_path / "dead-logs", tmp_path / "edge", tmp_path / "dead-edge")
            for p in d.rglob("*.log")]
    assert any(p.name == "edge-error.log" for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets + ["X-Amz-Signature", "X-Amz-Credential", "access_token", "md5="]:
            assert secret not in text, (path.name, secret, text[-2000:])


def test_an_error_found_while_answering_has_only_its_own_headers(stack, http, shipped_app):
    """A range outside a cached package is found as the package is sent: the
    JSON error carries the error's headers, not the package's."""
    url = http.download_info(shipped_app["app"]["package_id"])["download_url"]
    target = url[len(stack.settings.resolved_cdn_url):]
    raw(stack.edge_url, target)  # cached
    r = raw(stack.edge_url, target, headers={"Range": "bytes=99999999-"})
    assert r.status == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
    assert r.one("Content-Type") == "application/json" and r.one("Cache-Control") == "no-store"
    assert r.one("Content-Range") == f"bytes */{len(shipped_app['data'])}"
    assert r.one("X-Request-ID") and r.one("X-Content-Type-Options") == "nosniff"
    assert not r.names & {"etag", "last-modified", "content-disposition", "accept-ranges"}, r.headers
    r = raw(stack.edge_url, target, headers={"If-Match": '"another-version"'})
    assert r.status == 412 and r.json()["error"]["code"] == "precondition_failed"
    assert r.one("Cache-Control") == "no-store" and not r.names & {"etag", "content-disposition"}
