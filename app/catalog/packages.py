"""Apps and their versions: creating, completing, publishing, rejecting and
pulling them, and the public catalogue.

The statuses and every transition between them are app.platform.lifecycle's
table; each status change here is its `transition()`, a conditional UPDATE,
so concurrent requests and workers cannot both win, and the database's
indexes keep version codes unique and one published version per app.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import peewee as pw

from app.catalog import deltas, signatures, uploads
from app.edge.purge import public_read_keys
from app.platform import metrics
from app.platform.clock import iso, utcnow
from app.platform.db import Compiled, try_lock
from app.platform.errors import Conflict, NotFound, TooLarge, Unavailable
from app.platform.jobs import Job
from app.platform.lifecycle import BY_OP, transition
from app.platform.models import App, Developer, Version, database, new_id, record_audit
from app.platform.models import VersionStatus as S
from app.platform.outbox import enqueue_copies
from app.platform.storage import manifest_key, package_key, parse_package_key, temp_key

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

# -- apps ---------------------------------------------------------------------


def create_app(developer: Developer, package_id: str, name: str) -> App:
    try:
        with database.atomic():
            app = App.create(developer=developer, package_id=package_id, name=name)
            record_audit(f"developer:{developer.id}", "app.created", "app", app.id,
                         package_id=package_id)
    except pw.IntegrityError:
        raise Conflict(f"the package_id {package_id!r} is already registered",
                       code="package_id_taken") from None
    return app


def apps_of(developer: Developer) -> list[App]:
    return list(App.select().where(App.developer == developer).order_by(App.created_at))


def app_of(developer: Developer, app_id: str) -> App:
    """The developer's app; another developer's app does not exist for them."""
    app = App.get_or_none((App.id == app_id) & (App.developer == developer))
    if app is None:
        raise NotFound("no such app", code="app_not_found")
    return app


# -- versions -------------------------------------------------------------------


def version_of(app: App, version_code: int) -> Version:
    """The version holding `version_code` now (released codes are history)."""
    version = (Version.select()
               .where((Version.app == app) & (Version.version_code == version_code)
                      & Version.status.not_in(S.RELEASED))
               .first())
    if version is None:
        version = (Version.select()
                   .where((Version.app == app) & (Version.version_code == version_code))
                   .order_by(Version.created_at.desc()).first())
    if version is None:
        raise NotFound(f"app has no version {version_code}", code="version_not_found")
    return version


def versions_of(app: App) -> list[Version]:
    return list(Version.select().where(Version.app == app)
                .order_by(Version.version_code.desc(), Version.created_at.desc()))


def version_by_id(version_id: str) -> Version:
    version = Version.get_or_none(Version.id == version_id)
    if version is None:
        raise NotFound("no such version", code="version_not_found")
    return version


def keys_of(version: Version) -> tuple[str, str]:
    """(package key, manifest key) of a version in the bucket."""
    app = version.app
    return (package_key(app.developer_id, app.id, version.version_code),
            manifest_key(app.developer_id, app.id, version.version_code))


def create_version(svc: Services, app: App, version_code: int, version_name: str, size: int,
                   sha256: str | None) -> tuple[Version, dict]:
    limit = svc.settings.limits.max_package_bytes
    if size > limit:
        raise TooLarge(f"the package is {size} bytes; the limit is {limit} bytes",
                       code="too_large", details={"limit": limit})
    upload_id = new_id()
    upload_fields = uploads.start(svc, size, upload_id)  # a multipart upload for large packages
    try:
        with database.atomic():
            current = App.get_by_id(app.id)
            if version_code <= current.max_published_code:
                raise Conflict(f"version_code must be greater than {current.max_published_code}, "
                               "the highest version ever published", code="version_code_not_increasing",
                               details={"max_published_code": current.max_published_code})
            version = Version.create(app=app, version_code=version_code, version_name=version_name,
                                     declared_size=size, declared_sha256=sha256, upload_id=upload_id,
                                     **upload_fields)
    except BaseException as e:
        uploads.discard(svc, upload_id, upload_fields)
        if isinstance(e, pw.IntegrityError):
            raise Conflict(f"version {version_code} already exists for this app",
                           code="version_exists") from None
        raise
    metrics.UPLOADS_STARTED.inc()
    return version, upload_instructions(svc, version)


def upload_instructions(svc: Services, version: Version) -> dict:
    if uploads.is_multipart(version):
        return uploads.multipart_instructions(svc, version)
    ttl = svc.settings.upload_url_ttl
    return {
        "kind": uploads.SINGLE,
        "url": svc.storage.presigned_put(temp_key(version.upload_id), ttl),
        "method": "PUT",
        "headers": {"Content-Type": "application/octet-stream"},
        "expires_at": iso(utcnow() + dt.timedelta(seconds=ttl)),
        "max_bytes": version.declared_size,
    }


def upload_state(svc: Services, app: App, version_code: int) -> dict:
    """How to go on with an unfinished upload: for a multipart upload the
    parts storage holds already, for a single PUT a fresh URL."""
    version = version_of(app, version_code)
    if uploads.is_multipart(version):
        return uploads.multipart_state(svc, version)
    uploads.require_uploading(version)
    return upload_instructions(svc, version)


def _refuse(version: Version, code: str, message: str) -> bool:
    """Completing found an upload that cannot be the declared package: it failed."""
    changed = transition(version, "refuse", error_code=code, error_message=message)
    if changed:
        metrics.UPLOADS_FAILED.labels(reason=code).inc()
    return changed


def complete_upload(svc: Services, app: App, version_code: int) -> Version:
    """Move the uploaded bytes into place and queue validation. Idempotent,
    also when called many times at once: one call completes (it holds the
    version's completion lock), the others wait for it and answer what it
    did. The lock ends with its holder's process or database session."""
    deadline = time.monotonic() + COMPLETE_WAIT
    waited = False
    while True:
        version = version_of(app, version_code)
        if version.status != S.UPLOADING:
            # After waiting on the call that completed it, its own clean-up is enough.
            return _completed(svc, version, tidy=not waited)
        with try_lock(f"complete:{version.id}") as held:
            if held:
                version = Version.get_by_id(version.id)  # as the last holder left it
                if version.status != S.UPLOADING:
                    return _completed(svc, version, tidy=not waited)
                return _complete(svc, app, version)
        waited = True
        if time.monotonic() > deadline:
            raise Unavailable("another completion of this version is still under way; retry shortly",
                              code="completion_in_progress")
        time.sleep(COMPLETE_POLL)


# How long a completion waits for another one of the same version, and how
# often it looks.
COMPLETE_WAIT, COMPLETE_POLL = 20.0, 0.05


def _completed(svc: Services, version: Version, tidy: bool = True) -> Version:
    """What completing a version that is no longer uploading answers (and,
    with `tidy`, the clean-up a completion cut off may have left)."""
    if version.status in (S.FAILED, S.ABANDONED, S.PURGED, S.PURGING):
        raise Conflict(f"version {version.version_code} is {version.status}; create it again",
                       code="invalid_state", details={"status": version.status})
    # Already completed: completing again changes nothing, except that it
    # finishes a completion cut off (storage gone) after the row changed,
    # whose temp upload would otherwise wait for the orphan sweep.
    if tidy:
        svc.storage.delete(temp_key(version.upload_id))
    return version


def _complete(svc: Services, app: App, version: Version) -> Version:
    """Complete a version whose completion lock this call holds."""
    storage, limit = svc.storage, svc.settings.limits.max_package_bytes
    temp, final = temp_key(version.upload_id), keys_of(version)[0]
    try:
        uploads.assemble(svc, version)  # multipart: join the parts into the temp object
    except uploads.PartsMismatch as e:
        uploads.abort_parts(svc, version)
        _refuse(version, "size_mismatch", str(e))
        raise Conflict(str(e), code="size_mismatch") from None
    info = storage.stat(temp)
    if info is None:
        # A previous attempt may have copied the bytes and died before the row changed.
        info = storage.stat(final)
        if info is None:
            raise Conflict("nothing was uploaded for this version; PUT the package to the upload "
                           "URL first", code="upload_missing")
    if info.size > limit or info.size != version.declared_size:
        storage.delete(temp, final)
        if info.size > limit:
            msg = f"the upload is {info.size} bytes; the limit is {limit} bytes"
            _refuse(version, "too_large", msg)
            raise TooLarge(msg, code="too_large")
        msg = f"the upload is {info.size} bytes but {version.declared_size} were declared"
        _refuse(version, "size_mismatch", msg)
        raise Conflict(msg, code="size_mismatch")
    if info.key == temp:
        storage.copy(temp, final)
    # The audit event goes with the status change: a completion cut off
    # after it (below) is not recorded twice, nor lost, when it is retried.
    with database.atomic():
        changed = transition(version, "complete", size=info.size)
        if changed:
            enqueue_copies(svc.settings, [final])
            record_audit(f"developer:{app.developer_id}", "version.uploaded", "version", version.id,
                         version_code=version.version_code, size=info.size)
    if changed:
        metrics.UPLOADS_COMPLETED.inc()
    # Only now that the row points at the final object may the temp one go.
    storage.delete(temp)
    return Version.get_by_id(version.id)


def publish(svc: Services, app: App, version_code: int) -> Version:
    version = version_of(app, version_code)
    if version.status == S.PUBLISHED:
        return version  # publishing twice is harmless
    if version.status != S.DRAFT:
        raise Conflict(f"only a draft can be published; version {version_code} is {version.status}",
                       code="invalid_state", details={"status": version.status})
    now = utcnow()
    with database.atomic():
        # Compare-and-set on the app row: of two publishes racing, one wins.
        raised = (App.update(max_published_code=version_code, updated_at=now)
                  .where((App.id == app.id) & (App.max_published_code < version_code)).execute())
        if not raised:
            raise Conflict("a version with a higher version_code has been published already",
                           code="version_code_not_increasing")
        current = Version.get_or_none((Version.app == app) & (Version.status == S.PUBLISHED))
        if current is not None:
            transition(current, "supersede", now=now)
        if not transition(version, "publish", now=now):
            raise Conflict("the version changed while it was being published", code="invalid_state")
        record_audit(f"developer:{app.developer_id}", "version.published", "version", version.id,
                     version_code=version_code)
        # Patches from the versions devices have: made by the scheduler.
        deltas.enqueue(svc, version)
    # The index and caches answering "what is the latest version?" learn it now.
    signatures.index_changed(svc, public_read_keys(app.package_id, held_codes(app)))
    return Version.get_by_id(version.id)


def reject(version_id: str, reason: str) -> Version:
    return _admin_transition(version_id, reason, "reject")


def pull(svc: Services, version_id: str, reason: str) -> Version:
    version = _admin_transition(version_id, reason, "pull")
    # After the row no longer offers it, make every cache forget it: its
    # objects, the patches to and from it, and the public answers (the index
    # among them) that named it.
    try:
        deltas.remove_for(svc, version, "pulled")
    except Unavailable as e:  # the pull stands; purge_recent_pulls deletes the patches within a minute
        log.warning("pulled %s; its patches stay until storage answers: %s", version.id, e.message)
    signatures.index_changed(svc, [*keys_of(version), *public_read_keys(version.app.package_id,
                                                                        held_codes(version.app))])
    return version


# Download info asked with `from_version_code` is cached per code: purges
# name the codes of this many of an app's latest versions that devices may hold.
HELD_CODES = 50


def held_codes(app: App) -> list[int]:
    """Version codes devices may have installed: of versions ever published and still kept."""
    return [code for (code,) in Version.select(Version.version_code)
            .where((Version.app == app.id) & Version.published_at.is_null(False)
                   & Version.status.not_in(S.RELEASED))
            .order_by(Version.version_code.desc()).limit(HELD_CODES).tuples()]


# The edge may have started filling its cache for a download just before a
# pull (or retention's purge of a servable version) and finish after the
# purge; purging recent ones again (a housekeeping job, every minute) closes
# that window.
REPURGE_WINDOW = dt.timedelta(minutes=10)


def purge_recent_pulls(svc: Services, now: dt.datetime) -> int:
    """Purge recent pulls again, and delete the patches a pull cut off left
    (caches or not: the patches are objects of ours)."""
    since = now - REPURGE_WINDOW
    pulled = (Version.status == S.PULLED) & (Version.pulled_at >= since)
    purged = ((Version.status == S.PURGED) & Version.purged_from.in_(SERVABLE)
              & (Version.purged_at >= since))
    recent = list(Version.select().where(pulled | purged))
    for version in recent:
        # Also finishes a pull cut off before its patches were removed.
        deltas.retire(version, version.status)
        patches = deltas.keys_touching(version)
        svc.storage.delete(*patches)
        svc.purge_cached([*keys_of(version), *patches,
                          *public_read_keys(version.app.package_id, held_codes(version.app))])
    return len(recent)


def _admin_transition(version_id: str, reason: str, op: str) -> Version:
    version = version_by_id(version_id)
    step = BY_OP[op]
    if version.status == step.target:
        return version
    if version.status not in step.sources:
        raise Conflict(f"a {version.status} version cannot become {step.target}", code="invalid_state",
                       details={"status": version.status})
    with database.atomic():
        # From the status it was seen in: a change meanwhile is a conflict.
        if not transition(version, op, sources=(version.status,), status_reason=reason):
            raise Conflict("the version changed meanwhile; try again", code="invalid_state")
        record_audit("admin", f"version.{step.target}", "version", version.id, reason=reason,
                     previous_status=version.status)
    return Version.get_by_id(version.id)


# -- public catalogue -------------------------------------------------------------


def published_app(package_id: str) -> tuple[App, Version]:
    # One query: the join fills `version.app`.
    version = (Version.select(Version, App).join(App)
               .where((App.package_id == package_id) & (Version.status == S.PUBLISHED))
               .get_or_none())
    if version is None:
        raise NotFound(f"{package_id!r} has no published version", code="package_not_found")
    return version.app, version


# Devices ask for this more than anything else: one query, written once,
# reading only the columns the answer needs.
_DOWNLOAD = Compiled(lambda package_id: (
    Version.select(Version.version_code, Version.version_name, Version.size, Version.sha256,
                   Version.signature, App.id, App.developer, Version.id, Version.key_id)
    .join(App).where((App.package_id == package_id) & (Version.status == S.PUBLISHED)).limit(1)))


def download_info(svc: Services, package_id: str, from_version_code: int | None = None,
                  from_sha256: str | None = None) -> dict:
    """The published version's download; with `from_…` (the version a device
    has), also a patch from it when one is ready (`delta`; none: no key)."""
    row = _DOWNLOAD.first(package_id)
    if row is None:
        raise NotFound(f"{package_id!r} has no published version", code="package_not_found")
    version_code, version_name, size, sha256, signature, app_id, developer_id, version_id, key_id = row
    version = Version(id=version_id, version_code=version_code, size=size, sha256=sha256,
                      signature=signature, key_id=key_id)
    signature, key_id = signatures.servable(svc, version, package_id)
    expires = svc.link_expiry()
    metrics.DOWNLOAD_LINKS.inc()
    info = {
        "download_url": svc.download_link(package_key(developer_id, app_id, version_code), expires=expires),
        "version": version_name,
        "version_code": version_code,
        "size": size,
        "sha256": sha256,
        "signature": signature,
        "key_id": key_id,
        "expires_at": iso(dt.datetime.fromtimestamp(expires, dt.timezone.utc).replace(tzinfo=None)),
    }
    if from_version_code is not None or from_sha256 is not None:
        delta = deltas.offer(svc, package_id, app_id, developer_id, version_code, sha256, expires,
                             from_version_code, from_sha256)
        if delta is not None:
            info["delta"] = delta
    return info


SERVABLE = S.SERVABLE


def servable_package(key: str) -> Version:
    """The version whose package is `key`, if the edge may serve it."""
    parsed = parse_package_key(key)
    version = None
    if parsed is not None:
        developer_id, app_id, version_code = parsed
        # With its app: the file name the edge gives the download is its package_id.
        version = (Version.select(Version, App).join(App)
                   .where((App.id == app_id) & (App.developer == developer_id)
                          & (Version.version_code == version_code) & Version.status.in_(SERVABLE))
                   .first())
    if version is None:
        raise NotFound("no such package, or it is no longer available", code="package_not_found")
    return version


# -- representations ----------------------------------------------------------------


def app_dict(app: App) -> dict:
    return {"id": app.id, "package_id": app.package_id, "name": app.name,
            "developer_id": app.developer_id, "created_at": iso(app.created_at)}


def version_dict(v: Version) -> dict:
    return {
        "id": v.id, "app_id": v.app_id, "version_code": v.version_code,
        "version_name": v.version_name, "status": v.status,
        "size": v.size if v.size is not None else v.declared_size,
        "sha256": v.sha256 or v.declared_sha256,
        "manifest": v.manifest, "signature": v.signature,
        "error": {"code": v.error_code, "message": v.error_message} if v.error_code else None,
        "reason": v.status_reason,
        "created_at": iso(v.created_at), "uploaded_at": iso(v.uploaded_at),
        "validated_at": iso(v.validated_at), "published_at": iso(v.published_at),
        "superseded_at": iso(v.superseded_at), "purged_at": iso(v.purged_at),
        "purge_reason": v.purge_reason,
    }


# The edge may finish filling its cache for a download started just before a
# pull: purge recent pulls again.
JOBS = (Job("purge_recent_pulls", purge_recent_pulls, dt.timedelta(minutes=1)),)
