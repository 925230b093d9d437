"""Gauges the scheduler exports, refreshed from the database and storage.

Every scheduler refreshes them every REFRESH_SECONDS (not under a job lease):
they describe shared state (the queue, the latest bucket scan, the cost
estimate, each job's last run as `job_state` records it), so every
scheduler reports the same values, and a restarted scheduler reports them at
once instead of waiting for the next run of the job that produced them.
Dashboards and alerts take max() or min() across schedulers.

Only the scheduler imports this module: the API's workers would each export
a zero for these gauges.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil

import peewee as pw
from prometheus_client import Gauge

from app.housekeeping import replica
from app.housekeeping.cost import estimate, load_prices, monthly_usage
from app.housekeeping.usage import latest_scan, versions_by_status
from app.platform.clock import unix, utcnow
from app.platform.jobs import JOB_DURATION, JOB_ERRORS, JOB_ITEMS, JOB_LAST_RUN, JOB_LAST_SUCCESS
from app.platform.models import Delta, DeltaStatus, JobState, Version
from app.platform.models import VersionStatus as S

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15

STORAGE_UP = Gauge("mosis_storage_up",
                   "1 if the scheduler reached the bucket and storage took a small write at its last check, else 0")
DATABASE_UP = Gauge("mosis_database_up", "1 if the scheduler reached the database at its last check, else 0")
QUEUE_DEPTH = Gauge("mosis_validation_queue_depth", "Versions waiting for validation")
QUEUE_OLDEST = Gauge("mosis_validation_queue_oldest_age_seconds",
                     "How long the longest-waiting version has been in the validation queue (0 if empty)")
DELTA_QUEUE_DEPTH = Gauge("mosis_delta_queue_depth", "Delta patches waiting to be made (pending)")
DELTA_QUEUE_OLDEST = Gauge("mosis_delta_queue_oldest_age_seconds",
                           "How long the longest-waiting pending delta patch has been queued (0 if none)")
DELTAS_FAILED_DAY = Gauge("mosis_deltas_failed_last_day",
                          "Delta patches that failed (gave up) in the last 24 hours")
VERSIONS = Gauge("mosis_versions", "Version rows, by status", ["status"])
STORAGE_BYTES = Gauge("mosis_storage_bytes", "Bytes in the bucket by prefix (latest scan)", ["prefix"])
STORAGE_OBJECTS = Gauge("mosis_storage_objects", "Objects in the bucket by prefix (latest scan)", ["prefix"])
STORAGE_STATUS_BYTES = Gauge("mosis_storage_status_bytes",
                             "Bytes under packages/ and temp/ by the status of their version (latest scan)",
                             ["status"])
STORAGE_STATUS_OBJECTS = Gauge("mosis_storage_status_objects",
                               "Objects under packages/ and temp/ by the status of their version (latest scan)",
                               ["status"])
STORAGE_USED = Gauge("mosis_storage_used_bytes", "All bytes in the bucket (latest scan)")
STORAGE_BUDGET = Gauge("mosis_storage_budget_bytes", "The storage budget (MOSIS_STORAGE_BUDGET_BYTES)")
STORAGE_SCANNED = Gauge("mosis_storage_scan_timestamp_seconds", "Unix time of the latest bucket scan")
COST = Gauge("mosis_cost_estimate_usd", "Estimated bill for this month, by hosting option",
             ["option", "name"])
COST_USAGE = Gauge("mosis_cost_usage", "This month's projected usage the cost estimate is based on",
                   ["quantity"])
DATA_DISK_FREE = Gauge("mosis_data_disk_free_bytes",
                       "Free bytes on the disk of MOSIS_DATA_DIR (the SQLite database, logs, keys)")
DATA_DISK_SIZE = Gauge("mosis_data_disk_size_bytes", "Size of the disk of MOSIS_DATA_DIR")
JOB_PERIOD = Gauge("mosis_job_period_seconds", "How often a housekeeping job is meant to run", ["job"])


def _check_storage(svc) -> None:
    """Up: storage answers and takes a small write (reachable storage may
    refuse writes, e.g. when its disk is full)."""
    timeout = svc.settings.s3_connect_timeout + svc.settings.s3_read_timeout
    try:
        svc.storage.check_reachable(timeout)
        if svc.settings.storage_canary_seconds:
            svc.storage.check_writable(timeout)
        STORAGE_UP.set(1)
    except Exception as e:  # any failure means not usable
        log.warning("storage check failed: %s", getattr(e, "message", e))
        STORAGE_UP.set(0)


def _data_disk(settings) -> None:
    usage = shutil.disk_usage(settings.data_dir)
    DATA_DISK_FREE.set(usage.free)
    DATA_DISK_SIZE.set(usage.total)


def _waiting(model, since: pw.Field, where, now: dt.datetime) -> tuple[int, float]:
    """How many rows `where` selects, and the age in seconds of the oldest by `since` (0 if none)."""
    depth, oldest = model.select(pw.fn.COUNT(model.id), pw.fn.MIN(since)).where(where).tuples().first()
    if isinstance(oldest, str):  # SQLite returns aggregates of datetimes as text
        oldest = dt.datetime.fromisoformat(oldest)
    return depth, max((now - oldest).total_seconds(), 0) if oldest else 0


def _queue(now: dt.datetime) -> None:
    depth, oldest = _waiting(Version, Version.uploaded_at, Version.status == S.VALIDATING, now)
    QUEUE_DEPTH.set(depth)
    QUEUE_OLDEST.set(oldest)
    for status, n in versions_by_status().items():
        VERSIONS.labels(status).set(n)


def _delta_queue(now: dt.datetime) -> None:
    """The delta queue (app.catalog.deltas): what waits, how long, what gave up."""
    depth, oldest = _waiting(Delta, Delta.created_at, Delta.status == DeltaStatus.PENDING, now)
    DELTA_QUEUE_DEPTH.set(depth)
    DELTA_QUEUE_OLDEST.set(oldest)
    DELTAS_FAILED_DAY.set(Delta.select().where((Delta.status == DeltaStatus.FAILED)
                                               & (Delta.updated_at > now - dt.timedelta(days=1))).count())


def _storage(settings) -> None:
    STORAGE_BUDGET.set(settings.storage_budget_bytes)
    scan = latest_scan()
    if scan is None:
        return
    for prefix, v in scan.by_prefix.items():
        STORAGE_BYTES.labels(prefix).set(v["bytes"])
        STORAGE_OBJECTS.labels(prefix).set(v["objects"])
    for status, v in scan.by_status.items():
        STORAGE_STATUS_BYTES.labels(status).set(v["bytes"])
        STORAGE_STATUS_OBJECTS.labels(status).set(v["objects"])
    STORAGE_USED.set(scan.total_bytes)
    STORAGE_SCANNED.set(unix(scan.scanned_at))


def _costs(settings, now: dt.datetime) -> None:
    prices = load_prices(settings.resolved_prices_file)
    usage = monthly_usage(now, prices.days_per_month)
    for name, value in usage.quantities(prices).items():
        if name != "month":
            COST_USAGE.labels(name).set(float(value))
    for option in estimate(prices, usage):
        COST.labels(option["option"], option["name"]).set(option["total_usd"])


def _jobs(jobs) -> None:
    for job in jobs:
        JOB_PERIOD.labels(job.name).set(job.period.total_seconds())
    states = {s.name: s for s in JobState.select().where(JobState.name.in_([j.name for j in jobs]))}
    # The job's record, whichever scheduler ran it: a restarted scheduler
    # reports each job's last run at once, not after the job runs again.
    for job in jobs:
        state = states.get(job.name)
        if state is None:
            continue
        for gauge, value in ((JOB_LAST_SUCCESS, state.last_success_at), (JOB_LAST_RUN, state.last_started_at),
                             (JOB_DURATION, state.last_duration), (JOB_ITEMS, state.last_items),
                             (JOB_ERRORS, state.last_errors)):
            if value is not None:
                gauge.labels(job.name).set(unix(value) if isinstance(value, dt.datetime) else value)


def refresh(svc, jobs=()) -> None:
    """Bring every scheduler gauge up to date; one failing source leaves the others."""
    now = utcnow()
    _check_storage(svc)
    try:
        _data_disk(svc.settings)
    except OSError as e:
        log.warning("the data disk's free space is unknown: %s", e)
    try:
        _queue(now)
        DATABASE_UP.set(1)
    except pw.PeeweeException as e:
        log.warning("database check failed: %s", e)
        DATABASE_UP.set(0)
        return
    for name, update in (("deltas", lambda: _delta_queue(now)),
                         ("storage", lambda: _storage(svc.settings)),
                         ("cost", lambda: _costs(svc.settings, now)),
                         ("jobs", lambda: _jobs(jobs)),
                         ("replica", lambda: replica.refresh_gauges(svc))):
        try:
            update()
        except Exception:
            log.exception("refreshing the %s gauges failed", name)

