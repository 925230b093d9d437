"""Housekeeping jobs run once per period across schedulers, and are recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest

from app.platform.jobs import Job, run_job
from app.platform.models import JobState, utcnow


def _counting_job(name="count", period=dt.timedelta(hours=1)):
    calls = []
    lock = threading.Lock()

    def fn(svc, now):
        with lock:
            calls.append(now)
        return len(calls)

    return Job(name, fn, period), calls


def test_two_schedulers_started_together_run_a_job_once(services):
    job, calls = _counting_job()
    now = utcnow()
    threads = [threading.Thread(target=run_job, args=(job, services, f"s{i}", now)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    # within its period the job does not run again, after it it does
    assert run_job(job, services, "s0", now + dt.timedelta(minutes=30)) is None
    assert run_job(job, services, "s1", now + dt.timedelta(hours=1)) == 2


def test_a_crashed_run_is_taken_over_when_its_lease_runs_out(services):
    job, calls = _counting_job("crashy")
    now = utcnow()
    from app.platform.jobs import try_acquire
    from app.platform.models import database

    with database.connection_context():
        assert try_acquire(job, "dead-scheduler", now)  # took it and died
    assert run_job(job, services, "other", now + dt.timedelta(minutes=10)) is None
    assert run_job(job, services, "other", now + job.max_runtime + dt.timedelta(seconds=1)) == 1


def test_the_lease_length_is_configurable(services):
    services.settings = services.settings.replace(
        housekeeping=dataclasses.replace(services.settings.housekeeping, job_lease=60))
    runs = []

    def dies(svc, now):
        runs.append(now)
        if len(runs) == 1:
            raise SystemExit  # the scheduler dies mid-run, holding the lease

    job = Job("short-lease", dies, period=dt.timedelta(hours=1))
    now = utcnow()
    with pytest.raises(SystemExit):
        run_job(job, services, "dead-scheduler", now)
    assert run_job(job, services, "other", now + dt.timedelta(seconds=60)) is None  # still held
    run_job(job, services, "other", now + dt.timedelta(seconds=61))
    assert len(runs) == 2 and JobState.get_by_id(job.name).runs == 1


def test_runs_are_recorded(services):
    def boom(svc, now):
        raise RuntimeError("disk on fire")

    assert run_job(Job("boom", boom, dt.timedelta(minutes=5)), services, "s") is None
    job, _ = _counting_job("fine")
    run_job(job, services, "s")
    boom_state, fine_state = JobState.get_by_id("boom"), JobState.get_by_id("fine")
    assert boom_state.failures == 1 and "disk on fire" in boom_state.last_error
    assert boom_state.last_success_at is None
    assert fine_state.runs == 1 and fine_state.last_items == 1 and fine_state.last_success_at
    # a failed run may be retried at once: its period did not restart
    assert run_job(Job("boom", lambda s, n: 3, dt.timedelta(minutes=5)), services, "s") == 3


def test_a_failed_run_counts_as_an_error(services):
    from tests.monitoring_helpers import sample

    def fine(svc, now):
        return {"items": 5, "errors": 0}

    def boom(svc, now):
        raise RuntimeError("bucket gone")

    run_job(Job("flaky", fine, dt.timedelta(minutes=5)), services, "s", force=True)
    assert sample("mosis_job_last_errors", job="flaky") == 0
    run_job(Job("flaky", boom, dt.timedelta(minutes=5)), services, "s", force=True)
    state = JobState.get_by_id("flaky")
    assert (state.last_items, state.last_errors) == (0, 1)
    assert sample("mosis_job_last_errors", job="flaky") >= 1
    assert sample("mosis_job_last_items", job="flaky") == 0


def test_a_fresh_scheduler_reports_each_jobs_last_run_from_the_database(services):
    """The gauges come from `job_state`, not from the process that ran the job."""
    from app.platform import jobs
    from app.housekeeping import monitoring
    from tests.monitoring_helpers import sample

    def partly(svc, now):
        return {"items": 7, "errors": 2}

    def boom(svc, now):
        raise RuntimeError("bucket gone")

    done, failed = Job("done_elsewhere", partly, dt.timedelta(hours=1)), Job("failed_elsewhere", boom,
                                                                            dt.timedelta(hours=1))
    run_job(done, services, "other-scheduler")
    run_job(failed, services, "other-scheduler")
    # This process is the restarted scheduler: nothing in memory about either job.
    gauges = (jobs.JOB_LAST_SUCCESS, jobs.JOB_LAST_RUN, jobs.JOB_DURATION, jobs.JOB_ITEMS, jobs.JOB_ERRORS)
    for gauge in gauges:
        for name in (done.name, failed.name):
            gauge.remove(name)
    assert sample("mosis_job_last_items", job=done.name) == 0

    monitoring.refresh(services, [done, failed])

    state = JobState.get_by_id(done.name)
    assert sample("mosis_job_last_items", job=done.name) == 7
    assert sample("mosis_job_last_errors", job=done.name) == 2
    assert sample("mosis_job_last_duration_seconds", job=done.name) == state.last_duration
    assert sample("mosis_job_last_success_timestamp_seconds", job=done.name) == (
        state.last_success_at.replace(tzinfo=dt.timezone.utc).timestamp())
    assert sample("mosis_job_last_run_timestamp_seconds", job=done.name) > 0
    failed_state = JobState.get_by_id(failed.name)
    assert sample("mosis_job_last_errors", job=failed.name) == 1
    assert sample("mosis_job_last_duration_seconds", job=failed.name) == failed_state.last_duration
    assert sample("mosis_job_last_success_timestamp_seconds", job=failed.name) == 0  # never succeeded
