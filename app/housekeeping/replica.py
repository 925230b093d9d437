"""The off-site replica: draining the outbox, its state, its scrub, and the
backups taken after every publish and pull.

Invariants:

- The outbox (app.platform.outbox) is drained on every scheduler, one row
  at a time under a lease (like the validation queue): a scheduler that dies
  mid-copy leaves a lease that runs out, and another takes the row again.
  A copy is idempotent (the same key, the same bytes), so doing it twice is
  harmless; a row is marked done only by the holder of its lease, once.
- A copy counts only once the replica's bytes are read back and their
  sha256 equals the sha256 of what was read from the primary.
- Rows run in the order they were written: a backup queued after a
  publish reaches the replica after that version's objects (unless a copy
  keeps failing, which the alerts report).
- A delete waits MOSIS_REPLICA_DELETE_DELAY_SECONDS, and is skipped when a
  later copy of the same key was queued (a version code reused after a
  failed upload): the replica never loses bytes the catalogue offers.
- A failing row backs off (2^attempts seconds, at most RETRY_MAX); while the
  replica is unreachable the drain stops at the first failure.
- Done rows that a later done row of the same key replaced, and done rows
  that hold nothing (deleted, gone, skipped), are pruned after a day: what
  remains of the done copies is the replica's inventory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math

import peewee as pw
from prometheus_client import Counter, Gauge

from app.catalog.assets import IMMUTABLE
from app.catalog.validation_worker import worker_name
from app.housekeeping.backup import create_backup, list_backups
from app.platform.clock import iso, utcnow
from app.platform.errors import Unavailable
from app.platform.jobs import Job, claim_row
from app.platform.models import App, AuditEvent, ReplicaOutbox, Screenshot, Version
from app.platform.objectstore import ObjectStore
from app.platform.outbox import COPY, DELETE, enqueue_copies
from app.platform.storage import ASSET_KEY_RE, icon_key, parse_asset_key, parse_package_key, screenshot_key

log = logging.getLogger(__name__)

COPIED, DELETED, GONE, SKIPPED = "copied", "deleted", "gone", "skipped"
LEASE_SECONDS = 15 * 60  # MOSIS_JOB_LEASE_SECONDS, when set, instead
RETRY_MAX = 300
PRUNE_AFTER = dt.timedelta(days=1)
LAG_WINDOW = dt.timedelta(hours=24)
DRAIN_SECONDS = 2  # how often each scheduler drains the outbox
# The scrub re-reads at least this share of the replica's objects, or this many.
SCRUB_SHARE, SCRUB_MIN = 0.01, 1000

REPLICA_DONE = Counter("mosis_replica_rows_total", "Outbox rows done, by operation and outcome",
                       ["op", "outcome"])
REPLICA_BYTES = Counter("mosis_replica_copied_bytes_total", "Bytes copied to the replica and verified")
REPLICA_ERRORS = Counter("mosis_replica_errors_total", "Failed attempts to copy to or delete on the replica")
PENDING = Gauge("mosis_replica_pending", "Outbox rows due and not done (copies, and deletes past their delay)")
OLDEST = Gauge("mosis_replica_oldest_pending_age_seconds", "Age of the oldest due outbox row (0 if none)")
FAILING = Gauge("mosis_replica_failing", "Due outbox rows whose last attempt failed")
LAG_P99 = Gauge("mosis_replica_lag_p99_seconds", "99th percentile of write-to-verified-copy time, last 24 h")
REPLICA_OBJECTS = Gauge("mosis_replica_objects", "Objects the replica holds, verified (by the outbox)")
REPLICA_STORED = Gauge("mosis_replica_bytes", "Bytes the replica holds, verified (by the outbox)")
SCRUB_MISMATCHES = Gauge("mosis_replica_scrub_mismatches", "Objects the last replica scrub found missing or wrong")


class ReplicaMismatch(Exception):
    """The replica's bytes, read back, are not the bytes sent."""


# -- the drain -------------------------------------------------------------------


def _due(now: dt.datetime):
    return (ReplicaOutbox.done_at.is_null() & (ReplicaOutbox.due_at <= now)
            & (ReplicaOutbox.lease_expires_at.is_null() | (ReplicaOutbox.lease_expires_at < now)))


def claim_next(owner: str, lease_seconds: int, now: dt.datetime | None = None) -> ReplicaOutbox | None:
    """Take the oldest due row no one holds, or None."""
    now = now or utcnow()
    return claim_row(ReplicaOutbox, _due(now), (ReplicaOutbox.id,), owner, now + dt.timedelta(seconds=lease_seconds))


def _held(row: ReplicaOutbox, owner: str):
    return (ReplicaOutbox.id == row.id) & (ReplicaOutbox.lease_owner == owner) & ReplicaOutbox.done_at.is_null()


def _later_copy(row: ReplicaOutbox) -> bool:
    return (ReplicaOutbox.select().where((ReplicaOutbox.key == row.key) & (ReplicaOutbox.id > row.id)
                                         & (ReplicaOutbox.op == COPY)).exists())


def hash_stream(chunks) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def stream_copy(source: ObjectStore, target: ObjectStore, key: str) -> tuple[int, str] | None:
    """Copy `key` from `source` to `target`, streamed; (size, sha256 of what
    was read), or None if `source` does not have it."""
    info = source.stat(key)
    if info is None:
        return None
    digest = hashlib.sha256()

    def chunks():
        for chunk in source.stream(key):
            digest.update(chunk)
            yield chunk

    target.put_stream(key, chunks(), info.size, info.content_type or "application/octet-stream",
                      cache_control=IMMUTABLE if ASSET_KEY_RE.fullmatch(key) else None)
    return info.size, digest.hexdigest()


def copy_verified(source: ObjectStore, target: ObjectStore, key: str) -> tuple[int, str] | None:
    """stream_copy, then read `target`'s bytes back: ReplicaMismatch unless they are the ones sent."""
    copied = stream_copy(source, target, key)
    if copied is None:
        return None
    size, sent = copied
    back, back_size = hash_stream(target.stream(key))
    if (back, back_size) != (sent, size):
        raise ReplicaMismatch(f"{key}: {back_size} bytes read back, sha256 {back}; sent {size} bytes, {sent}")
    return size, sent


def _apply(svc, row: ReplicaOutbox) -> tuple[str, int | None, str | None]:
    if row.op == DELETE:
        if _later_copy(row):
            return SKIPPED, None, None
        svc.replica.delete(row.key)
        return DELETED, None, None
    copied = copy_verified(svc.storage, svc.replica, row.key)
    if copied is None:
        return GONE, None, None
    return COPIED, *copied


_buckets_ready: set[int] = set()


def _ensure_bucket(replica: ObjectStore) -> None:
    if id(replica) not in _buckets_ready:
        replica.ensure_bucket()
        _buckets_ready.add(id(replica))


def drain(svc, owner: str | None = None, limit: int = 500, now: dt.datetime | None = None) -> dict:
    """Copy and delete what the outbox holds, until nothing is due (or
    `limit` rows); stops at the first failure to reach either storage."""
    done = {"items": 0, "errors": 0}
    if svc.replica is None:
        return done
    owner = owner or worker_name()
    lease = svc.settings.housekeeping.job_lease or LEASE_SECONDS
    while done["items"] + done["errors"] < limit:
        row = claim_next(owner, lease, now)
        if row is None:
            break
        try:
            _ensure_bucket(svc.replica)
            outcome, size, sha256 = _apply(svc, row)
        except Exception as e:  # any failure: the row is retried later
            attempts = row.attempts + 1
            (ReplicaOutbox.update(lease_owner=None, lease_expires_at=None, attempts=attempts,
                                  last_error=str(getattr(e, "message", e))[:2000],
                                  due_at=utcnow() + dt.timedelta(seconds=min(2 ** attempts, RETRY_MAX)))
             .where(_held(row, owner)).execute())
            REPLICA_ERRORS.inc()
            done["errors"] += 1
            log.warning("replica %s of %s failed (attempt %d): %s", row.op, row.key, attempts,
                        getattr(e, "message", e))
            if isinstance(e, Unavailable):
                break
            continue
        finished = (ReplicaOutbox.update(done_at=utcnow(), outcome=outcome, size=size, sha256=sha256,
                                         lease_owner=None, lease_expires_at=None, last_error=None)
                    .where(_held(row, owner)).execute())
        if finished:  # counted once, by the holder of the lease
            REPLICA_DONE.labels(row.op, outcome).inc()
            if outcome == COPIED:
                REPLICA_BYTES.inc(size)
            done["items"] += 1
    return done


def prune(now: dt.datetime) -> int:
    """Forget done rows that hold nothing any more (see the module's invariants)."""
    old = ReplicaOutbox.done_at.is_null(False) & (ReplicaOutbox.done_at < now - PRUNE_AFTER)
    Later = ReplicaOutbox.alias()
    replaced = pw.fn.EXISTS(Later.select(pw.SQL("1")).where(
        (Later.key == ReplicaOutbox.key) & (Later.id > ReplicaOutbox.id) & Later.done_at.is_null(False)))
    empty = ReplicaOutbox.outcome != COPIED
    return ReplicaOutbox.delete().where(old & (empty | replaced)).execute()


# -- its state ---------------------------------------------------------------------


def _as_time(value):
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def _inventory():
    """The done copies no later done row replaced: what the replica holds."""
    Later = ReplicaOutbox.alias()
    replaced = pw.fn.EXISTS(Later.select(pw.SQL("1")).where(
        (Later.key == ReplicaOutbox.key) & (Later.id > ReplicaOutbox.id) & Later.done_at.is_null(False)))
    return ReplicaOutbox.select().where((ReplicaOutbox.outcome == COPIED) & ~replaced)


def status(svc, now: dt.datetime | None = None) -> dict:
    """What GET /v1/admin/replica answers."""
    now = now or utcnow()
    due = ReplicaOutbox.done_at.is_null() & (ReplicaOutbox.due_at <= now)
    pending, failing = (ReplicaOutbox.select(pw.fn.COUNT(ReplicaOutbox.id),
                                             pw.fn.SUM(pw.Case(None, [(ReplicaOutbox.attempts > 0, 1)], 0)))
                        .where(due).tuples().first())
    oldest = _as_time(ReplicaOutbox.select(pw.fn.MIN(ReplicaOutbox.created_at)).where(due).scalar())
    copied, stored = (_inventory().select(pw.fn.COUNT(ReplicaOutbox.id), pw.fn.SUM(ReplicaOutbox.size))
                      .tuples().first())
    verified = _as_time(ReplicaOutbox.select(pw.fn.MAX(ReplicaOutbox.done_at))
                        .where(ReplicaOutbox.outcome == COPIED).scalar())
    lags = [(d - c).total_seconds() for c, d in
            ReplicaOutbox.select(ReplicaOutbox.created_at, ReplicaOutbox.done_at)
            .where((ReplicaOutbox.outcome == COPIED) & (ReplicaOutbox.done_at >= now - LAG_WINDOW))
            .order_by(ReplicaOutbox.done_at.desc()).limit(10000).tuples()]
    return {"configured": svc.settings.replica_configured, "pending": pending or 0,
            "oldest_pending_age_s": round(max((now - oldest).total_seconds(), 0), 3) if oldest else 0,
            "copied": copied or 0, "bytes": int(stored or 0), "errors": int(failing or 0),
            "last_verified_at": iso(verified), "lag_p99_s": round(percentile(lags, 0.99), 3)}


def refresh_gauges(svc) -> None:
    """The scheduler's replica gauges (app.housekeeping.monitoring)."""
    s = status(svc)
    PENDING.set(s["pending"])
    OLDEST.set(s["oldest_pending_age_s"])
    FAILING.set(s["errors"])
    LAG_P99.set(s["lag_p99_s"])
    REPLICA_OBJECTS.set(s["copied"])
    REPLICA_STORED.set(s["bytes"])


# -- the scrub ------------------------------------------------------------------------


def expected_sha256(key: str, recorded: str | None) -> str | None:
    """What the catalogue says `key`'s bytes hash to (packages, icons,
    screenshots), else what the copy recorded."""
    parsed = parse_package_key(key)
    if parsed is not None:
        developer_id, app_id, code = parsed
        found = (Version.select(Version.sha256).join(App)
                 .where((App.id == app_id) & (App.developer == developer_id) & (Version.version_code == code)
                        & Version.sha256.is_null(False))
                 .order_by(Version.created_at.desc()).scalar())
        return found or recorded
    asset = parse_asset_key(key)
    if asset is not None and asset.kind == "icon" and key == icon_key(asset.app_id, asset.number, 128):
        found = (App.select(App.icon_sha256)
                 .where((App.id == asset.app_id) & (App.icon_number == asset.number)).scalar())
        return found or recorded
    if asset is not None and asset.kind == "screenshot" and key == screenshot_key(asset.app_id, asset.number):
        found = (Screenshot.select(Screenshot.sha256)
                 .where((Screenshot.app == asset.app_id) & (Screenshot.number == asset.number)).scalar())
        return found or recorded
    return recorded


def scrub(svc, now: dt.datetime | None = None, limit: int | None = None) -> dict:
    """Re-read a sample of the replica's objects and compare them with the
    catalogue; queue a fresh copy of each one missing or wrong."""
    now = now or utcnow()
    if svc.replica is None:
        return {"items": 0, "checked": 0, "mismatches": []}
    total = _inventory().count()
    size = limit or max(math.ceil(total * SCRUB_SHARE), min(SCRUB_MIN, total))
    mismatches = []
    sample = list(_inventory().order_by(pw.fn.Random()).limit(size))
    for row in sample:
        want = expected_sha256(row.key, row.sha256)
        got = hash_stream(svc.replica.stream(row.key))[0] if svc.replica.exists(row.key) else None
        if got != want:
            mismatches.append({"key": row.key, "expected": want, "found": got})
    if mismatches:
        log.warning("replica scrub: %d of %d objects missing or wrong; copying them again",
                    len(mismatches), len(sample))
        enqueue_copies(svc.settings, [m["key"] for m in mismatches], now)
    SCRUB_MISMATCHES.set(len(mismatches))
    return {"items": len(sample), "errors": len(mismatches), "checked": len(sample), "mismatches": mismatches[:100]}


# -- backups after every publish and pull ---------------------------------------------------

# Audit actions after which the replica's newest backup must be taken again.
BACKUP_AFTER = ("version.published", "version.pulled")


def backup_after_change(svc, now: dt.datetime) -> dict:
    """With a replica, a metadata backup once a publish or pull happened
    since the newest one (at most one per run of this job: a minute)."""
    if not svc.settings.replica_configured:
        return {"items": 0}
    newest = list_backups(svc)
    since = dt.datetime.strptime(newest[0].key.rsplit("-", 1)[1][:16], "%Y%m%dT%H%M%SZ") if newest else None
    changes = AuditEvent.select().where(AuditEvent.action.in_(BACKUP_AFTER))
    if since is not None:
        changes = changes.where(AuditEvent.at >= since)
    if not changes.exists():
        return {"items": 0}
    result = create_backup(svc, now)
    return {"items": 1, "bytes": result["size"], "key": result["key"]}


def prune_job(svc, now: dt.datetime) -> int:
    return prune(now)


JOBS = (
    Job("metadata_backup_after_change", backup_after_change, dt.timedelta(minutes=1),
        max_runtime=dt.timedelta(hours=6)),
    Job("replica_outbox_prune", prune_job, dt.timedelta(hours=6)),
    Job("replica_scrub", scrub, dt.timedelta(days=7), max_runtime=dt.timedelta(hours=12)),
)
