"""Orphan sweep, integrity scrub and lifecycle rules, against real S3.

Each test has a bucket of its own: the sweep looks at everything in it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from minio.commonconfig import Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from app.housekeeping import integrity
from app.housekeeping.integrity import scrub, scrub_quota, sweep_orphans
from app.platform.jobs import run_job
from app.platform.models import AuditEvent, JobState, Version, VersionStatus as S
from app.catalog.packages import keys_of
from app.platform.objectstore import LifecycleRule
from app.platform.storage import Storage, temp_key
from app.platform.clock import utcnow
from tests.housekeeping_helpers import unique_bucket, version_in
from tests.monitoring_helpers import sample


@pytest.fixture
def settings(settings):
    return settings.replace(bucket=unique_bucket())


def _past_grace(services) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=services.settings.housekeeping.orphan_grace + 60)


def _audits(action):
    return list(AuditEvent.select().where(AuditEvent.action == action).order_by(AuditEvent.id))


# -- orphan sweep ------------------------------------------------------------------------


@pytest.fixture
def messy_bucket(api, services):
    """A bucket with known objects, orphans, a left-over temp upload and a lost package."""
    dev = api.new_developer()
    app = api.create_app(dev)
    published = api.ship(dev, app, 1)
    done = api.submit(dev, app, 2)
    lost = api.submit(dev, app, 3)
    _, _, uploading = version_in(api, S.UPLOADING)
    st = services.storage
    leftover = temp_key(Version.get_by_id(done["id"]).upload_id)
    st.put(leftover, b"completed, but its temp copy stayed")  # a crash after the row changed
    orphans = [f"packages/{dev['id']}/{app['id']}/99/package.mosis", f"temp/{uuid.uuid4().hex}/package.mosis",
               "packages/notes.txt"]
    for key in orphans:
        st.put(key, b"nobody knows me")
    lost_key = keys_of(Version.get_by_id(lost["id"]))[0]
    st.delete(lost_key)
    known = [k for v in (published["id"], done["id"], lost["id"]) for k in keys_of(Version.get_by_id(v))
             if k != lost_key] + [temp_key(Version.get_by_id(uploading).upload_id)]
    return {"orphans": orphans, "leftover": leftover, "known": known, "lost": (lost["id"], lost_key)}


def test_sweep_reports_orphans_and_deletes_leftovers(services, messy_bucket):
    young = sweep_orphans(services, utcnow(), delete=True)
    assert young["findings"] == [] and young["within_grace"] == 4
    assert all(services.storage.exists(k) for k in messy_bucket["orphans"] + [messy_bucket["leftover"]])

    report = sweep_orphans(services, _past_grace(services))
    found = {f["key"]: f for f in report["findings"]}
    assert set(found) == set(messy_bucket["orphans"]) | {messy_bucket["leftover"]}
    assert found[messy_bucket["leftover"]]["kind"] == "stale_temp"
    assert found[messy_bucket["leftover"]]["why"] == "its version is draft"
    assert {found[k]["kind"] for k in messy_bucket["orphans"]} == {"orphan"}
    assert report["totals"]["orphan"] == {"objects": 3, "bytes": 3 * len(b"nobody knows me")}
    # MOSIS_ORPHAN_DELETE is off: orphans stay, the left-over temp copy goes
    assert all(services.storage.exists(k) for k in messy_bucket["orphans"])
    assert not services.storage.exists(messy_bucket["leftover"]) and found[messy_bucket["leftover"]]["deleted"]
    assert all(services.storage.exists(k) for k in messy_bucket["known"])
    lost_id, lost_key = messy_bucket["lost"]
    assert report["missing"] == [{"version_id": lost_id, "status": "draft", "keys": [lost_key]}]
    # lost objects are reported at once, by every sweep (both runs here)
    events = _audits("storage.objects_missing")
    assert len(events) == 2 and events[-1].details["missing"] == report["missing"]
    assert _audits("storage.orphans_deleted")[0].details["keys"] == [messy_bucket["leftover"]]
    assert sample("mosis_storage_orphan_objects", kind="orphan") == 3
    assert sample("mosis_storage_orphan_objects", kind="stale_temp") == 1
    assert sample("mosis_storage_missing_objects", status="draft") == 1


def test_sweep_deletes_orphans_when_configured(services, messy_bucket):
    forecast = sweep_orphans(services, _past_grace(services), delete=True, dry_run=True)
    assert len(forecast["findings"]) == 4 and not any(f["deleted"] for f in forecast["findings"])
    assert all(services.storage.exists(k) for k in messy_bucket["orphans"])

    services.settings = services.settings.replace(
        housekeeping=services.settings.housekeeping.__class__(orphan_delete=True))
    report = sweep_orphans(services, _past_grace(services))
    assert all(f["deleted"] for f in report["findings"]) and len(report["findings"]) == 4
    assert not any(services.storage.exists(k) for k in messy_bucket["orphans"])
    assert all(services.storage.exists(k) for k in messy_bucket["known"])
    assert sweep_orphans(services, _past_grace(services))["findings"] == []


def test_objects_of_purged_versions_are_orphans(api, services):
    """A purge that could not delete (the key was shared) leaves an orphan the sweep finds."""
    dev = api.new_developer()
    app = api.create_app(dev)
    v = api.submit(dev, app, 1)
    Version.update(status=S.PURGED).where(Version.id == v["id"]).execute()
    report = sweep_orphans(services, _past_grace(services))
    assert sorted(f["key"] for f in report["findings"]) == sorted(keys_of(Version.get_by_id(v["id"])))


def test_orphan_job_records_its_run(services, messy_bucket):
    result = run_job(integrity.ORPHAN_JOB, services, "s1", _past_grace(services))
    assert result == {"items": 4, "errors": 1}
    state = JobState.get_by_id("orphan_sweep")
    assert state.runs == 1 and state.last_items == 4 and state.last_errors == 1
    assert sample("mosis_job_last_items", job="orphan_sweep") == 4
    assert sample("mosis_job_last_errors", job="orphan_sweep") == 1


def test_cli_reports_orphans(app, services):
    services.storage.put("temp/unknown/package.mosis", b"x")
    out = app.test_cli_runner().invoke(args=["storage", "orphans", "--dry-run"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["dry_run"] is True and report["within_grace"] == 1 and report["objects_listed"] == 1


# -- integrity scrub -------------------------------------------------------------------------


def _catalogue(api, n: int) -> list[str]:
    """Ids of `n` published versions, one per app."""
    dev = api.new_developer()
    return [api.ship(dev, api.create_app(dev), 1)["id"] for _ in range(n)]


def test_scrub_finds_bit_rot_and_tampering(api, services):
    catalogue = _catalogue(api, 5)
    st = services.storage
    flipped, grown, rewritten, lost, intact = catalogue
    package = keys_of(Version.get_by_id(flipped))[0]
    data = bytearray(b"".join(st.stream(package)))
    data[len(data) // 2] ^= 0x01
    st.put(package, bytes(data))
    grown_key = keys_of(Version.get_by_id(grown))[0]
    st.put(grown_key, b"".join(st.stream(grown_key)) + b"!")
    st.put(keys_of(Version.get_by_id(rewritten))[1], json.dumps({"package_id": "com.evil.app"}).encode())
    st.delete(keys_of(Version.get_by_id(lost))[0])
    before = {k: sample("mosis_integrity_mismatches_total", kind=k) for k in ("sha256", "size", "manifest",
                                                                              "missing")}
    now = utcnow()
    report = scrub(services, now, limit=10)
    assert report["checked"] == 5
    kinds = {f["version_id"]: f["kind"] for f in report["failures"]}
    assert kinds == {flipped: "sha256", grown: "size", rewritten: "manifest", lost: "missing"}
    for kind in before:
        assert sample("mosis_integrity_mismatches_total", kind=kind) == before[kind] + 1
    assert sample("mosis_integrity_last_failures") == 4
    events = {e.subject_id: e.details for e in _audits("integrity.mismatch")}
    assert set(events) == set(kinds) and events[flipped]["expected"] == Version.get_by_id(flipped).sha256
    assert events[flipped]["actual"] != events[flipped]["expected"]
    assert all(Version.get_by_id(v).verified_at == now for v in catalogue)
    assert Version.get_by_id(flipped).status == S.PUBLISHED  # reported, never changed by itself


def test_scrub_rolls_through_the_catalogue(api, services):
    catalogue = _catalogue(api, 3)
    start = utcnow()
    seen = []
    for hour in range(4):
        now = start + dt.timedelta(hours=hour)
        report = scrub(services, now, limit=1)
        assert report["checked"] == 1 and report["failures"] == []
        [checked] = [v.id for v in Version.select().where(Version.verified_at == now)]
        seen.append(checked)
    assert sorted(seen[:3]) == sorted(catalogue)  # every package once before any twice
    assert seen[3] == seen[0]


def test_scrub_job_reads_its_daily_share(api, services):
    _catalogue(api, 2)
    services.settings = services.settings.replace(
        housekeeping=services.settings.housekeeping.__class__(scrub_share_per_day=1.0))
    result = run_job(integrity.SCRUB_JOB, services, "s1", utcnow())
    assert result == {"items": scrub_quota(2, 1.0), "errors": 0} and result["items"] == 1
    assert JobState.get_by_id("integrity_scrub").last_items == 1


def test_scrub_quota():
    assert scrub_quota(0, 0.1) == 0
    assert scrub_quota(1000, 0) == 0
    assert scrub_quota(240, 0.1) == 1  # 24 a day
    assert scrub_quota(10_000, 0.1) == 42  # ceil(1000 / 24)
    assert scrub_quota(3, 1.0, dt.timedelta(days=2)) == 3  # never more than there is


def test_scrub_ignores_a_version_purged_while_it_was_read(api, services, monkeypatch):
    catalogue = _catalogue(api, 2)
    victim = catalogue[0]
    real = integrity.check_version

    def purge_meanwhile(svc, version):
        if version.id == victim:
            svc.storage.delete(*keys_of(version))
            Version.update(status=S.PURGED).where(Version.id == victim).execute()
        return real(svc, version)

    monkeypatch.setattr(integrity, "check_version", purge_meanwhile)
    report = scrub(services, utcnow(), limit=10)
    assert report["failures"] == [] and report["checked"] == 1
    assert not _audits("integrity.mismatch")


# -- lifecycle rules -----------------------------------------------------------------------------


def test_lifecycle_rules_are_set_and_operator_rules_kept(services):
    storage = Storage(services.settings.replace(bucket=unique_bucket()))
    storage.ensure_bucket()
    storage.client.set_bucket_lifecycle(bucket_name=storage.bucket, config=LifecycleConfig([
        Rule("Enabled", rule_filter=Filter(prefix="exports/"), rule_id="operator-exports",
             expiration=Expiration(days=30))]))
    storage.ensure_bucket()
    storage.ensure_bucket()  # again: nothing doubles
    rules = {r.rule_id: r for r in storage.lifecycle_rules()}
    assert set(rules) == {"temp-expiry", "operator-exports"}
    assert rules["temp-expiry"] == LifecycleRule("temp-expiry", enabled=True, prefix="temp/", expire_days=1,
                                                 abort_multipart_days=1)
    exports = rules["operator-exports"]
    assert exports.prefix == "exports/" and exports.expire_days == 30 and exports.abort_multipart_days is None


def test_packages_of_a_new_version_are_not_orphans(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    assert api.upload_and_complete(dev, app, 1)["status"] == S.VALIDATING  # package in place, no manifest
    report = sweep_orphans(services, _past_grace(services))
    assert report["findings"] == [] and report["missing"] == []


def test_sweep_deletes_stray_patches_and_keeps_those_a_delta_row_names(api, services):
    from app.catalog import deltas
    from app.platform.models import ReplicaOutbox
    from tests.delta_packages import app_files
    from tests.helpers import build_package

    dev = api.new_developer()
    app = api.create_app(dev)
    for code in (1, 2):
        api.ship(dev, app, code, build_package(app["package_id"], code, app_files(7, code)))
    assert deltas.run_pending(services, "worker-a") == ["ready"]
    ready = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    # A patch whose row was removed before its object was deleted, and one no row ever named.
    stray = [f"deltas/{dev['id']}/{app['id']}/2-3.patch", "deltas/notes.txt"]
    for key in stray:
        services.storage.put(key, b"a patch nobody offers")
    services.settings = services.settings.replace(replica_s3_endpoint="http://127.0.0.1:9")

    fresh = sweep_orphans(services, utcnow())  # inside the grace: maybe still being written
    assert fresh["findings"] == [] and fresh["within_grace"] == 2
    assert all(services.storage.exists(k) for k in stray)

    report = sweep_orphans(services, _past_grace(services))
    found = {f["key"]: f for f in report["findings"]}
    assert set(found) == set(stray) and {f["kind"] for f in found.values()} == {"stray_patch"}
    assert all(f["deleted"] for f in found.values())  # also with MOSIS_ORPHAN_DELETE off: made again at will
    assert report["totals"]["stray_patch"] == {"objects": 2, "bytes": 2 * len(b"a patch nobody offers")}
    assert not any(services.storage.exists(k) for k in stray)
    assert services.storage.exists(ready) and deltas.servable(ready) is not None
    queued = {r.key for r in ReplicaOutbox.select().where(ReplicaOutbox.op == "delete")}
    assert queued == set(stray)  # the replica forgets them too, after the delete delay
    assert sample("mosis_storage_orphan_objects", kind="stray_patch") == 2
    assert sweep_orphans(services, _past_grace(services))["findings"] == []
