"""Versioned schema migrations, applied in order at start.

Each step has a number, a name and a function. Steps are idempotent (they
check before they change), so a fresh database created from the current
models passes through later steps harmlessly, and a crash half-way through a
step is finished by the next start. Add new steps at the end; never renumber.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from mosis_format.delta import signed_message as delta_message
from mosis_format.keyring import Keyring
from mosis_format.signing import verify_raw

from app.platform.models import (
    ALL_MODELS,
    MONITORING_MODELS,
    REPLICA_MODELS,
    TRUST_MODELS,
    ApiToken,
    App,
    Delta,
    EdgeTraffic,
    JobState,
    KeyringVersion,
    SchemaMigration,
    Screenshot,
    Version,
    database,
)

log = logging.getLogger(__name__)


def _migrator(db: pw.Database):
    return PostgresqlMigrator(db) if isinstance(db, pw.PostgresqlDatabase) else SqliteMigrator(db)


def add_column_if_missing(model: type[pw.Model], field_name: str) -> None:
    """Add `model.field_name` (as the model declares it) to an existing table."""
    db = database.obj
    table = model._meta.table_name
    if field_name in {c.name for c in db.get_columns(table)}:
        return
    field = model._meta.fields[field_name]
    migrate(_migrator(db).add_column(table, field.column_name, field))


def _initial_schema() -> None:
    database.create_tables(ALL_MODELS, safe=True)


def _retention_columns() -> None:
    add_column_if_missing(Version, "purged_from")
    add_column_if_missing(Version, "verified_at")


def _job_item_errors() -> None:
    add_column_if_missing(JobState, "last_errors")


def _monitoring_tables() -> None:
    database.create_tables(MONITORING_MODELS, safe=True)


def _multipart_uploads() -> None:
    add_column_if_missing(Version, "multipart_upload_id")
    add_column_if_missing(Version, "part_size")


def _assets_schema() -> None:
    for column in ("asset_seq", "icon_number", "icon_sha256"):
        add_column_if_missing(App, column)
    database.create_tables([Screenshot], safe=True)


def _token_scopes() -> None:
    for column in ("scopes", "apps", "expires_at", "parent"):
        add_column_if_missing(ApiToken, column)


def _keyring_schema() -> None:
    add_column_if_missing(Version, "key_id")
    database.create_tables(TRUST_MODELS, safe=True)


def _replica_outbox() -> None:
    database.create_tables(REPLICA_MODELS, safe=True)


def _deltas_schema() -> None:
    database.create_tables([Delta], safe=True)
    add_column_if_missing(EdgeTraffic, "replaced_bytes")


def _delta_key_ids() -> None:
    """The key of each stored patch's signature, found by verifying it with
    every key the keyring ever held (the active key now need not be the one
    that signed it). None verifies, or no keyring yet: left empty, and the
    keyring fills it (app.platform.keys: before the keyring, only the first
    key signed) or the patch is signed again before it is served."""
    add_column_if_missing(Delta, "key_id")
    public = {k.key_id: k.public_key for row in KeyringVersion.select().order_by(KeyringVersion.version)
              for k in Keyring.parse(row.document).keys}
    unnamed = (Delta.select(Delta, App.package_id).join(App)
               .where(Delta.signature.is_null(False) & Delta.key_id.is_null()).objects())
    for delta in unnamed:
        message = delta_message(delta.package_id, delta.from_version_code, delta.from_sha256,
                                delta.to_version_code, delta.to_sha256, delta.sha256, delta.size)
        key_id = next((i for i, key in public.items() if verify_raw(key, delta.signature, message)), None)
        if key_id is not None:
            Delta.update(key_id=key_id).where(Delta.id == delta.id).execute()


# (number, name, function). Later issues append here.
STEPS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "initial schema", _initial_schema),
    (40, "icons and screenshots", _assets_schema),
    (60, "version retention and scrub columns", _retention_columns),
    (61, "job_state.last_errors", _job_item_errors),
    (70, "edge log cursor, edge traffic, storage scans, usage snapshots", _monitoring_tables),
    (100, "multipart uploads: storage upload id and part size of a version", _multipart_uploads),
    (120, "api_token scopes, apps, expires_at and parent", _token_scopes),
    (121, "keyring versions, the signed index, the key of a version's signature", _keyring_schema),
    (180, "delta patches between versions", _deltas_schema),
    (190, "replica outbox: objects to copy to and delete from the off-site replica", _replica_outbox),
    (200, "the key of a delta patch's signature", _delta_key_ids),
]


def applied_versions() -> set[int]:
    return {m.version for m in SchemaMigration.select(SchemaMigration.version)}


MIGRATION_LOCK_ID = 0x6D6F736973  # "mosis": PostgreSQL advisory lock key


@contextlib.contextmanager
def _migration_lock(db: pw.Database):
    """One process migrates at a time (the API and scheduler start together)."""
    if isinstance(db, pw.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    else:
        with db.atomic():  # SQLite: BEGIN IMMEDIATE holds the write lock
            yield


def migrate_database() -> list[int]:
    """Apply every step not yet recorded; return the numbers applied."""
    db = database.obj
    with db.connection_context(), _migration_lock(db):
        db.create_tables([SchemaMigration], safe=True)
        done = applied_versions()
        applied = []
        for number, name, step in STEPS:
            if number in done:
                continue
            with db.atomic():
                step()
                # Two processes may start together; the primary key lets one win.
                SchemaMigration.insert(version=number, name=name).on_conflict_ignore().execute()
            log.info("applied migration %d: %s", number, name)
            applied.append(number)
        return applied
