"""Metadata backups to the bucket and restores, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import gzip
import sqlite3
from urllib.parse import urlparse

import pytest

from app.housekeeping import backup
from app.housekeeping.backup import BackupError, create_backup, list_backups, restore_backup
from app.platform.clock import utcnow
from app.platform.jobs import run_job
from app.platform.models import ALL_MODELS, AuditEvent, JobState
from app.platform.models import VersionStatus as S
from app.platform.storage import backup_key
from tests.housekeeping_helpers import unique_bucket, version_in
from tests.stack import scratch_pg_database


@pytest.fixture
def settings(settings):
    return settings.replace(bucket=unique_bucket())


@pytest.fixture
def fresh_database_url(database_url, tmp_path):
    """An empty database of the same kind as the test's."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'mosis.db'}"
        return
    with scratch_pg_database("mosis_restore") as url:
        yield url


def _connect(url):
    if url.startswith("sqlite"):
        return sqlite3.connect(urlparse(url).path)
    import psycopg2

    return psycopg2.connect(url)


def snapshot(url) -> dict:
    """Every row of every table, and the index names: what a restore must bring back."""
    conn = _connect(url)
    try:
        cur = conn.cursor()
        out = {}
        for model in ALL_MODELS:
            table = model._meta.table_name
            cur.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            out[table] = cur.fetchall()
        if url.startswith("sqlite"):
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        else:
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        out["indexes"] = sorted(r[0] for r in cur.fetchall())
        return out
    finally:
        conn.close()


def _history(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    api.ship(dev, app, 2)
    api.submit(dev, app, 3)
    version_in(api, S.FAILED)


def test_a_backup_restores_into_a_fresh_database_with_the_same_rows(api, services, database_url,
                                                                    fresh_database_url):
    _history(api)
    before = snapshot(database_url)
    assert len(before["version"]) == 4 and before["audit_event"] and before["api_token"]
    made = create_backup(services)
    assert made["size"] > 0 and made["key"].endswith(".pgdump" if "postgres" in database_url else ".sqlite3.gz")
    api.new_developer()  # written after the backup: not in it

    restored = restore_backup(services, made["key"], fresh_database_url)
    assert restored["key"] == made["key"]
    assert snapshot(fresh_database_url) == before
    assert snapshot(database_url) != before


def test_cli_restores_the_newest_backup_into_the_configured_database(app, api, services, database_url):
    _history(api)
    before = snapshot(database_url)
    create_backup(services, utcnow() - dt.timedelta(days=1))
    newest = create_backup(services)["key"]
    AuditEvent.delete().execute()
    api.new_developer()
    assert snapshot(database_url) != before

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["backup", "list"])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].startswith(newest)
    refused = runner.invoke(args=["backup", "restore"], input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert snapshot(database_url) != before

    out = runner.invoke(args=["backup", "restore", "--yes"])
    assert out.exit_code == 0, out.output
    assert newest in out.output
    assert snapshot(database_url) == before


def test_backup_job_keeps_the_newest_backups(services):
    services.settings = services.settings.replace(
        housekeeping=services.settings.housekeeping.__class__(backup_keep=2))
    start = utcnow()
    keys = []
    for day in range(3):
        result = run_job(backup.JOB, services, "s1", start + dt.timedelta(days=day))
        keys.append(result["key"])
    assert [o.key for o in list_backups(services)] == [keys[2], keys[1]]
    assert not services.storage.exists(keys[0])
    state = JobState.get_by_id("metadata_backup")
    assert state.runs == 3 and state.last_items == 1 and state.last_error is None
    # not ours: never pruned
    services.storage.put("backups/db/notes.txt", b"operator's own file")
    run_job(backup.JOB, services, "s1", start + dt.timedelta(days=3))
    assert services.storage.exists("backups/db/notes.txt")


def test_restore_refuses_what_it_cannot_restore(services, database_url, fresh_database_url, tmp_path):
    with pytest.raises(BackupError, match="no backups"):
        restore_backup(services)
    with pytest.raises(BackupError, match="not a database backup key"):
        restore_backup(services, "packages/x/y/1/package.mosis")
    other_kind = "sqlite3.gz" if "postgres" in database_url else "pgdump"
    with pytest.raises(BackupError, match="restores only into"):
        restore_backup(services, backup_key(utcnow(), other_kind), fresh_database_url)
    with pytest.raises(BackupError, match="no such backup"):
        restore_backup(services, backup_key(dt.datetime(2001, 1, 1), "sqlite3.gz" if other_kind == "pgdump"
                                            else "pgdump"), fresh_database_url)
    damaged = backup_key(dt.datetime(2002, 1, 1), "sqlite3.gz" if other_kind == "pgdump" else "pgdump")
    services.storage.put(damaged, gzip.compress(b"not a database at all" * 100))
    with pytest.raises(BackupError):
        restore_backup(services, damaged, fresh_database_url)


def test_a_missing_pg_dump_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="pg_dump is not installed"):
        backup._pg_dump("postgresql://mosis:secret@127.0.0.1:5432/mosis", tmp_path / "x.pgdump")


def test_the_password_stays_off_the_command_line():
    dsn, env = backup._libpq("postgresql://mosis:s3cret@db.internal:6543/mosis?sslmode=require")
    assert dsn == "postgresql://mosis@db.internal:6543/mosis?sslmode=require"
    assert env["PGPASSWORD"] == "s3cret"
