"""Storage accounting: what the bucket holds, by prefix and by version status.

A scan lists the whole bucket once and attributes every object:

- by prefix: `packages`, `assets`, `temp`, `backups` (anything else is `other`);
- by version status: objects under `packages/` and `temp/` belong to a version
  row (by app and version code, or by upload id) and count under its status;
  objects no row claims count as `orphaned`. Assets belong to apps, not to
  versions, so they appear only by prefix.

Scans are stored (`storage_scan`), so the API, every scheduler's gauges and
the daily usage snapshot read the same numbers without listing the bucket
again. The `storage_usage` housekeeping job scans every 15 minutes.
"""

from __future__ import annotations

import datetime as dt
import time

import peewee as pw

from app.platform.clock import iso, utcnow
from app.platform.jobs import Job
from app.platform.models import StorageScan, Version, database
from app.platform.models import VersionStatus as S
from app.platform.objectstore import ObjectStore
from app.platform.storage import PREFIXES, split_package_path, split_temp_path

OTHER = "other"
ORPHANED = "orphaned"
SCAN_PERIOD = dt.timedelta(minutes=15)
KEEP_SCANS = dt.timedelta(days=40)  # the daily snapshot looks back this far at most


def _version_index() -> tuple[dict, dict]:
    """(app_id, version_code) -> status and upload_id -> status, from the rows."""
    by_code: dict[tuple[str, int], str] = {}
    by_upload: dict[str, str] = {}
    rows = (Version.select(Version.app, Version.version_code, Version.status, Version.upload_id)
            .order_by(Version.created_at).tuples())
    for app_id, code, status, upload_id in rows:
        # A code holds one live version; released ones (failed, purged, ...)
        # are history and own the objects only when no live version does.
        held = by_code.get((app_id, code))
        if held is None or held in S.RELEASED or status not in S.RELEASED:
            by_code[(app_id, code)] = status
        by_upload[upload_id] = status
    return by_code, by_upload


def _status_of(key: str, by_code: dict, by_upload: dict) -> str | None:
    package = split_package_path(key)
    if package is not None:
        return by_code.get((package[1], package[2]), ORPHANED)
    upload = split_temp_path(key)
    if upload is not None:
        return by_upload.get(upload[0], ORPHANED)
    return None


def _add(table: dict, name: str, size: int) -> None:
    entry = table.setdefault(name, {"bytes": 0, "objects": 0})
    entry["bytes"] += size
    entry["objects"] += 1


def scan_bucket(storage: ObjectStore) -> dict:
    """List the bucket and total it by prefix and by version status."""
    by_code, by_upload = _version_index()
    by_prefix = {p: {"bytes": 0, "objects": 0} for p in PREFIXES}
    by_status = {s: {"bytes": 0, "objects": 0} for s in (*S.ALL, ORPHANED)}
    total_bytes = total_objects = 0
    for obj in storage.list(""):
        prefix = obj.key.split("/", 1)[0]
        _add(by_prefix, prefix if prefix in PREFIXES else OTHER, obj.size)
        status = _status_of(obj.key, by_code, by_upload)
        if status is not None:
            _add(by_status, status, obj.size)
        total_bytes += obj.size
        total_objects += 1
    return {"total_bytes": total_bytes, "total_objects": total_objects,
            "by_prefix": by_prefix, "by_status": by_status}


def scan_and_store(svc, now: dt.datetime | None = None) -> StorageScan:
    started = time.monotonic()
    result = scan_bucket(svc.storage)
    with database.atomic():
        scan = StorageScan.create(scanned_at=now or utcnow(), duration=time.monotonic() - started,
                                  **result)
        StorageScan.delete().where(StorageScan.scanned_at < scan.scanned_at - KEEP_SCANS).execute()
    return scan


def storage_usage_job(svc, now: dt.datetime) -> dict:
    """Housekeeping job: scan the bucket and keep the result."""
    scan = scan_and_store(svc, now)
    return {"items": scan.total_objects, "bytes": scan.total_bytes}


def latest_scan() -> StorageScan | None:
    return StorageScan.select().order_by(StorageScan.scanned_at.desc(), StorageScan.id.desc()).first()


def versions_by_status() -> dict[str, int]:
    counts = {s: 0 for s in S.ALL}
    for status, n in (Version.select(Version.status, pw.fn.COUNT(Version.id))
                      .group_by(Version.status).tuples()):
        counts[status] = n
    return counts


def storage_report(svc) -> dict:
    """`GET /v1/admin/storage`: the latest scan (made now if there is none yet)."""

    scan = latest_scan() or scan_and_store(svc)
    budget = svc.settings.storage_budget_bytes
    return {
        "scanned_at": iso(scan.scanned_at),
        "scan_seconds": round(scan.duration, 3),
        "total": {"bytes": scan.total_bytes, "objects": scan.total_objects},
        "budget_bytes": budget,
        "budget_used": scan.total_bytes / budget if budget else None,
        "by_prefix": scan.by_prefix,
        "by_status": scan.by_status,
        "versions_by_status": versions_by_status(),
    }


JOBS = (Job("storage_usage", storage_usage_job, SCAN_PERIOD),)
