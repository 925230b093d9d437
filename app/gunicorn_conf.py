"""gunicorn settings for the API, shared by scripts/run and the Docker image.

The bind address, workers and threads are settings (MOSIS_APP_BIND,
MOSIS_APP_WORKERS, MOSIS_APP_THREADS, read through app.platform.config like
every other: a bad value stops gunicorn with one line naming it).
Command-line flags (--bind, --workers) override these.
"""

import os

from app.platform.config import settings_for_process
from app.platform.weblog import configure_logging

settings = settings_for_process()
bind = settings.app_bind
workers = settings.resolved_app_workers
threads = settings.app_threads
worker_class = "gthread"
timeout = 60
graceful_timeout = 20
keepalive = 5
# Create the app once in the master: migrations run once, workers fork ready.
preload_app = True
accesslog = None
errorlog = "-"
max_requests = 10000
max_requests_jitter = 500


def _fresh_multiprocess_dir() -> None:
    """Empty the workers' shared metrics directory once, before the app loads.

    Files left by an earlier run would be summed into this run's counters.
    This module is read again on SIGHUP: only the master's first read clears.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or os.environ.get("MOSIS_MULTIPROC_CLEARED") == str(os.getpid()):
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    os.environ["MOSIS_MULTIPROC_CLEARED"] = str(os.getpid())


_fresh_multiprocess_dir()


def on_starting(server):
    configure_logging(settings.log_level, settings.log_format)


def post_fork(server, worker):
    # Connections opened in the master must not be shared with workers.
    server.app.wsgi().extensions["mosis"].storage.reset_connections()


def child_exit(server, worker):
    # A dead worker's live gauges must not be summed with the living ones.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
