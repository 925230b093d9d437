"""Retention on a controllable clock, against real S3, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import pytest
import requests

from app.housekeeping import retention
from app.platform.models import AuditEvent, Version, VersionStatus as S
from app.edge.nginx import signed_link
from app.native import free_ports
from app.catalog.packages import keys_of
from app.edge.purge import EdgePurger
from app.housekeeping.retention import RULE_BY_STATUS, run_retention
from tests.helpers import ADMIN, build_package
from tests.housekeeping_helpers import objects_of, version_in
from tests.stack import edge_settings, stack_env, start_live_stack

SECOND = dt.timedelta(seconds=1)


def _limit(services, status) -> dt.timedelta:
    return dt.timedelta(seconds=RULE_BY_STATUS[status].limit_seconds(services.settings.retention))


def _expires_at(services, version_id) -> dt.datetime:
    v = Version.get_by_id(version_id)
    return RULE_BY_STATUS[v.status].clock_of(v) + _limit(services, v.status)


@pytest.mark.parametrize("status", [S.UPLOADING, S.FAILED, S.REJECTED, S.DRAFT, S.SUPERSEDED, S.PULLED])
def test_each_rule_just_before_and_just_after_its_limit(api, services, status):
    dev, app, vid = version_in(api, status)
    before = objects_of(services, vid)
    assert any(before.values())
    deadline = _expires_at(services, vid)

    report = run_retention(services, deadline - SECOND)
    assert vid not in [i["version_id"] for i in report["items"]]
    report = run_retention(services, deadline)  # "longer than" the limit: not yet
    assert vid not in [i["version_id"] for i in report["items"]]
    assert Version.get_by_id(vid).status == status and objects_of(services, vid) == before

    report = run_retention(services, deadline + SECOND)
    item = next(i for i in report["items"] if i["version_id"] == vid)
    outcome = S.ABANDONED if status == S.UPLOADING else S.PURGED
    assert item["status"] == status and item["outcome"] == outcome
    v = Version.get_by_id(vid)
    assert v.status == outcome and v.purged_from == status
    assert v.purged_at == deadline + SECOND and v.purge_reason == item["reason"]
    assert objects_of(services, vid) == {"package": False, "manifest": False, "temp": False}
    assert item["bytes"] == sum(o["size"] for o in item["objects"]) > 0
    event = AuditEvent.get((AuditEvent.subject_id == vid) & (AuditEvent.action == f"version.{outcome}"))
    assert event.actor == "system" and event.details["previous_status"] == status
    # the row stays, visible to its developer with when and why
    shown = api.version(dev, app, 1) if status != S.SUPERSEDED else None
    if shown is not None:
        assert shown["status"] == outcome and shown["purge_reason"] == v.purge_reason
    # a second run finds nothing more to do
    assert vid not in [i["version_id"] for i in run_retention(services, deadline + SECOND)["items"]]


def test_limits_are_configurable(api, services):
    _, _, vid = version_in(api, S.DRAFT)
    services.settings = services.settings.replace(
        retention=services.settings.retention.__class__(draft=60))
    validated = Version.get_by_id(vid).validated_at
    assert not run_retention(services, validated + dt.timedelta(seconds=60))["items"]
    item = run_retention(services, validated + dt.timedelta(seconds=61))["items"][0]
    assert item["version_id"] == vid and item["reason"] == "draft for longer than 1 minute"


def test_the_current_published_version_survives_any_clock(api, services, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    old = api.ship(dev, app, 1)
    current = api.ship(dev, app, 2)
    far = dt.datetime(2999, 1, 1)
    report = run_retention(services, far)
    ids = {i["version_id"] for i in report["items"]}
    assert old["id"] in ids and current["id"] not in ids
    assert Version.get_by_id(current["id"]).status == S.PUBLISHED
    info = client.get(f"/v1/packages/{app['package_id']}/download").json
    assert info["version_code"] == 2
    assert objects_of(services, current["id"])["package"] and objects_of(services, current["id"])["manifest"]


def test_dry_run_reports_exactly_what_then_goes_with_sizes(api, services):
    _, _, draft = version_in(api, S.DRAFT)
    _, _, uploading = version_in(api, S.UPLOADING)
    later = max(_expires_at(services, draft), _expires_at(services, uploading)) + SECOND
    sizes = {}
    for vid in (draft, uploading):
        v = Version.get_by_id(vid)
        for key in (*keys_of(v), retention.temp_key(v.upload_id)):
            info = services.storage.stat(key)
            if info:
                sizes[key] = info.size

    forecast = run_retention(services, later, dry_run=True)
    assert forecast["dry_run"] is True
    assert Version.get_by_id(draft).status == S.DRAFT and Version.get_by_id(uploading).status == S.UPLOADING
    assert all(services.storage.exists(k) for k in sizes)
    reported = {o["key"]: o["size"] for i in forecast["items"] for o in i["objects"]}
    assert reported == sizes
    assert forecast["totals"]["bytes"] == sum(sizes.values())
    assert forecast["totals"]["by_status"] == {
        S.DRAFT: {"versions": 1, "bytes": sum(s for k, s in sizes.items() if not k.startswith("temp/"))},
        S.UPLOADING: {"versions": 1, "bytes": sum(s for k, s in sizes.items() if k.startswith("temp/"))},
    }

    done = run_retention(services, later)
    assert done["items"] == forecast["items"] and done["totals"] == forecast["totals"]
    assert not any(services.storage.exists(k) for k in sizes)


def test_a_failed_version_whose_code_was_taken_again_leaves_the_new_objects(api, services, client):
    dev, app, failed = version_in(api, S.FAILED)
    again = api.ship(dev, app, 1)  # the code is free again: same keys as the failed one
    deadline = _expires_at(services, failed) + SECOND
    report = run_retention(services, deadline)
    item = next(i for i in report["items"] if i["version_id"] == failed)
    assert [o["key"] for o in item["objects"]] == []  # only its (gone) temp upload was its own
    assert Version.get_by_id(failed).status == S.PURGED
    assert objects_of(services, again["id"])["package"] and objects_of(services, again["id"])["manifest"]
    info = client.get(f"/v1/packages/{app['package_id']}/download").json
    assert info["version_code"] == 1


def test_an_older_failed_version_leaves_the_package_of_a_newer_failed_one(api, services):
    dev, app, older = version_in(api, S.FAILED)
    newer = api.submit(dev, app, 1, build_package("com.other.again", 1))  # same code, fails too
    assert newer["status"] == S.FAILED
    # the older one failed an hour earlier
    earlier = Version.get_by_id(older).failed_at - dt.timedelta(hours=1)
    Version.update(failed_at=earlier).where(Version.id == older).execute()
    run_retention(services, _expires_at(services, older) + SECOND)
    assert Version.get_by_id(older).status == S.PURGED
    assert Version.get_by_id(newer["id"]).status == S.FAILED
    assert objects_of(services, newer["id"])["package"]  # the newer one's, kept for its own 24 h
    run_retention(services, _expires_at(services, newer["id"]) + SECOND)
    assert not objects_of(services, newer["id"])["package"]


def test_a_version_that_changes_meanwhile_is_left_alone(api, services, client):
    dev, app, vid = version_in(api, S.DRAFT)
    deadline = _expires_at(services, vid) + SECOND
    [expiry] = [e for e in retention.expired(services.settings.retention, deadline) if e.version.id == vid]
    assert api.publish(dev, app, 1).status_code == 200  # the developer wins the race
    assert retention.purge(services, expiry, deadline) is False
    assert Version.get_by_id(vid).status == S.PUBLISHED
    assert objects_of(services, vid)["package"]
    assert client.get(f"/v1/packages/{app['package_id']}/download").status_code == 200


# -- crash injection --------------------------------------------------------------------


class Crash(BaseException):
    """The process dies here (not an error any code would catch)."""


def _crash(*_args, **_kwargs):
    raise Crash()


def _crash_after_first_key(services, monkeypatch):
    real = services.storage.delete

    def delete(*keys):
        real(keys[0])
        raise Crash()

    monkeypatch.setattr(services.storage, "delete", delete)


CRASH_POINTS = {
    "after_claim": lambda svc, mp: mp.setattr(retention, "forget_cached", _crash),
    "before_delete": lambda svc, mp: mp.setattr(svc.storage, "delete", _crash),
    "mid_delete": _crash_after_first_key,
    "after_delete": lambda svc, mp: mp.setattr(retention, "finish", _crash),
    "in_finish_transaction": lambda svc, mp: mp.setattr(retention, "record_audit", _crash),
}


@pytest.fixture
def edge(settings):
    """A real edge (nginx) and API (gunicorn) on the test's database and bucket."""
    stack = start_live_stack(edge_settings(settings, *free_ports(2)), scheduler=False)
    yield stack
    stack.stop()


def _link(stack, key: str) -> str:
    """A signed download link for `key`, good for ten minutes."""
    return signed_link(stack.settings.resolved_cdn_url, key, stack.settings.download_link_secret,
                       int(time.time()) + 600)


@pytest.mark.parametrize("point", list(CRASH_POINTS))
@pytest.mark.parametrize("status", [S.DRAFT, S.UPLOADING, S.SUPERSEDED])
def test_a_crash_between_the_steps_is_finished_by_the_next_run(request, api, services, client, point, status):
    dev, app, vid = version_in(api, status)
    package = keys_of(Version.get_by_id(vid))[0]
    purged: list[list[str]] = []
    services.cache_purgers.append(purged.append)
    stack = None
    if status == S.SUPERSEDED:
        # A link holder may download a superseded version (the edge asks the app).
        stack = request.getfixturevalue("edge")
        assert client.get(f"/edge/objects/{package}").status_code == 200
    deadline = _expires_at(services, vid) + SECOND
    with pytest.MonkeyPatch.context() as mp:
        CRASH_POINTS[point](services, mp)
        with pytest.raises(Crash):
            run_retention(services, deadline)

    # What the crash left: a version nobody can use any more ...
    v = Version.get_by_id(vid)
    assert v.status == S.PURGING and v.purged_from == status
    assert not AuditEvent.select().where(AuditEvent.subject_id == vid, AuditEvent.action.in_(
        ["version.purged", "version.abandoned"])).exists()
    if status == S.UPLOADING:
        r = api.complete(dev, app, 1)
        assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"
    else:
        r = api.publish(dev, app, 1)
        assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"
    download = client.get(f"/v1/packages/{app['package_id']}/download")
    if status == S.SUPERSEDED:
        assert download.json["version_code"] == 2
        # A link signed while it was servable: refused on a cache miss, not
        # served (its object may be gone or half gone) and no storage error.
        r = requests.get(_link(stack, package), timeout=30)
        assert r.status_code == 404 and r.headers["X-Cache-Status"] == "MISS", (r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "not_found"
    else:
        assert download.status_code == 404
    if point != "after_claim":
        # The caches were told to forget it as soon as it was claimed.
        assert any(package in keys for keys in purged), purged
    # ... whose code is still held, so no new upload can land on its keys meanwhile
    r = api.create_version(dev, app, 1, build_package(app["package_id"], 1))
    held = "version_code_not_increasing" if status == S.SUPERSEDED else "version_exists"
    assert r.status_code == 409 and r.json["error"]["code"] == held

    # The next run, at any time (the clock no longer matters), finishes it.
    purged.clear()
    report = run_retention(services, v.created_at)
    assert [i["version_id"] for i in report["items"]] == [vid]
    v = Version.get_by_id(vid)
    assert v.status == (S.ABANDONED if status == S.UPLOADING else S.PURGED)
    assert objects_of(services, vid) == {"package": False, "manifest": False, "temp": False}
    assert any(package in keys for keys in purged), purged
    assert AuditEvent.select().where(AuditEvent.subject_id == vid,
                                     AuditEvent.action == f"version.{v.status}").count() == 1
    assert not run_retention(services, deadline)["items"]
    if stack is not None:
        r = requests.get(_link(stack, package), timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_purged_package_leaves_the_edge_cache(api, services, edge):
    """A device holding a link to a superseded version that the edge has
    cached gets a 404, not the bytes, once retention purged it."""
    _, _, vid = version_in(api, S.SUPERSEDED)
    services.cache_purgers.append(EdgePurger(edge.internal_url))
    package = keys_of(Version.get_by_id(vid))[0]
    link = _link(edge, package)
    assert requests.get(link, timeout=30).headers["X-Cache-Status"] == "MISS"
    cached = requests.get(link, timeout=30)
    assert cached.status_code == 200 and cached.headers["X-Cache-Status"] == "HIT"

    run_retention(services, _expires_at(services, vid) + SECOND)
    assert Version.get_by_id(vid).status == S.PURGED
    r = requests.get(link, timeout=30)
    assert r.status_code == 404 and r.headers["X-Cache-Status"] == "MISS", (r.status_code, r.text[:200])


# -- the admin route and the CLI -------------------------------------------------------


def test_admin_route_forecasts_and_runs(api, services, client):
    _, _, vid = version_in(api, S.DRAFT)
    at = _expires_at(services, vid) + SECOND
    r = client.post("/v1/admin/retention/run", headers=ADMIN,
                    json={"dry_run": True, "now": at.isoformat() + "Z"})
    assert r.status_code == 200, r.json
    assert [i["version_id"] for i in r.json["items"]] == [vid] and r.json["dry_run"] is True
    assert r.json["totals"]["bytes"] > 0 and Version.get_by_id(vid).status == S.DRAFT
    # an offset is the same instant
    plus_two = (at + dt.timedelta(hours=2)).isoformat() + "+02:00"
    r2 = client.post("/v1/admin/retention/run", headers=ADMIN, json={"dry_run": True, "now": plus_two})
    assert r2.json["items"] == r.json["items"]
    # the ends of time are answered, not refused
    for edge, due in (("0001-01-01T00:00:00+14:00", []), ("9999-12-31T23:59:59-12:00", [vid])):
        r = client.post("/v1/admin/retention/run", headers=ADMIN, json={"dry_run": True, "now": edge})
        assert r.status_code == 200 and [i["version_id"] for i in r.json["items"]] == due, r.json
    # today nothing is due
    r = client.post("/v1/admin/retention/run", headers=ADMIN, json={"dry_run": False})
    assert r.status_code == 200 and r.json["items"] == [] and r.json["dry_run"] is False


# Input checks and the command line do not depend on the database kind.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
@pytest.mark.parametrize("body,status,code", [
    ({}, 400, "missing_field"),
    ({"dry_run": "yes"}, 400, "invalid_field"),
    ({"dry_run": True, "now": "next tuesday"}, 400, "invalid_field"),
    ({"dry_run": True, "now": 5}, 400, "invalid_field"),
    ({"dry_run": True, "now": "2027-13-01T00:00:00Z"}, 400, "invalid_field"),
    ({"dry_run": False, "now": "2030-01-01T00:00:00Z"}, 400, "now_requires_dry_run"),
    ({"dry_run": True, "purge_everything": True}, 400, "unknown_field"),
])
def test_admin_route_input_is_strict(api, services, client, body, status, code):
    _, _, vid = version_in(api, S.DRAFT)
    r = client.post("/v1/admin/retention/run", headers=ADMIN, json=body)
    assert r.status_code == status and r.json["error"]["code"] == code, r.json
    assert Version.get_by_id(vid).status == S.DRAFT


@SQLITE_ONLY
def test_admin_route_is_for_admins(api, client):
    dev = api.new_developer()
    assert client.post("/v1/admin/retention/run", json={"dry_run": True}).status_code == 401
    r = client.post("/v1/admin/retention/run", json={"dry_run": True}, headers=dev["headers"])
    assert r.status_code == 403


@SQLITE_ONLY
def test_cli_forecast_matches_the_function(api, app, services, settings, repo_root):
    _, _, vid = version_in(api, S.DRAFT)
    at = _expires_at(services, vid) + SECOND
    env = stack_env(settings, 0, 0)
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    args = ["retention", "run", "--dry-run", "--now", at.isoformat() + "Z"]
    # the command exactly as an operator types it
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args, "--json"], env=env,
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == run_retention(services, at, dry_run=True)
    runner = app.test_cli_runner()
    human = runner.invoke(args=args)
    assert human.exit_code == 0 and "1 versions would go" in human.output
    assert f"{app_version_line(vid)} (draft -> purged): draft for longer than 30 days" in human.output
    assert Version.get_by_id(vid).status == S.DRAFT
    refused = runner.invoke(args=["retention", "run", "--now", "2030-01-01"])
    assert refused.exit_code == 2 and "--dry-run" in refused.output
    bad = runner.invoke(args=["retention", "run", "--dry-run", "--now", "soon"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def app_version_line(version_id) -> str:
    v = Version.get_by_id(version_id)
    return f"{v.app.package_id} {v.version_code}"


def test_housekeeping_settings_come_from_the_environment():
    from app.platform.config import ConfigError, Settings

    s = Settings.from_env({"MOSIS_RETENTION_DRAFT_SECONDS": "120", "MOSIS_ORPHAN_DELETE": "true",
                           "MOSIS_ORPHAN_GRACE_SECONDS": "600", "MOSIS_SCRUB_SHARE_PER_DAY": "0.5",
                           "MOSIS_BACKUP_KEEP": "3", "MOSIS_JOB_LEASE_SECONDS": "5"})
    assert s.retention.draft == 120 and s.retention.failed == 86400
    h = s.housekeeping
    assert (h.orphan_delete, h.orphan_grace, h.scrub_share_per_day, h.backup_keep, h.job_lease) \
        == (True, 600, 0.5, 3, 5)
    assert Settings.from_env({}).housekeeping.job_lease == 0
    for bad in ({"MOSIS_SCRUB_SHARE_PER_DAY": "2"}, {"MOSIS_BACKUP_KEEP": "0"},
                {"MOSIS_ORPHAN_DELETE": "maybe"}, {"MOSIS_ORPHAN_GRACE_SECONDS": "5"},
                {"MOSIS_JOB_LEASE_SECONDS": "-1"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
