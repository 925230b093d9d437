"""Delta patches: made after a version is published, offered with its
download, removed with the versions they join (docs/deltas.md).

Publishing a version queues one `delta` row per previous version of the app
that is still servable (the newest MOSIS_DELTA_FROM_VERSIONS of them), in the
publish's own transaction. The rows are a queue like validation's: a
scheduler claims one by writing its name and a lease expiry (a conditional
UPDATE, so two never both win), reads both packages from storage, makes the
patch (mosis_format.delta), keeps it only if it is at most
MOSIS_DELTA_MAX_RATIO of the target, stores it at
`deltas/{developer_id}/{app_id}/{from}-{to}.patch`, signs it and marks the
row `ready` with the `key_id` that signed it (if it still holds the lease).
A worker that dies leaves a lease that runs out; the row is claimed again,
up to MAX_ATTEMPTS times.

Invariants:

- A `ready` row names a stored patch between two versions the edge may serve
  (published or superseded). The download API offers only ready rows; the
  edge re-checks both versions on a cache miss, so a patch is never served
  once either version is pulled or purged.
- Removal changes the rows first (`ready`/`pending` -> `removed`) and deletes
  the objects and cached copies after: a crash leaves an object no row
  offers, never a row offering a missing object. Deleting is repeatable.
- A worker stores the patch before it marks the row ready; if the row left
  `pending` meanwhile (a pull removed it), the worker deletes what it stored.
- A ready row's signature follows the keyring like a version's
  (app.catalog.signatures): rotation and revocation re-sign it, and one
  whose key is revoked is re-signed before it is offered.
- Nothing here changes a version: a patch that cannot be made is `skipped`
  or `failed`, and the full download is untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from app.catalog import signatures
from app.edge.purge import download_read_key
from app.platform.clock import iso, utcnow
from app.platform.errors import Unavailable
from app.platform.jobs import claim_row, drain
from app.platform.models import App, Delta, DeltaStatus, Version, database
from app.platform.models import VersionStatus as S
from app.platform.outbox import enqueue_copies, enqueue_deletes
from app.platform.storage import delta_key, package_key, parse_delta_key
from mosis_format.delta import ALGORITHM, DeltaError
from mosis_format.delta.generator import generate

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

D = DeltaStatus
# A patch of a 500 MiB package takes minutes to make: the lease outlasts it.
LEASE_SECONDS = 30 * 60
MAX_ATTEMPTS = 3
# After storage trouble, a row waits this long before it is claimed again.
RETRY_SECONDS = 60

DELTAS_MADE = Counter("mosis_deltas_total", "Delta patches the scheduler finished, by outcome "
                      "(ready, too_large, package_gone, version_gone, failed reasons)", ["result"])
DELTA_SECONDS = Histogram("mosis_delta_generation_seconds", "Time to make one delta patch",
                          buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))


# -- queueing ------------------------------------------------------------------------


def enqueue(svc: Services, target: Version) -> int:
    """Queue patches to `target` (being published, in the caller's
    transaction) from the newest previous servable versions of its app."""
    wanted = svc.settings.delta_from_versions
    if wanted <= 0:
        return 0
    sources = list(Version.select()
                   .where((Version.app == target.app_id) & Version.status.in_(S.SERVABLE)
                          & (Version.version_code < target.version_code) & Version.sha256.is_null(False))
                   .order_by(Version.version_code.desc()).limit(wanted))
    for source in sources:
        (Delta.insert(app=target.app_id, from_version=source.id, to_version=target.id,
                      from_version_code=source.version_code, to_version_code=target.version_code,
                      from_sha256=source.sha256, to_sha256=target.sha256, to_size=target.size)
         .on_conflict_ignore().execute())
    return len(sources)


def _claimable(now: dt.datetime):
    return (Delta.status == D.PENDING) & (Delta.lease_expires_at.is_null() | (Delta.lease_expires_at < now))


def claim_next(owner: str, now: dt.datetime | None = None) -> Delta | None:
    """Take the oldest unleased pending patch, or None if there is none."""
    now = now or utcnow()
    return claim_row(Delta, _claimable(now), (Delta.created_at, Delta.id), owner,
                     now + dt.timedelta(seconds=LEASE_SECONDS), attempts=Delta.attempts + 1, updated_at=now)


def queue_depth() -> int:
    return Delta.select().where(Delta.status == D.PENDING).count()


def _finish(delta: Delta, owner: str, status: str, **changes) -> bool:
    """End a claimed row, if this worker still holds it."""
    changed = (Delta.update(status=status, lease_owner=None, lease_expires_at=None, updated_at=utcnow(),
                            **changes)
               .where((Delta.id == delta.id) & (Delta.status == D.PENDING) & (Delta.lease_owner == owner))
               .execute())
    if changed:
        DELTAS_MADE.labels(result="ready" if status == D.READY else changes.get("reason", status)).inc()
    return bool(changed)


# -- making one --------------------------------------------------------------------------


def key_of(delta: Delta, developer_id: str) -> str:
    return delta_key(developer_id, delta.app_id, delta.from_version_code, delta.to_version_code)


def make_claimed(svc: Services, delta: Delta, owner: str) -> str:
    """Make the patch of a row this worker holds; return the outcome."""
    if delta.attempts > MAX_ATTEMPTS:
        _finish(delta, owner, D.FAILED, reason="attempts_exhausted")
        return "attempts_exhausted"
    app = App.get_by_id(delta.app_id)
    source, target = Version.get_by_id(delta.from_version_id), Version.get_by_id(delta.to_version_id)
    if source.status not in S.SERVABLE or target.status not in S.SERVABLE:
        _finish(delta, owner, D.SKIPPED, reason="version_gone")
        return "version_gone"
    key = key_of(delta, app.developer_id)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="mosis-delta-") as scratch:
            paths = [os.path.join(scratch, name) for name in ("source.mosis", "target.mosis", "patch")]
            for version, path in zip((source, target), paths):
                pkg = package_key(app.developer_id, app.id, version.version_code)
                if svc.storage.stat(pkg) is None:
                    _finish(delta, owner, D.SKIPPED, reason="package_gone")
                    return "package_gone"
                svc.storage.get_file(pkg, path)
            info = generate(paths[0], paths[1], paths[2])
            if info.size > svc.settings.delta_max_ratio * target.size:
                _finish(delta, owner, D.SKIPPED, reason="too_large", size=info.size, sha256=info.sha256)
                return "too_large"
            delta.from_sha256, delta.to_sha256, delta.sha256, delta.size = \
                source.sha256, target.sha256, info.sha256, info.size
            signature, key_id = signatures.sign_delta(svc, app.package_id, delta)
            svc.storage.put_file(key, paths[2])
    except DeltaError as e:  # the packages themselves: trying again changes nothing
        _finish(delta, owner, D.FAILED, reason=str(e.code))
        return str(e.code)
    except Unavailable as e:
        log.warning("delta %s postponed: %s", delta.id, e.message)
        (Delta.update(lease_owner=None, lease_expires_at=utcnow() + dt.timedelta(seconds=RETRY_SECONDS))
         .where((Delta.id == delta.id) & (Delta.lease_owner == owner)).execute())
        return "postponed"
    finally:
        DELTA_SECONDS.observe(time.monotonic() - started)
    with database.atomic():  # the patch goes to the replica with the row that offers it
        ready = _finish(delta, owner, D.READY, size=info.size, sha256=info.sha256, signature=signature,
                        key_id=key_id, from_sha256=source.sha256, to_sha256=target.sha256, to_size=target.size)
        if ready:
            enqueue_copies(svc.settings, [key])
    if not ready:
        # Removed (or taken over) meanwhile: what this worker stored is nobody's.
        if Delta.get_by_id(delta.id).status != D.PENDING:
            svc.storage.delete(key)
        return "lost"
    # A version pulled between the check above and now: its removal may have run before this row was ready.
    if any(v.status not in S.SERVABLE for v in Version.select().where(Version.id.in_([source.id, target.id]))):
        remove_for(svc, source if source.status not in S.SERVABLE else target, "version_gone")
    # A device may hold the answer without this patch for a few seconds more: let it ask again.
    svc.purge_cached([download_read_key(app.package_id, delta.from_version_code)])
    return "ready"


def run_pending(svc: Services, owner: str, limit: int = 20) -> list[str]:
    """Make queued patches until none is claimable (or `limit` is reached)."""
    return drain(lambda: claim_next(owner), lambda delta: make_claimed(svc, delta, owner), limit, "delta")


# -- removing ---------------------------------------------------------------------------------


def _touching(version: Version):
    return (Delta.from_version == version.id) | (Delta.to_version == version.id)


def keys_touching(version: Version) -> list[str]:
    """The keys of every patch to or from `version` that may be stored."""
    app = App.get_by_id(version.app_id)
    rows = Delta.select().where(_touching(version) & Delta.status.in_((D.PENDING, D.READY, D.REMOVED)))
    return [key_of(d, app.developer_id) for d in rows]


def retire(version: Version, reason: str) -> int:
    """Stop offering (and making) patches to and from `version`: the rows
    only; the caller deletes the objects (keys_touching) after."""
    return (Delta.update(status=D.REMOVED, reason=reason, lease_owner=None, lease_expires_at=None,
                         updated_at=utcnow())
            .where(_touching(version) & Delta.status.in_((D.PENDING, D.READY))).execute())


def remove_for(svc: Services, version: Version, reason: str) -> list[str]:
    """Retire the patches to and from `version`, delete them, make the caches forget them."""
    with database.atomic():
        retire(version, reason)
        keys = keys_touching(version)
        enqueue_deletes(svc.settings, keys)  # the replica keeps them for the delete delay
    if keys:
        svc.purge_cached(keys)
        svc.storage.delete(*keys)
        svc.purge_cached(keys)  # a cache fill started before the rows changed may have ended since
    return keys


# -- offering -----------------------------------------------------------------------------------


def offer(svc: Services, package_id: str, app_id: str, developer_id: str, to_version_code: int, to_sha256: str,
          expires: int, from_version_code: int | None = None, from_sha256: str | None = None) -> dict | None:
    """The `delta` object of a download answer, or None when no patch fits;
    its signature by a key the keyring accepts (re-signed first if revoked)."""
    where = ((Delta.app == app_id) & (Delta.to_version_code == to_version_code)
             & (Delta.to_sha256 == to_sha256) & (Delta.status == D.READY))
    if from_version_code is not None:
        where &= Delta.from_version_code == from_version_code
    if from_sha256 is not None:
        where &= Delta.from_sha256 == from_sha256
    delta = Delta.select().where(where).order_by(Delta.from_version_code.desc()).first()
    if delta is None:
        return None
    signature, key_id = signatures.servable_delta(svc, delta, package_id)
    return {
        "url": svc.download_link(key_of(delta, developer_id), expires=expires),
        "size": delta.size,
        "sha256": delta.sha256,
        "algorithm": ALGORITHM,
        "from_version_code": delta.from_version_code,
        "from_sha256": delta.from_sha256,
        "signature": signature,
        "key_id": key_id,
        "expires_at": iso(dt.datetime.fromtimestamp(expires, dt.timezone.utc).replace(tzinfo=None)),
    }


def servable(key: str) -> tuple[Delta, str] | None:
    """The ready patch stored at `key` and its package_id, if the edge may
    serve it: both its versions still servable."""
    parsed = parse_delta_key(key)
    if parsed is None:
        return None
    developer_id, app_id, from_code, to_code = parsed
    Source, Target = Version.alias(), Version.alias()
    row = (Delta.select(Delta, App.package_id).join(App)
           .join_from(Delta, Source, on=(Delta.from_version == Source.id))
           .join_from(Delta, Target, on=(Delta.to_version == Target.id))
           .where((App.id == app_id) & (App.developer == developer_id) & (Delta.from_version_code == from_code)
                  & (Delta.to_version_code == to_code) & (Delta.status == D.READY)
                  & Source.status.in_(S.SERVABLE) & Target.status.in_(S.SERVABLE))
           .objects().first())
    return (row, row.package_id) if row is not None else None
