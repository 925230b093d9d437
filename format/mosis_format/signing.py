"""Ed25519 keys, key ids, signatures and the reason codes of every trust
decision (docs/signing.md).

A key is named by its key id: the first 16 hex digits of the SHA-256 of the
raw 32-byte public key. Public keys and signatures travel as standard
base64 with padding, and only in their canonical form (the encoding this
module writes), so one key or signature has one spelling.

A `Signer` is anything that holds a private key: `Ed25519Signer` here, or a
wrapper around a key kept elsewhere (an offline machine, a token). Every
refusal is a `TrustError` whose `code` is a `Reason`; callers branch on the
code, never on the message. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import canonical

ALGORITHM = "ed25519"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_ID = re.compile(r"[0-9a-f]{16}")


class Reason(StrEnum):
    """Stable reason codes: devices, the CLI and the store branch on these."""

    MALFORMED = "malformed"  # not strict JSON, or a member missing, extra, of the wrong type or form
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"  # a key of an algorithm other than ed25519
    KEY_ID_MISMATCH = "key_id_mismatch"  # a key_id that is not derived from its public key
    NO_ACTIVE_KEY = "no_active_key"  # a keyring without an active keyring key or packages key
    UNTRUSTED_ROOT = "untrusted_root"  # the first keyring does not hold the pinned key as a keyring key
    ROLLBACK = "rollback"  # a keyring version, or an index, not newer than the one already trusted
    GAP = "gap"  # a keyring version that skips one: every version must be checked in turn
    KEY_REMOVED = "key_removed"  # a key of the previous version is missing
    KEY_CHANGED = "key_changed"  # a key's public key, algorithm, roles or dates changed
    STATUS_REGRESSION = "status_regression"  # revoked -> anything else, retired -> active, a new key not active
    NO_TRUSTED_SIGNER = "no_trusted_signer"  # no keyring key of the previous version vouches for the next
    MISSING_SIGNATURE = "missing_signature"  # a key that must sign did not
    UNEXPECTED_SIGNER = "unexpected_signer"  # a signature by a key that may not sign this document
    UNKNOWN_KEY = "unknown_key"  # a signature by a key the keyring does not hold
    REVOKED_KEY = "revoked_key"  # a signature by a revoked key
    WRONG_ROLE = "wrong_role"  # a signature by a key without the role for it
    BAD_SIGNATURE = "bad_signature"  # the signature does not verify: forged or tampered
    STALE_KEYRING = "stale_keyring"  # the index names a keyring version older than the device's
    KEYRING_UPDATE_NEEDED = "keyring_update_needed"  # the index names a newer keyring: fetch it, then retry
    EXPIRED = "expired"  # the index's `expires` has passed (a frozen or replayed index)
    NOT_YET_VALID = "not_yet_valid"  # the index was issued after now (beyond the allowed clock skew)


class TrustError(Exception):
    """A document or signature is refused: a reason code and a message."""

    def __init__(self, code: Reason, message: str):
        super().__init__(f"{code}: {message}")
        self.code = Reason(code)
        self.message = message


def malformed(message: str) -> TrustError:
    return TrustError(Reason.MALFORMED, message)


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def b64decode(text, size: int, what: str) -> bytes:
    """The bytes of canonical standard base64 `text` of exactly `size` bytes."""
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or len(raw) != size or b64encode(raw) != text:
        raise malformed(f"{what} must be the canonical base64 of {size} bytes")
    return raw


def key_id_of(public_key: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def verify_raw(public_key: str, signature: str, message: bytes) -> bool:
    """Whether `signature` (base64) is `public_key`'s (base64) over `message`."""
    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key, PUBLIC_KEY_SIZE, "public_key"))
        key.verify(b64decode(signature, SIGNATURE_SIZE, "signature"), message)
        return True
    except (InvalidSignature, TrustError, ValueError):
        return False


def package_message(package_id: str, version_code: int, sha256: str, size: int) -> bytes:
    """The bytes the store signs for a package version."""
    return f"mosis-package-v1\n{package_id}\n{int(version_code)}\n{sha256}\n{int(size)}".encode()


class Signer(Protocol):
    """A private key: its id, its public key (base64) and the signing act."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519Signer:
    private: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @cached_property
    def raw_public_key(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)

    @cached_property
    def public_key(self) -> str:
        return b64encode(self.raw_public_key)

    @cached_property
    def key_id(self) -> str:
        return key_id_of(self.raw_public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


@dataclass(frozen=True)
class Signature:
    """One entry of a document's `signatures` list."""

    key_id: str
    signature: str

    def to_json(self) -> dict:
        return {"key_id": self.key_id, "signature": self.signature}

    @classmethod
    def made_by(cls, signer: Signer, message: bytes) -> Signature:
        return cls(signer.key_id, b64encode(signer.sign(message)))


class SignedDocument:
    """A keyring or an index: its signatures cover `DOMAIN` followed by
    the canonical JSON of the document without its `signatures`."""

    DOMAIN: ClassVar[bytes]
    signatures: tuple[Signature, ...]

    def body(self) -> dict:
        raise NotImplementedError

    def to_json(self) -> dict:
        return {**self.body(), "signatures": [s.to_json() for s in self.signatures]}

    def signed_bytes(self) -> bytes:
        """What every signature of the document covers."""
        return self.DOMAIN + canonical.dumps(self.body())

    def dumps(self) -> bytes:
        """The whole document, canonical JSON (what the store serves)."""
        return canonical.dumps(self.to_json())


def read_document(document, what: str, names: set[str]) -> dict:
    """The members of a document from bytes, text or a dict, read strictly."""
    try:
        value = canonical.loads(document)
    except ValueError as e:
        raise malformed(f"not a strict JSON document: {e}") from None
    return members(value, what, names)


def parse_signatures(value) -> tuple[Signature, ...]:
    """A `signatures` member: a list of `{key_id, signature}`, one per key."""
    if not isinstance(value, list):
        raise malformed("signatures must be a list")
    out, seen = [], set()
    for item in value:
        fields = members(item, "a signature", {"key_id", "signature"})
        key_id = fields["key_id"]
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise malformed(f"signature key_id {key_id!r} is not 16 lowercase hex digits")
        if key_id in seen:
            raise malformed(f"key {key_id} signs twice")
        seen.add(key_id)
        b64decode(fields["signature"], SIGNATURE_SIZE, f"the signature of {key_id}")
        out.append(Signature(key_id, fields["signature"]))
    return tuple(out)


def members(value, what: str, required: set[str], optional: frozenset[str] = frozenset()) -> dict:
    """`value` as an object holding every required member, and no member
    outside `required` and `optional`."""
    if not isinstance(value, dict):
        raise malformed(f"{what} must be an object")
    missing = required - value.keys()
    extra = value.keys() - required - optional
    if missing or extra:
        raise malformed(f"{what}: missing {sorted(missing)}, unknown {sorted(extra)}")
    return value


def integer(value, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise malformed(f"{what} must be an integer from {low} to {high}")
    return value
