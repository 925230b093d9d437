"""Housekeeping jobs: run once per period across all schedulers, and recorded.

Each job has a row in `job_state` that is both its lock and its record:

- a scheduler runs a job only if it can take the row's lease (a conditional
  UPDATE) and the job's period has passed since its last finished run, so two
  schedulers started together run each job once;
- a scheduler that dies mid-job leaves a lease that runs out, and the next
  scheduler tick runs the job again (its period did not restart);
- every run records when it started and finished, how long it took, how many
  items it handled and its error, and the same numbers go to Prometheus.

The leased queues (validation, delta patches, the replica outbox) are not
jobs: every scheduler works them row by row, each row leased with
`claim_row` (a conditional UPDATE, so a row has one worker at a time; a
dead worker's lease runs out and the row is claimed again) and worked by
`drain`.

A job is a plain function `fn(svc, now) -> int` (items handled) or a dict
with an `items` key and optionally an `errors` key (items it could not
handle this time; the run itself still counts as done); it raises on failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import peewee as pw
from prometheus_client import Counter, Gauge

from app.platform.clock import iso, utcnow
from app.platform.models import JobState, database

log = logging.getLogger(__name__)

JOB_LAST_SUCCESS = Gauge("mosis_job_last_success_timestamp_seconds",
                         "Unix time of the job's last successful run", ["job"])
JOB_LAST_RUN = Gauge("mosis_job_last_run_timestamp_seconds", "Unix time of the job's last run", ["job"])
JOB_DURATION = Gauge("mosis_job_last_duration_seconds", "Duration of the job's last run", ["job"])
JOB_ITEMS = Gauge("mosis_job_last_items", "Items the job's last run handled", ["job"])
JOB_ERRORS = Gauge("mosis_job_last_errors",
                   "Items the job's last run could not handle (1 if the run itself failed)", ["job"])
JOB_RUNS = Counter("mosis_job_runs_total", "Job runs, by result (ok or error)", ["job", "result"])


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable
    period: dt.timedelta
    max_runtime: dt.timedelta = dt.timedelta(hours=1)  # lease length


def _ensure_row(name: str) -> None:
    JobState.insert(name=name).on_conflict_ignore().execute()


def try_acquire(job: Job, owner: str, now: dt.datetime, lease: dt.timedelta | None = None) -> bool:
    """Take the job's lease (`lease` long, or the job's max_runtime) if it is free and the job is due."""
    _ensure_row(job.name)
    free = JobState.lease_expires_at.is_null() | (JobState.lease_expires_at < now)
    due = JobState.next_run_after.is_null() | (JobState.next_run_after <= now)
    return bool(JobState.update(owner=owner, lease_expires_at=now + (lease or job.max_runtime),
                                last_started_at=now)
                .where((JobState.name == job.name) & free & due).execute())


def _items_of(result) -> tuple[int, int]:
    """(items handled, items that failed) of a job's result."""
    if isinstance(result, dict):
        return int(result.get("items", 0)), int(result.get("errors", 0))
    return int(result or 0), 0


def _lease(svc) -> dt.timedelta | None:
    seconds = svc.settings.housekeeping.job_lease
    return dt.timedelta(seconds=seconds) if seconds else None


def run_job(job: Job, svc, owner: str, now: dt.datetime | None = None, force: bool = False):
    """Run `job` if this scheduler wins it; return its result, or None if skipped."""
    now = now or utcnow()
    with database.connection_context():
        if force:
            _ensure_row(job.name)
        elif not try_acquire(job, owner, now, _lease(svc)):
            return None
        started = time.monotonic()
        JOB_LAST_RUN.labels(job.name).set(time.time())
        try:
            result = job.fn(svc, now)
        except Exception as e:
            duration = time.monotonic() - started
            log.exception("job %s failed", job.name)
            # A failed run handled nothing it can vouch for, and counts as an error.
            (JobState.update(lease_expires_at=None, last_finished_at=utcnow(), last_duration=duration,
                             last_items=0, last_errors=1,
                             last_error="".join(traceback.format_exception_only(e)).strip()[:2000],
                             failures=JobState.failures + 1, runs=JobState.runs + 1)
             .where(JobState.name == job.name).execute())
            JOB_RUNS.labels(job.name, "error").inc()
            JOB_DURATION.labels(job.name).set(duration)
            JOB_ITEMS.labels(job.name).set(0)
            JOB_ERRORS.labels(job.name).set(1)
            return None
        duration = time.monotonic() - started
        items, errors = _items_of(result)
        finished = utcnow()
        (JobState.update(lease_expires_at=None, last_finished_at=finished, last_success_at=finished,
                         last_duration=duration, last_items=items, last_errors=errors, last_error=None,
                         runs=JobState.runs + 1,
                         # 90 % of the period: scheduler ticks jitter a little.
                         next_run_after=now + job.period * 0.9)
         .where(JobState.name == job.name).execute())
        JOB_RUNS.labels(job.name, "ok").inc()
        JOB_DURATION.labels(job.name).set(duration)
        JOB_ITEMS.labels(job.name).set(items)
        JOB_ERRORS.labels(job.name).set(errors)
        JOB_LAST_SUCCESS.labels(job.name).set(time.time())
        return result


def job_states() -> list[dict]:
    return [{"name": s.name, "last_started_at": iso(s.last_started_at),
             "last_success_at": iso(s.last_success_at), "last_duration_seconds": s.last_duration,
             "last_items": s.last_items, "last_errors": s.last_errors, "last_error": s.last_error, "runs": s.runs,
             "failures": s.failures}
            for s in JobState.select().order_by(JobState.name)]


def claim_row(model, claimable, order_by: tuple, owner: str, lease_until: dt.datetime, **changes):
    """Lease the first row of a queue table (`model`, with `lease_owner` and
    `lease_expires_at`) that `claimable` matches, in `order_by` order, to
    `owner` until `lease_until`, with `changes` set in the same UPDATE; the
    row, or None. Each try is a conditional UPDATE repeating `claimable`, so
    of two workers after one row exactly one gets it (the other tries the next)."""
    for candidate in model.select(model.id).where(claimable).order_by(*order_by).limit(5):
        taken = (model.update(lease_owner=owner, lease_expires_at=lease_until, **changes)
                 .where((model.id == candidate.id) & claimable).execute())
        if taken:
            return model.get_by_id(candidate.id)
    return None


def drain(claim: Callable[[], object], work: Callable[[object], str], limit: int, what: str) -> list[str]:
    """Work a leased queue (validation, delta patches): claim a row, work it,
    until none is claimable or `limit` rows were worked; the outcome of each.
    The database gone or locked ends the round (the next tick tries again); a
    row whose work crashes is logged as "crashed" and keeps its lease, which
    runs out, so the row is tried again (up to its queue's attempt limit)."""
    outcomes: list[str] = []
    while len(outcomes) < limit:
        try:
            row = claim()
        except pw.OperationalError as e:
            log.warning("%s queue unavailable: %s", what, e)
            break
        if row is None:
            break
        try:
            outcomes.append(work(row))
        except Exception:
            log.exception("%s of %s crashed", what, row.id)
            outcomes.append("crashed")
    return outcomes

