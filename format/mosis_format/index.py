"""The signed catalog index: every app's current version, signed by the
keyring's active packages key (docs/signing.md is the normative text).

`{"keyring_version", "issued_at", "expires", "packages": [{package_id,
version_code, size, sha256, signature, key_id}], "signatures": [{key_id,
signature}]}`: entries sorted by package_id, one per app, each carrying the
package signature a download answers; one signature over
`mosis-index-v1\\n` followed by the canonical JSON of the document without
`signatures`. An index expires (7 days by default) so a device notices when
it is fed an old one (a freeze attack); the store signs a new one before.

`build` refuses an entry whose package signature the keyring would not
accept, so the store never serves an index devices must refuse; `verify`
is the device's check and raises `TrustError` with a `Reason`. Pure: no I/O,
and the clock only when `now` is not given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from . import canonical
from .keyring import Keyring, check_signature
from .signing import (KEY_ID, SIGNATURE_SIZE, Reason, Signature, SignedDocument, Signer, TrustError,
                      b64decode, integer, malformed, members, package_message, parse_signatures,
                      read_document)
DEFAULT_LIFETIME = timedelta(days=7)
# How far ahead of the device's clock an index may have been issued.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
PACKAGE_ID = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MAX_PACKAGE_ID = 128
MAX_VERSION_CODE = 2**31 - 1
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """An app's current version, as its download answers it."""

    package_id: str
    version_code: int
    size: int
    sha256: str
    signature: str  # the package signature (base64)
    key_id: str  # the key that made it

    def message(self) -> bytes:
        return package_message(self.package_id, self.version_code, self.sha256, self.size)

    def to_json(self) -> dict:
        return {"package_id": self.package_id, "version_code": self.version_code, "size": self.size,
                "sha256": self.sha256, "signature": self.signature, "key_id": self.key_id}

    @classmethod
    def from_json(cls, value) -> Entry:
        f = members(value, "an index entry", {"package_id", "version_code", "size", "sha256", "signature",
                                               "key_id"})
        pid = f["package_id"]
        if not isinstance(pid, str) or len(pid) > MAX_PACKAGE_ID or not PACKAGE_ID.fullmatch(pid):
            raise malformed(f"package_id {pid!r} is not a package id")
        integer(f["version_code"], f"{pid}: version_code", 1, MAX_VERSION_CODE)
        integer(f["size"], f"{pid}: size", 0, canonical.MAX_INTEGER)
        if not isinstance(f["sha256"], str) or not SHA256.fullmatch(f["sha256"]):
            raise malformed(f"{pid}: sha256 is not 64 lowercase hex digits")
        b64decode(f["signature"], SIGNATURE_SIZE, f"{pid}: signature")
        if not isinstance(f["key_id"], str) or not KEY_ID.fullmatch(f["key_id"]):
            raise malformed(f"{pid}: key_id is not 16 lowercase hex digits")
        return cls(**f)


@dataclass(frozen=True)
class Index(SignedDocument):
    DOMAIN = b"mosis-index-v1\n"

    keyring_version: int
    issued_at: str
    expires: str
    packages: tuple[Entry, ...]
    signatures: tuple[Signature, ...] = ()

    def entry(self, package_id: str) -> Entry | None:
        return next((e for e in self.packages if e.package_id == package_id), None)

    @property
    def key_id(self) -> str:
        return self.signatures[0].key_id

    def body(self) -> dict:
        return {"keyring_version": self.keyring_version, "issued_at": self.issued_at, "expires": self.expires,
                "packages": [e.to_json() for e in self.packages]}

    @classmethod
    def parse(cls, document) -> Index:
        """An index read strictly; its signature is not verified."""
        f = read_document(document, "an index",
                          {"keyring_version", "issued_at", "expires", "packages", "signatures"})
        version = integer(f["keyring_version"], "keyring_version", 1, canonical.MAX_INTEGER)
        times = []
        for name in ("issued_at", "expires"):
            try:
                times.append(canonical.parse_time(f[name]))
            except ValueError as e:
                raise malformed(f"{name}: {e}") from None
        if times[1] <= times[0]:
            raise malformed("expires is not after issued_at")
        if not isinstance(f["packages"], list):
            raise malformed("packages must be a list")
        packages = tuple(Entry.from_json(e) for e in f["packages"])
        ids = [e.package_id for e in packages]
        if any(a >= b for a, b in zip(ids, ids[1:])):
            raise malformed("packages must be sorted by package_id, one entry each")
        signatures = parse_signatures(f["signatures"])
        if len(signatures) != 1:
            raise malformed("an index carries exactly one signature")
        return cls(version, f["issued_at"], f["expires"], packages, signatures)


def build(entries: Iterable[Entry], ring: Keyring, *, now: datetime,
          lifetime: timedelta = DEFAULT_LIFETIME) -> Index:
    """An unsigned index of `entries` under the verified `ring`; an entry
    whose signature `ring` would not accept is refused (`TrustError`)."""
    if lifetime < timedelta(seconds=1):
        raise ValueError("an index lives at least a second")
    packages = tuple(sorted(entries, key=lambda e: e.package_id))
    for entry in packages:
        Entry.from_json(entry.to_json())
        check_signature(ring, entry.key_id, entry.signature, entry.message())
    if len({e.package_id for e in packages}) != len(packages):
        raise malformed("an app appears twice")
    return Index(ring.version, canonical.format_time(now), canonical.format_time(now + lifetime), packages)


def sign(index: Index, ring: Keyring, signer: Signer) -> Index:
    """`index` signed by `signer`, which must be `ring`'s active packages key."""
    active = ring.packages_key
    if signer.key_id != active.key_id or signer.public_key != active.public_key:
        raise TrustError(Reason.UNEXPECTED_SIGNER, f"the index is signed by the active key {active.key_id}, "
                                                   f"not {signer.key_id}")
    return replace(index, signatures=(Signature.made_by(signer, index.signed_bytes()),))


def make(entries: Iterable[Entry], ring: Keyring, signer: Signer, *, now: datetime,
         lifetime: timedelta = DEFAULT_LIFETIME) -> Index:
    """A signed index: `build`, then `sign`."""
    return sign(build(entries, ring, now=now, lifetime=lifetime), ring, signer)


def verify(document, ring: Keyring, *, now: datetime | None = None,
           last_issued_at: datetime | str | None = None,
           clock_skew: timedelta = DEFAULT_CLOCK_SKEW) -> Index:
    """The device's check of an index against its verified keyring `ring`
    (docs/signing.md, "Verifying the index"). `last_issued_at` is the
    `issued_at` of the index the device accepted before, if any."""
    index = Index.parse(document)
    if index.keyring_version < ring.version:
        raise TrustError(Reason.STALE_KEYRING, f"the index names keyring version {index.keyring_version}; "
                                               f"the device trusts {ring.version}")
    if index.keyring_version > ring.version:
        raise TrustError(Reason.KEYRING_UPDATE_NEEDED, f"the index names keyring version "
                                                       f"{index.keyring_version}; fetch it first")
    try:
        check_signature(ring, index.key_id, index.signatures[0].signature, index.signed_bytes(),
                        active_only=True)
    except TrustError as e:
        raise TrustError(e.code, f"the index signature: {e.message}") from None
    now = now or datetime.now(UTC)
    issued, expires = canonical.parse_time(index.issued_at), canonical.parse_time(index.expires)
    if issued > now + clock_skew:
        raise TrustError(Reason.NOT_YET_VALID, f"the index was issued at {index.issued_at}, after now")
    if now >= expires:
        raise TrustError(Reason.EXPIRED, f"the index expired at {index.expires}")
    if isinstance(last_issued_at, str):
        last_issued_at = canonical.parse_time(last_issued_at)
    if last_issued_at is not None and issued < last_issued_at:
        raise TrustError(Reason.ROLLBACK, f"the index was issued at {index.issued_at}, before the one "
                                          f"already accepted")
    for entry in index.packages:
        try:
            check_signature(ring, entry.key_id, entry.signature, entry.message())
        except TrustError as e:
            raise TrustError(e.code, f"{entry.package_id}: {e.message}") from None
    return index
