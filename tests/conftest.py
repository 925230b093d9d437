"""Shared fixtures: a real S3 server (SeaweedFS), real SQLite and PostgreSQL.

Storage is one `weed` per test session with one bucket; object keys carry
random ids, so tests do not see each other's objects. Each test gets a fresh
database: a new SQLite file, or emptied tables in the session's PostgreSQL
database (created here and dropped at the end). What the fixtures start
with, and the helpers tests use directly, are in tests/stack.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.platform.config import Settings
from app.native import WeedPorts, start_weed
from tests.helpers import ADMIN_TOKEN
from tests.stack import PG_DSN, edge_settings, empty_pg, pg_admin, scratch_pg_database, start_live_stack


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


@pytest.fixture(scope="session")
def replica_weed(tmp_path_factory):
    """A second SeaweedFS: the off-site replica's server."""
    from tests.faults import Weed

    server = Weed(tmp_path_factory.mktemp("replica-weed"))
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database():
    """A PostgreSQL database of this session's own, dropped at the end."""
    import psycopg2

    try:
        pg_admin().close()
    except psycopg2.OperationalError as e:
        pytest.fail(f"PostgreSQL is required at {PG_DSN}: {e}")
    with scratch_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mosis.db'}"
    url = request.getfixturevalue("pg_database")
    empty_pg(url)
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
    from app.platform import health
    from app.platform.models import database
    from app.services import build_services

    svc = build_services(settings)
    yield svc
    # The API's probes (this test's and any left by another) query the
    # database from threads of their own: end them before the connections close.
    health.stop_all()
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


@pytest.fixture
def live_stack(settings):
    """The whole native stack as real processes: API, scheduler and the edge."""
    from app.native import free_ports

    stack = start_live_stack(edge_settings(settings, *free_ports(2)))
    yield stack
    stack.stop()
