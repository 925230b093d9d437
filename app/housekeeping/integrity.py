"""Storage and database agree: the orphan sweep and the integrity scrub.

Orphan sweep (daily): lists `packages/`, `temp/` and `deltas/` and compares
with the rows.
- An object under `packages/` that no version holding objects knows is an
  orphan (a crash between a copy and a row update, a purge whose version code
  was taken again, a hand-made object). Orphans older than the grace period
  are reported, and deleted when MOSIS_ORPHAN_DELETE is on.
- A temp upload whose version is no longer `uploading` (completed, failed,
  abandoned) is left-over scratch: deleted after the grace period.
- A temp upload no row knows is an orphan like the above.
- A patch under `deltas/` that no `delta` row in `pending` or `ready` names
  (app.catalog.deltas; a crash between a row's removal and the deletion of
  its object, a worker that died after storing a patch its row no longer
  wants, a hand-made object) is a stray patch: deleted after the grace
  period, and the deletion queued for the replica. A pending row keeps its
  object: its worker may be about to mark it ready.
- A version that should have objects but whose objects are missing is reported
  (metric, log and one audit event per sweep): lost data is an incident.

Integrity scrub (hourly, rolling): re-reads a share of the stored packages per
day, least recently verified first, and re-checks size and sha256 (and the
manifest) against the row. A mismatch is bit rot or tampering: it is counted
in metrics and written as an audit event; nothing is changed automatically.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from app.catalog.packages import keys_of
from app.housekeeping.replica import hash_stream
from app.platform import metrics
from app.platform.clock import iso, naive_utc, utcnow
from app.platform.jobs import Job
from app.platform.models import App, Delta, DeltaStatus, Version, record_audit
from app.platform.models import VersionStatus as S
from app.platform.objectstore import ObjectInfo
from app.platform.outbox import enqueue_deletes
from app.platform.storage import (
    DELTAS,
    PACKAGES,
    TEMP,
    VERSION_FILES,
    parse_delta_key,
    split_package_path,
    upload_id_of_temp_key,
)

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

# Statuses whose versions may have objects under packages/ (uploading: a
# completion that copied the bytes and crashed before its row changed).
HOLDS_OBJECTS = (S.UPLOADING, S.VALIDATING, S.DRAFT, S.PUBLISHED, S.SUPERSEDED, S.FAILED,
                 S.REJECTED, S.PULLED, S.PURGING)
# Statuses whose package (and, once validated, manifest) must exist.
MUST_HAVE_PACKAGE = (S.VALIDATING, S.DRAFT, S.PUBLISHED, S.SUPERSEDED, S.REJECTED, S.PULLED)
# Statuses whose package the scrub re-reads: validated and still stored.
SCRUBBED = (S.DRAFT, S.PUBLISHED, S.SUPERSEDED, S.REJECTED, S.PULLED)

ORPHANS = Gauge("mosis_storage_orphan_objects", "Objects found by the last orphan sweep, by kind",
                ["kind"])
ORPHAN_BYTES = Gauge("mosis_storage_orphan_bytes", "Bytes of the objects found by the last orphan "
                     "sweep, by kind", ["kind"])
MISSING = Gauge("mosis_storage_missing_objects", "Objects versions need but storage lacks, by "
                "version status (last orphan sweep)", ["status"])
SCRUB_CHECKED = Counter("mosis_integrity_checked_total", "Packages the scrub re-read")
SCRUB_CHECKED_BYTES = Counter("mosis_integrity_checked_bytes_total", "Bytes the scrub re-read")
SCRUB_LAST_FAILURES = Gauge("mosis_integrity_last_failures", "Mismatches the last scrub found")

AUDIT_LIST_LIMIT = 100  # keys or versions named in one audit event


# -- orphan sweep -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: str  # orphan, stale_temp, stray_patch
    key: str
    size: int
    last_modified: dt.datetime | None
    why: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "key": self.key, "size": self.size,
                "last_modified": iso(self.last_modified), "why": self.why}


def _version_rows():
    return (Version.select(Version.id, Version.app, Version.version_code, Version.status,
                           Version.upload_id, Version.uploaded_at, Version.validated_at, App.id,
                           App.developer)
            .join(App))


def _live_patches() -> set[tuple]:
    """(developer_id, app_id, from_version_code, to_version_code) of every
    patch a row may still store or offer."""
    rows = (Delta.select(Delta.from_version_code, Delta.to_version_code, App.id, App.developer).join(App)
            .where(Delta.status.in_((DeltaStatus.PENDING, DeltaStatus.READY))))
    return {(d.app.developer_id, d.app.id, d.from_version_code, d.to_version_code) for d in rows}


def classify(obj: ObjectInfo, holders: set[tuple], uploads: dict[str, str],
             patches: set[tuple] = frozenset()) -> Finding | None:
    """What is wrong with an object, or None if a row knows it."""
    modified = naive_utc(obj.last_modified)
    prefix = obj.key.split("/", 1)[0]
    if prefix == DELTAS:
        if parse_delta_key(obj.key) in patches:
            return None
        return Finding("stray_patch", obj.key, obj.size, modified, "no pending or ready delta names it")
    if prefix == PACKAGES:
        found = split_package_path(obj.key)
        if found and found[3] in VERSION_FILES and found[:3] in holders:
            return None
        return Finding("orphan", obj.key, obj.size, modified, "no version holding objects knows it")
    status = uploads.get(upload_id_of_temp_key(obj.key))
    if status == S.UPLOADING:
        return None
    if status is None:
        return Finding("orphan", obj.key, obj.size, modified, "no version has this upload")
    return Finding("stale_temp", obj.key, obj.size, modified, f"its version is {status}")


def missing_objects(rows: list[Version], present: set[str], listed_at: dt.datetime) -> list[dict]:
    """Versions that need objects storage does not have (as listed at `listed_at`)."""
    missing = []
    for v in rows:
        if v.status not in MUST_HAVE_PACKAGE or v.uploaded_at is None or v.uploaded_at >= listed_at:
            continue
        package, manifest = keys_of(v)
        validated = v.validated_at is not None and v.validated_at < listed_at
        need = [package] + ([manifest] if validated else [])
        lacking = [k for k in need if k not in present]
        if lacking:
            missing.append({"version_id": v.id, "status": v.status, "keys": lacking})
    return missing


def sweep_orphans(svc: Services, now: dt.datetime | None = None, delete: bool | None = None,
                  dry_run: bool = False) -> dict:
    """Compare `packages/` and `temp/` with the rows; report, and delete what may go."""
    now = now or utcnow()
    settings = svc.settings.housekeeping
    delete_orphans = settings.orphan_delete if delete is None else delete
    cutoff = now - dt.timedelta(seconds=settings.orphan_grace)
    # List first, then read the rows: an object listed here had its row
    # written before, so a young upload is never taken for an orphan.
    listed_at = utcnow()
    objects = [o for prefix in (f"{PACKAGES}/", f"{TEMP}/", f"{DELTAS}/") for o in svc.storage.list(prefix)]
    rows = list(_version_rows())
    patches = _live_patches()
    holders = {(v.app.developer_id, v.app_id, v.version_code) for v in rows if v.status in HOLDS_OBJECTS}
    uploads = {v.upload_id: v.status for v in rows}

    findings, young = [], 0
    for obj in objects:
        finding = classify(obj, holders, uploads, patches)
        if finding is None:
            continue
        if finding.last_modified is not None and finding.last_modified >= cutoff:
            young += 1  # within the grace period: maybe still being written
            continue
        findings.append(finding)
    deletable = [f for f in findings if f.kind in ("stale_temp", "stray_patch") or delete_orphans]
    if deletable and not dry_run:
        enqueue_deletes(svc.settings, [f.key for f in deletable if f.kind == "stray_patch"])
        svc.storage.delete(*(f.key for f in deletable))
    deleted = set() if dry_run else {f.key for f in deletable}
    missing = missing_objects(rows, {o.key for o in objects}, listed_at)

    report = {
        "now": iso(now), "dry_run": dry_run, "objects_listed": len(objects),
        "findings": [dict(f.as_dict(), deleted=f.key in deleted) for f in findings],
        "within_grace": young, "missing": missing,
        "totals": {kind: {"objects": sum(1 for f in findings if f.kind == kind),
                          "bytes": sum(f.size for f in findings if f.kind == kind)}
                   for kind in ("orphan", "stale_temp", "stray_patch")},
    }
    if not dry_run:
        _record_sweep(report, deletable, missing)
    return report


def _record_sweep(report: dict, deleted: list[Finding], missing: list[dict]) -> None:
    for kind, totals in report["totals"].items():
        ORPHANS.labels(kind).set(totals["objects"])
        ORPHAN_BYTES.labels(kind).set(totals["bytes"])
    for status in MUST_HAVE_PACKAGE:
        MISSING.labels(status).set(sum(len(m["keys"]) for m in missing if m["status"] == status))
    if deleted:
        record_audit("system", "storage.orphans_deleted", "bucket", "packages+temp+deltas",
                     objects=len(deleted), bytes=sum(f.size for f in deleted),
                     keys=[f.key for f in deleted[:AUDIT_LIST_LIMIT]])
    if missing:
        log.error("%d versions lack objects in storage: %s", len(missing), missing[:10])
        record_audit("system", "storage.objects_missing", "bucket", "packages",
                     versions=len(missing), missing=missing[:AUDIT_LIST_LIMIT])
    orphans = report["totals"]["orphan"]["objects"]
    if orphans and not any(f.kind == "orphan" for f in deleted):
        log.warning("%d orphan objects in storage (MOSIS_ORPHAN_DELETE is off: reported only)", orphans)


def orphan_job(svc: Services, now: dt.datetime) -> dict:
    report = sweep_orphans(svc, now)
    return {"items": len(report["findings"]), "errors": len(report["missing"])}


# -- integrity scrub ----------------------------------------------------------------------

SCRUB_PERIOD = dt.timedelta(hours=1)


def scrub_quota(total: int, share_per_day: float, period: dt.timedelta = SCRUB_PERIOD) -> int:
    """Packages one run re-reads so that `share_per_day` of `total` is read per day."""
    if total == 0 or share_per_day <= 0:
        return 0
    return min(total, math.ceil(total * share_per_day * period / dt.timedelta(days=1)))


def _scrub_candidates():
    return (Version.select(Version, App).join(App)
            .where(Version.status.in_(SCRUBBED) & Version.sha256.is_null(False)))


def check_version(svc: Services, version: Version) -> dict | None:
    """Re-read a version's package and manifest; the mismatch found, or None."""
    package, manifest = keys_of(version)
    info = svc.storage.stat(package)
    if info is None:
        return {"kind": "missing", "key": package}
    sha256, size = hash_stream(svc.storage.stream(package))
    SCRUB_CHECKED.inc()
    SCRUB_CHECKED_BYTES.inc(size)
    if size != version.size:
        return {"kind": "size", "key": package, "expected": version.size, "actual": size}
    if sha256 != version.sha256:
        return {"kind": "sha256", "key": package, "expected": version.sha256, "actual": sha256}
    if version.manifest is not None and svc.storage.stat(manifest) is not None:
        stored = b"".join(svc.storage.stream(manifest))
        try:
            same = json.loads(stored) == version.manifest
        except ValueError:
            same = False
        if not same:
            return {"kind": "manifest", "key": manifest}
    return None


def scrub(svc: Services, now: dt.datetime | None = None, limit: int | None = None) -> dict:
    """Re-check the least recently verified packages; `limit` defaults to the daily share."""
    now = now or utcnow()
    if limit is None:
        limit = scrub_quota(_scrub_candidates().count(), svc.settings.housekeeping.scrub_share_per_day)
    order = (Version.verified_at.asc(nulls="first"), Version.validated_at, Version.id)
    checked, failures, errors = 0, [], 0
    for version in _scrub_candidates().order_by(*order).limit(limit):
        try:
            problem = check_version(svc, version)
        except Exception as e:  # storage trouble: try this one again next run
            log.warning("scrub of version %s failed: %s", version.id, e)
            errors += 1
            continue
        # A version purged meanwhile has lost its objects on purpose.
        current = Version.get_or_none(Version.id == version.id)
        if current is None or current.status not in SCRUBBED:
            continue
        checked += 1
        Version.update(verified_at=now).where(Version.id == version.id).execute()
        if problem is not None:
            metrics.INTEGRITY_MISMATCHES.labels(problem["kind"]).inc()
            failures.append(dict(problem, version_id=version.id, status=current.status))
            log.error("integrity: version %s (%s) %s", version.id, version.app.package_id, problem)
            record_audit("system", "integrity.mismatch", "version", version.id,
                         package_id=version.app.package_id, version_code=version.version_code,
                         status=current.status, **problem)
    SCRUB_LAST_FAILURES.set(len(failures))
    return {"now": iso(now), "checked": checked, "failures": failures, "errors": errors}


def scrub_job(svc: Services, now: dt.datetime) -> dict:
    report = scrub(svc, now)
    return {"items": report["checked"], "errors": len(report["failures"]) + report["errors"]}


ORPHAN_JOB = Job("orphan_sweep", orphan_job, period=dt.timedelta(days=1),
                 max_runtime=dt.timedelta(hours=2))
SCRUB_JOB = Job("integrity_scrub", scrub_job, period=SCRUB_PERIOD, max_runtime=dt.timedelta(hours=2))
JOBS = (ORPHAN_JOB, SCRUB_JOB)
