"""Package signatures under a changing keyring (docs/signing.md).

Invariants:
- A version's `signature` and `key_id` change together, in one row update
  that compares the key it replaces (a crash leaves either the old pair or
  the new one, both whole).
- Whatever is served (a download answer, an index entry) carries a
  signature by a key the current keyring accepts: active or retired, never
  revoked. A signature by a revoked (or unknown) key is replaced by the
  active key's before it is served.
- After a rotation or revocation, `resign_all` moves every version that
  may still be served or published (draft, published, superseded) to the
  active key, one row at a time: interrupted, it is resumed by running it
  again, which the scheduler does every minute (`JOBS`). Until it reaches
  a version, the version keeps its older, still valid, signature.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from app.edge.purge import KEYRING_KEYS, public_read_keys
from app.platform import keys
from app.platform.jobs import Job
from app.platform.keys import KeyStore
from app.platform.models import App, Version
from app.platform.models import VersionStatus as S
from app.platform.signing import SigningKey
from mosis_format.keyring import Keyring, Status

if TYPE_CHECKING:
    from app.services import Services

SIGNED = (S.DRAFT, S.PUBLISHED, S.SUPERSEDED)


def sign(svc: Services, package_id: str, version_code: int, sha256: str, size: int) -> tuple[str, str]:
    """(signature, key_id) by the active key."""
    key = svc.keys.active()
    return key.sign_package(package_id, version_code, sha256, size), key.key_id


def _resign(svc: Services, version: Version, package_id: str) -> tuple[str, str]:
    """Sign `version` with the active key, unless another process did first."""
    signature, key_id = sign(svc, package_id, version.version_code, version.sha256, version.size)
    changed = (Version.update(signature=signature, key_id=key_id)
               .where((Version.id == version.id) & (Version.signature == version.signature)).execute())
    if not changed:
        fresh = Version.get_by_id(version.id)
        return fresh.signature, fresh.key_id
    return signature, key_id


def acceptable(ring: Keyring, key_id: str | None) -> bool:
    key = ring.key(key_id) if key_id else None
    return key is not None and key.status != Status.REVOKED


def servable(svc: Services, version: Version, package_id: str) -> tuple[str, str]:
    """The (signature, key_id) to serve for `version`: its own, or, when the
    keyring no longer accepts its key, a new one by the active key."""
    if acceptable(svc.keys.current(), version.key_id):
        return version.signature, version.key_id
    return _resign(svc, version, package_id)


def resign_all(svc: Services, limit: int | None = None) -> int:
    """Move every signed, servable version to the active key; how many moved."""
    active = svc.keys.active().key_id
    rows = (Version.select(Version, App).join(App)
            .where(Version.status.in_(SIGNED) & Version.signature.is_null(False)
                   & ((Version.key_id != active) | Version.key_id.is_null()))
            .order_by(Version.id))
    moved, purge = 0, set()
    for version in rows.limit(limit) if limit else rows:
        _resign(svc, version, version.app.package_id)
        moved += 1
        if version.status == S.PUBLISHED:
            purge.add(version.app.package_id)
    for package_id in sorted(purge):  # cached download answers name the old signature
        svc.purge_cached(public_read_keys(package_id))
    return moved


def rotate(svc: Services, actor: str = "admin", store: KeyStore | None = None, **options) -> dict:
    """A new active key (app.platform.keys.rotate), then everything signed
    moved to it."""
    ring, key = keys.rotate(store or svc.keys, actor, **options)
    return _changed(svc, ring, new_key=key.key_id)


def revoke(svc: Services, key_id: str, actor: str = "admin", store: KeyStore | None = None) -> dict:
    """`key_id` revoked (app.platform.keys.revoke), then everything it
    signed signed again."""
    return _changed(svc, keys.revoke(store or svc.keys, key_id, actor))


def split(svc: Services, keyring_key: SigningKey, actor: str = "admin") -> dict:
    """The keyring role to `keyring_key`, kept off the server
    (app.platform.keys.split), then everything moved to the new packages key."""
    ring, key = keys.split(svc.keys, keyring_key, actor)
    return _changed(svc, ring, new_key=key.key_id)


def _changed(svc: Services, ring: Keyring, **extra) -> dict:
    svc.purge_cached(KEYRING_KEYS)
    return {"keyring": ring.to_json(), "active_key": ring.packages_key.key_id, **extra,
            "resigned": resign_all(svc)}


def resign_job(svc: Services, now: dt.datetime) -> dict:
    return {"resigned": resign_all(svc)}


JOBS = (Job("resign_packages", resign_job, dt.timedelta(minutes=1)),)
