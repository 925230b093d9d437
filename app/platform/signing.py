"""The store's Ed25519 signing key and the package signature format.

Devices verify a download against the key from `/v1/signing-key`; the signed
message is `mosis-package-v1\\n{package_id}\\n{version_code}\\n{sha256}\\n{size}`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
KEY_FILE = "signing-key.pem"


def signed_message(package_id: str, version_code: int, sha256: str, size: int) -> bytes:
    return f"mosis-package-v1\n{package_id}\n{int(version_code)}\n{sha256}\n{int(size)}".encode()


def raw_public_key(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public_key(public)).hexdigest()[:16]


def verify(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        public.verify(base64.b64decode(signature_b64), message)
        return True
    except (InvalidSignature, ValueError):
        return False


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    # Derived once: every download answer names the key.
    @cached_property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @cached_property
    def key_id(self) -> str:
        return key_id_of(self.public)

    def public_info(self) -> dict:
        return {"algorithm": ALGORITHM, "key_id": self.key_id,
                "public_key": base64.b64encode(raw_public_key(self.public)).decode()}

    def sign_package(self, package_id: str, version_code: int, sha256: str, size: int) -> str:
        sig = self.private.sign(signed_message(package_id, version_code, sha256, size))
        return base64.b64encode(sig).decode()


def load_signing_key(seed_b64: str, data_dir: Path) -> SigningKey:
    """The key from MOSIS_SIGNING_KEY, else the one kept under the data dir
    (created on first start, readable by the owner only)."""
    if seed_b64:
        seed = base64.b64decode(seed_b64)
        if len(seed) != 32:
            raise ValueError("MOSIS_SIGNING_KEY must be a base64 32-byte Ed25519 seed")
        return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        return SigningKey(serialization.load_pem_private_key(path.read_bytes(), password=None))
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then link into place: two processes starting together
    # agree on one key, and nobody ever reads a half-written file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=path.parent)  # mode 0600
    tmp = Path(tmp_name)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return load_signing_key("", data_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return SigningKey(private)
