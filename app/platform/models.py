"""Database models. The schema is created and upgraded by app.platform.migrations."""

from __future__ import annotations

import json
import uuid

import peewee as pw

from app.platform.clock import utcnow
from app.platform.lifecycle import VersionStatus

database = pw.DatabaseProxy()


def new_id() -> str:
    return uuid.uuid4().hex


class JSONField(pw.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=200)
    applied_at = pw.DateTimeField(default=utcnow)


class Developer(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    name = pw.CharField(max_length=200)
    email = pw.CharField(max_length=320, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class ApiToken(BaseModel):
    """A developer's bearer token; only its SHA-256 is stored.

    `scopes` null: every developer scope (tokens from before scopes);
    `apps` null: every app of the developer; `parent`: the token that
    issued it (revoking a token revokes what it issued)."""

    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    developer = pw.ForeignKeyField(Developer, backref="tokens", on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16)  # first characters, to recognise a token in lists
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)
    last_used_at = pw.DateTimeField(null=True)
    scopes = JSONField(null=True)
    apps = JSONField(null=True)
    expires_at = pw.DateTimeField(null=True)
    parent = pw.CharField(max_length=32, null=True, index=True)


class App(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    developer = pw.ForeignKeyField(Developer, backref="apps", on_delete="RESTRICT")
    package_id = pw.CharField(max_length=128, unique=True)
    name = pw.CharField(max_length=80)
    # Highest version_code ever published; a new version must exceed it.
    max_published_code = pw.BigIntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # Assets (app.catalog.assets): every stored icon set or screenshot takes the next
    # number, which names its objects; numbers are never reused, so a URL
    # always names the same bytes and caches may keep it forever.
    asset_seq = pw.BigIntegerField(default=0)
    icon_number = pw.BigIntegerField(null=True)  # the current icon set, if any
    icon_sha256 = pw.CharField(max_length=64, null=True)  # of its 128 px PNG


class Version(BaseModel):
    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    app = pw.ForeignKeyField(App, backref="versions", on_delete="RESTRICT")
    version_code = pw.BigIntegerField()
    version_name = pw.CharField(max_length=64)
    # Changed only by app.platform.lifecycle.transition, along its table.
    status = pw.CharField(max_length=16, default=VersionStatus.UPLOADING, index=True)
    declared_size = pw.BigIntegerField()
    declared_sha256 = pw.CharField(max_length=64, null=True)
    upload_id = pw.CharField(max_length=32, unique=True, default=new_id)
    size = pw.BigIntegerField(null=True)
    sha256 = pw.CharField(max_length=64, null=True)
    manifest = JSONField(null=True)
    signature = pw.CharField(max_length=128, null=True)
    key_id = pw.CharField(max_length=16, null=True)  # the key that made `signature`
    error_code = pw.CharField(max_length=64, null=True)
    error_message = pw.TextField(null=True)
    status_reason = pw.TextField(null=True)  # why an admin rejected or pulled it
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    uploaded_at = pw.DateTimeField(null=True)
    validated_at = pw.DateTimeField(null=True)
    published_at = pw.DateTimeField(null=True)
    superseded_at = pw.DateTimeField(null=True)
    rejected_at = pw.DateTimeField(null=True)
    failed_at = pw.DateTimeField(null=True)
    pulled_at = pw.DateTimeField(null=True)
    purged_at = pw.DateTimeField(null=True)
    purge_reason = pw.TextField(null=True)
    # Validation queue lease: a worker owns the version until the lease runs out.
    lease_owner = pw.CharField(max_length=64, null=True)
    lease_expires_at = pw.DateTimeField(null=True, index=True)
    attempts = pw.IntegerField(default=0)
    # Multipart uploads: storage's upload id and the part size the client must
    # use (fixed when the version is created). Null for single-PUT uploads.
    multipart_upload_id = pw.CharField(max_length=1024, null=True)
    part_size = pw.BigIntegerField(null=True)

    # The status retention took the version from (it is then purging, purged
    # or abandoned), and when the integrity scrub last re-read its package.
    purged_from = pw.CharField(max_length=16, null=True)
    verified_at = pw.DateTimeField(null=True)


class Screenshot(BaseModel):
    """One of an app's screenshots; `position` orders them, from 1."""

    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    app = pw.ForeignKeyField(App, backref="screenshots", on_delete="CASCADE")
    number = pw.BigIntegerField()  # names its objects (App.asset_seq)
    position = pw.IntegerField()
    width = pw.IntegerField()
    height = pw.IntegerField()
    size = pw.IntegerField()  # bytes of the PNG
    sha256 = pw.CharField(max_length=64)  # of the PNG
    webp_size = pw.IntegerField(null=True)  # bytes of the WebP variant, when one is kept
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("app", "number"), True),)


class KeyringVersion(BaseModel):
    """One version of the signing keyring (docs/signing.md), as served:
    canonical JSON, every required signature on it. Never changed."""

    version = pw.IntegerField(primary_key=True)
    document = pw.TextField()
    created_at = pw.DateTimeField(default=utcnow)


class SignedIndex(BaseModel):
    """The catalog index last signed (docs/signing.md): one row, replaced."""

    id = pw.IntegerField(primary_key=True)  # always 1
    document = pw.TextField()
    digest = pw.CharField(max_length=64)  # of what it lists and its keyring version
    issued_at = pw.DateTimeField()
    expires_at = pw.DateTimeField()


class AuditEvent(BaseModel):
    id = pw.BigAutoField()
    at = pw.DateTimeField(default=utcnow, index=True)
    actor = pw.CharField(max_length=80)  # "admin", "developer:<id>", "system"
    action = pw.CharField(max_length=64, index=True)
    subject_type = pw.CharField(max_length=32)
    subject_id = pw.CharField(max_length=64, index=True)
    details = JSONField(null=True)


class JobState(BaseModel):
    """A housekeeping job's lease (who runs it now) and record (how it went)."""

    name = pw.CharField(primary_key=True, max_length=64)
    owner = pw.CharField(max_length=64, null=True)
    lease_expires_at = pw.DateTimeField(null=True)
    next_run_after = pw.DateTimeField(null=True)
    last_started_at = pw.DateTimeField(null=True)
    last_finished_at = pw.DateTimeField(null=True)
    last_success_at = pw.DateTimeField(null=True)
    last_duration = pw.FloatField(null=True)
    last_items = pw.BigIntegerField(null=True)
    last_error = pw.TextField(null=True)
    runs = pw.BigIntegerField(default=0)
    failures = pw.BigIntegerField(default=0)
    last_errors = pw.BigIntegerField(null=True)  # items the last run could not handle


# version_code is unique per app among versions that still hold it, and an app
# has at most one current published version: both enforced by the database.
_released = ", ".join(f"'{s}'" for s in VersionStatus.RELEASED)
Version.add_index(
    Version.index(Version.app, Version.version_code, unique=True, name="version_app_code_live")
    .where(pw.SQL(f"status NOT IN ({_released})"))
)
Version.add_index(
    Version.index(Version.app, unique=True, name="version_app_current")
    .where(pw.SQL(f"status = '{VersionStatus.PUBLISHED}'"))
)

class DeltaStatus:
    PENDING = "pending"  # queued: a scheduler makes it
    READY = "ready"  # stored, between two servable versions: offered to devices
    SKIPPED = "skipped"  # not kept: too large, or a package no longer stored
    FAILED = "failed"  # gave up after its attempts
    REMOVED = "removed"  # was ready; a version left (pulled, purged) and the patch was deleted

    ALL = (PENDING, READY, SKIPPED, FAILED, REMOVED)


class Delta(BaseModel):
    """A patch from one version of an app to a later one (app.catalog.deltas).

    The row is its queue entry (claimed with a lease, like validation) and,
    once `ready`, what the download API offers: a ready row always names a
    stored patch between two versions the edge may serve."""

    id = pw.CharField(primary_key=True, max_length=32, default=new_id)
    app = pw.ForeignKeyField(App, backref="deltas", on_delete="RESTRICT")
    from_version = pw.ForeignKeyField(Version, backref="deltas_from", on_delete="RESTRICT")
    to_version = pw.ForeignKeyField(Version, backref="deltas_to", on_delete="RESTRICT")
    from_version_code = pw.BigIntegerField()
    to_version_code = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default=DeltaStatus.PENDING, index=True)
    from_sha256 = pw.CharField(max_length=64, null=True)
    to_sha256 = pw.CharField(max_length=64, null=True)
    to_size = pw.BigIntegerField(null=True)
    size = pw.BigIntegerField(null=True)  # of the patch (also when skipped as too large)
    sha256 = pw.CharField(max_length=64, null=True)
    signature = pw.CharField(max_length=128, null=True)
    key_id = pw.CharField(max_length=16, null=True)  # the key that made `signature`
    reason = pw.TextField(null=True)  # why it was skipped, failed or removed
    attempts = pw.IntegerField(default=0)
    lease_owner = pw.CharField(max_length=64, null=True)
    lease_expires_at = pw.DateTimeField(null=True, index=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("from_version", "to_version"), True),)


ALL_MODELS = [SchemaMigration, Developer, ApiToken, App, Version, AuditEvent, JobState]
ALL_MODELS.append(Screenshot)
TRUST_MODELS = [KeyringVersion, SignedIndex]
ALL_MODELS += TRUST_MODELS
ALL_MODELS.append(Delta)


def record_audit(actor: str, action: str, subject_type: str, subject_id: str, **details) -> AuditEvent:
    return AuditEvent.create(actor=actor, action=action, subject_type=subject_type,
                             subject_id=subject_id, details=details or None)


# -- monitoring and cost tracking -------------------------------------------------


class LogCursor(BaseModel):
    """How far a tailed log file has been read; survives restarts and rotation."""

    name = pw.CharField(primary_key=True, max_length=64)
    path = pw.TextField()
    inode = pw.BigIntegerField(null=True)
    offset = pw.BigIntegerField(default=0)
    # Hash of the file's first bytes: a file replaced under the same inode
    # (delete and re-create, or truncate and regrow) does not match.
    head_sha256 = pw.CharField(max_length=64, null=True)
    head_len = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class EdgeTraffic(BaseModel):
    """What the edge served, per UTC day and area (packages, deltas, assets, uploads, api, other)."""

    day = pw.DateField()
    area = pw.CharField(max_length=16)
    requests = pw.BigIntegerField(default=0)
    downloads = pw.BigIntegerField(default=0)
    bytes_sent = pw.BigIntegerField(default=0)
    cache_hits = pw.BigIntegerField(default=0)
    errors = pw.BigIntegerField(default=0)  # 5xx
    # Area `deltas`: bytes of the full packages the patches sent stood in for.
    replaced_bytes = pw.BigIntegerField(default=0)

    class Meta:
        primary_key = pw.CompositeKey("day", "area")


class StorageScan(BaseModel):
    """One listing of the bucket: bytes and objects by prefix and by version status."""

    id = pw.BigAutoField()
    scanned_at = pw.DateTimeField(default=utcnow, index=True)
    total_bytes = pw.BigIntegerField()
    total_objects = pw.BigIntegerField()
    by_prefix = JSONField()
    by_status = JSONField()
    duration = pw.FloatField()


class UsageSnapshot(BaseModel):
    """A complete UTC day: storage held, storage requests and egress (the cost inputs)."""

    day = pw.DateField(primary_key=True)
    storage_bytes = pw.BigIntegerField()
    storage_objects = pw.BigIntegerField()
    requests = pw.BigIntegerField()  # edge requests for packages, assets and uploads
    egress_bytes = pw.BigIntegerField()  # bytes the edge sent for them
    downloads = pw.BigIntegerField()
    taken_at = pw.DateTimeField(default=utcnow)


MONITORING_MODELS = [LogCursor, EdgeTraffic, StorageScan, UsageSnapshot]
ALL_MODELS += MONITORING_MODELS


# -- the off-site replica ----------------------------------------------------------


class ReplicaOutbox(BaseModel):
    """One object to copy to, or delete from, the off-site replica.

    Written in the same transaction as the change that makes the object
    offered (or no longer offered), so a crash loses no copy; drained by
    app.housekeeping.replica under a lease per row. A done copy row that no
    later row for its key replaced is the replica's record of the object:
    its size and the sha256 read back from the replica.
    """

    id = pw.BigAutoField()
    key = pw.CharField(max_length=1024, index=True)
    op = pw.CharField(max_length=8)  # copy, delete
    created_at = pw.DateTimeField(default=utcnow)
    due_at = pw.DateTimeField(default=utcnow)  # not before (deletes wait; failures back off)
    lease_owner = pw.CharField(max_length=64, null=True)
    lease_expires_at = pw.DateTimeField(null=True)
    attempts = pw.IntegerField(default=0)  # failed ones
    last_error = pw.TextField(null=True)
    done_at = pw.DateTimeField(null=True)
    # copied, deleted; gone (the primary no longer had it), skipped (a later row for the key won)
    outcome = pw.CharField(max_length=16, null=True)
    size = pw.BigIntegerField(null=True)
    sha256 = pw.CharField(max_length=64, null=True)

    class Meta:
        indexes = ((("done_at", "due_at"), False),)


REPLICA_MODELS = [ReplicaOutbox]
ALL_MODELS += REPLICA_MODELS
