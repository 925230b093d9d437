"""The scheduler process: the validation and delta queues and the housekeeping jobs.

Run it as `python -m app.scheduler` (or `mosis-scheduler`). It exports its
own metrics on MOSIS_SCHEDULER_METRICS_ADDR (default 127.0.0.1:8001).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal

# The scheduler serves its own metrics from memory. Inherited from the API's
# environment, PROMETHEUS_MULTIPROC_DIR would make the client keep them in
# files (failing if the directory is missing, exporting them twice if the
# API's /metrics reads it): drop it before the client is imported.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from apscheduler.schedulers.blocking import BlockingScheduler
from prometheus_client import start_http_server

from app.catalog import assets, deltas, packages, signatures, uploads, validation_worker
from app.edge import access_log as edge_log
from app.housekeeping import backup, cost, integrity, monitoring, replica, retention, usage
from app.platform.config import settings_for_process
from app.platform.jobs import Job, run_job
from app.platform.models import database
from app.platform.weblog import configure_logging
from app.services import Services, build_services

log = logging.getLogger("mosis.scheduler")


def with_db(job):
    """Each job runs in a pool thread: give it its own connection."""
    def run(*args, **kwargs):
        with database.connection_context():
            return job(*args, **kwargs)

    run.__name__ = job.__name__
    return run


# Housekeeping jobs, each run once per period across all schedulers (see
# app.platform.jobs); each module declares its own as JOBS. The validation
# and delta queues are not among them: they run on every scheduler, their
# rows are leased one by one.
HOUSEKEEPING: list[Job] = [
    *retention.JOBS, *integrity.JOBS, *backup.JOBS,  # docs/retention.md
    *replica.JOBS,  # the off-site replica (docs/operations.md)
    *usage.JOBS, *edge_log.JOBS, *cost.JOBS,  # monitoring and cost (docs/operations.md)
    *assets.JOBS, *uploads.JOBS, *packages.JOBS, *signatures.JOBS,  # docs/signing.md
]

# How often each scheduler asks whether a housekeeping job is due.
TICK_SECONDS = 30


def build_scheduler(svc: Services, jobs: list[Job] | None = None) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(with_db(validation_worker.run_pending), "interval",
                      seconds=svc.settings.validation_poll_seconds, args=[svc], id="validate",
                      name="validation queue")
    owner = validation_worker.worker_name()
    scheduler.add_job(with_db(deltas.run_pending), "interval", seconds=svc.settings.validation_poll_seconds,
                      args=[svc, owner], id="deltas", name="delta queue")
    if svc.replica is not None:  # the replica outbox, leased row by row like the validation queue
        scheduler.add_job(with_db(replica.drain), "interval", seconds=replica.DRAIN_SECONDS, args=[svc],
                          id="replicate", name="replica outbox")
    jobs = HOUSEKEEPING if jobs is None else jobs
    # Gauges of shared state, on every scheduler (app.housekeeping.monitoring).
    scheduler.add_job(with_db(monitoring.refresh), "interval", seconds=monitoring.REFRESH_SECONDS,
                      args=[svc, jobs], id="gauges", name="gauges",
                      next_run_time=dt.datetime.now(dt.timezone.utc))
    for job in jobs:
        tick = min(TICK_SECONDS, max(1, job.period.total_seconds()))
        scheduler.add_job(run_job, "interval", seconds=tick, args=[job, svc, owner], id=job.name,
                          name=job.name, next_run_time=dt.datetime.now(dt.timezone.utc))
    return scheduler


def main() -> None:
    settings = settings_for_process()
    configure_logging(settings.log_level, settings.log_format)
    svc = build_services(settings)
    host, _, port = settings.scheduler_metrics_addr.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    scheduler = build_scheduler(svc)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("scheduler started; metrics on %s:%s", host, port)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
