"""Faults against the real processes: storage stopped, frozen or crashed while
the API and the scheduler use it, the database gone, the scheduler and
gunicorn workers killed in the middle of their work, the edge's cache disk full.

Each test has a `weed` of its own (overriding the session's one, which other
tests share and which must never stop) and, for PostgreSQL, a database of its
own. Faults are injected with signals on processes the test started:
SIGSTOP freezes a process (its peers' requests hang), SIGKILL crashes it.
A frozen process is always thawed before it is stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse

import psycopg2
import pytest
import requests

from app import native
from app.edge.nginx import signed_link
from app.edge.purge import edge_cache_path
from app.platform.storage import Storage as Bucket, manifest_key, package_key
from tests.faults import Weed, children_of, frozen, query, run_with_private_mounts, wait_until
from tests.helpers import ADMIN, HttpApi, build_package
from tests.stack import edge_settings, pg_admin, scratch_pg_database, stack_env, start_live_stack

# Every wait is bounded: a hang fails the test instead of stalling the suite.
WAIT = 60


@pytest.fixture
def weed(tmp_path):
    """Storage of this test's own, to stop, freeze and crash at will."""
    storage = Weed(tmp_path / "weed")
    try:
        storage.start()
        yield storage
    finally:
        storage.stop()


@pytest.fixture
def database_url(request, tmp_path):
    """SQLite in a directory of its own (to take away); or, for tests
    parametrised with "postgres", a PostgreSQL database of the test's own."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'mosis.db'}"
        return
    with scratch_pg_database("mosis_fault") as url:
        yield url


postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def live(settings, weed):
    """Start the live stack (API, edge and, unless told otherwise, scheduler);
    everything started is stopped at the end (storage thawed first, so that
    nothing waits on it while stopping)."""
    stacks = []

    def start(scheduler: bool = True, **env):
        stack = start_live_stack(edge_settings(settings, *native.free_ports(2)), scheduler=scheduler,
                                 extra_env=env)
        stacks.append(stack)
        return stack

    yield start
    weed.thaw()
    for stack in stacks:
        stack.stop()


def start_scheduler(stack, **env) -> native.Service:
    """One more scheduler process for `stack` (stopped with it)."""
    service = native.start_scheduler({**stack.env, **env}, stack.settings.data_dir / "logs")
    stack.services.append(service)
    service.wait_ready(WAIT)
    return service


def in_background(fn, *args, **kwargs) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def assert_unavailable(response, code: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["error"]["code"] == code, response.text
    assert int(response.headers["Retry-After"]) > 0


def new_upload(api: HttpApi, code: int = 1, data: bytes | None = None):
    """A developer, an app and version `code` uploaded (not completed)."""
    dev = api.new_developer()
    app = api.create_app(dev)
    data = data if data is not None else build_package(app["package_id"], code)
    upload = api.create_version(dev, app, code, data)["upload"]
    put = requests.request(upload["method"], upload["url"], data=data, headers=upload["headers"],
                           timeout=WAIT)
    assert put.status_code == 200, put.text
    return dev, app, data, upload


def version_path(app: dict, code: int, action: str = "") -> str:
    return f"/v1/apps/{app['id']}/versions/{code}" + (f"/{action}" if action else "")


def version_row(database_url: str, app: dict, code: int) -> dict:
    rows = query(database_url, "SELECT id, status, attempts, lease_owner FROM version "
                 "WHERE app_id = %s AND version_code = %s", (app["id"], code))
    assert len(rows) == 1, rows  # one version, however often it was retried
    return dict(zip(("id", "status", "attempts", "lease_owner"), rows[0]))


def audit_count(database_url: str, action: str, subject_id: str) -> int:
    return query(database_url, "SELECT COUNT(*) FROM audit_event WHERE action = %s AND subject_id = %s",
                 (action, subject_id))[0][0]


def bucket_keys(settings) -> list[str]:
    """Every package and temp upload in the test's own bucket (the scheduler
    may add a database backup beside them)."""
    bucket = Bucket(settings)
    return sorted(o.key for prefix in ("packages/", "temp/") for o in bucket.list(prefix))


def package_keys(dev: dict, app: dict, code: int) -> list[str]:
    return sorted([package_key(dev["id"], app["id"], code), manifest_key(dev["id"], app["id"], code)])


def upload_id(upload: dict) -> str:
    return urlparse(upload["url"]).path.split("/")[-2]


def assert_validated_once(api: HttpApi, dev: dict, app: dict, database_url: str, settings,
                          attempts: int) -> None:
    """Version 1 becomes a draft: completed and validated once (after
    `attempts` claims), stored once, no temp upload left."""
    version = api.wait_status(dev, app, 1, {"draft", "failed"}, timeout=WAIT)
    assert version["status"] == "draft", version["error"]
    row = version_row(database_url, app, 1)
    assert (row["attempts"], row["lease_owner"]) == (attempts, None)
    assert audit_count(database_url, "version.uploaded", row["id"]) == 1
    assert audit_count(database_url, "version.validated", row["id"]) == 1
    assert bucket_keys(settings) == package_keys(dev, app, 1)


# -- storage ------------------------------------------------------------------------


def test_storage_crash_during_complete(weed, live, settings, database_url):
    """Storage dies while `complete` waits on it: 503 with Retry-After, the
    version stays uploading; once storage is back, completing again moves
    the bytes into place exactly once and the version validates."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev, app, data, _ = new_upload(api)
    complete = version_path(app, 1, "complete")

    weed.freeze()
    pending = in_background(api.call, "POST", complete, headers=dev["headers"], timeout=WAIT)
    wait_until(weed.waiting_requests, what="the completion to reach storage")
    weed.crash()
    assert_unavailable(pending.result(WAIT), "storage_unavailable")
    assert api.call("GET", version_path(app, 1), 200, headers=dev["headers"]).json()["version"]["status"] \
        == "uploading"
    # While storage is down, a retry is refused the same way, at once.
    assert_unavailable(api.call("POST", complete, headers=dev["headers"]), "storage_unavailable")

    weed.start()
    r = api.call("POST", complete, 202, headers=dev["headers"])
    assert r.json()["version"]["status"] == "validating"
    api.call("POST", complete, 202, headers=dev["headers"])  # completing again changes nothing
    start_scheduler(stack)
    # Nothing stored twice, nothing lost.
    assert_validated_once(api, dev, app, database_url, settings, attempts=1)
    assert b"".join(Bucket(settings).stream(package_key(dev["id"], app["id"], 1))) == data


@postgres
def test_storage_crash_after_complete_moved_the_bytes(weed, live, settings, database_url):
    """Storage dies after `complete` copied the upload into place and moved
    the version on, while it deletes the temp upload: the client's retry,
    once storage is back, leaves the package stored once."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev, app, data, upload = new_upload(api)
    complete = version_path(app, 1, "complete")
    # The version's row change waits for the lock; storage freezes meanwhile,
    # so the temp upload's delete (the step after the row change) hangs.
    with table_locked(database_url, "version"):
        pending = in_background(api.call, "POST", complete, headers=dev["headers"], timeout=WAIT)
        wait_until(lambda: waiting_on_lock(database_url, 'UPDATE "version"'),
                   what="the completion to move the version on")
        weed.freeze()
    wait_until(weed.waiting_requests, what="the temp upload's delete to reach storage")
    weed.crash()
    assert_unavailable(pending.result(WAIT), "storage_unavailable")
    assert version_row(database_url, app, 1)["status"] == "validating"

    weed.start()
    assert upload_id(upload) in " ".join(bucket_keys(settings))  # left behind by the interrupted call
    r = api.call("POST", complete, 202, headers=dev["headers"])  # the client's retry
    assert r.json()["version"]["status"] == "validating"
    assert bucket_keys(settings) == [package_key(dev["id"], app["id"], 1)]
    start_scheduler(stack)
    assert_validated_once(api, dev, app, database_url, settings, attempts=1)


def test_storage_crash_during_validation(weed, live, settings, database_url):
    """Storage dies while the scheduler validates: the version is postponed,
    not failed, and its attempt is given back (with one attempt allowed, a
    counted postponement would fail it); it validates once storage is back."""
    stack = live(scheduler=False)
    scheduler = start_scheduler(stack, MOSIS_VALIDATION_RETRY_SECONDS="1", MOSIS_VALIDATION_MAX_ATTEMPTS="1")
    api = HttpApi(stack.edge_url)
    dev, app, data, _ = new_upload(api)
    with frozen(scheduler.proc):  # it claims the version only once storage is frozen
        api.call("POST", version_path(app, 1, "complete"), 202, headers=dev["headers"])
        weed.freeze()
    wait_until(lambda: version_row(database_url, app, 1)["lease_owner"] and weed.waiting_requests(),
               what="the scheduler to claim the version and wait on storage")
    weed.crash()
    version_id = version_row(database_url, app, 1)["id"]

    def postponed() -> int:
        return sum(1 for line in scheduler.tail(400).splitlines()
                   if version_id in line and "postponed" in line)

    # Postponed when storage died under it, and again (1 s later) while it is down.
    wait_until(lambda: postponed() >= 2, timeout=WAIT, what="two postponed validations")
    assert version_row(database_url, app, 1)["status"] == "validating"

    weed.start()
    assert_validated_once(api, dev, app, database_url, settings, attempts=1)


# -- the database -------------------------------------------------------------------------


def table_counts(database_url: str) -> dict[str, int]:
    return {t: query(database_url, f'SELECT COUNT(*) FROM "{t}"')[0][0]
            for t in ("developer", "api_token", "app", "version", "audit_event")}


def refused_while_down(api: HttpApi, dev: dict, app: dict) -> None:
    """Reads and writes of every kind answer 503 database_unavailable."""
    calls = [
        ("GET", "/v1/apps", {"headers": dev["headers"]}),
        ("POST", "/v1/apps", {"headers": dev["headers"],
                              "json": {"package_id": f"com.down.a{uuid.uuid4().hex[:8]}", "name": "Down"}}),
        ("POST", "/v1/admin/developers", {"headers": ADMIN,
                                          "json": {"name": "Down", "email": f"{uuid.uuid4().hex}@example.com"}}),
        ("POST", version_path(app, 7, "complete"), {"headers": dev["headers"]}),
        ("GET", f"/v1/packages/{app['package_id']}/download", {}),
    ]
    for method, path, kwargs in calls:
        assert_unavailable(api.call(method, path, **kwargs), "database_unavailable")
    # Alive (nothing to restart), not ready, and saying why.
    api.call("GET", "/healthz", 200)
    checks = api.call("GET", "/readyz", 503).json()["checks"]
    assert checks["database"] != "ok" and checks["storage"] == "ok", checks


def test_sqlite_database_taken_away(live, database_url, tmp_path):
    """The SQLite file's directory disappears (a lost mount, a failed disk)
    and comes back: 503 meanwhile, nothing written, then service as before."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev = api.new_developer()
    app = api.create_app(dev)
    before = table_counts(database_url)
    home, away = tmp_path / "db", tmp_path / "db-away"
    home.rename(away)
    try:
        refused_while_down(api, dev, app)
    finally:
        away.rename(home)
    assert table_counts(database_url) == before
    assert [a["id"] for a in api.call("GET", "/v1/apps", 200, headers=dev["headers"]).json()["apps"]] \
        == [app["id"]]
    api.create_app(dev)


def pg_backends(database_url: str) -> list[tuple]:
    """(pid, wait_event_type, query) of the sessions on the test's database."""
    name = urlparse(database_url).path.lstrip("/")
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cur:
        cur.execute("SELECT pid, wait_event_type, query FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        return cur.fetchall()


def waiting_on_lock(database_url: str, statement: str) -> bool:
    return any(w == "Lock" and q.lstrip().startswith(statement) for _, w, q in pg_backends(database_url))


@contextlib.contextmanager
def table_locked(database_url: str, table: str):
    """Hold an EXCLUSIVE lock on `table` (reads pass, writes wait) for the block."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
        yield conn
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        conn.close()


def set_connections_allowed(database_url: str, allowed: bool) -> None:
    """Let sessions into the test's own database, or close it and end every
    session in it. pg_terminate_backend only signals a session: as a server
    going down does, this returns once every one has ended (and said so to
    its client)."""
    name = urlparse(database_url).path.lstrip("/")
    others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with contextlib.closing(pg_admin()) as admin, admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            cur.execute(f"SELECT pg_terminate_backend(pid) {others}", (name,))
            wait_until(lambda: (cur.execute(f"SELECT count(*) {others}", (name,)) or cur.fetchone()[0]) == 0,
                       what="every session of the database to end")


@postgres
def test_postgres_goes_away(live, database_url):
    """PostgreSQL ends every session (one of them half-way through a
    transaction) and refuses new ones, then comes back: 503 meanwhile, the
    interrupted transaction leaves no row behind, and the API's connection
    pools recover by themselves."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev = api.new_developer()
    app = api.create_app(dev)

    def list_apps(_=None) -> int:
        return api.call("GET", "/v1/apps", headers=dev["headers"]).status_code

    def burst() -> list[int]:  # enough at once to fill both workers' pools with sessions
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(list_apps, range(48)))

    assert set(burst()) == {200}
    before = table_counts(database_url)
    email = f"{uuid.uuid4().hex}@example.com"
    try:
        # A developer is three rows (developer, token, audit event) in one
        # transaction; it stops at the third while the table is locked.
        with table_locked(database_url, "audit_event"):
            pending = in_background(api.call, "POST", "/v1/admin/developers", headers=ADMIN,
                                    json={"name": "Half", "email": email})
            wait_until(lambda: waiting_on_lock(database_url, 'INSERT INTO "audit_event"'),
                       what="the developer's transaction to wait on the lock")
            set_connections_allowed(database_url, False)
        assert_unavailable(pending.result(WAIT), "database_unavailable")
        refused_while_down(api, dev, app)
    finally:
        set_connections_allowed(database_url, True)

    # Back: every request succeeds at once, whatever sessions the pools held.
    assert set(burst()) == {200}
    # A restart in the blink of an eye: every pooled session ends, none is refused.
    set_connections_allowed(database_url, False)
    set_connections_allowed(database_url, True)
    assert set(burst()) == {200}
    assert table_counts(database_url) == before
    assert not query(database_url, "SELECT id FROM developer WHERE email = %s", (email,))
    api.call("POST", "/v1/admin/developers", 201, headers=ADMIN, json={"name": "Whole", "email": email})


# -- processes killed mid-work -------------------------------------------------------------


def test_scheduler_killed_during_validation(weed, live, settings, database_url):
    """The scheduler dies holding a version's lease, mid-validation: the next
    scheduler takes it over once the lease runs out and validates it once."""
    stack = live(scheduler=False)
    short_lease = {"MOSIS_VALIDATION_LEASE_SECONDS": "5"}  # the shortest allowed
    first = start_scheduler(stack, **short_lease)
    api = HttpApi(stack.edge_url)
    dev, app, data, _ = new_upload(api)
    with frozen(first.proc):
        api.call("POST", version_path(app, 1, "complete"), 202, headers=dev["headers"])
        weed.freeze()
    owner = f":{first.proc.pid}"
    wait_until(lambda: (version_row(database_url, app, 1)["lease_owner"] or "").endswith(owner)
               and weed.waiting_requests(), what="the first scheduler to claim the version")
    first.kill()
    weed.thaw()
    row = version_row(database_url, app, 1)
    assert (row["status"], row["attempts"]) == ("validating", 1)

    start_scheduler(stack, **short_lease)
    assert_validated_once(api, dev, app, database_url, settings, attempts=2)  # the lost one counts


@postgres
def test_retention_killed_during_purge(weed, api, settings, database_url, tmp_path):
    """`flask retention run` is killed after it claimed a superseded version
    (now `purging`) while its object deletes hang on frozen storage: nothing
    offers the version meanwhile, and the next run finishes the purge once."""
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    api.ship(dev, app, 2)
    old = version_row(database_url, app, 1)
    assert old["status"] == "superseded"
    old_keys = package_keys(dev, app, 1)

    env = {k: v for k, v in stack_env(settings, *native.free_ports(2)).items()
           if k != "PROMETHEUS_MULTIPROC_DIR"}  # not under gunicorn
    env["MOSIS_RETENTION_SUPERSEDED_SECONDS"] = "0"
    argv = [sys.executable, "-m", "flask", "--app", "app", "retention", "run", "--json"]
    log_path = tmp_path / "retention.log"
    with open(log_path, "wb") as log:
        run = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def running(condition):
        def check():
            assert run.poll() is None, f"retention exited with {run.returncode}:\n{log_path.read_text()}"
            return condition()
        return check

    try:
        # Hold the claim back until storage is frozen: the purge is then
        # claimed and stuck in its deletes.
        with table_locked(database_url, "version"):
            wait_until(running(lambda: waiting_on_lock(database_url, 'UPDATE "version"')),
                       what="retention to claim the version")
            weed.freeze()
        wait_until(running(lambda: version_row(database_url, app, 1)["status"] == "purging"),
                   what="the version to be purging")
        wait_until(running(weed.waiting_requests), what="the deletes to reach storage")
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(WAIT)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(WAIT)
        weed.thaw()

    assert version_row(database_url, app, 1)["status"] == "purging"
    assert audit_count(database_url, "version.purged", old["id"]) == 0
    # Not offered meanwhile: the edge's origin refuses it, downloads name version 2.
    assert api.client.get(f"/edge/objects/{old_keys[1]}").status_code == 404
    assert api.client.get(f"/v1/packages/{app['package_id']}/download").json["version_code"] == 2

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [i["version_id"] for i in report["items"]] == [old["id"]]
    assert version_row(database_url, app, 1)["status"] == "purged"
    assert audit_count(database_url, "version.purged", old["id"]) == 1
    assert bucket_keys(settings) == package_keys(dev, app, 2)

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT)
    assert again.returncode == 0 and json.loads(again.stdout)["items"] == []
    assert audit_count(database_url, "version.purged", old["id"]) == 1


def job_row(database_url: str, name: str) -> dict:
    rows = query(database_url, "SELECT owner, lease_expires_at, runs, failures FROM job_state WHERE name = %s",
                 (name,))
    return dict(zip(("owner", "lease_expires_at", "runs", "failures"), rows[0])) if rows else {}


def claim_waiting_on_lock(database_url: str) -> bool:
    """Retention's claim (`UPDATE version ... 'purging'`) waits on the table lock."""
    return any(w == "Lock" and q.lstrip().startswith('UPDATE "version"') and "'purging'" in q
               for _, w, q in pg_backends(database_url))


@postgres
def test_scheduler_killed_during_purge(weed, live, api, settings, database_url):
    """The scheduler is killed while its retention job purges a superseded
    version (claimed, its deletes hanging on frozen storage): a link holder
    gets a 404 meanwhile, not the edge's cached copy, and the next scheduler
    takes the job over once its lease runs out and finishes the purge once."""
    stack = live(scheduler=False)
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    api.ship(dev, app, 2)
    key = package_key(dev["id"], app["id"], 1)
    # A device's link to version 1, signed while it was the published one.
    link = signed_link(stack.settings.resolved_cdn_url, key, stack.settings.download_link_secret,
                       int(time.time()) + 600)
    old = version_row(database_url, app, 1)
    assert old["status"] == "superseded"
    assert requests.get(link, timeout=WAIT).status_code == 200  # still good, and now cached
    assert requests.get(link, timeout=WAIT).headers["X-Cache-Status"] == "HIT"
    cached = stack.settings.resolved_edge_cache_dir / edge_cache_path(key)
    assert cached.exists()

    env = {"MOSIS_RETENTION_SUPERSEDED_SECONDS": "0", "MOSIS_JOB_LEASE_SECONDS": "5"}
    # Hold the claim back until storage is frozen: the purge is then claimed
    # and stuck in its deletes.
    with table_locked(database_url, "version"):
        first = start_scheduler(stack, **env)
        wait_until(lambda: claim_waiting_on_lock(database_url), timeout=WAIT,
                   what="the scheduler's retention to claim the version")
        weed.freeze()
    wait_until(lambda: version_row(database_url, app, 1)["status"] == "purging", what="the version to be purging")
    # The edge's copy goes first (not a request: that could fill it again),
    # then the deletes reach storage.
    wait_until(lambda: not cached.exists(), what="the edge to forget its copy")
    wait_until(weed.waiting_requests, what="the deletes to reach storage")
    assert job_row(database_url, "retention")["owner"].endswith(f":{first.proc.pid}")
    first.kill()
    weed.thaw()

    assert version_row(database_url, app, 1)["status"] == "purging"
    assert audit_count(database_url, "version.purged", old["id"]) == 0
    lease = job_row(database_url, "retention")
    assert lease["runs"] == 0 and lease["lease_expires_at"] is not None
    # Claimed and forgotten: the link is refused.
    r = requests.get(link, timeout=WAIT)
    assert r.status_code == 404 and r.headers["X-Cache-Status"] == "MISS", (r.status_code, r.text[:200])

    # The lease runs out; a new scheduler takes the job over and finishes.
    wait_until(lambda: query(database_url, "SELECT lease_expires_at < now() AT TIME ZONE 'UTC' "
                             "FROM job_state WHERE name = 'retention'")[0][0],
               timeout=WAIT, what="the dead scheduler's lease to run out")
    second = start_scheduler(stack, **env)
    wait_until(lambda: version_row(database_url, app, 1)["status"] == "purged", timeout=WAIT,
               what="the next scheduler to finish the purge")
    wait_until(lambda: job_row(database_url, "retention")["runs"] == 1, what="the retention run to be recorded")
    state = job_row(database_url, "retention")
    assert state["owner"].endswith(f":{second.proc.pid}") and state["failures"] == 0
    assert query(database_url, "SELECT purged_from, purge_reason FROM version WHERE id = %s", (old["id"],)) \
        == [("superseded", "superseded for longer than 0 seconds")]
    assert audit_count(database_url, "version.purged", old["id"]) == 1
    assert bucket_keys(settings) == package_keys(dev, app, 2)
    r = requests.get(link, timeout=WAIT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.client.get(f"/v1/packages/{app['package_id']}/download").json["version_code"] == 2


def kill_workers(api_service: native.Service) -> list[int]:
    """SIGKILL every gunicorn worker (the master's children); the master
    starts new ones."""
    workers = children_of(api_service.proc.pid)
    assert workers
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return workers


def retry(api: HttpApi, method: str, path: str, **kwargs) -> requests.Response:
    """What a client does after a failed request: try again until the
    service answers (the edge says 502 while gunicorn replaces workers)."""
    responses = []

    def answered():
        r = api.call(method, path, **kwargs)
        responses.append(r.status_code)
        return r if r.status_code not in (502, 503, 504) else None

    return wait_until(answered, timeout=WAIT, interval=0.2, what=f"{method} {path} to answer ({responses})")


@postgres
def test_worker_killed_mid_request(weed, live, settings, database_url):
    """gunicorn workers die while serving `complete` (stuck on frozen
    storage) and `publish` (stuck on a database lock): the client sees a 502
    from the edge, and its retries complete, validate and publish the
    version once."""
    stack = live(scheduler=False)
    api = HttpApi(stack.edge_url)
    dev, app, data, upload = new_upload(api)
    headers = dev["headers"]

    weed.freeze()
    try:
        pending = in_background(api.call, "POST", version_path(app, 1, "complete"), headers=headers,
                                timeout=WAIT)
        wait_until(weed.waiting_requests, what="the completion to reach storage")
        killed = kill_workers(stack.api)
        r = pending.result(WAIT)
    finally:
        weed.thaw()
    assert r.status_code == 502, r.text
    wait_until(lambda: not set(killed) & set(children_of(stack.api.proc.pid)),
               what="gunicorn to reap its killed workers")
    assert retry(api, "POST", version_path(app, 1, "complete"), headers=headers).status_code == 202
    assert retry(api, "POST", version_path(app, 1, "complete"), headers=headers).status_code == 202
    start_scheduler(stack)
    assert_validated_once(api, dev, app, database_url, settings, attempts=1)

    with table_locked(database_url, "app"):
        pending = in_background(api.call, "POST", version_path(app, 1, "publish"), headers=headers,
                                timeout=WAIT)
        wait_until(lambda: waiting_on_lock(database_url, 'UPDATE "app"'),
                   what="the publish to wait on the lock")
        kill_workers(stack.api)
        r = pending.result(WAIT)
    assert r.status_code == 502, r.text
    first = retry(api, "POST", version_path(app, 1, "publish"), headers=headers)
    assert first.status_code == 200 and first.json()["version"]["status"] == "published", first.text
    assert retry(api, "POST", version_path(app, 1, "publish"), headers=headers).status_code == 200
    assert audit_count(database_url, "version.published", version_row(database_url, app, 1)["id"]) == 1
    assert query(database_url, "SELECT max_published_code FROM app WHERE id = %s", (app["id"],)) == [(1,)]
    info = api.download_info(app["package_id"])
    assert info["version_code"] == 1
    assert requests.get(info["download_url"], timeout=WAIT).content == data


# -- the edge's cache disk full --------------------------------------------------------------


def test_edge_cache_disk_full(tmp_path, repo_root):
    """The disk under the edge's cache is full: downloads are still served,
    whole and ranged, from storage, and cached again once there is room.

    A real full disk: the cache directory is a 1 MiB tmpfs filled to ENOSPC.
    The mount is made in mount and PID namespaces of the scenario's own
    (`unshare`), so no other process on the machine sees it and it goes, with
    every process the scenario started, when the scenario ends. As root (CI)
    the namespaces need nothing more; an unprivileged user gets the right to
    mount from a user namespace of its own. RLIMIT_FSIZE on nginx was not
    used: it fails nginx's writes with EFBIG (or kills it with SIGXFSZ) while
    the filesystem still has room, which is not what a full disk does, and a
    loop device needs the same right to mount as tmpfs. Only if the machine
    grants no namespace at all is the test skipped, saying so.
    """
    result = run_with_private_mounts("edge-cache-full", tmp_path, repo_root, timeout=4 * WAIT)

    for download in result["full"]:
        assert download["status"] == 200, result
        assert download["length"] == result["package_size"], result
        assert download["sha256"] == result["package_sha256"] == download["expected_sha256"]
        assert download["cache"] == "BYPASS", result  # from storage, not kept
    assert result["range"] == {"status": 206, "body": result["range_expected"]}
    assert result["edge_alive"] and result["api_through_edge"] == 200
    assert result["bypasses"] == 3
    # Room again: the first download fills the cache, the next one is served from it.
    assert [d["cache"] for d in result["freed"]] == ["MISS", "HIT"], result
    assert all(d["sha256"] == result["package_sha256"] for d in result["freed"])
