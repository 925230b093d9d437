"""Storage accounting, usage snapshots, cost estimates and the scheduler's gauges."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import pytest

from app.housekeeping import monitoring
from app.platform.config import ConfigError
from app.housekeeping.cost import cost_report, load_prices, snapshot_usage
from app.platform.jobs import Job, run_job
from app.platform.models import EdgeTraffic, StorageScan, UsageSnapshot, Version
from app.native import free_port
from app.platform.storage import Storage, package_key
from app.housekeeping.usage import scan_and_store, scan_bucket
from app.platform.clock import utcnow
from tests.helpers import ADMIN, build_package
from tests.monitoring_helpers import sample

GiB = 1024 ** 3


@pytest.fixture
def settings(settings):
    """A bucket of this test's own: scans count every object in it."""
    return settings.replace(bucket=f"mosis-usage-{uuid.uuid4().hex[:12]}")


# -- storage by prefix and status ------------------------------------------------------

def test_scan_counts_bytes_by_prefix_and_by_version_status(api, services, client):
    storage = services.storage
    dev = api.new_developer()
    app = api.create_app(dev)
    shipped = build_package(app["package_id"], 1)
    api.ship(dev, app, 1, shipped)
    broken = b"not a zip at all" * 10
    assert api.submit(dev, app, 2, broken)["status"] == "failed"
    pending = build_package(app["package_id"], 3)
    r = api.create_version(dev, app, 3, pending)
    assert api.upload(r.json["upload"], pending).status_code == 200  # never completed
    storage.put(f"assets/{app['id']}/icon-64.png", b"i" * 100)
    storage.put("backups/db-2026-11-30.sqlite", b"b" * 1234)
    orphan = package_key(dev["id"], "f" * 32, 7)
    storage.put(orphan, b"o" * 50)
    storage.put("misc/readme.txt", b"r" * 5)
    storage.put(f"deltas/{dev['id']}/{app['id']}/1-2.patch", b"d" * 7)  # a delta patch: its own prefix
    manifest = storage.stat(package_key(dev["id"], app["id"], 1).replace("package.mosis", "manifest.json"))

    scan = scan_bucket(storage)

    assert scan["by_prefix"] == {
        "packages": {"bytes": len(shipped) + manifest.size + len(broken) + 50, "objects": 4},
        "deltas": {"bytes": 7, "objects": 1},
        "assets": {"bytes": 100, "objects": 1},
        "temp": {"bytes": len(pending), "objects": 1},
        "backups": {"bytes": 1234, "objects": 1},
        "other": {"bytes": 5, "objects": 1},
    }
    assert scan["by_status"]["published"] == {"bytes": len(shipped) + manifest.size, "objects": 2}
    assert scan["by_status"]["failed"] == {"bytes": len(broken), "objects": 1}
    assert scan["by_status"]["uploading"] == {"bytes": len(pending), "objects": 1}
    assert scan["by_status"]["orphaned"] == {"bytes": 50, "objects": 1}
    assert scan["by_status"]["draft"] == {"bytes": 0, "objects": 0}
    assert scan["total_objects"] == 9
    assert scan["total_bytes"] == sum(v["bytes"] for v in scan["by_prefix"].values())

    # The admin route reports the latest scan (making one when there is none).
    r = client.get("/v1/admin/storage", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["by_prefix"] == scan["by_prefix"] and r.json["by_status"] == scan["by_status"]
    assert r.json["total"] == {"bytes": scan["total_bytes"], "objects": 9}
    assert r.json["budget_bytes"] == services.settings.storage_budget_bytes
    assert r.json["budget_used"] == pytest.approx(scan["total_bytes"] / services.settings.storage_budget_bytes,
                                                  rel=1e-5)
    assert r.json["versions_by_status"]["published"] == 1
    assert r.json["versions_by_status"]["failed"] == 1
    assert r.json["versions_by_status"]["uploading"] == 1
    assert StorageScan.select().count() == 1
    assert client.get("/v1/admin/storage", headers=dev["headers"]).status_code == 403
    assert client.get("/v1/admin/storage").status_code == 401


def test_a_released_version_code_reused_counts_under_the_live_version(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    assert api.submit(dev, app, 5, b"junk" * 20)["status"] == "failed"
    good = build_package(app["package_id"], 5)
    assert api.submit(dev, app, 5, good)["status"] == "draft"  # the failed one released code 5
    scan = scan_bucket(services.storage)
    assert scan["by_status"]["failed"]["objects"] == 0
    assert scan["by_status"]["draft"]["objects"] == 2  # package and manifest


# -- cost estimates ------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 30, 12, 0)


def record_usage(storage_bytes: int, days: int, requests_per_day: int, egress_per_day: int) -> None:
    StorageScan.create(scanned_at=NOW - dt.timedelta(hours=1), total_bytes=storage_bytes, total_objects=10,
                       by_prefix={}, by_status={}, duration=0.1)
    for n in range(1, days + 1):
        UsageSnapshot.create(day=NOW.date() - dt.timedelta(days=n), storage_bytes=storage_bytes,
                             storage_objects=10, requests=requests_per_day, egress_bytes=egress_per_day,
                             downloads=requests_per_day // 2)


def totals(report: dict) -> dict:
    return {o["option"]: o["total_usd"] for o in report["options"]}


def test_estimates_match_a_hand_calculation(services):
    # 250 GiB stored; 10 complete days of 100,000 requests and 60 GiB egress
    # each: a 30-day month is 3 million requests and 1,800 GB.
    record_usage(250 * GiB, 10, 100_000, 60 * GiB)
    report = cost_report(services.settings, now=NOW)

    assert report["usage"]["storage_gb"] == 250
    assert report["usage"]["requests"] == 3_000_000
    assert report["usage"]["egress_gb"] == 1800
    assert report["usage"]["basis"].startswith("10 complete day(s) 2026-11-20 .. 2026-11-29")
    assert totals(report) == {
        "cloudflare_r2": 17.25,            # 250 x 0.015 + 3 x 4.50 + 1800 x 0
        "aws_s3_cloudfront": 173.75,       # 250 x 0.023 + 1800 x 0.085 + 3 x 5.00
        "backblaze_b2_cloudflare": 2.45,   # 250 x 0.005 + 1800 x 0 + 3 x 0.40
        "minio_vps": 50.00,                # the VPS; Cloudflare's free tier
    }
    r2 = report["options"][0]
    assert [i["arithmetic"] for i in r2["items"]] == [
        "250 GB-month x $0.015 = $3.75",
        "3 million requests x $4.5 = $13.50",
        "1800 GB x $0 = $0.00",
    ]
    assert r2["arithmetic"] == "$3.75 + $13.50 + $0.00 = $17.25"
    assert report["prices"]["taken"] == "2026-11-30"
    assert [h["day"] for h in report["history"]][:2] == ["2026-11-29", "2026-11-28"]


def test_the_seeds_example_month_through_the_api(client):
    # The plan's own scenario: 100 GB stored, 1 M requests, 1 TB egress.
    r = client.get("/v1/admin/costs?storage_gb=100&requests=1000000&egress_gb=1000", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert totals(r.json) == {"cloudflare_r2": 6.00, "aws_s3_cloudfront": 92.30,
                              "backblaze_b2_cloudflare": 0.90, "minio_vps": 50.00}
    assert r.json["usage"]["basis"].startswith("given: egress_gb, requests, storage_gb")
    aws = r.json["options"][1]["items"]
    assert aws[1]["arithmetic"] == "1000 GB x $0.085 = $85.00"
    assert aws[1]["note"].startswith("the plan quotes $0.085-0.12/GB")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # input checks: one database is enough
@pytest.mark.parametrize("query, code", [
    ("storage=1", "unknown_parameter"),
    ("storage_gb=-1", "invalid_parameter"),
    ("storage_gb=abc", "invalid_parameter"),
    ("egress_gb=nan", "invalid_parameter"),
    ("requests=Infinity", "invalid_parameter"),
    ("requests=1e16", "invalid_parameter"),
])
def test_what_if_figures_are_checked(client, query, code):
    r = client.get(f"/v1/admin/costs?{query}", headers=ADMIN)
    assert r.status_code == 400 and r.json["error"]["code"] == code


def test_costs_are_for_admins(client, api):
    dev = api.new_developer()
    assert client.get("/v1/admin/costs", headers=dev["headers"]).status_code == 403
    assert client.get("/v1/admin/costs").status_code == 401


def test_prices_come_from_the_configured_file(services, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"taken": "2027-01-01", "options": [{
        "id": "small_vps", "name": "Small VPS", "capacity_gb": 100,
        "items": [{"item": "disk", "usage": "storage_gb", "usd_per_unit": 0.02, "included": 10},
                  {"item": "traffic", "usage": "egress_gb", "usd_per_unit": 0.01, "included": 5000}]}]}))
    record_usage(250 * GiB, 3, 1000, 100 * GiB)
    report = cost_report(services.settings.replace(prices_file=str(path)), now=NOW)
    (option,) = report["options"]
    assert option["total_usd"] == 4.80  # (250 - 10) x 0.02, and 3000 GB of traffic within 5000
    assert option["items"][0]["arithmetic"] == "(250 - 10 included) GB-month x $0.02 = $4.80"
    assert option["items"][1]["usd"] == 0
    assert option["warnings"] == ["storage of 250 GB exceeds the 100 GB this price assumes"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"options": []}', "taken is missing"),
    ('{"taken": "x", "options": [{"id": "a", "name": "A", "items": [{"item": "s", "usage": "disk_gb", '
     '"usd_per_unit": 1}]}]}', "usage must be one of"),
    ('{"taken": "x", "options": [{"id": "a", "name": "A", "items": [{"item": "s", "usage": "storage_gb", '
     '"usd_per_unit": -1}]}]}', "non-negative"),
    ('{"taken": "x", "options": [{"id": "a", "name": "A", "items": []}, {"id": "a", "name": "B", "items": []}]}',
     "unique"),
])
def test_a_broken_prices_file_is_refused_with_its_reason(tmp_path, content, message):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_prices(path)


def test_a_broken_prices_file_stops_the_start_and_fails_the_route_cleanly(settings, tmp_path, client):
    from app.services import build_services

    path = tmp_path / "prices.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        build_services(settings.replace(prices_file=str(path)))
    # Broken after the start: the route says so instead of failing with a 500.
    path.write_text('{"taken": "x", "options": []}')
    svc = client.application.extensions["mosis"]
    svc.settings = svc.settings.replace(prices_file=str(path))
    assert client.get("/v1/admin/costs", headers=ADMIN).status_code == 200
    path.write_text('{"taken": "x", "options": "none"}')
    r = client.get("/v1/admin/costs", headers=ADMIN)
    assert r.status_code == 503 and r.json["error"]["code"] == "prices_unavailable"


def test_before_a_complete_day_the_month_is_scaled_from_today(services):
    EdgeTraffic.create(day=NOW.date(), area="packages", requests=800, bytes_sent=3 * GiB)
    EdgeTraffic.create(day=NOW.date(), area="assets", requests=200, bytes_sent=GiB)
    EdgeTraffic.create(day=NOW.date(), area="api", requests=5000, bytes_sent=GiB)  # not billed
    report = cost_report(services.settings, now=NOW)  # 12 h into the day
    assert report["usage"]["requests"] == 1000 * 60  # 30 days are 60 half-days
    assert report["usage"]["egress_gb"] == 4 * 60
    assert report["usage"]["basis"].startswith("today's traffic so far (12.0 h)")


# -- the daily snapshot ------------------------------------------------------------------------

def test_snapshots_cover_each_complete_day_once(services):
    d = NOW.date()
    for back, (requests, sent) in {3: (10, 100), 2: (20, 200), 1: (30, 300), 0: (99, 999)}.items():
        day = d - dt.timedelta(days=back)
        EdgeTraffic.create(day=day, area="packages", requests=requests, bytes_sent=sent, downloads=1)
        EdgeTraffic.create(day=day, area="api", requests=1000, bytes_sent=1000)
    StorageScan.create(scanned_at=NOW - dt.timedelta(days=3, hours=2), total_bytes=1000, total_objects=1,
                       by_prefix={}, by_status={}, duration=0)
    StorageScan.create(scanned_at=NOW - dt.timedelta(days=1, hours=2), total_bytes=3000, total_objects=3,
                       by_prefix={}, by_status={}, duration=0)

    assert snapshot_usage(services, NOW) == 3
    rows = {s.day: (s.storage_bytes, s.requests, s.egress_bytes, s.downloads)
            for s in UsageSnapshot.select()}
    assert rows == {d - dt.timedelta(days=3): (1000, 10, 100, 1),
                    d - dt.timedelta(days=2): (1000, 20, 200, 1),
                    d - dt.timedelta(days=1): (3000, 30, 300, 1)}
    assert snapshot_usage(services, NOW + dt.timedelta(hours=6)) == 0  # today is not complete
    assert snapshot_usage(services, NOW + dt.timedelta(days=1)) == 1
    assert UsageSnapshot.get_by_id(d).requests == 99


def test_a_fresh_install_has_nothing_to_snapshot(services):
    assert snapshot_usage(services, NOW) == 0
    assert UsageSnapshot.select().count() == 0


# -- the scheduler's gauges ---------------------------------------------------------------------

def test_gauges_report_queue_storage_costs_and_jobs(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 1)
    r = api.create_version(dev, app, 1, data)
    api.upload(r.json["upload"], data)
    assert api.complete(dev, app, 1).status_code == 202  # queued, not validated yet
    Version.update(uploaded_at=utcnow() - dt.timedelta(minutes=20)).execute()
    scan_and_store(services)
    job = Job("gauge_probe", lambda svc, now: 1, dt.timedelta(minutes=5))
    run_job(job, services, "test")

    monitoring.refresh(services, [job])

    assert sample("mosis_validation_queue_depth") == 1
    assert 1200 <= sample("mosis_validation_queue_oldest_age_seconds") < 1500
    assert sample("mosis_versions", status="validating") == 1
    assert sample("mosis_storage_bytes", prefix="packages") == len(data)
    assert sample("mosis_storage_status_bytes", status="validating") == len(data)
    assert sample("mosis_storage_used_bytes") == len(data)
    assert sample("mosis_storage_budget_bytes") == services.settings.storage_budget_bytes
    assert sample("mosis_storage_up") == 1 and sample("mosis_database_up") == 1
    assert sample("mosis_cost_estimate_usd", option="minio_vps", name="Self-hosted MinIO on a VPS") == 50
    assert sample("mosis_cost_usage", quantity="storage_gb") == pytest.approx(len(data) / GiB)
    assert sample("mosis_job_period_seconds", job="gauge_probe") == 300
    assert abs(sample("mosis_job_last_success_timestamp_seconds", job="gauge_probe")
               - dt.datetime.now(dt.timezone.utc).timestamp()) < 120


def test_gauges_report_the_delta_queue(api, services):
    from app.platform.models import Delta, DeltaStatus

    dev = api.new_developer()
    app = api.create_app(dev)
    for code in range(1, 5):
        api.ship(dev, app, code)  # patches to 2, 3 and 4 queued: 1 + 2 + 3
    monitoring.refresh(services)
    assert sample("mosis_delta_queue_depth") == 6
    assert 0 <= sample("mosis_delta_queue_oldest_age_seconds") < 600
    assert sample("mosis_deltas_failed_last_day") == 0
    rows = list(Delta.select().order_by(Delta.to_version_code, Delta.from_version_code))
    now = utcnow()
    Delta.update(created_at=now - dt.timedelta(minutes=40)).where(Delta.id == rows[0].id).execute()
    Delta.update(status=DeltaStatus.FAILED, updated_at=now - dt.timedelta(hours=2)).where(
        Delta.id.in_([rows[1].id, rows[2].id])).execute()
    Delta.update(status=DeltaStatus.FAILED, updated_at=now - dt.timedelta(days=2)).where(
        Delta.id == rows[3].id).execute()  # gave up before the last day: not counted
    monitoring.refresh(services)
    assert sample("mosis_delta_queue_depth") == 3
    assert 2400 <= sample("mosis_delta_queue_oldest_age_seconds") < 3000
    assert sample("mosis_deltas_failed_last_day") == 2
    Delta.update(status=DeltaStatus.READY).where(Delta.status == DeltaStatus.PENDING).execute()
    monitoring.refresh(services)
    assert sample("mosis_delta_queue_depth") == 0 and sample("mosis_delta_queue_oldest_age_seconds") == 0


def test_unreachable_storage_reads_zero(services):
    dead = services.settings.replace(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    monitoring.refresh(dataclasses.replace(services, storage=Storage(dead)))
    assert sample("mosis_storage_up") == 0
    monitoring.refresh(services)
    assert sample("mosis_storage_up") == 1
