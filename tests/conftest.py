"""Shared fixtures: a real S3 server (SeaweedFS), real SQLite and PostgreSQL.

Storage is one `weed` per test session with one bucket; object keys carry
random ids, so tests do not see each other's objects. Each test gets a fresh
database: a new SQLite file, or emptied tables in the session's PostgreSQL
database (created here and dropped at the end).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from app.platform.config import Settings
from app.native import WeedPorts, start_weed
from tests.helpers import ADMIN_TOKEN

PG_DSN = os.environ.get("MOSIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def weed(tmp_path_factory):
    """A SeaweedFS S3 server on free loopback ports."""
    base = tmp_path_factory.mktemp("weed")
    ports = WeedPorts.free()
    # Small volumes: every test bucket is a collection of its own, and
    # SeaweedFS has only as many volume slots as its disk holds volumes.
    service = start_weed(base / "data", "mosis-test", "mosis-test-secret", ports, base / "logs",
                         volume_size_mb=64)
    try:
        service.wait_ready(90)
    except Exception:
        service.stop()
        raise
    service.endpoint = f"http://127.0.0.1:{ports.s3}"
    service.access_key, service.secret_key = "mosis-test", "mosis-test-secret"
    service.ports = ports
    yield service
    service.stop()


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def scratch_pg_database(prefix: str = "mosis_test"):
    """A new PostgreSQL database, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_DSN}/{name}"
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.close()


@pytest.fixture(scope="session")
def pg_database():
    """A PostgreSQL database of this session's own, dropped at the end."""
    import psycopg2

    try:
        _pg_admin().close()
    except psycopg2.OperationalError as e:
        pytest.fail(f"PostgreSQL is required at {PG_DSN}: {e}")
    with scratch_pg_database() as url:
        yield url


def _empty_pg(url: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [r[0] for r in cur.fetchall()]
        if tables:
            cur.execute("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mosis.db'}"
    url = request.getfixturevalue("pg_database")
    _empty_pg(url)
    return url


@pytest.fixture
def settings(weed, database_url, tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        s3_endpoint=weed.endpoint,
        s3_access_key=weed.access_key,
        s3_secret_key=weed.secret_key,
        bucket="mosis-test",
        public_url=weed.endpoint,
        # No edge in front: public objects are read from storage directly.
        cdn_url=f"{weed.endpoint}/mosis-test",
        validation_poll_seconds=0.2,
    )


@pytest.fixture
def services(settings):
    from app.platform.models import database
    from app.services import build_services

    svc = build_services(settings)
    yield svc
    db = database.obj
    if hasattr(db, "close_all"):
        db.close_all()
    elif db is not None and not db.is_closed():
        db.close()


@pytest.fixture
def app(services):
    from app import create_app

    return create_app(services.settings, services=services)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api(client, services):
    from tests.helpers import Api

    return Api(client, services)


@pytest.fixture
def refusing(weed):
    """Start proxies in front of SeaweedFS that refuse some calls (tests/s3_proxy.py)."""
    import threading

    from tests.s3_proxy import RefusingProxy

    servers = []

    def start(refuse: dict[str, tuple[int, str]]):
        server = RefusingProxy(weed.ports.s3, refuse)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


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
                        ("MOSIS_S3_PUBLIC_ASSETS", "" if settings.s3_public_assets else "false")):
        if value:
            env[name] = value
    return env


# -- the live stack: real processes, as `scripts/run` starts them -----------------------

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
        import json

        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def log_for(self, response) -> dict:
        """The edge's access log line of a response, found by its X-Request-ID."""
        import time

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
    import secrets

    changes = {"edge_api_rate": 10000, "edge_api_burst": 10000, "cdn_url": "", **changes}
    return base.replace(public_url=f"http://127.0.0.1:{http_port}",
                        edge_internal_url=f"http://127.0.0.1:{internal_port}",
                        download_link_secret=secrets.token_urlsafe(32), **changes)


def start_live_stack(settings: Settings, scheduler: bool = True, extra_env: dict | None = None) -> LiveStack:
    """Start the processes for `settings` (made by edge_settings)."""
    from urllib.parse import urlparse

    from app.native import free_ports, start_api, start_edge, start_scheduler

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


@pytest.fixture
def live_stack(settings):
    """The whole native stack as real processes: API, scheduler and the edge."""
    from app.native import free_ports

    stack = start_live_stack(edge_settings(settings, *free_ports(2)))
    yield stack
    stack.stop()
