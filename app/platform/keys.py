"""The store's signing keyring: its versions in the database, its private
keys on disk (docs/signing.md; the formats are mosis_format.keyring's).

Invariants:
- `keyring_version` rows are only added, never changed. A version is stored
  only once it verifies against the one before with the devices' own check
  (`mosis_format.keyring.verify_next`), so the store never serves a chain a
  device refuses; two changes at once cannot both be version N+1 (the
  primary key), the loser is refused.
- Version 1 is the store's first key (MOSIS_SIGNING_KEY or
  `signing-key.pem` in the data dir), made on first start.
- Private keys: the first where it always was; every later key the server
  signs with in `signing-keys/{key_id}.pem` in the data dir (owner-only).
  A keyring key kept off the server is handed to the one command that needs
  it (`KeyStore(extra=...)`), never written.
- `active()` is the private key of the current version's active packages
  key, read from the database on every call: another process may have
  rotated it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC
from pathlib import Path

import peewee as pw

from app.platform.clock import utcnow
from app.platform.errors import Conflict, NotFound
from app.platform.models import Delta, KeyringVersion, Version, database, record_audit
from app.platform.signing import SigningKey, read_key_file, write_key_file
from mosis_format import keyring as kr
from mosis_format.signing import TrustError

KEYS_DIR = "signing-keys"


def _aware(now=None):
    return (now or utcnow()).replace(tzinfo=UTC)


class KeyStore:
    """The private keys at hand: the first key, those in the data dir, and
    any handed over for one command."""

    def __init__(self, first: SigningKey, data_dir: Path, extra: Sequence[SigningKey] = ()):
        self.first = first
        self.dir = Path(data_dir) / KEYS_DIR
        self.extra = {k.key_id: k for k in extra}

    def with_keys(self, extra: Sequence[SigningKey]) -> KeyStore:
        return KeyStore(self.first, self.dir.parent, [*self.extra.values(), *extra])

    def private(self, key_id: str) -> SigningKey | None:
        if key_id == self.first.key_id:
            return self.first
        if key_id in self.extra:
            return self.extra[key_id]
        path = self.dir / f"{key_id}.pem"
        return read_key_file(path) if path.exists() else None

    def keep(self, key: SigningKey) -> None:
        """Write `key` where every process of the server finds it."""
        write_key_file(self.dir / f"{key.key_id}.pem", key.private)

    # -- the keyring ---------------------------------------------------------------

    def current(self) -> kr.Keyring:
        """The newest keyring version (version 1 made first if there is none)."""
        row = KeyringVersion.select().order_by(KeyringVersion.version.desc()).first()
        if row is None:
            return self._first_version()
        return parse(row.document)

    def _first_version(self) -> kr.Keyring:
        draft = kr.first(self.first.public_key, now=_aware())
        ring = kr.sign(draft, [self.first])
        kr.verify_root(ring.dumps(), self.first.public_key)
        with database.atomic():
            KeyringVersion.insert(version=1, document=ring.dumps().decode()).on_conflict_ignore().execute()
            # What was signed before the keyring existed was signed by this key.
            for model in (Version, Delta):
                model.update(key_id=self.first.key_id).where(
                    model.signature.is_null(False) & model.key_id.is_null()).execute()
        return parse(KeyringVersion.get_by_id(1).document)

    def active(self) -> SigningKey:
        """The private key that signs packages, deltas and the index now."""
        key_id = self.current().packages_key.key_id
        key = self.private(key_id)
        if key is None:
            raise RuntimeError(f"the private key of the active signing key {key_id} is not in "
                               f"{self.dir}: copy it there (docs/signing.md, runbook)")
        return key

    def publish(self, draft: kr.Keyring, prev: kr.Keyring, actor: str, action: str, **details) -> kr.Keyring:
        """Sign `draft` with every required key at hand and store it as the
        next version; refused if a required key is not at hand."""
        signers = [k for k in (self.private(i) for i in kr.missing_signers(draft, prev)) if k is not None]
        ring = kr.sign(draft, signers, prev)
        missing = kr.missing_signers(ring, prev)
        if missing:
            raise Conflict(f"keyring version {draft.version} also needs the signature of "
                           f"{', '.join(missing)}, whose private key is not at hand; supply it "
                           f"(docs/signing.md, runbook)", code="keyring_key_missing",
                           details={"missing": missing})
        kr.verify_next(prev, ring.dumps())  # what devices will check
        try:
            with database.atomic():
                KeyringVersion.create(version=ring.version, document=ring.dumps().decode())
                record_audit(actor, action, "keyring", str(ring.version), **details)
        except pw.IntegrityError:
            raise Conflict("the keyring changed meanwhile; try again", code="keyring_changed") from None
        return ring


def parse(document: str | bytes) -> kr.Keyring:
    return kr.Keyring.parse(document)


def version(n: int) -> kr.Keyring:
    row = KeyringVersion.get_or_none(KeyringVersion.version == n)
    if row is None:
        raise NotFound(f"no keyring version {n}", code="keyring_version_not_found")
    return parse(row.document)


def document(ring: kr.Keyring) -> dict:
    return ring.to_json()


def _refused(e: TrustError) -> Conflict:
    return Conflict(f"the keyring cannot change so: {e.message}", code="keyring_refused",
                    details={"reason": str(e.code)})


def rotate(store: KeyStore, actor: str = "admin", *, new_key: SigningKey | None = None,
           retire: str | None = None, roles: Iterable[str] | None = None) -> tuple[kr.Keyring, SigningKey]:
    """A new key takes over from `retire` (default the active packages key)
    and its roles (or `roles`); the old one is retired. The new key is kept
    in the data dir when it signs packages; a keyring-only key is not."""
    prev = store.current()
    key = new_key or SigningKey.generate()
    try:
        draft = kr.rotate(prev, key.public_key, now=_aware(), retire=retire,
                          roles=[kr.Role(r) for r in roles] if roles else None)
    except TrustError as e:
        raise _refused(e) from None
    except ValueError as e:
        raise Conflict(f"the keyring cannot change so: {e}", code="keyring_refused",
                       details={"reason": "malformed"}) from None
    if kr.Role.PACKAGES in draft.key(key.key_id).roles:
        store.keep(key)
    ring = store.with_keys([key]).publish(draft, prev, actor, "keyring.rotated", new_key=key.key_id,
                                          retired=retire or prev.packages_key.key_id)
    return ring, key


def revoke(store: KeyStore, key_id: str, actor: str = "admin") -> kr.Keyring:
    """`key_id` revoked in a new version vouched for by the remaining keyring
    keys; if it was the active packages key, a new key takes its roles."""
    prev = store.current()
    old = prev.key(key_id)
    if old is None:
        raise NotFound(f"no key {key_id} in the keyring", code="signing_key_not_found")
    replacement = None
    if old.active and kr.Role.PACKAGES in old.roles:
        replacement = SigningKey.generate()
    try:
        draft = kr.revoke(prev, key_id, now=_aware(), replacement=replacement and replacement.public_key)
    except TrustError as e:
        raise _refused(e) from None
    extra = []
    if replacement is not None:
        store.keep(replacement)
        extra = [replacement]
    return store.with_keys(extra).publish(draft, prev, actor, "keyring.revoked", key_id=key_id,
                                          replacement=replacement and replacement.key_id)


def split(store: KeyStore, keyring_key: SigningKey, actor: str = "admin") -> tuple[kr.Keyring, SigningKey]:
    """Split the roles: `keyring_key` (kept off the server, never written
    here) vouches for later versions; a new key kept here signs packages;
    the key that held both is retired."""
    prev = store.current()
    both = [k for k in prev.active() if len(k.roles) == 2]
    if not both:
        raise Conflict("the roles are split already", code="keyring_refused", details={"reason": "malformed"})
    packages = SigningKey.generate()
    try:
        draft = kr.next_version(prev, now=_aware(), retire=[both[0].key_id],
                                add=[kr.NewKey(keyring_key.public_key, (kr.Role.KEYRING,)),
                                     kr.NewKey(packages.public_key, (kr.Role.PACKAGES,))])
    except TrustError as e:
        raise _refused(e) from None
    store.keep(packages)
    ring = store.with_keys([keyring_key, packages]).publish(
        draft, prev, actor, "keyring.split", keyring_key=keyring_key.key_id, packages_key=packages.key_id)
    return ring, packages
