"""Disaster recovery: rebuild the appliance from the off-site replica alone.

`flask --app app replica restore` (docs/operations.md, Disaster recovery):

1. into an empty database, the newest metadata backup on the replica; a
   marker file under MOSIS_DATA_DIR records which, so a restore cut off
   later resumes from step 2 and never restores over a database it filled;
2. every object on the replica under the replicated prefixes into the
   primary bucket, streamed, except those the restored catalogue had
   already deleted (deletes still waiting out their delay on the replica);
   an object the primary holds at the same size is kept (resumable);
3. every published and superseded version's package is checked against
   its sha256, size and Ed25519 signature (with the signing key this
   appliance has: keep it off the bucket, see the runbook), its manifest
   must be there, and every icon and screenshot the catalogue offers must
   be there with its sha256.

The report lists counts, bytes, seconds and every problem; a restore with
any problem is a failed restore (the command exits non-zero).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from app.catalog.assets import ICON_SIZES
from app.housekeeping.backup import list_backups, restore_backup
from app.housekeeping.replica import hash_stream, stream_copy
from app.platform.clock import iso, utcnow
from app.platform.migrations import migrate_database
from app.platform.models import App, Developer, ReplicaOutbox, Screenshot, Version, database
from app.platform.models import VersionStatus as S
from app.platform.outbox import COPY, DELETE, REPLICATED
from app.platform.storage import icon_key, manifest_key, package_key, screenshot_key
from mosis_format.signing import package_message, verify_raw

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

MARKER = "replica-restore.json"


class RecoveryError(RuntimeError):
    """The restore cannot start or go on; the message says why."""


def _close_database() -> None:
    db = database.obj
    if hasattr(db, "close_all"):
        db.close_all()
    elif not db.is_closed():
        db.close()


def _restore_database(svc: Services, echo) -> str:
    with database.connection_context():
        if Developer.select().exists() or App.select().exists():
            raise RecoveryError("the database is not empty: a restore from the replica goes into an empty "
                                "database (docs/operations.md, Disaster recovery)")
    backups = list_backups(svc, svc.replica)
    if not backups:
        raise RecoveryError(f"the replica (bucket {svc.settings.replica_bucket}) holds no metadata backup")
    key = backups[0].key
    echo(f"restoring the database from {key} ({backups[0].size} bytes)")
    _close_database()  # the restore takes the database over
    restore_backup(svc, key, store=svc.replica)
    migrate_database()  # a backup taken before a later migration
    return key


def _deleted_keys() -> set[str]:
    """Keys the restored catalogue deleted (their replica delete still waits) and did not write again."""
    rows = list(ReplicaOutbox.select(ReplicaOutbox.id, ReplicaOutbox.key, ReplicaOutbox.op)
                .where(ReplicaOutbox.op.in_((COPY, DELETE))).order_by(ReplicaOutbox.id))
    last = {}
    for row in rows:
        last[row.key] = row
    return {k for k, row in last.items() if row.op == DELETE}


def copy_objects(svc: Services, echo) -> dict:
    """Step 2: the replica's objects into the primary; (size, sha256) of each copied."""
    deleted = _deleted_keys()
    counts = {"copied": 0, "present": 0, "deleted_before_backup": 0, "bytes": 0}
    hashes: dict[str, tuple[int, str]] = {}
    for prefix in REPLICATED:
        for obj in svc.replica.list(f"{prefix}/"):
            if obj.key in deleted:
                counts["deleted_before_backup"] += 1
                continue
            have = svc.storage.stat(obj.key)
            if have is not None and have.size == obj.size:
                counts["present"] += 1
                continue
            copied = stream_copy(svc.replica, svc.storage, obj.key)
            if copied is not None:
                hashes[obj.key] = copied
                counts["copied"] += 1
                counts["bytes"] += copied[0]
                if counts["copied"] % 500 == 0:
                    echo(f"{counts['copied']} objects copied ({counts['bytes']} bytes)")
    return {**counts, "hashes": hashes}


def _measure(svc: Services, key: str, hashes: dict) -> tuple[int, str] | None:
    if key in hashes:
        return hashes[key]
    if svc.storage.stat(key) is None:
        return None
    sha256, size = hash_stream(svc.storage.stream(key))
    return size, sha256


def check(svc: Services, hashes: dict) -> tuple[dict, list[dict]]:
    """Step 3: what the restored catalogue offers is there, whole and signed."""
    ring = svc.keys.current()  # restored with the catalogue: every key that signed it
    problems: list[dict] = []
    counts = {"versions": 0, "assets": 0}

    def problem(key: str, what: str) -> None:
        problems.append({"key": key, "problem": what})

    for v in (Version.select(Version, App).join(App)
              .where(Version.status.in_((S.PUBLISHED, S.SUPERSEDED))).order_by(App.id, Version.version_code)):
        counts["versions"] += 1
        app = v.app
        pkg = package_key(app.developer_id, app.id, v.version_code)
        found = _measure(svc, pkg, hashes)
        if found is None:
            problem(pkg, "missing")
        elif found != (v.size, v.sha256):
            problem(pkg, f"{found[0]} bytes, sha256 {found[1]}; the catalogue says {v.size}, {v.sha256}")
        signer = ring.key(v.key_id or svc.signing_key.key_id)
        if signer is None or not verify_raw(signer.public_key, v.signature or "",
                                            package_message(app.package_id, v.version_code, v.sha256 or "",
                                                            v.size or 0)):
            problem(pkg, f"the signature does not verify with key {v.key_id or svc.signing_key.key_id}")
        man = manifest_key(app.developer_id, app.id, v.version_code)
        if svc.storage.stat(man) is None:
            problem(man, "missing")
    for app in App.select().where(App.icon_number.is_null(False)):
        for size in ICON_SIZES:
            counts["assets"] += 1
            key = icon_key(app.id, app.icon_number, size)
            found = _measure(svc, key, hashes) if size == ICON_SIZES[0] else svc.storage.stat(key)
            if found is None:
                problem(key, "missing")
            elif size == ICON_SIZES[0] and found[1] != app.icon_sha256:
                problem(key, f"sha256 {found[1]}; the catalogue says {app.icon_sha256}")
    for shot in Screenshot.select():
        counts["assets"] += 1
        key = screenshot_key(shot.app_id, shot.number)
        found = _measure(svc, key, hashes)
        if found is None:
            problem(key, "missing")
        elif found != (shot.size, shot.sha256):
            problem(key, f"{found[0]} bytes, sha256 {found[1]}; the catalogue says {shot.size}, {shot.sha256}")
        if shot.webp_size is not None:
            counts["assets"] += 1
            webp = screenshot_key(shot.app_id, shot.number, "webp")
            if svc.storage.stat(webp) is None:
                problem(webp, "missing")
    return counts, problems


def restore(svc: Services, echo=lambda line: None) -> dict:
    """Steps 1 to 3; the report. Resumes a restore cut off after step 1."""
    if svc.replica is None:
        raise RecoveryError("no replica is configured: set MOSIS_REPLICA_S3_ENDPOINT and the other "
                            "MOSIS_REPLICA_S3_* settings to the replica's")
    started = time.monotonic()
    marker = svc.settings.data_dir / MARKER
    state = json.loads(marker.read_text()) if marker.exists() else {}
    if "database" in state:
        echo(f"resuming the restore from {state['database']}: the database is restored already")
    else:
        state = {"database": _restore_database(svc, echo), "restored_at": iso(utcnow())}
        marker.write_text(json.dumps(state))
    with database.connection_context():
        objects = copy_objects(svc, echo)
        hashes = objects.pop("hashes")
        checked, problems = check(svc, hashes)
    if not problems:
        marker.unlink(missing_ok=True)
    return {"backup": state["database"], "objects": objects, "checked": checked,
            "seconds": round(time.monotonic() - started, 3), "problems": problems, "ok": not problems}
