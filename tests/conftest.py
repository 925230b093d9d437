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

from app.config import Settings
from app.native import WeedPorts, start_weed
from tests.helpers import ADMIN_TOKEN

PG_DSN = os.environ.get("MOSIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def weed(tmp_path_factory):
    """A SeaweedFS S3 server on free loopback ports."""
    base = tmp_path_factory.mktemp("weed")
    ports = WeedPorts.free()
    service = start_weed(base / "data", "mosis-test", "mosis-test-secret", ports, base / "logs")
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
    from app.models import database
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
    return env


@pytest.fixture
def live_stack(settings):
    """The API under gunicorn and the scheduler, as real processes."""
    from app.native import free_ports, start_api, start_scheduler

    api_port, scheduler_port = free_ports(2)
    env = stack_env(settings, api_port, scheduler_port)
    logs = settings.data_dir / "logs"
    started = []
    try:
        for service in (start_api(env, env["MOSIS_APP_BIND"], logs),
                        start_scheduler(env, logs)):
            started.append(service)
            service.wait_ready(60)
    except Exception:
        for s in started:
            s.stop()
        raise
    stack = type("LiveStack", (), {})()
    stack.api, stack.scheduler = started
    stack.url = f"http://127.0.0.1:{api_port}"
    stack.scheduler_url = f"http://127.0.0.1:{scheduler_port}"
    stack.env = env
    yield stack
    for s in reversed(started):
        s.stop()
