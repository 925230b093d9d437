"""The housekeeping jobs run once per period however many schedulers race for them."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import requests

from app.housekeeping.backup import list_backups
from app.native import free_ports, start_scheduler
from app.platform.clock import utcnow
from app.platform.jobs import run_job
from app.platform.models import AuditEvent, JobState, Version
from app.platform.models import VersionStatus as S
from app.scheduler import HOUSEKEEPING
from tests.housekeeping_helpers import unique_bucket, version_in
from tests.monitoring_helpers import scraped_by
from tests.stack import stack_env

JOB_NAMES = {"retention", "orphan_sweep", "integrity_scrub", "metadata_backup"}


@pytest.fixture
def settings(settings):
    return settings.replace(bucket=unique_bucket())


def test_the_jobs_are_registered():
    assert JOB_NAMES <= {job.name for job in HOUSEKEEPING}


def test_each_job_runs_once_when_schedulers_race(api, services):
    _, _, draft = version_in(api, S.DRAFT)
    now = utcnow() + dt.timedelta(days=31)  # the draft's 30 days are over
    jobs = [j for j in HOUSEKEEPING if j.name in JOB_NAMES]
    start = threading.Barrier(4)

    def scheduler(owner):
        start.wait()
        for job in jobs:
            run_job(job, services, owner, now)

    threads = [threading.Thread(target=scheduler, args=(f"scheduler-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in JOB_NAMES:
        state = JobState.get_by_id(name)
        assert (state.runs, state.failures, state.last_error) == (1, 0, None), name
    assert Version.get_by_id(draft).status == S.PURGED
    assert AuditEvent.select().where(AuditEvent.action == "version.purged").count() == 1
    assert len(list_backups(services)) == 1
    # within their periods, none runs again
    for job in jobs:
        assert run_job(job, services, "late", now + dt.timedelta(minutes=5)) is None


def _job_runs(metrics_url: str) -> dict[str, float]:
    return scraped_by(requests.get(metrics_url, timeout=10).text, "mosis_job_runs_total", "job", result="ok")


def test_two_scheduler_processes_started_together_run_each_job_once(services, settings):
    ports = free_ports(2)
    procs = []
    try:
        for i, port in enumerate(ports):
            env = stack_env(settings, 0, port)
            procs.append(start_scheduler(env, settings.data_dir / f"logs-{i}"))
        for p in procs:
            p.wait_ready(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {s.name: s for s in JobState.select() if s.name in JOB_NAMES}
            if len(states) == len(JOB_NAMES) and all(s.last_finished_at for s in states.values()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"jobs did not all run: {sorted(states)}\n{procs[0].tail()}")
        for p in procs:
            assert p.alive(), p.tail()
        runs = [_job_runs(f"http://127.0.0.1:{port}/metrics") for port in ports]
    finally:
        for p in procs:
            p.stop()
    for name in JOB_NAMES:
        state = JobState.get_by_id(name)
        assert (state.runs, state.failures) == (1, 0), (name, state.last_error)
        assert sum(r.get(name, 0) for r in runs) == 1, (name, runs)
    assert len(list_backups(services)) == 1
