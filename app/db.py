"""Database connection (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import peewee as pw
from playhouse.db_url import connect
from playhouse.pool import PooledPostgresqlDatabase

from app.models import database

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer
    "busy_timeout": 10_000,  # ms to wait for the write lock instead of failing
    "foreign_keys": 1,
    "synchronous": "normal",  # safe with WAL; fsync at checkpoints
}


def open_database(url: str) -> pw.Database:
    """Build (not yet connect) the database named by `url`."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path
        if path not in ("", "/:memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a transaction takes the write lock when it begins, so a
        # read-then-write never fails on lock upgrade; it waits (busy_timeout).
        return pw.SqliteDatabase(path or ":memory:", pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                                 lock_type="IMMEDIATE")
    if parsed.scheme in ("postgres", "postgresql"):
        # A pool: connecting per request costs more than a cached download link.
        return PooledPostgresqlDatabase(
            parsed.path.lstrip("/"),
            user=parsed.username, password=parsed.password,
            host=parsed.hostname, port=parsed.port or 5432,
            max_connections=32, stale_timeout=300, timeout=10,
        )
    return connect(url)


def bind_database(url: str) -> pw.Database:
    """Point the models at the database named by `url` and return it."""
    db = open_database(url)
    database.initialize(db)
    return db


def is_postgres(db: pw.Database | None = None) -> bool:
    db = db or database.obj
    return isinstance(db, pw.PostgresqlDatabase)


def ping() -> None:
    """Raise if the database cannot answer a trivial query."""
    database.execute_sql("SELECT 1")
