"""Database connection (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import re
import select
import sqlite3
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import peewee as pw
import psycopg2.extensions
from playhouse.db_url import connect
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from app.platform.files import private_file
from app.platform.models import database

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
            # SQLite gives its WAL and shared-memory files the database file's mode.
            private_file(Path(path))
        # IMMEDIATE: a transaction takes the write lock when it begins, so a
        # read-then-write never fails on lock upgrade; it waits (busy_timeout).
        if path in ("", "/:memory:"):
            return pw.SqliteDatabase(":memory:", pragmas=SQLITE_PRAGMAS, check_same_thread=False,
                                     lock_type="IMMEDIATE")
        return PooledSqlite(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False, lock_type="IMMEDIATE",
                            factory=SqliteConnection, max_connections=None)
    if parsed.scheme in ("postgres", "postgresql"):
        # A pool: connecting per request costs more than a cached download link.
        return PooledPostgres(
            parsed.path.lstrip("/"),
            user=parsed.username, password=parsed.password,
            host=parsed.hostname, port=parsed.port or 5432,
            max_connections=32, stale_timeout=300, timeout=10, connection_factory=PgConnection,
        )
    return connect(url)


class SqliteConnection(sqlite3.Connection):
    opened: tuple[int, int] | None = None  # (device, inode) of the file it opened


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class PooledSqlite(PooledSqliteDatabase):
    """SQLite connections kept open between requests: opening one, setting
    its pragmas and closing it (the last close checkpoints the WAL) cost
    more than a download's query. A kept connection is used again only
    while the file at the path is the one it opened: a database moved away
    (a lost mount) fails as a fresh connection would, instead of being
    written to where nobody will look."""

    def _connect(self):
        conn = super()._connect()
        if conn.opened is None:
            conn.opened = _file_identity(self.database)
        return conn

    def _is_closed(self, conn):
        return super()._is_closed(conn) or _file_identity(self.database) != conn.opened


class PgConnection(psycopg2.extensions.connection):
    """A PostgreSQL session that knows which statements it has prepared."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


class PooledPostgres(PooledPostgresqlDatabase):
    """peewee's pool asks the server (`SELECT 1`) whether an idle connection
    still lives before every checkout: a round trip as long as a download's
    query. An idle session's server says nothing until it ends the session
    (terminated, restarted): then its farewell, or the end of the stream,
    waits on the socket. So a connection with anything to read is dropped,
    without a round trip; one in a transaction, or broken, goes through
    peewee's own check (a rollback, or discarded)."""

    def _is_closed(self, conn):
        if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return super()._is_closed(conn)
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))


def bind_database(url: str) -> pw.Database:
    """Point the models at the database named by `url` and return it."""
    db = open_database(url)
    database.initialize(db)
    return db


def is_postgres(db: pw.Database | None = None) -> bool:
    db = db or database.obj
    return isinstance(db, pw.PostgresqlDatabase)


@contextlib.contextmanager
def try_lock(name: str) -> Iterator[bool]:
    """Take the lock called `name` if it is free, without waiting; yields
    whether it is held. On PostgreSQL it is an advisory lock of this
    thread's session, on SQLite a file lock beside the database file (SQLite
    is one host's): either ends with the process holding it, so a crash
    never leaves it taken, and neither touches a table."""
    db = database.obj
    if isinstance(db, pw.PostgresqlDatabase):
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        held = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        try:
            yield bool(held)
        finally:
            if held:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
        return
    with _file_lock(db.database, name) as held:
        yield held


_memory_locks: set[str] = set()
_memory_guard = threading.Lock()


@contextlib.contextmanager
def _file_lock(db_path: str, name: str) -> Iterator[bool]:
    if db_path in ("", ":memory:"):  # a database of this process alone
        with _memory_guard:
            held = name not in _memory_locks
            _memory_locks.add(name)
        try:
            yield held
        finally:
            if held:
                with _memory_guard:
                    _memory_locks.discard(name)
        return
    directory = Path(db_path).parent / ".locks"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # its holder removed it as we opened it: taken then
            same = False
        if not same:
            yield False
            return
        try:
            yield True
        finally:
            os.unlink(path)  # before unlocking: whoever opened it meanwhile sees it gone
    finally:
        os.close(fd)


def ping() -> None:
    """Raise if the database cannot answer a trivial query."""
    database.execute_sql("SELECT 1")


class Compiled:
    """A query whose SQL peewee writes once per kind of database, each call
    binding its own value: for the hottest reads, where writing the SQL
    costs more than the database takes to answer it. On PostgreSQL each
    session also prepares it once (PREPARE), so the server no longer parses
    and plans it on every call either: that took longer than running it.
    `build(value)` gives the query (peewee, from the models) for one
    parameter value."""

    _MARK = "\x00compiled-parameter\x00"
    _count = itertools.count(1)
    # invalid_sql_statement_name; feature_not_supported ("cached plan must not change result type")
    _LOST = ("26000", "0A000")

    def __init__(self, build):
        self._build = build
        self._name = f"mosis_compiled_{next(self._count)}"
        self._sql: dict[type, tuple[str, str | None, str | None, list]] = {}

    def _compile(self, db: pw.Database) -> tuple[str, str | None, str | None, list]:
        """The SQL; on PostgreSQL its PREPARE and the EXECUTE of it; the parameters."""
        sql, params = self._build(self._MARK).sql()
        if params.count(self._MARK) != 1:
            raise ValueError("the query must use its parameter exactly once")
        if isinstance(db, pw.PostgresqlDatabase):
            # Every value a parameter ($1, $2 ...): peewee writes none inline.
            numbers = itertools.count(1)
            prepare = f"PREPARE {self._name} AS " + re.sub("%s", lambda _: f"${next(numbers)}", sql)
            return sql, prepare, f"EXECUTE {self._name} ({', '.join(['%s'] * len(params))})", params
        return sql, None, None, params

    def first(self, value) -> tuple | None:
        """The first row (a tuple, in the query's column order), or None."""
        db = database.obj
        compiled = self._sql.get(type(db))
        if compiled is None:
            compiled = self._sql[type(db)] = self._compile(db)
        sql, prepare, execute, params = compiled
        values = [value if p == self._MARK else p for p in params]
        # Sessions of our pool keep the names of what they prepared.
        prepared = getattr(db.connection(), "prepared", None) if prepare else None
        if prepared is None:
            return db.execute_sql(sql, values).fetchone()
        if self._name not in prepared:
            self._prepare_in(db, prepared, prepare)
        try:
            return db.execute_sql(execute, values).fetchone()
        except pw.DatabaseError as e:
            # Dropped (DEALLOCATE or DISCARD ALL) or outdated by a change of
            # the tables' columns: prepared anew, once.
            if getattr(getattr(e, "orig", None), "pgcode", None) not in self._LOST:
                raise
            prepared.discard(self._name)
            with contextlib.suppress(pw.DatabaseError):
                db.execute_sql(f"DEALLOCATE {self._name}")
            self._prepare_in(db, prepared, prepare)
            return db.execute_sql(execute, values).fetchone()

    def _prepare_in(self, db: pw.Database, prepared: set[str], prepare: str) -> None:
        db.execute_sql(prepare)
        prepared.add(self._name)
