"""The appliance's pieces for tests, started as `scripts/run` starts them.

- PostgreSQL: `scratch_pg_database` creates a database of its own on the
  server at `PG_DSN` (MOSIS_TEST_PG, default 127.0.0.1:5432) and drops it
  when the `with` block ends, its connections terminated first;
  `empty_pg` drops every table of a database; `pg_admin` is a connection
  to the server's `postgres` database, closed by its caller.
- The live stack: `start_live_stack` starts the API (gunicorn), the
  scheduler and the edge (nginx) as real processes for `Settings` made by
  `edge_settings`; `LiveStack.stop` stops them in the reverse order, and a
  start that fails stops what it had started before it raises.
  `stack_env` is the environment those processes run with.

Nothing here starts storage: the tests' SeaweedFS is the `weed` fixture
(tests/conftest.py), or a test's own (tests/faults.py). Only loopback
addresses are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from app.platform.config import Settings
from app.native import free_ports, start_api, start_edge, start_scheduler

PG_DSN = os.environ.get("MOSIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


# -- PostgreSQL ---------------------------------------------------------------------------

def pg_admin():
    """A connection to the server's `postgres` database (autocommit); the caller closes it."""
    import psycopg2

    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def scratch_pg_database(prefix: str = "mosis_test"):
    """A new PostgreSQL database, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_DSN}/{name}"
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.close()


def empty_pg(url: str) -> None:
    """Drop every table of the database at `url`."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [r[0] for r in cur.fetchall()]
        if tables:
            cur.execute("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    conn.close()


# -- the live stack: real processes, as `scripts/run` starts them -----------------------

def stack_env(settings: Settings, api_port: int, scheduler_port: int) -> dict:
    """Environment for real API and scheduler processes built from `settings`."""
    env = dict(os.environ)
    env.update({
        "MOSIS_DATA_DIR": str(settings.data_dir),
        "MOSIS_DATABASE_URL": settings.resolved_database_url,
        "MOSIS_ADMIN_TOKEN": settings.admin_token,
        "MOSIS_S3_ENDPOINT": settings.s3_endpoint,
        "MOSIS_S3_ACCESS_KEY": settings.s3_access_key,
        "MOSIS_S3_SECRET_KEY": settings.s3_secret_key,
        "MOSIS_S3_BUCKET": settings.bucket,
        "MOSIS_PUBLIC_URL": settings.public_url,
        "MOSIS_CDN_URL": settings.cdn_url,
        "MOSIS_VALIDATION_POLL_SECONDS": "0.2",
        "MOSIS_APP_BIND": f"127.0.0.1:{api_port}",
        "MOSIS_SCHEDULER_METRICS_ADDR": f"127.0.0.1:{scheduler_port}",
        "PROMETHEUS_MULTIPROC_DIR": str(settings.data_dir / "run" / "prometheus"),
        "MOSIS_MULTIPART_THRESHOLD_BYTES": str(settings.multipart_threshold_bytes),
        "MOSIS_MULTIPART_PART_BYTES": str(settings.multipart_part_bytes),
    })
    # Edge settings, when the test gives them.
    for name, value in (("MOSIS_CDN_URL", settings.cdn_url),
                        ("MOSIS_S3_PUBLIC_ENDPOINT", settings.s3_public_endpoint),
                        ("MOSIS_DOWNLOAD_LINK_SECRET", settings.download_link_secret),
                        ("MOSIS_EDGE_INTERNAL_URL", settings.edge_internal_url),
                        ("MOSIS_CLOUDFLARE_ZONE_ID", settings.cloudflare_zone_id),
                        ("MOSIS_CLOUDFLARE_API_TOKEN", settings.cloudflare_api_token),
                        ("MOSIS_CLOUDFLARE_API_URL", settings.cloudflare_api_url),
                        ("MOSIS_MAX_PACKAGE_BYTES", str(settings.limits.max_package_bytes)),
                        ("MOSIS_S3_PUBLIC_ASSETS", "" if settings.s3_public_assets else "false"),
                        # The off-site replica, when the test configures one.
                        ("MOSIS_REPLICA_S3_ENDPOINT", settings.replica_s3_endpoint),
                        ("MOSIS_REPLICA_S3_BUCKET", settings.replica_bucket),
                        ("MOSIS_REPLICA_S3_ACCESS_KEY", settings.replica_access_key),
                        ("MOSIS_REPLICA_S3_SECRET_KEY", settings.replica_secret_key),
                        ("MOSIS_REPLICA_DELETE_DELAY_SECONDS", str(settings.replica_delete_delay))):
        if value:
            env[name] = value
    return env


class LiveStack:
    """API (gunicorn), scheduler and edge (nginx) as real processes.

    `url` is the API itself (its /metrics included); `edge_url` is the edge,
    where download links, presigned uploads and assets point.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.edge_url = settings.public_url
        self.internal_url = settings.edge_internal_url
        self.services: list = []
        self.api = self.scheduler = self.edge = None

    @property
    def access_log(self) -> Path:
        return self.settings.resolved_edge_access_log

    def log_entries(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def log_for(self, response) -> dict:
        """The edge's access log line of a response, found by its X-Request-ID."""
        request_id = response.headers["X-Request-ID"]
        for _ in range(50):  # nginx writes the line as the response ends
            found = [e for e in self.log_entries() if e["request_id"] == request_id]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no access log line for request {request_id}")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def edge_settings(base: Settings, http_port: int, internal_port: int, **changes) -> Settings:
    """`base` with the edge as its public URL: uploads, downloads and public
    objects go through it. Rate limits are high: tests call quickly;
    test_edge.py checks the limits."""
    changes = {"edge_api_rate": 10000, "edge_api_burst": 10000, "cdn_url": "", **changes}
    return base.replace(public_url=f"http://127.0.0.1:{http_port}",
                        edge_internal_url=f"http://127.0.0.1:{internal_port}",
                        download_link_secret=secrets.token_urlsafe(32), **changes)


def start_live_stack(settings: Settings, scheduler: bool = True, extra_env: dict | None = None) -> LiveStack:
    """Start the processes for `settings` (made by edge_settings)."""
    api_port, scheduler_port = free_ports(2)
    env = {**stack_env(settings, api_port, scheduler_port), **(extra_env or {})}
    logs = settings.data_dir / "logs"
    stack = LiveStack(settings)
    stack.env = env
    stack.url = f"http://127.0.0.1:{api_port}"
    stack.scheduler_url = f"http://127.0.0.1:{scheduler_port}"
    try:
        stack.api = start_api(env, env["MOSIS_APP_BIND"], logs)
        stack.services.append(stack.api)
        stack.api.wait_ready(60)
        if scheduler:
            stack.scheduler = start_scheduler(env, logs)
            stack.services.append(stack.scheduler)
            stack.scheduler.wait_ready(60)
        stack.edge = start_edge(settings, http_port=urlparse(settings.public_url).port,
                                internal_port=urlparse(settings.edge_internal_url).port,
                                app_bind=env["MOSIS_APP_BIND"], log_dir=logs)
        stack.services.append(stack.edge)
        stack.edge.wait_ready(60)
    except BaseException:
        stack.stop()
        raise
    return stack
