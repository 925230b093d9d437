"""Package signatures under a changing keyring (docs/signing.md).

Invariants:
- A version's `signature` and `key_id` change together, in one row update
  that compares the key it replaces (a crash leaves either the old pair or
  the new one, both whole).
- Whatever is served (a download answer, an index entry) carries a
  signature by a key the current keyring accepts: active or retired, never
  revoked. A signature by a revoked (or unknown) key is replaced by the
  active key's before it is served.
- A ready delta patch's `signature` and `key_id` (app.catalog.deltas) obey
  the same two rules: changed together by a compare-and-set on the
  signature they replace, and re-signed before it is offered when its key
  is revoked (`servable_delta`).
- After a rotation or revocation, `resign_all` moves every version that
  may still be served or published (draft, published, superseded), then
  every ready patch, to the active key, one row at a time: interrupted, it
  is resumed by running it again, which the scheduler does every minute
  (`JOBS`). Until it reaches a row, the row keeps its older, still valid,
  signature.
- The catalog index (`/v1/index.json`, mosis_format.index) is one row of
  `signed_index`: every app's current version with the signature its
  download answers, under the current keyring, signed by the active key.
  `refresh_index` signs a new one when what it lists or the keyring
  version changed (its `digest`), or when a third of its life has passed;
  publish, pull, supersede and every keyring change call it, and the
  scheduler does every minute (`JOBS`), so a missed call is made good.
- The row only moves forward: it is replaced by a compare-and-set on the
  row that was read before the catalog was read, so of two racing
  refreshes the one that read the older catalog never overwrites the
  newer; `issued_at` never goes back (devices refuse an older index).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING

from app.edge.purge import INDEX_KEY, KEYRING_KEYS, download_read_key, public_read_keys
from app.platform import keys
from app.platform.clock import naive_utc, utcnow
from app.platform.jobs import Job
from app.platform.keys import KeyStore
from app.platform.models import App, Delta, DeltaStatus, SignedIndex, Version
from app.platform.models import VersionStatus as S
from app.platform.signing import SigningKey
from mosis_format import canonical
from mosis_format import index as mindex
from mosis_format.keyring import Keyring, Status

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

SIGNED = (S.DRAFT, S.PUBLISHED, S.SUPERSEDED)
INDEX_ROW = 1


def sign(svc: Services, package_id: str, version_code: int, sha256: str, size: int) -> tuple[str, str]:
    """(signature, key_id) by the active key."""
    key = svc.keys.active()
    return key.sign_package(package_id, version_code, sha256, size), key.key_id


def sign_delta(svc: Services, package_id: str, delta: Delta) -> tuple[str, str]:
    """(signature, key_id) of the patch `delta` describes (its sha256 and
    size set) by the active key."""
    key = svc.keys.active()
    return key.sign_delta(package_id, delta.from_version_code, delta.from_sha256, delta.to_version_code,
                          delta.to_sha256, delta.sha256, delta.size), key.key_id


def _replace(model: type[Version] | type[Delta], row, signature: str, key_id: str) -> tuple[str, str]:
    """Store a new (signature, key_id) on `row` unless another process
    replaced its signature first; the pair the row holds after."""
    changed = (model.update(signature=signature, key_id=key_id)
               .where((model.id == row.id) & (model.signature == row.signature)).execute())
    if not changed:
        fresh = model.get_by_id(row.id)
        return fresh.signature, fresh.key_id
    return signature, key_id


def _resign(svc: Services, version: Version, package_id: str) -> tuple[str, str]:
    """Sign `version` with the active key, unless another process did first."""
    return _replace(Version, version, *sign(svc, package_id, version.version_code, version.sha256, version.size))


def _resign_delta(svc: Services, delta: Delta, package_id: str) -> tuple[str, str]:
    """Sign the patch of `delta` with the active key, unless another process did first."""
    return _replace(Delta, delta, *sign_delta(svc, package_id, delta))


def acceptable(ring: Keyring, key_id: str | None) -> bool:
    key = ring.key(key_id) if key_id else None
    return key is not None and key.status != Status.REVOKED


def servable(svc: Services, version: Version, package_id: str) -> tuple[str, str]:
    """The (signature, key_id) to serve for `version`: its own, or, when the
    keyring no longer accepts its key, a new one by the active key."""
    if acceptable(svc.keys.current(), version.key_id):
        return version.signature, version.key_id
    return _resign(svc, version, package_id)


def servable_delta(svc: Services, delta: Delta, package_id: str) -> tuple[str, str]:
    """The (signature, key_id) to serve for a ready patch, as `servable`."""
    if acceptable(svc.keys.current(), delta.key_id):
        return delta.signature, delta.key_id
    return _resign_delta(svc, delta, package_id)


def _not_by(model: type[Version] | type[Delta], key_id: str):
    return model.signature.is_null(False) & ((model.key_id != key_id) | model.key_id.is_null())


def resign_all(svc: Services, limit: int | None = None) -> int:
    """Move every signed, servable version, then every ready patch, to the
    active key; how many moved (at most `limit`)."""
    active = svc.keys.active().key_id
    versions = (Version.select(Version, App).join(App)
                .where(Version.status.in_(SIGNED) & _not_by(Version, active)).order_by(Version.id))
    moved, purge = 0, set()
    for version in versions.limit(limit) if limit else versions:
        _resign(svc, version, version.app.package_id)
        moved += 1
        if version.status == S.PUBLISHED:
            purge.update(public_read_keys(version.app.package_id))
    patches = (Delta.select(Delta, App).join(App)
               .where((Delta.status == DeltaStatus.READY) & _not_by(Delta, active)).order_by(Delta.id))
    if limit is None or moved < limit:
        for delta in patches.limit(limit - moved) if limit else patches:
            _resign_delta(svc, delta, delta.app.package_id)
            moved += 1
            purge.add(download_read_key(delta.app.package_id, delta.from_version_code))
    if purge:  # cached download answers, and the index, name the old signatures
        index_changed(svc, sorted(purge))
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
    svc.purge_cached(KEYRING_KEYS)  # devices learn the new version before they meet its signatures
    resigned = resign_all(svc)
    index_changed(svc, [INDEX_KEY])  # under the new keyring version, even if nothing moved
    return {"keyring": ring.to_json(), "active_key": ring.packages_key.key_id, **extra, "resigned": resigned}


def resign_job(svc: Services, now: dt.datetime) -> dict:
    return {"resigned": resign_all(svc)}


# -- the signed catalog index --------------------------------------------------------------

def _entries(svc: Services) -> list[mindex.Entry]:
    """Every app's current version, with the signature its download answers."""
    rows = (Version.select(Version, App).join(App).where(Version.status == S.PUBLISHED)
            .order_by(App.package_id))
    entries = []
    for version in rows:
        package_id = version.app.package_id
        signature, key_id = servable(svc, version, package_id)
        entries.append(mindex.Entry(package_id, version.version_code, version.size, version.sha256,
                                    signature, key_id))
    return entries


def _digest(ring: Keyring, entries: list[mindex.Entry]) -> str:
    return hashlib.sha256(canonical.dumps({"keyring_version": ring.version,
                                           "packages": [e.to_json() for e in entries]})).hexdigest()


def _due(row: SignedIndex, now: dt.datetime) -> bool:
    """A third of its life has passed: time to sign a fresh one."""
    return now >= row.issued_at + (row.expires_at - row.issued_at) / 3


def refresh_index(svc: Services, now: dt.datetime | None = None) -> tuple[SignedIndex, bool]:
    """The current signed index row, and whether it was signed anew."""
    while True:
        now = naive_utc(now) or utcnow()
        row = SignedIndex.get_or_none(SignedIndex.id == INDEX_ROW)  # before the catalog is read
        ring = svc.keys.current()
        entries = _entries(svc)
        digest = _digest(ring, entries)
        if row is not None and row.digest == digest and not _due(row, now):
            return row, False
        issued = max(now, row.issued_at if row is not None else now).replace(microsecond=0)
        index = mindex.make(entries, ring, svc.keys.active(), now=issued.replace(tzinfo=dt.UTC),
                            lifetime=dt.timedelta(seconds=svc.settings.index_lifetime))
        fields = {"document": index.dumps().decode(), "digest": digest, "issued_at": issued,
                  "expires_at": naive_utc(canonical.parse_time(index.expires))}
        if row is None:
            written = SignedIndex.insert(id=INDEX_ROW, **fields).on_conflict_ignore().execute()
            written = written and SignedIndex.get_by_id(INDEX_ROW).digest == digest
        else:
            written = (SignedIndex.update(**fields)
                       .where((SignedIndex.id == INDEX_ROW) & (SignedIndex.digest == row.digest)
                              & (SignedIndex.issued_at == row.issued_at)).execute())
        if written:
            return SignedIndex.get_by_id(INDEX_ROW), True
        now = None  # another process wrote one meanwhile: read again


def served_index(svc: Services) -> dict:
    """The index to answer `/v1/index.json` with: the stored one while it is
    under the current keyring and not due, else a fresh one."""
    row = SignedIndex.get_or_none(SignedIndex.id == INDEX_ROW)
    if row is None or _due(row, utcnow()) or \
            json.loads(row.document)["keyring_version"] != svc.keys.current().version:
        row, _ = refresh_index(svc)
    return json.loads(row.document)


def index_changed(svc: Services, purge: list[str]) -> None:
    """After the catalog or the keyring changed: sign the index anew, then
    make the caches forget `purge` (the index among them). A failure to
    sign is logged, not raised: the change is made, and the scheduler's
    job signs the index within a minute."""
    try:
        refresh_index(svc)
    except Exception:
        log.exception("the catalog index could not be signed; the sign_index job retries")
    svc.purge_cached(list(dict.fromkeys([*purge, INDEX_KEY])))


def index_job(svc: Services, now: dt.datetime) -> dict:
    _, signed = refresh_index(svc, now)
    if signed:
        svc.purge_cached([INDEX_KEY])
    return {"items": int(signed)}


JOBS = (Job("resign_packages", resign_job, dt.timedelta(minutes=1)),
        Job("sign_index", index_job, dt.timedelta(minutes=1)))
