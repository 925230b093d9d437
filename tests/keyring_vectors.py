"""The keyring and index test vectors for device implementers
(format/vectors/keyring/): an honest chain of five keyring versions, forged
and broken keyrings, catalog indexes and package signatures, each with the
verdict a device must reach and, for a refusal, its reason code.

    .venv/bin/python -m tests.keyring_vectors   # rewrites the vectors

Everything is rebuilt byte for byte from the fixed seeds and times below
(Ed25519 signatures are deterministic): tests/test_keyring_format.py checks
that the committed files are what this makes, and that the reference
verifier reaches every expected verdict. The documents are written
indented, not canonical: a verifier re-encodes what it reads.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mosis_format import canonical, index, keyring
from mosis_format.delta import signed_message as delta_message
from mosis_format.keyring import Keyring, NewKey, Role, Status
from mosis_format.signing import Ed25519Signer, Signature, TrustError, package_message

VECTORS = Path(__file__).resolve().parent.parent / "format" / "vectors" / "keyring"
START = datetime(2026, 1, 1, tzinfo=UTC)


def seed(label: str) -> bytes:
    return hashlib.sha256(f"mosis keyring test vector key {label}".encode()).digest()


# The test keys: their seeds are public, so nothing they sign is worth anything.
LABELS = {
    "k1": "the store's first key, both roles (keyring version 1)",
    "k2": "its successor after a routine rotation, both roles",
    "root": "a keyring-only key kept off the server",
    "p3": "an online packages-only key, later compromised and revoked",
    "p4": "the packages key that replaces p3",
    "attacker": "a key the store never had",
}
KEYS = {label: Ed25519Signer.from_seed(seed(label)) for label in LABELS}


def month(n: int) -> datetime:
    return START.replace(month=n)


def _sign_raw(ring: Keyring, *labels: str) -> Keyring:
    """`ring` signed by exactly `labels`, without the builder's checks."""
    message = ring.signed_bytes()
    return replace(ring, signatures=tuple(Signature.made_by(KEYS[k], message) for k in labels))


def honest_chain() -> list[Keyring]:
    k = KEYS
    v1 = keyring.sign(keyring.first(k["k1"].public_key, now=month(1)), [k["k1"]])
    v2 = keyring.sign(keyring.rotate(v1, k["k2"].public_key, now=month(2)), [k["k1"], k["k2"]], v1)
    draft = keyring.next_version(v2, now=month(3), retire=[k["k2"].key_id],
                                 add=[NewKey(k["root"].public_key, (Role.KEYRING,)),
                                      NewKey(k["p3"].public_key, (Role.PACKAGES,))])
    v3 = keyring.sign(draft, [k["k2"], k["root"], k["p3"]], v2)
    v4 = keyring.sign(keyring.revoke(v3, k["k1"].key_id, now=month(4)), [k["root"], k["p3"]], v3)
    draft = keyring.revoke(v4, k["p3"].key_id, now=month(5), replacement=k["p4"].public_key)
    v5 = keyring.sign(draft, [k["root"], k["p4"]], v4)
    return [v1, v2, v3, v4, v5]


@dataclass
class Vectors:
    """The files and the index entries, built up in memory."""

    files: dict[str, bytes] = field(default_factory=dict)
    entries: list[dict] = field(default_factory=list)

    def document(self, path: str, value) -> str:
        if path in self.files:
            raise ValueError(f"{path} written twice")
        self.files[path] = value if isinstance(value, bytes) else \
            (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
        return path

    def add(self, name: str, kind: str, description: str, expected: str | int, **inputs) -> None:
        if any(e["name"] == name for e in self.entries):
            raise ValueError(f"vector {name} twice")
        verdict = {"verdict": "accept", "version": expected} if isinstance(expected, int) else \
            {"verdict": "reject", "reason": str(expected)}
        self.entries.append({"name": name, "kind": kind, "description": description, **inputs,
                             "expected": verdict})


def _flip(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[10] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _keyring_vectors(v: Vectors, chain: list[Keyring]) -> None:
    k = KEYS
    files = [v.document(f"chain/keyring-{r.version}.json", r.to_json()) for r in chain]
    pin = k["k1"].public_key
    accept = [
        ("root-from-pinned-key", "a device that shipped with the first key checks version 1", None, [0]),
        ("chain-from-pinned-key", "the first key leads through every rotation and revocation to version 5",
         None, [0, 1, 2, 3, 4]),
        ("chain-from-version-2", "a device that trusted version 2 walks to version 5", 1, [2, 3, 4]),
        ("rotation", "k1 retired, k2 active: signed by k1 (trusted before) and k2 (proof it is held)", 0, [1]),
        ("split-roles", "k2 retired; a keyring-only key and a packages-only key added: signed by k2, "
                        "root and p3", 1, [2]),
        ("revoke-retired-key", "retired k1 revoked, signed by the keyring key and the active packages key",
         2, [3]),
        ("revoke-compromised-packages-key", "p3 revoked, p4 takes its place; the keyring-only key vouches, "
                                            "p3 does not sign", 3, [4]),
    ]
    for name, about, trusted, docs in accept:
        start = {"trusted": files[trusted]} if trusted is not None else {"pinned_key": pin}
        v.add(name, "keyring", about, chain[docs[-1]].version, **start, documents=[files[i] for i in docs])

    def reject(name, about, reason, trusted, doc, *, pinned=None):
        start = {"pinned_key": pinned} if pinned else {"trusted": files[trusted]}
        documents = [doc if isinstance(doc, str) else v.document(f"keyrings/{name}.json", doc)]
        v.add(name, "keyring", about, reason, **start, documents=documents)

    v1, v2, v3, v4, v5 = chain
    reject("root-other-pinned-key", "version 1 does not hold the key the device shipped with",
           "untrusted_root", None, files[0], pinned=k["attacker"].public_key)
    reject("root-not-version-1", "a device holding only a key must start at version 1", "gap",
           None, files[1], pinned=pin)
    reject("rollback-older-version", "version 2 offered to a device at version 3", "rollback", 2, files[1])
    reject("rollback-same-version", "version 3 offered as the next version to a device at version 3", "rollback", 2, files[2])
    reject("gap", "version 4 offered to a device at version 2: version 3 must be checked first", "gap",
           1, files[3])

    forged = Keyring(2, (replace(v1.keys[0], status=Status.RETIRED, not_after=canonical.format_time(month(2))),
                         NewKey(k["attacker"].public_key).key(canonical.format_time(month(2)))))
    reject("forged-by-attacker", "an attacker's version 2 (k1 retired, their key active) signed by their "
                                 "key only", "missing_signature", 0, _sign_raw(forged, "attacker").to_json())
    doc = v2.to_json()
    doc["signatures"][0]["signature"] = _flip(doc["signatures"][0]["signature"])
    reject("forged-signature", "version 2 with one bit of k1's signature flipped", "bad_signature", 0, doc)
    doc = v2.to_json()
    doc["keys"][1].update(key_id=k["attacker"].key_id, public_key=k["attacker"].public_key)
    reject("tampered-new-key", "version 2 with k2 swapped for the attacker's key after signing",
           "bad_signature", 0, doc)
    doc = v2.to_json()
    doc["keys"][1]["public_key"] = k["attacker"].public_key
    reject("key-id-mismatch", "version 2 with k2's public key swapped and its key_id left", "key_id_mismatch",
           0, doc)
    reject("missing-new-key-signature", "version 2 signed by k1 only: k2 never proved it is held",
           "missing_signature", 0, _sign_raw(replace(v2, signatures=()), "k1").to_json())
    reject("unknown-signer", "version 2 with an extra signature by a key in no keyring", "unknown_key", 0,
           _sign_raw(replace(v2, signatures=()), "k1", "k2", "attacker").to_json())
    reject("unexpected-signer", "version 4 with an extra signature by retired k2", "unexpected_signer", 2,
           _sign_raw(replace(v4, signatures=()), "root", "p3", "k2").to_json())
    reject("revoked-key-signs", "version 5 with an extra signature by k1, revoked in version 4",
           "revoked_key", 3, _sign_raw(replace(v5, signatures=()), "root", "p4", "k1").to_json())
    reject("revoked-key-signs-own-revocation", "version 5 also signed by p3, the key it revokes",
           "revoked_key", 3, _sign_raw(replace(v5, signatures=()), "root", "p4", "p3").to_json())
    hijack = keyring.next_version(v4, now=month(5), add=[NewKey(k["attacker"].public_key, (Role.KEYRING,))])
    reject("packages-key-alone", "whoever holds the online packages key p3 adds a keyring key of their "
                                 "own: the keyring key did not sign", "missing_signature", 3,
           _sign_raw(hijack, "p3", "attacker").to_json())
    takeover = Keyring(5, tuple(replace(key, status=Status.REVOKED, not_after=canonical.format_time(month(5)))
                                if key.key_id == k["root"].key_id else key for key in v4.keys)
                       + (NewKey(k["attacker"].public_key, (Role.KEYRING,)).key(canonical.format_time(month(5))),))
    reject("revoke-every-keyring-key", "version 5 revokes the only keyring key and adds the attacker's: "
                                       "no key trusted before vouches", "no_trusted_signer", 3,
           _sign_raw(takeover, "p3", "attacker").to_json())
    dropped = Keyring(4, tuple(key for key in v4.keys if key.key_id != k["k1"].key_id))
    reject("key-removed", "version 4 drops k1 instead of revoking it (properly signed)", "key_removed", 2,
           _sign_raw(dropped, "root", "p3").to_json())
    unrevoked = Keyring(5, tuple(replace(key, status=Status.RETIRED) if key.key_id == k["k1"].key_id else key
                                 for key in v5.keys))
    reject("unrevoke", "version 5 turns revoked k1 back into retired (properly signed)", "status_regression",
           3, _sign_raw(unrevoked, "root", "p4").to_json())
    changed = Keyring(3, tuple(replace(key, roles=(Role.PACKAGES,)) if key.key_id == k["k1"].key_id else key
                               for key in v3.keys))
    reject("key-changed", "version 3 changes retired k1's roles (properly signed)", "key_changed", 1,
           _sign_raw(changed, "k2", "root", "p3").to_json())
    no_packages = Keyring(5, tuple(replace(key, status=Status.REVOKED, not_after=canonical.format_time(month(5)))
                                   if key.key_id == k["p3"].key_id else key for key in v4.keys))
    reject("no-active-packages-key", "version 5 revokes p3 and names no successor", "no_active_key", 3,
           _sign_raw(no_packages, "root").to_json())
    text = json.dumps(v2.to_json(), indent=2).replace('"version": 2', '"version": 2.0')
    reject("float-version", "version written 2.0: integers only", "malformed", 0,
           v.document("keyrings/float-version.json", text.encode() + b"\n"))
    text = json.dumps(v2.to_json(), indent=2).replace('"version": 2', '"version": 2,\n  "version": 3')
    reject("duplicate-member", "a member named twice", "malformed", 0,
           v.document("keyrings/duplicate-member.json", text.encode() + b"\n"))
    doc = v2.to_json()
    doc["keys"][1]["not_before"] = "2026-02-01T00:00:00+00:00"
    reject("timestamp-offset", "a timestamp with an offset instead of Z", "malformed", 0, doc)
    doc = v2.to_json()
    doc["keys"][1]["algorithm"] = "ed448"
    reject("unsupported-algorithm", "a key of another algorithm", "unsupported_algorithm", 0, doc)


def _entry(package_id: str, version_code: int, label: str) -> index.Entry:
    data = f"{package_id} {version_code}".encode()
    sha, size = hashlib.sha256(data).hexdigest(), 4096 + version_code
    signature = base64.b64encode(KEYS[label].sign(package_message(package_id, version_code, sha, size))).decode()
    return index.Entry(package_id, version_code, size, sha, signature, KEYS[label].key_id)


def _index_vectors(v: Vectors, chain: list[Keyring]) -> None:
    v4, v5 = chain[3], chain[4]
    issued = month(5) + timedelta(days=1)
    entries = [_entry("com.example.notes", 7, "p4"), _entry("org.mosis.clock", 3, "k2")]
    good = index.make(entries, v5, KEYS["p4"], now=issued)
    k5, k4 = "chain/keyring-5.json", "chain/keyring-4.json"
    day = lambda n: canonical.format_time(issued + timedelta(days=n))  # noqa: E731

    def signed(ix: index.Index, label: str) -> dict:
        return replace(ix, signatures=(Signature.made_by(KEYS[label], ix.signed_bytes()),)).to_json()

    def case(name, about, expected, doc, *, ring=k5, now=day(1), **extra):
        path = doc if isinstance(doc, str) else v.document(f"indexes/{name}.json", doc)
        v.add(name, "index", about, expected, keyring=ring, document=path, now=now, **extra)

    valid = v.document("indexes/valid.json", good.to_json())
    case("index-valid", "two apps, one signed by the active key, one by retired k2", 5, valid)
    case("index-last-second", "one second before it expires", 5, valid,
         now=canonical.format_time(issued + index.DEFAULT_LIFETIME - timedelta(seconds=1)))
    case("index-expired", "the moment it expires: a frozen index", "expired", valid, now=day(7))
    case("index-rollback", "older than the index the device accepted before", "rollback", valid,
         last_issued_at=day(1))
    case("index-not-yet-valid", "issued an hour after the device's clock", "not_yet_valid", valid,
         now=canonical.format_time(issued - timedelta(hours=1)))
    doc = good.to_json()
    doc["packages"][0]["sha256"] = hashlib.sha256(b"other").hexdigest()
    case("index-tampered-entry", "an entry's sha256 changed after signing", "bad_signature", doc)
    doc = good.to_json()
    doc["expires"] = day(30)
    case("index-tampered-expires", "expires pushed 30 days out after signing", "bad_signature", doc)
    case("index-unknown-key", "signed by a key in no keyring", "unknown_key", signed(good, "attacker"))
    doc = signed(good, "attacker")
    doc["signatures"][0]["key_id"] = KEYS["p4"].key_id
    case("index-impostor", "signed by another key in the active key's name", "bad_signature", doc)
    case("index-revoked-key", "signed by p3, revoked in keyring version 5", "revoked_key", signed(good, "p3"))
    case("index-retired-key", "signed by retired k2: only the active key signs the index",
         "unexpected_signer", signed(good, "k2"))
    case("index-keyring-key", "signed by the keyring-only key", "wrong_role", signed(good, "root"))
    old = index.make([_entry("com.example.notes", 6, "p3")], v4, KEYS["p3"], now=month(4))
    old_path = v.document("indexes/keyring-4.json", old.to_json())
    case("index-stale-keyring", "an index under keyring version 4 shown to a device at version 5",
         "stale_keyring", old_path, now=canonical.format_time(month(4) + timedelta(days=1)))
    case("index-keyring-update-needed", "an index under keyring version 5 shown to a device at version 4",
         "keyring_update_needed", valid, ring=k4)
    bad = replace(good, packages=good.packages + (_entry("org.mosis.weather", 2, "k1"),))
    case("index-entry-revoked-key", "an entry signed by k1, revoked", "revoked_key", signed(bad, "p4"))
    stolen = replace(_entry("org.mosis.weather", 2, "p4"), signature=good.packages[0].signature)
    bad = replace(good, packages=good.packages + (stolen,))
    case("index-entry-bad-signature", "an entry carrying another package's signature", "bad_signature",
         signed(bad, "p4"))
    doc = copy.deepcopy(good.to_json())
    doc["packages"].reverse()
    case("index-unsorted", "entries not sorted by package_id", "malformed", doc)
    text = json.dumps(good.to_json(), indent=2).replace('"version_code": 7', '"version_code": 7.0')
    case("index-float", "a version_code written 7.0", "malformed",
         v.document("indexes/index-float.json", text.encode() + b"\n"))


def _signature_vectors(v: Vectors) -> None:
    ring = "chain/keyring-5.json"
    sha = hashlib.sha256(b"package").hexdigest()
    package = package_message("com.example.notes", 7, sha, 4096)
    delta = delta_message("com.example.notes", 6, hashlib.sha256(b"old").hexdigest(), 7, sha,
                          hashlib.sha256(b"patch").hexdigest(), 512)

    def case(name, about, expected, label, message, signed=None):
        signature = base64.b64encode(KEYS[label].sign(signed or message)).decode()
        v.add(name, "signature", about, expected, keyring=ring, key_id=KEYS[label].key_id,
              signature=signature, message=message.decode())

    case("package-active-key", "a package signed by the active key", 5, "p4", package)
    case("package-retired-key", "a package signed before rotation by retired k2: still good", 5, "k2", package)
    case("delta-active-key", "a delta patch signed by the active key", 5, "p4", delta)
    case("package-revoked-key", "a package signed by revoked p3", "revoked_key", "p3", package)
    case("package-revoked-first-key", "a package signed by k1, retired then revoked", "revoked_key", "k1",
         package)
    case("package-unknown-key", "a package signed by a key in no keyring", "unknown_key", "attacker", package)
    case("package-keyring-key", "a package signed by the keyring-only key", "wrong_role", "root", package)
    case("package-tampered", "the signature of another size", "bad_signature", "p4", package,
         package_message("com.example.notes", 7, sha, 4097))


def build() -> Vectors:
    v = Vectors()
    chain = honest_chain()
    _keyring_vectors(v, chain)
    _index_vectors(v, chain)
    _signature_vectors(v)
    about = {
        "format": ["mosis-keyring-v1", "mosis-index-v1"],
        "about": "Each vector starts from a pinned public key or a trusted keyring (kind keyring), or from "
                 "a verified keyring (kinds index and signature), and must end with the expected verdict: "
                 "accept (with the keyring version reached or held) or reject with the reason code. "
                 "Times are RFC 3339 UTC; `now` is the device's clock. See docs/signing.md.",
        "keys": {label: {"about": about, "seed": seed(label).hex(), "key_id": KEYS[label].key_id,
                         "public_key": KEYS[label].public_key} for label, about in LABELS.items()},
        "chain": [{"file": f"chain/keyring-{r.version}.json", "version": r.version,
                   "signed_bytes": r.signed_bytes().decode()} for r in chain],
        "vectors": v.entries,
    }
    v.document("index.json", about)
    return v


def write(root: Path = VECTORS) -> Vectors:
    v = build()
    for path, data in v.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return v


def check(root: Path, vector: dict) -> tuple[str, str | int]:
    """Run one vector with the reference verifier: ("accept", version) or
    ("reject", reason code)."""
    read = lambda path: (root / path).read_bytes()  # noqa: E731
    try:
        if vector["kind"] == "keyring":
            trusted = vector.get("pinned_key") or Keyring.parse(read(vector["trusted"]))
            return "accept", keyring.verify_chain(trusted, [read(p) for p in vector["documents"]]).version
        ring = Keyring.parse(read(vector["keyring"]))
        if vector["kind"] == "index":
            now = canonical.parse_time(vector["now"])
            index.verify(read(vector["document"]), ring, now=now, last_issued_at=vector.get("last_issued_at"))
        else:
            keyring.check_signature(ring, vector["key_id"], vector["signature"], vector["message"].encode())
        return "accept", ring.version
    except TrustError as e:
        return "reject", str(e.code)


if __name__ == "__main__":
    vectors = write()
    for entry in vectors.entries:
        got = check(VECTORS, entry)
        print(f"{entry['kind']:9} {entry['name']:36} {got[0]} {got[1]}")
