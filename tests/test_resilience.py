"""Resilience against the real processes: storage that stalls or refuses
writes, a full data disk, a flood of identical `complete` calls, and inputs
built to crash a handler.

Storage is a `weed` of the test's own (tests/faults.py), frozen with SIGSTOP
(connections still accepted, requests unanswered: the worst way for storage
to fail). Every wait is bounded; the only timing checks are generous
"answers within N seconds".
"""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import time
import zipfile
from urllib.parse import urlparse, urlunparse

import pytest
import requests

from app.platform.config import MiB
from tests.faults import query, run_with_private_mounts, wait_until
from tests.helpers import HttpApi, build_package, sha256 as sha256_of
from tests.test_faults import (  # noqa: F401 (fixtures)
    WAIT, assert_unavailable, database_url, live, new_upload, start_scheduler, version_path, version_row, weed,
)

# A route that needs no storage answers this fast while storage stalls (its
# normal latency is milliseconds; the bound is for a shared, busy machine).
PROMPT = 10


def timed(method: str, url: str, timeout: float = PROMPT, **kwargs) -> tuple[requests.Response | None, float]:
    """The response (None if it did not come within `timeout` s) and how long it took."""
    started = time.monotonic()
    try:
        r = requests.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout:
        r = None
    return r, time.monotonic() - started


def answers_promptly(method: str, url: str, status: int, **kwargs) -> requests.Response:
    r, took = timed(method, url, **kwargs)
    assert r is not None, f"{method} {url} did not answer within {PROMPT} s"
    assert r.status_code == status, (r.status_code, r.text)
    return r


def multipart_version(api: HttpApi) -> tuple[dict, dict, str]:
    """A developer, an app and a large version (its upload in parts): asking
    for its upload state asks storage for the parts it holds."""
    dev = api.new_developer()
    app = api.create_app(dev)
    api.call("POST", f"/v1/apps/{app['id']}/versions", 201, headers=dev["headers"],
             json={"version_code": 1, "version_name": "1.0", "size": 100 * MiB})
    return dev, app, version_path(app, 1, "upload")


# -- storage stalls ----------------------------------------------------------------------


def test_stalled_storage_takes_no_thread_from_routes_that_do_not_need_it(weed, live):
    """Storage freezes while requests that need it keep coming (more than
    the API has threads): liveness, readiness and routes without storage
    keep answering at once, readiness says storage is out, and routes that
    need storage answer 503 `storage_unavailable` with Retry-After instead
    of hanging. Once storage is back, so is everything, with no restart."""
    stack = live(scheduler=False)
    api = HttpApi(stack.url)  # gunicorn itself: 2 workers of 4 threads
    dev, app, upload_state = multipart_version(api)
    api.call("GET", upload_state, 200, headers=dev["headers"])
    api.call("GET", "/readyz", 200)

    weed.freeze()
    pool = concurrent.futures.ThreadPoolExecutor(16)
    try:
        flood = [pool.submit(timed, "GET", stack.url + upload_state, WAIT, headers=dev["headers"])
                 for _ in range(16)]
        wait_until(weed.waiting_requests, what="requests to reach the frozen storage")
        for path in ("/healthz", "/v1/signing-key", "/v1/openapi.json"):
            answers_promptly("GET", stack.url + path, 200)
        answers_promptly("GET", stack.url + "/v1/apps", 200, headers=dev["headers"])
        # Readiness reports the outage without waiting on storage.
        answers = []

        def not_ready() -> bool:  # (a 503 Response is falsy)
            r, _ = timed("GET", stack.url + "/readyz")
            answers.append(r)
            return r is not None and r.status_code == 503

        wait_until(not_ready, timeout=PROMPT, what="/readyz to say 503")
        ready = answers[-1]
        assert ready.json()["checks"]["storage"].startswith("error"), ready.text
        assert ready.json()["checks"]["database"] == "ok"
        # A route that needs storage fails fast, saying why and when to retry.
        r = answers_promptly("GET", stack.url + upload_state, 503, headers=dev["headers"])
        assert_unavailable(r, "storage_unavailable")
        assert "127.0.0.1" not in r.text and "HTTPConnectionPool" not in r.text
        answers_promptly("GET", stack.url + "/healthz", 200)
    finally:
        weed.thaw()
        pool.shutdown(wait=False)
    # Every request of the flood was answered (a 503, or a 200 once storage
    # woke up), none left hanging.
    for future in flood:
        r, _ = future.result(WAIT)
        assert r is not None and r.status_code in (200, 503), r and (r.status_code, r.text)
    # Back within a few checks, in every worker (they check on their own).
    for _ in range(4):
        wait_until(lambda: api.call("GET", "/readyz").status_code == 200, timeout=WAIT,
                   what="readiness once storage is back")
        wait_until(lambda: api.call("GET", upload_state, headers=dev["headers"]).status_code == 200,
                   timeout=WAIT, what="the upload state once storage is back")


# -- validation: storage's fault or the package's -------------------------------------------


def direct_to_storage(url: str, storage_endpoint: str) -> str:
    """A presigned upload URL sent to storage itself instead of through the
    edge (it is signed for storage's host): what reaches storage is exactly
    what the client sent, whatever the edge would strip."""
    parsed, target = urlparse(url), urlparse(storage_endpoint)
    return urlunparse(parsed._replace(netloc=target.netloc))


@pytest.mark.parametrize("body", ["plain", "gzipped"])
def test_an_upload_stored_with_a_content_encoding_fails_at_once(weed, live, database_url, body):
    """A presigned PUT with an extra `Content-Encoding: gzip` (only the host
    is signed, so storage takes it): the stored object is not a plain
    package. Its version fails at once with `invalid_encoding` instead of
    waiting for storage to read it differently (it never will)."""
    stack = live(scheduler=False)
    start_scheduler(stack, MOSIS_VALIDATION_RETRY_SECONDS="1")
    api = HttpApi(stack.edge_url)
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 1)
    sent = gzip.compress(data) if body == "gzipped" else data
    upload = api.call("POST", f"/v1/apps/{app['id']}/versions", 201, headers=dev["headers"], json={
        "version_code": 1, "version_name": "1.0", "size": len(sent)}).json()["upload"]
    put = requests.put(direct_to_storage(upload["url"], weed.endpoint), data=sent, timeout=WAIT,
                       headers={**upload["headers"], "Content-Encoding": "gzip"})
    assert put.status_code == 200, put.text
    api.call("POST", version_path(app, 1, "complete"), 202, headers=dev["headers"])
    version = api.wait_status(dev, app, 1, {"draft", "failed"}, timeout=WAIT)
    assert version["status"] == "failed", version
    assert version["error"]["code"] == "invalid_encoding", version["error"]
    assert "Content-Encoding" in version["error"]["message"]
    assert version_row(database_url, app, 1)["attempts"] == 1  # at the first attempt


def test_validation_gives_up_on_storage_after_the_wait_and_the_attempts(weed, live, database_url):
    """Storage stays down: validation is postponed (for free while the
    version is young), then each postponement counts, and when the attempts
    are used up the version fails with `storage_unreadable`: it does not
    stay `validating` for ever."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev, app, data, _ = new_upload(api)
    api.call("POST", version_path(app, 1, "complete"), 202, headers=dev["headers"])
    weed.crash()
    scheduler = start_scheduler(stack, MOSIS_VALIDATION_RETRY_SECONDS="1", MOSIS_VALIDATION_MAX_ATTEMPTS="2",
                                MOSIS_VALIDATION_STORAGE_WAIT_SECONDS="3")
    version = api.wait_status(dev, app, 1, {"draft", "failed"}, timeout=WAIT)
    assert version["status"] == "failed", (version, scheduler.tail())
    assert version["error"]["code"] == "storage_unreadable", version["error"]
    row = version_row(database_url, app, 1)
    assert (row["attempts"], row["lease_owner"]) == (2, None)
    postponed = sum(1 for line in scheduler.tail(400).splitlines() if row["id"] in line and "postponed" in line)
    assert postponed >= 2, scheduler.tail()  # it was retried before it gave up


# -- complete, many times at once -------------------------------------------------------------


def audit_count(database_url: str, action: str, subject_id: str) -> int:
    return query(database_url, "SELECT COUNT(*) FROM audit_event WHERE action = %s AND subject_id = %s",
                 (action, subject_id))[0][0]


def put_all(upload: dict, data: bytes, api: HttpApi, dev: dict, app: dict, code: int) -> list:
    """Upload `data` for version `code`: one PUT, or every part. Returns the
    requests that send it again (the re-PUT a client retrying would do)."""
    if upload["kind"] == "single":
        send = [lambda: requests.put(upload["url"], data=data, headers=upload["headers"], timeout=WAIT)]
    else:
        numbers = list(range(1, upload["part_count"] + 1))
        parts = api.call("POST", version_path(app, code, "upload/parts"), 200, headers=dev["headers"],
                         json={"part_numbers": numbers}).json()["parts"]
        size = upload["part_size"]
        send = [lambda p=p: requests.put(p["url"], data=data[(p["part_number"] - 1) * size:p["part_number"] * size],
                                         timeout=WAIT) for p in parts]
    for put in send:
        r = put()
        assert r.status_code == 200, r.text
    return send


@pytest.mark.parametrize("kind", ["single", "multipart"])
@pytest.mark.parametrize("re_put", [False, True], ids=["alone", "with_re_put"])
def test_twenty_completes_at_once_all_answer_202_and_validate_once(weed, live, database_url, kind, re_put):
    """`complete` is idempotent under any concurrency: 20 calls at once (and,
    meanwhile, the client sending the bytes again) all answer 202, and the
    version is completed, stored and validated once. Repeated, since races
    are a matter of luck."""
    stack = live(MOSIS_MULTIPART_THRESHOLD_BYTES=str(6 * MiB), MOSIS_MULTIPART_PART_BYTES=str(5 * MiB))
    api = HttpApi(stack.url)
    dev = api.new_developer()
    app = api.create_app(dev)
    size = 7 * MiB if kind == "multipart" else 200_000
    pool = concurrent.futures.ThreadPoolExecutor(24)
    try:
        for code in (1, 2, 3):
            data = build_package(app["package_id"], code, files={"blob.bin": os.urandom(size)},
                                 compression=zipfile.ZIP_STORED)
            upload = api.create_version(dev, app, code, data)["upload"]
            assert upload["kind"] == kind
            resend = put_all(upload, data, api, dev, app, code)
            complete = stack.url + version_path(app, code, "complete")
            calls = [pool.submit(requests.post, complete, headers=dev["headers"], timeout=WAIT)
                     for _ in range(20)]
            again = [pool.submit(put) for put in resend] if re_put else []
            answers = [c.result(WAIT) for c in calls]
            assert [r.status_code for r in answers] == [202] * 20, [(r.status_code, r.text) for r in answers
                                                                    if r.status_code != 202]
            assert {r.json()["version"]["status"] for r in answers} <= {"validating", "draft"}
            for put in again:
                put.result(WAIT)  # storage's answer to a late part may be a 404: nothing to check
            version = api.wait_status(dev, app, code, {"draft", "failed"}, timeout=WAIT)
            assert version["status"] == "draft", version
            row = version_row(database_url, app, code)
            assert audit_count(database_url, "version.uploaded", row["id"]) == 1
            assert audit_count(database_url, "version.validated", row["id"]) == 1
            assert row["attempts"] == 1
            api.call("POST", version_path(app, code, "publish"), 200, headers=dev["headers"])
            assert sha256_of(requests.get(api.download_info(app["package_id"])["download_url"],
                                          timeout=WAIT).content) == sha256_of(data)
    finally:
        pool.shutdown(wait=True)


# -- the data disk full ---------------------------------------------------------------------


def test_a_full_data_disk_degrades_and_recovers_without_a_restart(tmp_path, repo_root):
    """MOSIS_DATA_DIR (SQLite, logs, the workers' metrics files, SeaweedFS's
    volumes, as `scripts/run` lays it out) on a 160 MiB tmpfs filled to the
    last byte, and every worker replaced (new workers start new metrics
    files): no worker dies (the metrics files are memory-mapped, SIGBUS),
    reads are served, writes answer JSON 503 with Retry-After, readiness
    reports storage refusing writes; once space is freed (and SeaweedFS,
    whose metadata store may stay in error, restarted), everything works
    again with no restart of the API. Mounted in namespaces of the scenario's own, as
    test_faults.test_edge_cache_disk_full does."""
    result = run_with_private_mounts("data-disk-full", tmp_path, repo_root, timeout=6 * WAIT)

    assert result["before"] == {"icon": 200, "ready": 200}, result
    assert result["healthz_after_fill"] and result["workers_stable"], result
    assert not result["sigbus_in_log"], result
    full = result["full"]
    assert full["apps"]["status"] == 200, result
    assert full["new_app"]["status"] == 503, result
    assert full["new_app"]["body"]["error"]["code"] == "database_unavailable" and full["new_app"]["retry_after"]
    # An icon may still fit (storage and SQLite keep some room of their own); if not, a JSON 503.
    assert full["icon"]["status"] == 200 or (full["icon"]["status"] == 503 and full["icon"]["body"]["error"]["code"]
                                             in ("storage_unavailable", "database_unavailable")), result
    assert full["metrics"] == 200, result
    assert full["ready"]["status"] == 503 and "refuses writes" in full["ready"]["body"]["checks"]["storage"], result
    assert result["freed"] == {"ready": True, "new_app": 201, "icon": 200}, result
    # The scheduler's gauges followed: storage down while it refused writes, the disk's free bytes.
    assert (result["storage_up_full"], result["storage_up_freed"]) == ("0", "1"), result
    assert result["disk_free_full"] < 1024 * 1024 < result["disk_free_freed"], result
    assert result["workers_same_after_free"], result


# -- what other local users can see ------------------------------------------------------------


def test_the_data_dir_is_private(weed, live):
    """The data dir, the database (and its WAL), the logs and the keys are
    the owner's alone: 0700 directories, 0600 files."""
    stack = live()
    api = HttpApi(stack.edge_url)
    dev, app, data, _ = new_upload(api)  # the database has been written; the logs too
    api.call("POST", version_path(app, 1, "complete"), 202, headers=dev["headers"])
    api.wait_status(dev, app, 1, {"draft", "failed"}, timeout=WAIT)
    data_dir = stack.settings.data_dir
    db = data_dir.parent / "db" if not (data_dir / "mosis.db").exists() else data_dir
    modes = {str(p.relative_to(data_dir.parent)): oct(p.stat().st_mode & 0o777) for p in
             [data_dir, data_dir / "logs", data_dir / "logs" / "api.log", data_dir / "logs" / "scheduler.log",
              data_dir / "signing-key.pem", *sorted(db.glob("mosis.db*"))]}
    assert any(name.endswith("mosis.db-wal") for name in modes), modes
    expected = {name: oct(0o700) if name in ("data", "data/logs") else oct(0o600) for name in modes}
    assert modes == expected
