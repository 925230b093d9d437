"""The store's Ed25519 signing keys and the package signature format.

Devices verify a download against the keyring (`/v1/signing-keys`,
app.platform.keys); the signed message is
`mosis-package-v1\\n{package_id}\\n{version_code}\\n{sha256}\\n{size}`.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mosis_format.delta import signed_message as delta_message
from mosis_format.signing import key_id_of, package_message

ALGORITHM = "ed25519"
KEY_FILE = "signing-key.pem"


def raw_public_key(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    # Derived once: every download answer names the key.
    @cached_property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @cached_property
    def key_id(self) -> str:
        return key_id_of(raw_public_key(self.public))

    @cached_property
    def public_key(self) -> str:
        """Base64 of the raw public key (with `key_id` and `sign`, a
        mosis_format Signer)."""
        return base64.b64encode(raw_public_key(self.public)).decode()

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def public_info(self) -> dict:
        return {"algorithm": ALGORITHM, "key_id": self.key_id,
                "public_key": base64.b64encode(raw_public_key(self.public)).decode()}

    def sign_package(self, package_id: str, version_code: int, sha256: str, size: int) -> str:
        sig = self.private.sign(package_message(package_id, version_code, sha256, size))
        return base64.b64encode(sig).decode()

    def sign_delta(self, package_id: str, from_version_code: int, from_sha256: str, to_version_code: int,
                   to_sha256: str, patch_sha256: str, patch_size: int) -> str:
        """The signature of a patch (`mosis-delta-v1…`, docs/deltas.md)."""
        sig = self.private.sign(delta_message(package_id, from_version_code, from_sha256, to_version_code,
                                              to_sha256, patch_sha256, patch_size))
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
        return read_key_file(path)
    private = Ed25519PrivateKey.generate()
    if not write_key_file(path, private):
        return load_signing_key("", data_dir)
    return SigningKey(private)


def read_key_file(path: Path) -> SigningKey:
    """A PEM (PKCS#8) private key, or a base64 32-byte seed, from a file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return SigningKey(serialization.load_pem_private_key(data, password=None))
    seed = base64.b64decode(data.strip(), validate=True)
    if len(seed) != 32:
        raise ValueError(f"{path}: neither a PEM private key nor a base64 32-byte Ed25519 seed")
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


def write_key_file(path: Path, private: Ed25519PrivateKey) -> bool:
    """Write `private` to `path` (owner-only) unless a file is there already;
    whether it was written."""
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
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
