"""The off-site replica: the outbox, delayed deletes, a replica that goes
away and comes back, and the disaster drill (lose the bucket and the
database, restore from the replica alone)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid

import pytest

from app.catalog.packages import keys_of
from app.housekeeping import recovery, replica
from app.housekeeping.retention import run_retention
from app.platform.clock import utcnow
from app.platform.config import RetentionPolicy
from app.platform.models import ReplicaOutbox, Version, database
from app.platform.outbox import REPLICATED, enqueue_copies, enqueue_deletes
from app.services import build_services
from tests import images as I
from tests.helpers import ADMIN, bytes_behind_link
from tests.housekeeping_helpers import unique_bucket
from tests.stack import empty_pg

DELAY = 3600


@pytest.fixture
def settings(settings, weed, replica_weed):
    bucket = unique_bucket()
    return settings.replace(
        bucket=bucket, cdn_url=f"{weed.endpoint}/{bucket}",
        replica_s3_endpoint=replica_weed.endpoint, replica_bucket=f"replica-{uuid.uuid4().hex[:12]}",
        replica_access_key=replica_weed.access_key, replica_secret_key=replica_weed.secret_key,
        replica_delete_delay=DELAY, retention=RetentionPolicy(draft=60))


def drain_all(svc, now=None) -> None:
    for _ in range(50):
        if not replica.drain(svc, now=now)["items"]:
            break
    with database.connection_context():
        assert replica.status(svc, now)["pending"] == 0, list(ReplicaOutbox.select().dicts())


def on_replica(svc, key: str) -> str | None:
    return replica.hash_stream(svc.replica.stream(key))[0] if svc.replica.exists(key) else None


def add_assets(api, dev, app) -> None:
    r = api.client.put(f"/v1/apps/{app['id']}/icon", headers=dev["headers"], **I.upload("icon", I.encode(I.icon(), "PNG")))
    assert r.status_code == 200, r.json
    for colour in ((255, 0, 0), (0, 0, 255)):
        shot = I.encode(I.quadrants((400, 700), [colour] * 4), "PNG")
        r = api.client.post(f"/v1/apps/{app['id']}/screenshots", headers=dev["headers"],
                            **I.upload("screenshot", shot))
        assert r.status_code == 201, r.json


def test_every_written_object_reaches_the_replica_verified_and_deletes_wait(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    add_assets(api, dev, app)
    drain_all(services)
    with database.connection_context():
        v = Version.get((Version.version_code == 1))
        package, manifest = keys_of(v)
        assert on_replica(services, package) == v.sha256
        assert on_replica(services, manifest) is not None
        status = replica.status(services)
        assert status["configured"] and status["copied"] == ReplicaOutbox.select().count() >= 2 + 3 + 2
        old_icons = [r.key for r in ReplicaOutbox.select().where(ReplicaOutbox.key.contains("/icons/"))]
    # A new icon retires the old one: deleted on the primary at once, on the replica only after the delay.
    r = api.client.put(f"/v1/apps/{app['id']}/icon", headers=dev["headers"],
                       **I.upload("icon", I.encode(I.icon(mode="RGB"), "PNG")))
    assert r.status_code == 200
    drain_all(services)
    assert all(not services.storage.exists(k) and services.replica.exists(k) for k in old_icons)
    drain_all(services, now=utcnow() + dt.timedelta(seconds=DELAY + 1))
    assert not any(services.replica.exists(k) for k in old_icons)
    r = api.client.get("/v1/admin/replica", headers=ADMIN)
    assert r.status_code == 200 and r.json["pending"] == 0 and r.json["errors"] == 0


def test_a_delete_never_removes_bytes_written_again_under_its_key(api, services):
    key = f"packages/{uuid.uuid4().hex}/{uuid.uuid4().hex}/1/package.mosis"
    services.storage.put(key, b"first")
    with database.connection_context():
        enqueue_copies(services.settings, [key])
        enqueue_deletes(services.settings, [key])
        enqueue_copies(services.settings, [key])  # the code was reused: new bytes, same key
    services.storage.put(key, b"second")
    drain_all(services, now=utcnow() + dt.timedelta(seconds=DELAY + 1))
    assert on_replica(services, key) == hashlib.sha256(b"second").hexdigest()
    with database.connection_context():
        assert [r.outcome for r in ReplicaOutbox.select().order_by(ReplicaOutbox.id)] == ["copied", "skipped",
                                                                                          "copied"]


def test_without_a_replica_nothing_queues_and_nothing_breaks(settings):
    from app import create_app
    from tests.helpers import Api

    plain = settings.replace(replica_s3_endpoint="")
    svc = build_services(plain)
    assert svc.replica is None
    api = Api(create_app(plain, services=svc).test_client(), svc)
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    add_assets(api, dev, app)
    with database.connection_context():
        assert ReplicaOutbox.select().count() == 0
        assert replica.drain(svc) == {"items": 0, "errors": 0}
        assert replica.status(svc)["configured"] is False


def replicated_on_primary(svc) -> dict[str, str]:
    """Every object of the primary under the replicated prefixes, with its sha256."""
    return {o.key: replica.hash_stream(svc.storage.stream(o.key))[0]
            for prefix in REPLICATED for o in svc.storage.list(f"{prefix}/")}


def test_sync_queues_what_was_written_before_the_replica_was_configured(settings, services):
    from app import create_app
    from app.housekeeping.backup import create_backup
    from tests.helpers import Api

    before = build_services(settings.replace(replica_s3_endpoint=""))
    api = Api(create_app(before.settings, services=before).test_client(), before)
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    api.ship(dev, app, 2)
    add_assets(api, dev, app)
    with database.connection_context():
        create_backup(before)
        assert ReplicaOutbox.select().count() == 0
    # The replica is configured now; one more version is written with it.
    cli = create_app(settings, services=services).test_cli_runner()
    plain = create_app(before.settings, services=before).test_cli_runner()
    refused = plain.invoke(args=["replica", "sync"])
    assert refused.exit_code != 0 and "no replica is configured" in refused.output
    api_now = Api(create_app(settings, services=services).test_client(), services)
    api_now.ship(dev, app, 3)
    objects = replicated_on_primary(services)
    with database.connection_context():
        queued_by_writes = {r.key for r in ReplicaOutbox.select()}
    assert queued_by_writes and queued_by_writes < set(objects)

    result = cli.invoke(args=["replica", "sync"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts == {"objects": len(objects), "queued": len(objects) - len(queued_by_writes),
                      "known": len(queued_by_writes)}
    again = json.loads(cli.invoke(args=["replica", "sync"]).output)  # nothing twice, even before the drain
    assert again == {"objects": len(objects), "queued": 0, "known": len(objects)}
    drain_all(services)
    assert {k: on_replica(services, k) for k in objects} == objects
    with database.connection_context():
        assert replica.status(services)["copied"] == len(objects)
    assert json.loads(cli.invoke(args=["replica", "sync"]).output)["queued"] == 0


def test_a_dead_worker_and_a_stopped_replica_lose_no_copy(api, services, replica_weed):
    dev = api.new_developer()
    app = api.create_app(dev)
    for code in (1, 2, 3):
        api.ship(dev, app, code)
    with database.connection_context():
        # A scheduler dies holding a row's lease.
        held = replica.claim_next("dead-scheduler", 60)
        assert held is not None
    replica_weed.crash()
    try:
        result = replica.drain(services)
        assert result["errors"] >= 1 and result["items"] == 0
    finally:
        replica_weed.start()
    later = utcnow() + dt.timedelta(seconds=replica.RETRY_MAX + 61)
    drain_all(services, now=later)
    with database.connection_context():
        rows = list(ReplicaOutbox.select())
        assert rows and all(r.outcome == "copied" for r in rows)
        for r in rows:
            assert on_replica(services, r.key) == r.sha256 == replica.hash_stream(services.storage.stream(r.key))[0]
        assert replica.status(services)["copied"] == len(rows)


def test_scrub_finds_a_damaged_replica_object_and_copies_it_again(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    drain_all(services)
    with database.connection_context():
        package = keys_of(Version.get(Version.version_code == 1))[0]
        services.replica.put(package, b"rot")
        report = replica.scrub(services)
        assert [m["key"] for m in report["mismatches"]] == [package]
    drain_all(services)
    with database.connection_context():
        assert replica.scrub(services)["mismatches"] == []


def _current(api, package_id: str):
    r = api.client.get(f"/v1/packages/{package_id}/download")
    return r.status_code, r.json


def test_the_drill_lose_bucket_and_database_restore_from_the_replica(api, services, settings, database_url):
    a, b = api.new_developer("A"), api.new_developer("B")
    app_a, app_b = api.create_app(a), api.create_app(b)
    api.ship(a, app_a, 1)
    api.ship(a, app_a, 2)  # 1 is superseded
    api.submit(a, app_a, 3)  # a draft, purged below
    add_assets(api, a, app_a)
    api.ship(b, app_b, 1)
    pulled = api.ship(b, app_b, 2)
    r = api.client.post(f"/v1/admin/versions/{pulled['id']}/pull", json={"reason": "malware"}, headers=ADMIN)
    assert r.status_code == 200
    api.ship(b, app_b, 3)
    with database.connection_context():
        report = run_retention(services, utcnow() + dt.timedelta(seconds=120))
        assert [i["version_code"] for i in report["items"]] == [3]
        purged_key = keys_of(Version.get(Version.status == "purged"))[0]
        assert replica.backup_after_change(services, utcnow())["items"] == 1
    drain_all(services)
    before = {}
    for package_id in (app_a["package_id"], app_b["package_id"]):
        status, info = _current(api, package_id)
        assert status == 200
        before[package_id] = (info, bytes_behind_link(services, info))
    listing = api.client.get(f"/v1/packages/{app_a['package_id']}").json

    # The disaster: every object of the primary bucket and the database are gone.
    objects = [o.key for o in services.storage.list("")]
    services.storage.delete(*objects)
    assert not list(services.storage.list(""))
    db = database.obj
    db.close_all() if hasattr(db, "close_all") else db.close()
    if database_url.startswith("sqlite"):
        os.remove(database_url.removeprefix("sqlite:///"))
    else:
        empty_pg(database_url)

    from app import create_app

    rebuilt = build_services(settings)
    flask_app = create_app(settings, services=rebuilt)
    result = flask_app.test_cli_runner().invoke(args=["replica", "restore", "--json"])
    assert result.exit_code == 0, result.output
    client = flask_app.test_client()
    for package_id, (info, data) in before.items():
        r = client.get(f"/v1/packages/{package_id}/download")
        assert r.status_code == 200
        now = r.json
        assert (now["sha256"], now["signature"], now["size"], now["version_code"]) == (
            info["sha256"], info["signature"], info["size"], info["version_code"])
        assert bytes_behind_link(rebuilt, now) == data
        assert hashlib.sha256(data).hexdigest() == now["sha256"]
    assert before[app_b["package_id"]][0]["version_code"] == 3  # the pulled 2 did not come back
    assert client.get(f"/v1/packages/{app_a['package_id']}").json == listing
    assert not rebuilt.storage.exists(purged_key)
    with database.connection_context():
        assert Version.get(Version.id == pulled["id"]).status == "pulled"
    # Run again: nothing to do, and it says so.
    again = flask_app.test_cli_runner().invoke(args=["replica", "restore", "--json"])
    assert again.exit_code == 1 and "not empty" in again.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scheduler_killed_mid_replication_loses_and_doubles_nothing(settings, services, replica_weed):
    """The release flow through a real API and scheduler; the scheduler is
    SIGKILLed at random points and started again, the replica's server is
    crashed and started again once. Afterwards the replica holds every
    object, each counted once."""
    import random
    import threading
    import time

    from app.native import free_ports, start_api, start_scheduler
    from tests.faults import wait_until
    from tests.helpers import HttpApi, build_package
    from tests.stack import stack_env

    rnd = random.Random()
    api_port, scheduler_port = free_ports(2)
    env = {**stack_env(settings, api_port, scheduler_port), "MOSIS_JOB_LEASE_SECONDS": "3",
           "MOSIS_VALIDATION_LEASE_SECONDS": "5", "MOSIS_LOG_LEVEL": "WARNING"}
    logs = settings.data_dir / "logs"
    api_proc = start_api(env, env["MOSIS_APP_BIND"], logs)
    procs = [api_proc]
    released: list = []
    try:
        api_proc.wait_ready(60)
        procs.append(start_scheduler(env, logs))
        procs[-1].wait_ready(60)
        http = HttpApi(f"http://127.0.0.1:{api_port}")

        def release():
            try:
                dev = http.new_developer()
                for a in range(2):
                    app = http.create_app(dev)
                    r = http.call("PUT", f"/v1/apps/{app['id']}/icon", headers=dev["headers"],
                                  files={"icon": ("icon.png", I.encode(I.icon(), "PNG"), "image/png")})
                    assert r.status_code == 200, r.text
                    for code in (1, 2, 3):
                        data = build_package(app["package_id"], code, files={"blob.bin": os.urandom(200_000)})
                        released.append(http.ship(dev, app, code, data))
            except BaseException as e:  # the test fails with it below
                released.append(e)

        flow = threading.Thread(target=release)
        flow.start()
        kills = 0
        while flow.is_alive() or kills < 3:
            time.sleep(rnd.uniform(0.3, 2.5))
            procs[-1].kill()
            kills += 1
            if kills == 2:  # the replica's server goes away while nobody drains, and comes back
                replica_weed.crash()
                time.sleep(rnd.uniform(0, 1))
                procs.append(start_scheduler(env, logs))  # it drains against a dead replica a while
                procs[-1].wait_ready(60)
                time.sleep(rnd.uniform(1, 3))
                replica_weed.start()
                continue
            time.sleep(rnd.uniform(0, 1))
            procs.append(start_scheduler(env, logs))
            procs[-1].wait_ready(60)
        flow.join()
        errors = [r for r in released if isinstance(r, BaseException)]
        assert not errors and len(released) == 6, errors

        objects = replicated_on_primary(services)
        assert sum(k.startswith("packages/") for k in objects) == 2 * 3 * 2  # packages and manifests
        assert any(k.startswith("assets/") for k in objects) and any(k.startswith("backups/") for k in objects)

        def caught_up():
            with database.connection_context():
                if replica.status(services)["pending"]:
                    return False
            return all(on_replica(services, k) == sha for k, sha in objects.items())

        # Failed rows back off 2^attempts s; the replica was down a few seconds.
        wait_until(caught_up, timeout=60, interval=0.5, what=f"the replica to catch up\n{procs[-1].tail()}")
    finally:
        for p in reversed(procs):
            p.stop()
    with database.connection_context():
        copies = list(ReplicaOutbox.select().where(ReplicaOutbox.outcome == "copied"))
        assert len(copies) == len({r.key for r in copies}), "a key copied and counted twice"
        assert {r.key: r.sha256 for r in copies} == objects
        assert replica.status(services)["copied"] == len(objects)
        assert kills >= 3
