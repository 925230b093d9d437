"""The signing keyring `mosis` trusts, and the checks it makes with it
(`mosis help signing`).

Per service URL it keeps, next to config.json, `keyrings/{id}.json`: the
last keyring version it verified and the `issued_at` of the last catalog
index it accepted. The checks are mosis_format's, the same a device makes.

Invariants:
- The stored keyring only moves forward: a later version is stored only
  after `verify_chain` accepted every version from the stored one to it; a
  rollback, a gap or a forged version is refused and the stored one kept.
- With nothing stored, the chain starts at version 1: from the key given
  with `--public-key` (which version 1 must hold), else from version 1 as
  the store serves it (trust on first use).
- A package or patch signature counts only with the key its `key_id` names
  in the verified keyring, active or retired, never revoked; an index only when
  signed by the active key, under the device's keyring version, not
  expired and not older than the last one accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mosis_cli.config import config_path
from mosis_cli.errors import CliError, Exit
from mosis_cli.http import Api
from mosis_format import index as mindex
from mosis_format import keyring as kr
from mosis_format.signing import Reason, TrustError, package_message

SIGNING_HINT = "what is verified and why: mosis help signing"


def store_path(url: str) -> Path:
    return config_path().parent / "keyrings" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"


def _refused(what: str, e: TrustError, code: str = "untrusted_keyring") -> CliError:
    return CliError(Exit.INTEGRITY, f"{what}: {e.message} ({e.code})", code=code, hint=SIGNING_HINT,
                    details={"reason": str(e.code)})


class Trust:
    """What this client trusts of the store at `api.url`."""

    def __init__(self, api: Api, pinned_key: str | None = None):
        self.api, self.pinned = api, pinned_key
        self.path = store_path(api.url)
        self.ring: kr.Keyring | None = None
        self.last_issued_at: str | None = None
        if self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
                self.ring = kr.Keyring.parse(stored["keyring"])  # verified when it was stored
                self.last_issued_at = stored.get("index_issued_at")
            except (OSError, ValueError, KeyError, TypeError, TrustError) as e:
                raise CliError(Exit.ERROR, f"cannot read the keyring kept in {self.path}: {e}",
                               code="bad_config", hint="delete it to trust the store's keyring anew "
                                                       "(mosis help signing)") from None

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"url": self.api.url, "keyring": self.ring.to_json(),
                                   "index_issued_at": self.last_issued_at}, indent=2) + "\n")
        os.replace(tmp, self.path)

    def _version(self, n: int) -> dict:
        return self.api.call("GET", f"/v1/signing-keys/{n}")

    def update(self) -> kr.Keyring:
        """Follow the store's keyring from what is trusted to its current version."""
        current = self.api.call("GET", "/v1/signing-keys")
        newest = current.get("version") if isinstance(current.get("version"), int) else 0
        held = self.ring
        # From the pinned key or from nothing: every version from 1; else from the one kept.
        first = 1 if self.pinned is not None or held is None else held.version + 1
        try:
            if first > 1 and newest == held.version and kr.Keyring.parse(current).dumps() == held.dumps():
                return held
            docs = [self._version(v) for v in range(first, newest)] + [current]
            if first > 1:
                ring = kr.verify_chain(held, docs)
            else:
                ring = kr.verify_chain(self.pinned or kr.verify_root(docs[0]), docs[0 if self.pinned else 1:])
            if first == 1 and held is not None:  # a walk from the pinned key passes the version kept
                same = docs[held.version - 1] if held.version <= len(docs) else None
                if same is None or kr.Keyring.parse(same).dumps() != held.dumps():
                    raise TrustError(Reason.ROLLBACK, f"the store's version {held.version} is not the one kept")
        except TrustError as e:
            if e.code == Reason.UNTRUSTED_ROOT:
                raise _refused("the store's keyring does not start from the key you pinned with "
                               "--public-key", e, "unknown_signing_key") from None
            kept = f" (version {held.version} kept)" if held else ""
            raise _refused(f"refusing the store's keyring version {newest}{kept}", e) from None
        self.ring = ring
        self._save()
        return ring

    def check_package(self, package_id: str, info: dict) -> kr.Key:
        """The key behind a download answer's signature, or a one-line refusal."""
        ring = self.ring or self.update()
        what = f"{package_id} {info.get('version')} (version_code {info.get('version_code')})"
        try:
            message = package_message(package_id, info["version_code"], info["sha256"], info["size"])
            return kr.check_signature(ring, str(info.get("key_id")), str(info.get("signature")), message)
        except (KeyError, ValueError):
            raise CliError(Exit.ERROR, f"the download answer for {what} is incomplete",
                           code="bad_answer") from None
        except TrustError as e:
            if e.code == Reason.REVOKED_KEY:
                raise CliError(Exit.INTEGRITY, f"{what} is signed by key {info['key_id']}, which the "
                               f"store revoked: do not install it", code="revoked_key",
                               hint=SIGNING_HINT) from None
            if e.code == Reason.UNKNOWN_KEY:
                raise _refused(f"{what} is signed by a key the store's keyring does not hold", e,
                               "unknown_signing_key") from None
            raise _refused(f"the signature of {what} does not verify: do not install it", e,
                           "bad_signature") from None

    def patch_refusal(self, key_id, signature, message: bytes) -> str | None:
        """Why a delta patch's signature does not count, or None when it
        does: made over `message` by the key its `key_id` names in the
        followed keyring, as a package signature (never a revoked key)."""
        ring = self.ring or self.update()
        if not isinstance(key_id, str) or not isinstance(signature, str):
            return "the patch names no signing key"
        try:
            kr.check_signature(ring, key_id, signature, message)
        except TrustError as e:
            if e.code == Reason.REVOKED_KEY:
                return f"the patch is signed by key {key_id}, which the store revoked"
            if e.code == Reason.UNKNOWN_KEY:
                return f"the patch is signed by key {key_id}, which the store's keyring does not hold"
            return f"the patch's signature does not verify with key {key_id} ({e.code})"
        return None

    def index(self) -> mindex.Index:
        """The store's catalog index, verified; its issued_at is kept."""
        ring = self.ring or self.update()
        for attempt in range(2):
            document = self.api.call("GET", "/v1/index.json")
            try:
                index = mindex.verify(document, ring, last_issued_at=self.last_issued_at)
            except TrustError as e:
                if e.code == Reason.KEYRING_UPDATE_NEEDED and attempt == 0:
                    ring = self.update()
                    continue
                raise _refused("refusing the store's catalog index", e, "untrusted_index") from None
            self.last_issued_at = index.issued_at
            self._save()
            return index
        raise AssertionError("unreachable")
