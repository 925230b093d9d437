"""The signing keyring: which Ed25519 keys the store signs with, and the
chain of versions that lets a device follow rotations and revocations
(docs/signing.md is the normative text).

A keyring is `{"version", "keys": [...], "signatures": [...]}`. Each key has
roles: `keyring` keys vouch for the next keyring version, the one active
`packages` key signs packages, deltas and the catalog index. Version N+1 is
signed by every keyring key active in version N that N+1 does not revoke
(at least one must remain), and by every key active in N+1 (each new key
proves it is held). Signatures cover `mosis-keyring-v1\\n` followed by the
canonical JSON of the document without `signatures`.

Invariants every valid version keeps: exactly one active `packages` key and
at least one active `keyring` key; a key never leaves the keyring, never
changes, and only moves active -> retired -> revoked (or active -> revoked).

Builders (`first`, `next_version`, `rotate`, `revoke`) make unsigned drafts
and refuse any draft that would break a rule; `sign` adds the signatures of
the private keys at hand, so a keyring key kept on another machine can sign
the same draft there. Verifiers (`verify_root`, `verify_next`,
`verify_chain`, `check_signature`) raise `TrustError` with a `Reason`.
Everything is pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from . import canonical
from .signing import (ALGORITHM, KEY_ID, PUBLIC_KEY_SIZE, Reason, Signature, SignedDocument, Signer,
                      TrustError, b64decode, integer, key_id_of, malformed, members, parse_signatures,
                      read_document, verify_raw)


class Status(StrEnum):
    ACTIVE = "active"  # signs now (its role's documents)
    RETIRED = "retired"  # signs nothing new; what it signed stays valid
    REVOKED = "revoked"  # nothing it ever signed is accepted any more


class Role(StrEnum):
    KEYRING = "keyring"  # vouches for the next keyring version
    PACKAGES = "packages"  # signs packages, deltas and the catalog index


ALL_ROLES = (Role.KEYRING, Role.PACKAGES)
# The status moves a key may make from one version to the next.
TRANSITIONS = {(Status.ACTIVE, Status.ACTIVE), (Status.ACTIVE, Status.RETIRED),
               (Status.ACTIVE, Status.REVOKED), (Status.RETIRED, Status.RETIRED),
               (Status.RETIRED, Status.REVOKED), (Status.REVOKED, Status.REVOKED)}


@dataclass(frozen=True)
class Key:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    status: Status
    roles: tuple[Role, ...]
    not_before: str  # when it entered the keyring
    not_after: str | None = None  # when it stopped being active; absent while active
    algorithm: str = ALGORITHM

    @property
    def active(self) -> bool:
        return self.status == Status.ACTIVE

    def has(self, role: Role) -> bool:
        return role in self.roles

    def to_json(self) -> dict:
        out = {"key_id": self.key_id, "algorithm": self.algorithm, "public_key": self.public_key,
               "status": str(self.status), "roles": [str(r) for r in self.roles],
               "not_before": self.not_before}
        if self.not_after is not None:
            out["not_after"] = self.not_after
        return out

    @classmethod
    def from_json(cls, value) -> Key:
        f = members(value, "a key", {"key_id", "algorithm", "public_key", "status", "roles", "not_before"},
                    frozenset({"not_after"}))
        key_id = f["key_id"]
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise malformed(f"key_id {key_id!r} is not 16 lowercase hex digits")
        if not isinstance(f["algorithm"], str):
            raise malformed(f"key {key_id}: algorithm must be a string")
        if f["algorithm"] != ALGORITHM:
            raise TrustError(Reason.UNSUPPORTED_ALGORITHM, f"key {key_id} is {f['algorithm']!r}, not {ALGORITHM}")
        raw = b64decode(f["public_key"], PUBLIC_KEY_SIZE, f"key {key_id}: public_key")
        if key_id_of(raw) != key_id:
            raise TrustError(Reason.KEY_ID_MISMATCH, f"key {key_id}: its public key's id is {key_id_of(raw)}")
        status = _choice(Status, f["status"], f"key {key_id}: status")
        roles = f["roles"]
        if not isinstance(roles, list) or not roles:
            raise malformed(f"key {key_id}: roles must be a non-empty list")
        roles = tuple(_choice(Role, r, f"key {key_id}: role") for r in roles)
        if list(roles) != sorted(set(roles)):
            raise malformed(f"key {key_id}: roles must be sorted and unique")
        not_before = _time(f["not_before"], f"key {key_id}: not_before")
        not_after = f.get("not_after")
        if (not_after is None) != (status == Status.ACTIVE):
            raise malformed(f"key {key_id}: not_after is set exactly when the key is not active")
        if not_after is not None and _time(not_after, f"key {key_id}: not_after") < not_before:
            raise malformed(f"key {key_id}: not_after is before not_before")
        return cls(key_id, f["public_key"], status, roles, f["not_before"], not_after, f["algorithm"])


def _choice(enum, value, what: str):
    try:
        return enum(value)
    except ValueError:
        raise malformed(f"{what} {value!r} is not one of {[str(e) for e in enum]}") from None


def _time(value, what: str) -> datetime:
    try:
        return canonical.parse_time(value)
    except ValueError as e:
        raise malformed(f"{what}: {e}") from None


@dataclass(frozen=True)
class Keyring(SignedDocument):
    DOMAIN = b"mosis-keyring-v1\n"

    version: int
    keys: tuple[Key, ...]
    signatures: tuple[Signature, ...] = ()

    def key(self, key_id: str) -> Key | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def active(self, role: Role | None = None) -> list[Key]:
        return [k for k in self.keys if k.active and (role is None or k.has(role))]

    @property
    def packages_key(self) -> Key:
        """The key that signs packages, deltas and the index now."""
        return self.active(Role.PACKAGES)[0]

    def body(self) -> dict:
        return {"version": self.version, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def parse(cls, document) -> Keyring:
        """A keyring read from bytes, text or a dict, with every rule that
        needs no other version checked; signatures are not verified."""
        f = read_document(document, "a keyring", {"version", "keys", "signatures"})
        version = integer(f["version"], "version", 1, canonical.MAX_INTEGER)
        if not isinstance(f["keys"], list) or not f["keys"]:
            raise malformed("keys must be a non-empty list")
        keys = tuple(Key.from_json(k) for k in f["keys"])
        ring = cls(version, keys, parse_signatures(f["signatures"]))
        _check_keys(ring)
        return ring


def _check_keys(ring: Keyring) -> None:
    ids = [k.key_id for k in ring.keys]
    if len(set(ids)) != len(ids):
        raise malformed("a key_id appears twice")
    packages = ring.active(Role.PACKAGES)
    if not packages or not ring.active(Role.KEYRING):
        raise TrustError(Reason.NO_ACTIVE_KEY,
                         f"version {ring.version} needs an active packages key and an active keyring key")
    if len(packages) > 1:
        raise malformed(f"version {ring.version} has {len(packages)} active packages keys; one signs")


# -- the chain rule -----------------------------------------------------------------

def _check_transition(prev: Keyring, nxt: Keyring) -> None:
    if nxt.version <= prev.version:
        raise TrustError(Reason.ROLLBACK, f"version {nxt.version} is not newer than {prev.version}")
    if nxt.version != prev.version + 1:
        raise TrustError(Reason.GAP, f"version {nxt.version} does not follow {prev.version}")
    for old in prev.keys:
        new = nxt.key(old.key_id)
        if new is None:
            raise TrustError(Reason.KEY_REMOVED, f"key {old.key_id} is missing from version {nxt.version}")
        if (new.algorithm, new.public_key, new.roles, new.not_before) != \
                (old.algorithm, old.public_key, old.roles, old.not_before) or \
                (old.not_after is not None and new.not_after != old.not_after):
            raise TrustError(Reason.KEY_CHANGED, f"key {old.key_id} changed in version {nxt.version}")
        if (old.status, new.status) not in TRANSITIONS:
            raise TrustError(Reason.STATUS_REGRESSION,
                             f"key {old.key_id} went from {old.status} to {new.status}")
    for new in nxt.keys:
        if prev.key(new.key_id) is None and not new.active:
            raise TrustError(Reason.STATUS_REGRESSION, f"new key {new.key_id} is {new.status}, not active")


def _vouchers(prev: Keyring | None, nxt: Keyring, pinned: str | None = None) -> list[str]:
    """The keys trusted before `nxt` that must vouch for it."""
    if prev is None:
        vouchers = [pinned] if pinned else [k.key_id for k in nxt.active(Role.KEYRING)]
    else:
        vouchers = [k.key_id for k in prev.active(Role.KEYRING)
                    if (nxt.key(k.key_id) or k).status != Status.REVOKED]
    if not vouchers:
        raise TrustError(Reason.NO_TRUSTED_SIGNER,
                         f"version {nxt.version} revokes every keyring key of the version before")
    return vouchers


def required_signers(nxt: Keyring, prev: Keyring | None = None, *, pinned: str | None = None) -> list[str]:
    """The key ids that must sign `nxt`: the vouchers from `prev` (or the
    pinned key id for a first version), then every key active in `nxt`."""
    return list(dict.fromkeys(_vouchers(prev, nxt, pinned) + [k.key_id for k in nxt.active()]))


def _check_signatures(nxt: Keyring, required: list[str]) -> None:
    message = nxt.signed_bytes()
    for sig in nxt.signatures:
        key = nxt.key(sig.key_id)
        if key is None:
            raise TrustError(Reason.UNKNOWN_KEY, f"version {nxt.version} is signed by unknown key {sig.key_id}")
        if key.status == Status.REVOKED:
            raise TrustError(Reason.REVOKED_KEY, f"version {nxt.version} is signed by revoked key {sig.key_id}")
        if sig.key_id not in required:
            raise TrustError(Reason.UNEXPECTED_SIGNER, f"key {sig.key_id} may not sign version {nxt.version}")
        if not verify_raw(key.public_key, sig.signature, message):
            raise TrustError(Reason.BAD_SIGNATURE, f"the signature of {sig.key_id} on version "
                                                   f"{nxt.version} does not verify")
    signed = {s.key_id for s in nxt.signatures}
    missing = [k for k in required if k not in signed]
    if missing:
        raise TrustError(Reason.MISSING_SIGNATURE, f"version {nxt.version} lacks the signature of "
                                                   f"{', '.join(missing)}")


def verify_root(document, pinned_key: str | None = None) -> Keyring:
    """Version 1, the start of every chain. With `pinned_key` (the base64
    public key a device shipped with) it must hold that key as an active
    keyring key signing it; without, it is trusted as it is (shipped in
    the firmware) and only its own signatures are checked."""
    ring = Keyring.parse(document)
    if ring.version != 1:
        raise TrustError(Reason.GAP, f"a chain starts at version 1, not {ring.version}")
    for key in ring.keys:
        if not key.active:
            raise TrustError(Reason.STATUS_REGRESSION, f"key {key.key_id} is {key.status} in version 1")
    pinned = None
    if pinned_key is not None:
        pinned = key_id_of(b64decode(pinned_key, PUBLIC_KEY_SIZE, "the pinned key"))
        key = ring.key(pinned)
        if key is None or key.public_key != pinned_key or not key.has(Role.KEYRING):
            raise TrustError(Reason.UNTRUSTED_ROOT, f"version 1 does not hold the pinned key {pinned} "
                                                   f"as a keyring key")
    _check_signatures(ring, required_signers(ring, pinned=pinned))
    return ring


def verify_next(prev: Keyring, document) -> Keyring:
    """The version after the trusted `prev`, once every rule holds."""
    ring = Keyring.parse(document)
    _check_transition(prev, ring)
    _check_signatures(ring, required_signers(ring, prev))
    return ring


def verify_chain(trusted: Keyring | str, documents: Iterable) -> Keyring:
    """Walk from what a device trusts (a keyring it verified before, or
    the base64 public key it shipped with) through `documents`, one version
    after another; the last keyring, all of them checked. A key-only start
    must begin at version 1."""
    docs = iter(documents)
    if isinstance(trusted, str):
        first_doc = next(docs, None)
        if first_doc is None:
            raise ValueError("a key-only start needs at least version 1")
        trusted = verify_root(first_doc, trusted)
    for document in docs:
        trusted = verify_next(trusted, document)
    return trusted


def check_signature(ring: Keyring, key_id: str, signature: str, message: bytes, *,
                    active_only: bool = False) -> Key:
    """The key behind a package, delta or index signature, if the verified
    `ring` lets it count: a packages key, active or retired (only active
    with `active_only`, as for the index), whose signature over `message`
    verifies."""
    key = ring.key(key_id)
    if key is None:
        raise TrustError(Reason.UNKNOWN_KEY, f"key {key_id} is not in keyring version {ring.version}")
    if key.status == Status.REVOKED:
        raise TrustError(Reason.REVOKED_KEY, f"key {key_id} is revoked")
    if not key.has(Role.PACKAGES):
        raise TrustError(Reason.WRONG_ROLE, f"key {key_id} does not sign packages")
    if active_only and not key.active:
        raise TrustError(Reason.UNEXPECTED_SIGNER, f"key {key_id} is {key.status}, not active")
    if not verify_raw(key.public_key, signature, message):
        raise TrustError(Reason.BAD_SIGNATURE, f"the signature by {key_id} does not verify")
    return key


# -- building the next version -------------------------------------------------------

@dataclass(frozen=True)
class NewKey:
    public_key: str  # base64 raw Ed25519 public key
    roles: tuple[Role, ...] = ALL_ROLES

    def key(self, now: str) -> Key:
        raw = b64decode(self.public_key, PUBLIC_KEY_SIZE, "the new public key")
        return Key(key_id_of(raw), self.public_key, Status.ACTIVE,
                   tuple(sorted(set(Role(r) for r in self.roles))), now)


def _new(key: NewKey | str) -> NewKey:
    return NewKey(key) if isinstance(key, str) else key


def first(*keys: NewKey | str, now: datetime) -> Keyring:
    """An unsigned version 1 (a bare public key gets both roles); the
    store's existing key becomes its active key."""
    at = canonical.format_time(now)
    return _checked(Keyring(1, tuple(_new(k).key(at) for k in keys)))


def _checked(ring: Keyring) -> Keyring:
    """`ring` if it passes every check `Keyring.parse` makes."""
    for key in ring.keys:
        Key.from_json(key.to_json())
    _check_keys(ring)
    return ring


def next_version(prev: Keyring, *, now: datetime, add: Sequence[NewKey | str] = (),
                 retire: Sequence[str] = (), revoke: Sequence[str] = ()) -> Keyring:
    """An unsigned version after `prev`: keys added (active), retired,
    revoked. Refused with the reason a verifier would give if it breaks a
    rule, or with `unknown_key`/`revoked_key` for a key that cannot move."""
    at = canonical.format_time(now)
    keys = {k.key_id: k for k in prev.keys}
    for key_id in list(retire) + list(revoke):
        if key_id not in keys:
            raise TrustError(Reason.UNKNOWN_KEY, f"key {key_id} is not in version {prev.version}")
    for key_id in retire:
        if not keys[key_id].active:
            raise TrustError(Reason.STATUS_REGRESSION, f"key {key_id} is {keys[key_id].status}, not active")
        keys[key_id] = replace(keys[key_id], status=Status.RETIRED, not_after=at)
    for key_id in revoke:
        old = keys[key_id]
        if old.status == Status.REVOKED:
            raise TrustError(Reason.REVOKED_KEY, f"key {key_id} is already revoked")
        keys[key_id] = replace(old, status=Status.REVOKED, not_after=old.not_after or at)
    for new in (_new(k).key(at) for k in add):
        if new.key_id in keys:
            raise TrustError(Reason.STATUS_REGRESSION, f"key {new.key_id} is already in the keyring")
        keys[new.key_id] = new
    # The verifier's own rules, so no draft is made that devices would refuse.
    ring = _checked(Keyring(prev.version + 1, tuple(keys.values())))
    _check_transition(prev, ring)
    _vouchers(prev, ring)
    return ring


def rotate(prev: Keyring, new_key: str, *, now: datetime, retire: str | None = None,
           roles: Sequence[Role] | None = None) -> Keyring:
    """A new key takes over from `retire` (default: the active packages
    key), with its roles unless `roles` says otherwise."""
    old = prev.key(retire) if retire else prev.packages_key
    if old is None:
        raise TrustError(Reason.UNKNOWN_KEY, f"key {retire} is not in version {prev.version}")
    return next_version(prev, now=now, add=[NewKey(new_key, tuple(roles or old.roles))], retire=[old.key_id])


def revoke(prev: Keyring, key_id: str, *, now: datetime, replacement: str | None = None) -> Keyring:
    """`key_id` revoked; `replacement` (a public key) takes its roles, which
    is needed when it was the active packages key. Revoking the only
    active keyring key is refused (`no_trusted_signer`): rotate it first,
    then revoke it, signed by its successor."""
    old = prev.key(key_id)
    if old is None:
        raise TrustError(Reason.UNKNOWN_KEY, f"key {key_id} is not in version {prev.version}")
    add = [NewKey(replacement, old.roles)] if replacement else []
    return next_version(prev, now=now, add=add, revoke=[key_id])


def sign(draft: Keyring, signers: Iterable[Signer], prev: Keyring | None = None) -> Keyring:
    """`draft` with the signatures of `signers` added (each must be one of
    its required signers); the rest can be added elsewhere, later."""
    required = required_signers(draft, prev)
    message = draft.signed_bytes()
    have = {s.key_id: s for s in draft.signatures}
    for signer in signers:
        key = draft.key(signer.key_id)
        if signer.key_id not in required or key is None:
            raise TrustError(Reason.UNEXPECTED_SIGNER, f"key {signer.key_id} may not sign version {draft.version}")
        if key.public_key != signer.public_key:
            raise TrustError(Reason.BAD_SIGNATURE, f"the private key given for {signer.key_id} is another key")
        have[signer.key_id] = Signature.made_by(signer, message)
    order = {k: i for i, k in enumerate(required)}
    return replace(draft, signatures=tuple(sorted(have.values(), key=lambda s: order.get(s.key_id, len(order)))))


def missing_signers(draft: Keyring, prev: Keyring | None = None) -> list[str]:
    """The required signers that have not signed `draft` yet."""
    signed = {s.key_id for s in draft.signatures}
    return [k for k in required_signers(draft, prev) if k not in signed]
