"""Metadata backups: a consistent copy of the database in the bucket, and restore.

A daily job writes one backup under `backups/db/` and keeps the newest
MOSIS_BACKUP_KEEP of them (by count, not age: a scheduler that was stopped for
a month still finds its last backups):

- SQLite: the online backup API copies a consistent snapshot while the app
  keeps writing; the copy is gzipped (`.sqlite3.gz`).
- PostgreSQL: `pg_dump --format=custom` (one snapshot, compressed; `.pgdump`).
  The client must be at least as new as the server.

`flask --app app backup restore [KEY]` restores one (the newest by default)
into the configured database, or into `--database-url`; see docs/retention.md.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse, urlunparse

from prometheus_client import Gauge

from app.platform.clock import utcnow
from app.platform.db import is_postgres
from app.platform.jobs import Job
from app.platform.models import database
from app.platform.objectstore import ObjectInfo, ObjectStore
from app.platform.outbox import enqueue_deletes, enqueue_missing
from app.platform.storage import BACKUPS, backup_key

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

SQLITE_EXT, PG_EXT = "sqlite3.gz", "pgdump"
BACKUP_KEY_RE = re.compile(rf"^{BACKUPS}/db/mosis-\d{{8}}T\d{{6}}Z\.({re.escape(SQLITE_EXT)}|{PG_EXT})\Z")
PG_TIMEOUT = 6 * 3600  # seconds; a dump or restore that hangs longer has failed

BACKUP_BYTES = Gauge("mosis_backup_last_size_bytes", "Size of the last metadata backup")
BACKUPS_STORED = Gauge("mosis_backups_stored", "Metadata backups kept in the bucket")


class BackupError(RuntimeError):
    """A backup or restore could not be made; the message says why."""


# -- PostgreSQL tools -------------------------------------------------------------------


def _libpq(url: str) -> tuple[str, dict]:
    """(connection URI without its password, environment carrying it).

    The password goes through the environment, never the command line,
    where every user of the host could read it.
    """
    parsed = urlparse(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    host = parsed.hostname or ""
    netloc = f"{parsed.username}@" if parsed.username else ""
    netloc += f"[{host}]" if ":" in host else host
    if parsed.port:
        netloc += f":{parsed.port}"
    return urlunparse(("postgresql", netloc, parsed.path, "", parsed.query, "")), env


def _run_pg_tool(argv: list[str], env: dict) -> None:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=PG_TIMEOUT)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed: install the PostgreSQL client "
                          "(Debian: postgresql-client), as new as the server") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{argv[0]} did not finish within {PG_TIMEOUT} s") from None
    if done.returncode != 0:
        raise BackupError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def _pg_dump(url: str, path: Path) -> None:
    dsn, env = _libpq(url)
    _run_pg_tool(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={path}", f"--dbname={dsn}"], env)


def _pg_restore(url: str, path: Path) -> None:
    dsn, env = _libpq(url)
    # One transaction: a restore that fails half-way leaves the database as it was.
    _run_pg_tool(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
                  "--single-transaction", "--exit-on-error", f"--dbname={dsn}", str(path)], env)


# -- SQLite ------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or parsed.path in ("", "/:memory:"):
        raise BackupError(f"not a SQLite database file: {url}")
    return parsed.path


def _sqlite_snapshot(path: Path) -> None:
    """A consistent copy of the bound SQLite database, gzipped into `path`."""
    raw = path.with_suffix("")
    target = sqlite3.connect(raw)
    try:
        database.connection().backup(target)
    finally:
        target.close()
    with open(raw, "rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    raw.unlink()


def _sqlite_restore(backup_gz: Path, target_path: str) -> None:
    raw = backup_gz.with_suffix("")
    source = None
    try:
        with gzip.open(backup_gz, "rb") as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        source = sqlite3.connect(raw)
        check = source.execute("PRAGMA integrity_check").fetchone()[0]
    except (OSError, EOFError, sqlite3.DatabaseError) as e:
        if source is not None:
            source.close()
        raise BackupError(f"the backup cannot be read: {e}") from None
    try:
        if check != "ok":
            raise BackupError(f"the backup is damaged: {check}")
        Path(target_path).parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(target_path, timeout=30)
        try:
            source.backup(target)  # page by page, under the target's write lock
        finally:
            target.close()
    finally:
        source.close()


# -- backups in the bucket -------------------------------------------------------------------


def list_backups(svc: Services, store: ObjectStore | None = None) -> list[ObjectInfo]:
    """The stored database backups (in `store`, default the bucket), newest first."""
    store = store or svc.storage
    found = [o for o in store.list(f"{BACKUPS}/db/") if BACKUP_KEY_RE.match(o.key)]
    return sorted(found, key=lambda o: o.key, reverse=True)


def prune_backups(svc: Services, keep: int) -> list[str]:
    """Delete all but the newest `keep` backups; return the deleted keys."""
    old = [o.key for o in list_backups(svc)[keep:]]
    svc.storage.delete(*old)
    enqueue_deletes(svc.settings, old)
    return old


def create_backup(svc: Services, now: dt.datetime | None = None) -> dict:
    """Write a consistent backup of the database to the bucket, then prune old ones."""
    now = now or utcnow()
    svc.settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="backup-", dir=svc.settings.data_dir) as tmp:
        if is_postgres(database.obj):
            path = Path(tmp) / f"mosis.{PG_EXT}"
            _pg_dump(svc.settings.resolved_database_url, path)
        else:
            path = Path(tmp) / f"mosis.{SQLITE_EXT}"
            _sqlite_snapshot(path)
        key = backup_key(now, PG_EXT if path.name.endswith(PG_EXT) else SQLITE_EXT)
        size = path.stat().st_size
        svc.storage.put_file(key, path)
    # This backup, and any whose writer died between its upload and this line.
    enqueue_missing(svc.settings, svc.storage, [BACKUPS])
    pruned = prune_backups(svc, svc.settings.housekeeping.backup_keep)
    BACKUP_BYTES.set(size)
    BACKUPS_STORED.set(len(list_backups(svc)))
    log.info("database backup %s written (%d bytes); %d old ones deleted", key, size, len(pruned))
    return {"key": key, "size": size, "pruned": pruned}


def restore_backup(svc: Services, key: str | None = None, database_url: str | None = None,
                   store: ObjectStore | None = None) -> dict:
    """Restore backup `key` (default: the newest) from `store` (default: the
    bucket; the replica's, app.housekeeping.recovery) into `database_url`
    (default: ours)."""
    store = store or svc.storage
    if key is None:
        stored = list_backups(svc, store)
        if not stored:
            raise BackupError(f"no backups in {BACKUPS}/db/")
        key = stored[0].key
    elif not BACKUP_KEY_RE.match(key):
        raise BackupError(f"not a database backup key: {key!r} (see `backup list`)")
    url = database_url or svc.settings.resolved_database_url
    target_is_pg = urlparse(url).scheme in ("postgres", "postgresql")
    if key.endswith(PG_EXT) != target_is_pg:
        kind = "PostgreSQL" if key.endswith(PG_EXT) else "SQLite"
        raise BackupError(f"{key} is a {kind} backup; it restores only into {kind}")
    if store.stat(key) is None:
        raise BackupError(f"no such backup: {key}")
    svc.settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="restore-", dir=svc.settings.data_dir) as tmp:
        path = Path(tmp) / key.rsplit("/", 1)[1]
        store.get_file(key, path)
        if target_is_pg:
            _pg_restore(url, path)
        else:
            _sqlite_restore(path, _sqlite_path(url))
    log.info("database backup %s restored", key)
    return {"key": key, "restored_into": _libpq(url)[0] if target_is_pg else _sqlite_path(url)}


def backup_job(svc: Services, now: dt.datetime) -> dict:
    result = create_backup(svc, now)
    return {"items": 1, "bytes": result["size"], "key": result["key"]}


JOB = Job("metadata_backup", backup_job, period=dt.timedelta(days=1), max_runtime=dt.timedelta(hours=6))
JOBS = (JOB,)
