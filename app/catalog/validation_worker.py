"""The validation queue: the database is the queue, a lease is the lock.

A worker claims one `validating` version by writing its name and a lease
expiry into the row (a conditional UPDATE, so two workers never both win),
validates the package straight from storage, then moves the version to
`draft` or `failed`. A worker that dies leaves a lease that runs out, and
the version is claimed again.

Storage trouble is not the package's fault: the version is put back without
using up one of its attempts while it is younger than
MOSIS_VALIDATION_STORAGE_WAIT_SECONDS; after that each postponement counts,
and when the attempts are used up it fails with `storage_unreadable`. An
object that storage serves but that cannot be read as a plain package (it
was stored with a Content-Encoding) is the package's fault: it fails at once
with `invalid_encoding`. See docs/validation.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from app.catalog import signatures
from app.catalog.packages import keys_of
from app.platform import metrics
from app.platform.clock import utcnow
from app.platform.errors import Unavailable
from app.platform.jobs import claim_row, drain
from app.platform.lifecycle import transition
from app.platform.models import App, Version, database, record_audit
from app.platform.models import VersionStatus as S
from app.platform.outbox import enqueue_copies
from app.platform.storage import ObjectUnreadable
from mosis_format.validation import STREAM_CHUNK, Expected, PackageInvalid, validate_package

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def _claimable(now: dt.datetime):
    return (Version.status == S.VALIDATING) & (
        Version.lease_expires_at.is_null() | (Version.lease_expires_at < now))


def claim_next(owner: str, lease_seconds: int, now: dt.datetime | None = None) -> Version | None:
    """Take the oldest unleased validating version, or None if there is none."""
    now = now or utcnow()
    return claim_row(Version, _claimable(now), (Version.uploaded_at, Version.id), owner,
                     now + dt.timedelta(seconds=lease_seconds), attempts=Version.attempts + 1)


def queue_depth() -> int:
    return Version.select().where(Version.status == S.VALIDATING).count()


def _finish(version: Version, owner: str, op: str, **changes) -> bool:
    """`validate` or `fail` the version, if this worker still holds its lease."""
    return transition(version, op, where=Version.lease_owner == owner, **changes)


def validate_claimed(svc: Services, version: Version, owner: str) -> str:
    """Validate a version this worker holds; return the outcome code."""
    settings = svc.settings
    app = App.get_by_id(version.app_id)
    pkg_key, man_key = keys_of(version)
    if version.attempts > settings.validation_max_attempts:
        return _fail(version, owner, "validation_error", "validation did not finish after "
                     f"{settings.validation_max_attempts} attempts; upload the package again, and "
                     "tell the store admins if it keeps happening")
    started = time.monotonic()
    try:
        info = svc.storage.stat(pkg_key)
        if info is None:
            return _fail(version, owner, "upload_missing", "the uploaded package is no longer in "
                         "storage; upload it again")
        if (info.content_encoding or "identity").lower() != "identity":
            return _fail(version, owner, "invalid_encoding", "the package was uploaded with "
                         f"Content-Encoding: {info.content_encoding}; upload the .mosis file as it is, "
                         "without a Content-Encoding header")
        report = validate_package(
            info.size,
            read_range=lambda offset, length: svc.storage.read_range(pkg_key, offset, length),
            stream=svc.storage.stream(pkg_key, chunk=STREAM_CHUNK),
            expected=Expected(app.package_id, version.version_code, version.declared_size,
                              version.declared_sha256),
            limits=settings.limits,
        )
        svc.storage.put(man_key, report.manifest_bytes, content_type="application/json")
    except PackageInvalid as e:
        return _fail(version, owner, e.code, e.message)
    except ObjectUnreadable as e:
        return _fail(version, owner, "invalid_encoding", f"{e}; upload the .mosis file as it is, "
                     "without a Content-Encoding header")
    except Unavailable as e:
        return _postpone(version, owner, settings, e.message)
    finally:
        metrics.VALIDATION_SECONDS.observe(time.monotonic() - started)
    signature, key_id = signatures.sign(svc, app.package_id, version.version_code, report.sha256,
                                        report.size)
    with database.atomic():  # the manifest goes to the replica with the row that offers it
        validated = _finish(version, owner, "validate", size=report.size, sha256=report.sha256,
                            manifest=report.manifest, signature=signature, key_id=key_id)
        if validated:
            enqueue_copies(settings, [man_key])
            record_audit("system", "version.validated", "version", version.id, sha256=report.sha256)
    if validated:
        metrics.VALIDATIONS.labels(result="ok").inc()
    return "ok"


def _postpone(version: Version, owner: str, settings, why: str) -> str:
    """Storage failed: try again later. While the version is young the
    attempt is given back; then it counts, and the last one fails it."""
    now = utcnow()
    waited = (now - (version.uploaded_at or version.created_at)).total_seconds()
    patient = waited < settings.validation_storage_wait_seconds
    if not patient and version.attempts >= settings.validation_max_attempts:
        log.warning("validation of %s given up after %d s of storage failures: %s", version.id, waited, why)
        return _fail(version, owner, "storage_unreadable", f"storage could not be read for "
                     f"{int(waited)} seconds ({why}); upload the package again, and tell the store "
                     "admins if it keeps happening")
    log.warning("validation of %s postponed: %s", version.id, why)
    (Version.update(attempts=Version.attempts - (1 if patient else 0), lease_owner=None,
                    lease_expires_at=now + dt.timedelta(seconds=settings.validation_retry_seconds))
     .where((Version.id == version.id) & (Version.lease_owner == owner)).execute())
    return "postponed"


def _fail(version: Version, owner: str, code: str, message: str) -> str:
    if _finish(version, owner, "fail", error_code=code, error_message=message):
        metrics.VALIDATIONS.labels(result=code).inc()
        metrics.UPLOADS_FAILED.labels(reason=code).inc()
        record_audit("system", "version.failed", "version", version.id, code=code)
    return code


def run_pending(svc: Services, owner: str | None = None, limit: int = 100) -> list[str]:
    """Validate queued versions until none is claimable (or `limit` is reached)."""
    owner = owner or worker_name()
    return drain(lambda: claim_next(owner, svc.settings.validation_lease_seconds),
                 lambda version: validate_claimed(svc, version, owner), limit, "validation")
