"""The edge: real nginx in front of the real app (gunicorn) and real S3.

One stack serves the module (each test makes its own developer and app);
the storage outage test runs its own storage, so the session's stays up.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path

import pytest
import requests
from minio.datatypes import Part

from app.edge.nginx import signed_link
from app.edge.purge import EdgePurger
from app.native import WeedPorts, free_ports, start_edge, start_weed
from app.platform.config import PackageLimits, Settings
from app.platform.storage import Storage, icon_key, temp_key
from tests.helpers import ADMIN, ADMIN_TOKEN, CloudflareStub, HttpApi, build_package, sha256
from tests.stack import edge_settings, start_live_stack

LIMIT = 6 * 1024 * 1024  # the package size limit of this module's stack
IMMUTABLE = "public, max-age=86400, immutable"


@pytest.fixture(scope="module")
def cloudflare():
    stub = CloudflareStub()
    yield stub
    stub.close()


def base_settings(weed, base, **changes) -> Settings:
    return Settings(data_dir=base / "data", database_url=f"sqlite:///{base / 'mosis.db'}",
                    admin_token=ADMIN_TOKEN, s3_endpoint=weed.endpoint, s3_access_key=weed.access_key,
                    s3_secret_key=weed.secret_key, bucket="mosis-test", validation_poll_seconds=0.2,
                    limits=PackageLimits(max_package_bytes=LIMIT), edge_api_rate=1000,
                    edge_api_burst=1000, **changes)


@pytest.fixture(scope="module")
def stack(weed, tmp_path_factory, cloudflare):
    base = tmp_path_factory.mktemp("edge")
    http_port, internal_port = free_ports(2)
    settings = edge_settings(
        base_settings(weed, base, cloudflare_zone_id="zone-1", cloudflare_api_token="cf-token",
                      cloudflare_api_url=cloudflare.url),
        http_port, internal_port, cdn_url=f"http://localhost:{http_port}")
    running = start_live_stack(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def storage(stack):
    return Storage(stack.settings)


@pytest.fixture
def http(stack):
    return HttpApi(stack.edge_url)


def random_package(package_id: str, code: int, size: int = 400_000) -> bytes:
    import zipfile

    return build_package(package_id, code, files={"payload.bin": os.urandom(size)},
                         compression=zipfile.ZIP_STORED)


def shipped(http, code: int = 1, size: int = 400_000):
    dev = http.new_developer()
    app = http.create_app(dev)
    data = random_package(app["package_id"], code, size)
    version = http.ship(dev, app, code, data)
    return dev, app, version, data


def reached_upstream(entry: dict) -> list[str]:
    """The upstream answers a request waited for, from its log line."""
    return [t for t in entry["upstream_response_time"].replace(",", ":").split(":") if t.strip()]


def package_key_of(url: str, base: str) -> str:
    return url.split("?")[0][len(base) + 1:]


# -- downloads ----------------------------------------------------------------------


def test_download_misses_once_then_every_link_hits_one_entry(stack, http):
    _, app, _, data = shipped(http)
    info = http.download_info(app["package_id"])
    cdn = stack.settings.resolved_cdn_url
    assert info["download_url"].startswith(cdn + "/packages/")
    assert "expires=" in info["download_url"] and "md5=" in info["download_url"]

    first = requests.get(info["download_url"], headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert first.status_code == 200 and first.content == data and sha256(first.content) == info["sha256"]
    assert first.headers["X-Cache-Status"] == "MISS"
    assert first.headers["Cache-Control"] == IMMUTABLE
    assert first.headers["Accept-Ranges"] == "bytes"
    assert first.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in first.headers  # packages are never gzipped
    assert first.headers["ETag"] and first.headers["Last-Modified"]
    assert not any(h.lower().startswith("x-amz-") for h in first.headers)
    # The miss asked the app (may it be served?) and then storage; the log
    # names the object, not the edge's internal hand-over.
    miss = stack.log_for(first)
    assert len(reached_upstream(miss)) == 2 and miss["cache"] == "MISS"
    assert miss["uri"] == "/" + package_key_of(info["download_url"], cdn)

    # Another device's link (another expiry, so another signature): same entry.
    key = package_key_of(info["download_url"], cdn)
    other = signed_link(cdn, key, stack.settings.download_link_secret, int(time.time()) + 600)
    assert other != info["download_url"]
    second = requests.get(other, timeout=30)
    assert second.status_code == 200 and second.content == data
    assert second.headers["X-Cache-Status"] == "HIT"
    assert second.headers["ETag"] == first.headers["ETag"]
    entry = stack.log_for(second)
    assert entry["cache"] == "HIT" and reached_upstream(entry) == []  # neither app nor storage
    assert entry["uri"] == "/" + key and entry["status"] == 200 and entry["body_bytes_sent"] == len(data)


def test_range_and_conditional_requests(stack, http):
    _, app, _, data = shipped(http)
    url = http.download_info(app["package_id"])["download_url"]

    # A range on a cold object: the edge fetches the whole object once.
    cold = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert cold.status_code == 206 and cold.content == data[1000:2000]
    assert cold.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"

    hit = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=30)
    assert hit.status_code == 206 and hit.headers["X-Cache-Status"] == "HIT"
    assert hit.content == data[100:200] and hit.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = requests.get(url, headers={"Range": f"bytes={len(data) + 5}-"}, timeout=30)
    assert beyond.status_code == 416

    full = requests.get(url, timeout=30)
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    assert requests.get(url, headers={"If-Modified-Since": modified}, timeout=30).status_code == 304
    changed = requests.get(url, headers={"If-None-Match": '"something-else"'}, timeout=30)
    assert changed.status_code == 200 and changed.content == data
    assert requests.head(url, timeout=30).headers["Content-Length"] == str(len(data))


def test_a_delta_patch_is_served_like_a_package_and_dies_with_its_source(stack, http):
    from tests.delta_packages import app_files

    dev = http.new_developer()
    app = http.create_app(dev)
    package_id = app["package_id"]
    versions = {code: http.ship(dev, app, code, build_package(package_id, code, app_files(3, code)))
                for code in (1, 2)}
    # Through the edge, which caches the answer per from_version_code: the
    # scheduler's patch purges the answer without it.
    asked = f"{stack.edge_url}/v1/packages/{package_id}/download?from_version_code=1"
    deadline = time.monotonic() + 60
    while "delta" not in (answer := requests.get(asked, timeout=30).json()) and time.monotonic() < deadline:
        time.sleep(0.3)
    delta = answer["delta"]
    cdn = stack.settings.resolved_cdn_url
    key = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    assert delta["url"].startswith(f"{cdn}/{key}?expires=")
    plain = requests.get(f"{stack.edge_url}/v1/packages/{package_id}/download", timeout=30).json()
    assert "delta" not in plain  # another cache entry

    first = requests.get(delta["url"], timeout=30)
    assert first.status_code == 200 and first.headers["X-Cache-Status"] == "MISS"
    assert len(first.content) == delta["size"] and sha256(first.content) == delta["sha256"]
    assert first.headers["Cache-Control"] == IMMUTABLE and "Content-Encoding" not in first.headers
    assert first.headers["Content-Disposition"] == f'attachment; filename="{package_id}-1-2.patch"'
    assert stack.log_for(first)["uri"] == "/" + key
    part = requests.get(delta["url"], headers={"Range": "bytes=10-99"}, timeout=30)
    assert part.status_code == 206 and part.headers["X-Cache-Status"] == "HIT"
    assert part.content == first.content[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{delta['size']}"
    forged = delta["url"].replace("/1-2.patch", "/1-3.patch")
    assert requests.get(forged, timeout=30).status_code == 403  # the link signs the key

    # Pulling the source removes the patch: the cached copy too.
    source = http.call("GET", f"/v1/apps/{app['id']}/versions/1", 200, headers=dev["headers"]).json()["version"]
    assert source["id"] != versions[2]["id"]
    http.call("POST", f"/v1/admin/versions/{source['id']}/pull", 200, headers=ADMIN, json={"reason": "x"})
    gone = requests.get(delta["url"], timeout=30)
    assert gone.status_code == 404 and gone.headers["X-Cache-Status"] == "MISS"
    assert "delta" not in requests.get(asked, timeout=30).json()


def test_a_burst_of_misses_makes_one_storage_request(stack, http):
    _, app, _, data = shipped(http, size=2_000_000)
    url = http.download_info(app["package_id"])["download_url"]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: requests.get(url, timeout=60), range(12)))
    assert all(r.status_code == 200 and r.content == data for r in answers)
    entries = [stack.log_for(r) for r in answers]
    # Only one request fetched from storage (two upstreams: app, then storage).
    assert sum(1 for e in entries if len(reached_upstream(e)) == 2) == 1, entries


def test_bad_links_are_refused_before_the_app_or_storage(stack, http):
    _, app, _, _ = shipped(http)
    url = http.download_info(app["package_id"])["download_url"]
    base, query = url.split("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    cdn, secret = stack.settings.resolved_cdn_url, stack.settings.download_link_secret
    key = package_key_of(url, cdn)
    # (the first character: the last one of 22 carries only 2 bits, plus padding bits nginx ignores)
    flipped = ("A" if params["md5"][0] != "A" else "B") + params["md5"][1:]
    other_key = key.replace("/package.mosis", "/manifest.json")
    cases = {
        "tampered signature": (f"{base}?expires={params['expires']}&md5={flipped}", "link_invalid"),
        "tampered expiry": (f"{base}?expires={int(params['expires']) + 3600}&md5={params['md5']}",
                            "link_invalid"),
        "signature of another key": (f"{cdn}/{other_key}?{query}", "link_invalid"),
        "missing signature": (f"{base}?expires={params['expires']}", "link_invalid"),
        "missing everything": (base, "link_invalid"),
        "expired": (signed_link(cdn, key, secret, int(time.time()) - 5), "link_expired"),
        "signed with another secret": (signed_link(cdn, key, "x" * 43, int(time.time()) + 600),
                                       "link_invalid"),
    }
    for name, (bad, code) in cases.items():
        r = requests.get(bad, timeout=30)
        assert r.status_code == 403, name
        assert r.json()["error"]["code"] == code, name
        assert r.headers["Cache-Control"] == "no-store", name
        entry = stack.log_for(r)
        assert reached_upstream(entry) == [] and entry["cache"] == "", (name, entry)
    assert requests.get(url, timeout=30).status_code == 200  # the real link still works


# -- what else of the bucket is reachable -------------------------------------------------


def test_only_presigned_uploads_to_temp_reach_storage(stack, http, storage):
    bucket, base = stack.settings.bucket, stack.edge_url
    dev = http.new_developer()
    app = http.create_app(dev)
    data = random_package(app["package_id"], 1, 1000)
    upload = http.create_version(dev, app, 1, data)["upload"]
    assert upload["url"].startswith(f"{base}/{bucket}/temp/")
    assert requests.put(upload["url"], data=data, headers=upload["headers"], timeout=30).status_code == 200
    temp_path = upload["url"].split("?")[0][len(base):]
    read_url = storage.presigned_get(temp_path[len(bucket) + 2:], 600)  # signed for the edge
    assert read_url.startswith(base)

    refused = {
        "list the bucket": ("GET", f"{base}/{bucket}", 404),
        "list the bucket (v2)": ("GET", f"{base}/{bucket}/?list-type=2", 404),
        "list buckets": ("GET", f"{base}/", 404),
        "read temp with a presigned GET": ("GET", read_url, 405),
        "head temp": ("HEAD", read_url, 405),
        "read temp with the upload URL": ("GET", upload["url"], 405),
        "delete temp": ("DELETE", upload["url"], 405),
        "unsigned PUT": ("PUT", f"{base}{temp_path}", 403),
        "POST without multipart": ("POST", upload["url"], 405),
        "package by S3 path": ("GET", f"{base}/{bucket}/packages/x/y/1/package.mosis", 404),
        "write an asset": ("PUT", f"{base}/assets/{app['id']}/icon-32.png", 405),
        "the gate": ("GET", f"{base}/edge/objects/packages/x", 404),
        "app metrics": ("GET", f"{base}/metrics", 404),
        "other buckets": ("GET", f"{base}/other-bucket/temp/x/package.mosis", 404),
    }
    for name, (method, url, status) in refused.items():
        r = requests.request(method, url, data=b"x" if method in ("PUT", "POST") else None, timeout=30)
        assert r.status_code == status, (name, r.status_code, r.text)
        if method != "HEAD":
            assert r.headers["Content-Type"].startswith("application/json"), name
        assert reached_upstream(stack.log_for(r)) == [], name

    copy = requests.put(upload["url"], headers={"X-Amz-Copy-Source": f"/{bucket}/{temp_path}"}, timeout=30)
    assert copy.status_code == 403 and copy.json()["error"]["code"] == "copy_not_allowed"
    assert storage.stat(temp_path[len(bucket) + 2:]).size == len(data)  # untouched


def test_upload_through_the_edge_and_the_size_cap(stack, http, storage):
    dev = http.new_developer()
    app = http.create_app(dev)
    data = random_package(app["package_id"], 1, 200_000)
    assert http.ship(dev, app, 1, data)["status"] == "published"  # presigned PUT via the edge

    big = http.create_version(dev, app, 2, b"x" * LIMIT)["upload"]  # declared at the limit
    temp = big["url"].split("?")[0].split(f"/{stack.settings.bucket}/", 1)[1]
    r = requests.put(big["url"], data=b"x" * (LIMIT + 1), headers=big["headers"], timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    # Streamed without a length: nginx counts and stops at the cap.
    chunks = (b"y" * 65536 for _ in range(LIMIT // 65536 + 2))
    try:
        r = requests.put(big["url"], data=chunks, headers=big["headers"], timeout=60)
        assert r.status_code in (400, 411, 413), r.status_code
    except requests.ConnectionError:
        pass  # nginx may close the connection while the body still flows
    assert storage.stat(temp) is None
    # At the limit exactly, it goes through.
    ok = requests.put(big["url"], data=b"x" * LIMIT, headers=big["headers"], timeout=60)
    assert ok.status_code == 200 and storage.stat(temp).size == LIMIT


def test_multipart_part_uploads_pass_the_edge(stack, storage):
    """Presigned UploadPart requests (resumable uploads build on them)."""
    key = temp_key(os.urandom(16).hex())
    bucket = stack.settings.bucket
    upload_id = storage.client._create_multipart_upload(bucket, key, {})
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    etags = []
    for number, part in enumerate(parts, start=1):
        url = storage.presigned_part_put(key, upload_id, number, 600)
        assert url.startswith(stack.edge_url)
        r = requests.put(url, data=part, timeout=60)
        assert r.status_code == 200, r.text
        etags.append(r.headers["ETag"])
    storage.client._complete_multipart_upload(bucket, key, upload_id,
                                              [Part(i + 1, e) for i, e in enumerate(etags)])
    assert storage.read_range(key, 0, 10 ** 8) == b"".join(parts)
    storage.delete(key)


# -- pull, purge ----------------------------------------------------------------------------


def test_pull_purges_the_edge_and_cloudflare_and_the_link_dies(stack, http, cloudflare):
    _, app, version, data = shipped(http)
    url = http.download_info(app["package_id"])["download_url"]
    assert requests.get(url, timeout=30).headers["X-Cache-Status"] == "MISS"
    assert requests.get(url, timeout=30).headers["X-Cache-Status"] == "HIT"
    calls_before = len(cloudflare.calls)

    http.call("POST", f"/v1/admin/versions/{version['id']}/pull", 200, headers=ADMIN,
              json={"reason": "malware"})

    cdn = stack.settings.resolved_cdn_url
    key = package_key_of(url, cdn)
    new_calls = cloudflare.calls[calls_before:]
    # The objects at the CDN's URL, the public reads naming the version at the API's.
    api = f"{stack.settings.public_url}/v1/packages/{app['package_id']}"
    assert new_calls == [{"path": "/client/v4/zones/zone-1/purge_cache", "authorization": "Bearer cf-token",
                          "body": {"files": [f"{cdn}/{key}", f"{cdn}/{key[:-len('package.mosis')]}manifest.json",
                                             api, f"{api}/download", f"{api}/download?from_version_code=1",
                                             f"{stack.settings.public_url}/v1/index.json"]}}]
    after = requests.get(url, timeout=30)
    assert after.status_code == 404 and after.json()["error"]["code"] == "not_found"
    assert after.headers["X-Cache-Status"] == "MISS"  # the entry is gone, and the app refused
    assert requests.get(url, timeout=30).status_code == 404
    assert requests.get(f"{stack.edge_url}/v1/packages/{app['package_id']}/download", timeout=30).status_code == 404


def test_the_catalog_index_is_cached_and_a_publish_or_pull_purges_it(stack, http, cloudflare):
    from mosis_format import index as mindex
    from mosis_format import keyring as kr

    url = f"{stack.edge_url}/v1/index.json"
    EdgePurger(stack.internal_url)(["v1/index.json"])  # whatever an earlier test left
    first = requests.get(url, timeout=30)
    assert first.status_code == 200 and first.headers["X-Cache-Status"] == "MISS"
    second = requests.get(url, timeout=30)
    assert second.headers["X-Cache-Status"] == "HIT" and second.content == first.content
    assert requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=30).status_code == 304
    calls_before = len(cloudflare.calls)
    _, app, version, _ = shipped(http)
    assert f"{stack.settings.public_url}/v1/index.json" in cloudflare.calls[-1]["body"]["files"]
    assert len(cloudflare.calls) > calls_before
    published = requests.get(url, timeout=30)
    assert published.headers["X-Cache-Status"] == "MISS"
    ring = kr.verify_root(requests.get(f"{stack.edge_url}/v1/signing-keys/1", timeout=30).json())
    ring = kr.verify_chain(ring, [requests.get(f"{stack.edge_url}/v1/signing-keys/{v}", timeout=30).json()
                                  for v in range(2, requests.get(f"{stack.edge_url}/v1/signing-keys",
                                                                 timeout=30).json()["version"] + 1)])
    index = mindex.verify(published.json(), ring)
    assert index.entry(app["package_id"]).sha256 == version["sha256"]
    assert requests.get(url, timeout=30).headers["X-Cache-Status"] == "HIT"
    http.call("POST", f"/v1/admin/versions/{version['id']}/pull", 200, headers=ADMIN, json={"reason": "malware"})
    pulled = requests.get(url, timeout=30)
    assert pulled.headers["X-Cache-Status"] == "MISS"
    assert mindex.verify(pulled.json(), ring).entry(app["package_id"]) is None


def test_a_failing_cloudflare_does_not_undo_a_pull(stack, http, cloudflare):
    _, app, version, _ = shipped(http)
    url = http.download_info(app["package_id"])["download_url"]
    requests.get(url, timeout=30)
    cloudflare.fail = True
    try:
        r = http.call("POST", f"/v1/admin/versions/{version['id']}/pull", 200, headers=ADMIN,
                      json={"reason": "broken"})
    finally:
        cloudflare.fail = False
    assert r.json()["version"]["status"] == "pulled"
    assert requests.get(url, timeout=30).status_code == 404  # the edge forgot it all the same
    metrics = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert 'mosis_cache_purges_total{cache="cloudflare",result="error"}' in metrics


# -- assets, API ------------------------------------------------------------------------------


def test_assets_are_public_cached_and_purgeable(stack, http, storage):
    app_id = os.urandom(16).hex()
    key = icon_key(app_id, 1, 32)
    icon = b"\x89PNG\r\n\x1a\n" + os.urandom(1024)
    storage.put(key, icon, content_type="image/png")
    url = f"{stack.settings.resolved_cdn_url}/{key}"

    first = requests.get(url, timeout=30)
    assert first.status_code == 200 and first.content == icon
    assert first.headers["Content-Type"] == "image/png" and first.headers["X-Cache-Status"] == "MISS"
    assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert requests.get(url, timeout=30).headers["X-Cache-Status"] == "HIT"

    # A new icon under the same key shows after a purge.
    new_icon = b"\x89PNG\r\n\x1a\n" + os.urandom(1024)
    storage.put(key, new_icon, content_type="image/png")
    assert requests.get(url, timeout=30).content == icon  # still cached
    EdgePurger(stack.internal_url)([key])
    # The edge keeps asset files open for a few seconds (open_file_cache_valid).
    deadline = time.monotonic() + 30
    while (refreshed := requests.get(url, timeout=30)).content != new_icon and time.monotonic() < deadline:
        time.sleep(0.5)
    assert refreshed.content == new_icon and refreshed.headers["X-Cache-Status"] == "MISS"
    EdgePurger(stack.internal_url)([key, "assets/never/cached.png"])  # absent entries are fine

    missing = requests.get(f"{stack.edge_url}/assets/{app_id}/icon-64.png", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert missing.headers["Cache-Control"] == "no-store"
    storage.delete(key)


def test_api_through_the_edge(stack, http):
    dev = http.new_developer()
    for _ in range(8):
        http.create_app(dev)
    listing = requests.get(f"{stack.edge_url}/v1/apps", headers={**dev["headers"], "Accept-Encoding": "gzip"},
                           timeout=30)
    assert listing.status_code == 200 and len(listing.json()["apps"]) == 8
    assert listing.headers["Content-Encoding"] == "gzip"  # JSON is compressed
    assert listing.headers["X-Request-ID"]
    assert "X-Cache-Status" not in listing.headers
    assert listing.headers["Cache-Control"] == "no-store"  # the app's own, untouched
    for name in ("X-Request-ID", "X-Content-Type-Options"):  # the edge's, not twice
        assert len(listing.raw.headers.getlist(name)) == 1, name
    assert requests.get(f"{stack.edge_url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{stack.edge_url}/readyz", timeout=10).status_code == 200
    missing = requests.get(f"{stack.edge_url}/v1/apps/{'0' * 32}", headers=dev["headers"], timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "app_not_found"  # the app's own
    entry = stack.log_for(listing)
    assert entry["method"] == "GET" and entry["uri"] == "/v1/apps" and entry["remote_addr"] == "127.0.0.1"
    assert set(entry) == {"time", "remote_addr", "request_id", "method", "uri", "status", "bytes_sent",
                          "body_bytes_sent", "request_time", "upstream_response_time", "upstream_status",
                          "cache", "host", "user_agent"}
    assert entry["upstream_status"] == "200"
    # The edge's internal server answers only inside.
    assert requests.get(f"{stack.internal_url}/stub_status", timeout=10).text.startswith("Active connections")


def test_rate_limit_per_client_behind_a_trusted_proxy(stack, tmp_path):
    """A second edge in front of the same app: clients are told apart by the
    address a trusted proxy reports, and each has its own rate limit."""
    http_port, internal_port = free_ports(2)
    settings = stack.settings.replace(public_url=f"http://127.0.0.1:{http_port}", edge_api_rate=1,
                                      edge_api_burst=2, edge_trusted_proxies=("127.0.0.0/8",),
                                      edge_access_log=str(tmp_path / "logs" / "edge-access.log"))
    edge = start_edge(settings, http_port=http_port, internal_port=internal_port,
                      app_bind=stack.env["MOSIS_APP_BIND"], log_dir=tmp_path / "logs", prefix=tmp_path / "edge")
    try:
        edge.wait_ready(30)
        url = f"http://127.0.0.1:{http_port}/v1/signing-key"
        noisy = [requests.get(url, headers={"CF-Connecting-IP": "203.0.113.7"}, timeout=10) for _ in range(6)]
        assert [r.status_code for r in noisy[:3]] == [200, 200, 200]
        limited = [r for r in noisy if r.status_code == 429]
        assert limited and limited[0].json()["error"]["code"] == "rate_limited"
        quiet = requests.get(url, headers={"CF-Connecting-IP": "203.0.113.8"}, timeout=10)
        assert quiet.status_code == 200
        log = tmp_path / "logs" / "edge-access.log"
        for _ in range(50):  # nginx writes a line once its response has ended
            lines = [json.loads(x) for x in log.read_text().splitlines()]
            if len(lines) == len(noisy) + 1:
                break
            time.sleep(0.05)
        assert {e["remote_addr"] for e in lines} == {"203.0.113.7", "203.0.113.8"}
    finally:
        edge.stop()
    # The module's edge does not trust 127.0.0.1: the header is ignored there.
    r = requests.get(f"{stack.edge_url}/v1/signing-key", headers={"CF-Connecting-IP": "203.0.113.9"}, timeout=10)
    assert stack.log_for(r)["remote_addr"] == "127.0.0.1"


# -- storage outage ---------------------------------------------------------------------------


def test_cached_packages_download_while_storage_is_down(tmp_path):
    """With its own storage, stopped half-way (the session's stays up)."""
    ports = WeedPorts.free()
    own = start_weed(tmp_path / "s3", "outage", "outage-secret", ports, tmp_path / "logs")
    try:
        own.wait_ready(90)
        own.endpoint, own.access_key, own.secret_key = f"http://127.0.0.1:{ports.s3}", "outage", "outage-secret"
        http_port, internal_port = free_ports(2)
        settings = edge_settings(base_settings(own, tmp_path), http_port, internal_port)
        running = start_live_stack(settings)
        try:
            http = HttpApi(running.edge_url)
            _, app, _, data = shipped(http)
            info = http.download_info(app["package_id"])
            assert requests.get(info["download_url"], timeout=30).headers["X-Cache-Status"] == "MISS"
            icon_url = f"{running.edge_url}/{icon_key(app['id'], 1, 32)}"

            own.kill()  # as a crash would
            assert requests.get(f"{running.edge_url}/readyz", timeout=30).status_code == 503

            r = requests.get(info["download_url"], timeout=30)
            assert r.status_code == 200 and r.content == data and r.headers["X-Cache-Status"] == "HIT"
            r = requests.get(info["download_url"], headers={"Range": "bytes=10-19"}, timeout=30)
            assert r.status_code == 206 and r.content == data[10:20]
            # What was never cached cannot be served: a clear error, not a hang.
            r = requests.get(icon_url, timeout=30)
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
        finally:
            running.stop()
    finally:
        own.stop()


def test_workers_run_with_the_open_file_limit_their_connections_need(stack):
    target = stack.edge.target
    workers = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            name = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == stack.edge.proc.pid and b"worker process" in name:
            workers.append(proc)
    assert workers
    for proc in workers:
        (line,) = [x for x in (proc / "limits").read_text().splitlines() if x.startswith("Max open files")]
        soft = int(line.split()[3])
        assert soft == target.worker_rlimit_nofile >= 2 * target.worker_connections, line
