"""The keyring and catalog index formats (format/mosis_format): canonical
encoding, building and signing versions, the chain a device walks, the
index it checks, the shipped test vectors, and a property test over random
rotations and revocations."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.platform.signing import SigningKey, signed_message
from mosis_format import canonical, index, keyring
from mosis_format.index import Index
from mosis_format.keyring import Keyring, NewKey, Role, Status
from mosis_format.signing import Ed25519Signer, Reason, TrustError, package_message
from tests import keyring_vectors

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOL = [Ed25519Signer.from_seed(hashlib.sha256(f"pool {i}".encode()).digest()) for i in range(40)]
BY_ID = {s.key_id: s for s in POOL}


def reason(call, *args, **kw) -> Reason:
    with pytest.raises(TrustError) as e:
        call(*args, **kw)
    return e.value.code


def signed(draft: Keyring, prev: Keyring | None = None) -> Keyring:
    """`draft` signed by every key it needs (all are in the pool)."""
    return keyring.sign(draft, [BY_ID[k] for k in keyring.missing_signers(draft, prev)], prev)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


# -- canonical encoding --------------------------------------------------------------

def test_canonical_encoding_is_sorted_compact_utf8():
    value = {"b": [3, {"z": "é\"\\", "a": ""}], "a": 0, "aa": 2**53 - 1}
    assert canonical.dumps(value) == '{"a":0,"aa":9007199254740991,"b":[3,{"a":"","z":"é\\"\\\\"}]}'.encode()


@pytest.mark.parametrize("value", [1.0, True, None, -1, 2**53, "tab\there", "\ud800", {1: 2}, b"bytes"])
def test_canonical_encoding_refuses_what_it_cannot_spell_one_way(value):
    with pytest.raises((TypeError, ValueError)):
        canonical.dumps({"x": value})


strings = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)))
json_values = st.recursive(
    st.integers(0, 2**53 - 1) | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_encoding_is_what_a_sorted_compact_json_writer_makes(value):
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical.dumps(value) == expected
    assert canonical.loads(expected) == value


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"a":1.5}', '{"a":1e3}', '{"a":NaN}', "\ufeff{}",
                                  b'{"a":"\xff"}', "{"])
def test_strict_reading_refuses_ambiguous_json(text):
    with pytest.raises(ValueError):
        canonical.loads(text)


def test_timestamps_are_utc_whole_seconds():
    moment = datetime(2026, 3, 1, 1, 2, 3, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert canonical.format_time(moment) == "2026-02-28T23:02:03Z"
    assert canonical.parse_time("2026-02-28T23:02:03Z") == moment.replace(microsecond=0)
    with pytest.raises(ValueError):
        canonical.format_time(datetime(2026, 1, 1))
    for bad in ["2026-02-28T23:02:03+00:00", "2026-02-28T23:02:03.5Z", "2026-02-28t23:02:03z",
                "2026-02-30T00:00:00Z", "2026-02-28 23:02:03Z", 20260228]:
        with pytest.raises(ValueError):
            canonical.parse_time(bad)


# -- the store's existing key --------------------------------------------------------

def test_the_existing_key_becomes_version_1_with_the_same_key_id():
    seed = hashlib.sha256(b"the store's key").digest()
    store = SigningKey(Ed25519Signer.from_seed(seed).private)
    signer = Ed25519Signer.from_seed(seed)
    assert signer.public_key == store.public_info()["public_key"]
    v1 = keyring.sign(keyring.first(signer.public_key, now=T0), [signer])
    assert v1.packages_key.key_id == store.key_id
    assert v1.packages_key.roles == (Role.KEYRING, Role.PACKAGES)
    assert keyring.verify_root(v1.dumps(), store.public_info()["public_key"]) == v1
    # What the store signs today verifies against the keyring, by the same message.
    assert package_message("com.example.notes", 4, "ab" * 32, 100) == \
        signed_message("com.example.notes", 4, "ab" * 32, 100)
    signature = store.sign_package("com.example.notes", 4, "ab" * 32, 100)
    key = keyring.check_signature(v1, store.key_id, signature, package_message("com.example.notes", 4,
                                                                                "ab" * 32, 100))
    assert key.status == Status.ACTIVE


def test_the_documents_look_as_documented():
    k1, k2 = POOL[0], POOL[1]
    v1 = signed(keyring.first(k1.public_key, now=T0))
    v2 = signed(keyring.rotate(v1, k2.public_key, now=day(1)), v1)
    doc = json.loads(v2.dumps())
    assert doc == {"version": 2, "keys": [
        {"key_id": k1.key_id, "algorithm": "ed25519", "public_key": k1.public_key, "status": "retired",
         "roles": ["keyring", "packages"], "not_before": "2026-01-01T00:00:00Z", "not_after": "2026-01-02T00:00:00Z"},
        {"key_id": k2.key_id, "algorithm": "ed25519", "public_key": k2.public_key, "status": "active",
         "roles": ["keyring", "packages"], "not_before": "2026-01-02T00:00:00Z"}],
        "signatures": [{"key_id": k1.key_id, "signature": doc["signatures"][0]["signature"]},
                       {"key_id": k2.key_id, "signature": doc["signatures"][1]["signature"]}]}
    body = {k: v for k, v in doc.items() if k != "signatures"}
    message = b"mosis-keyring-v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert v2.signed_bytes() == message
    k1.private.public_key().verify(base64.b64decode(doc["signatures"][0]["signature"]), message)


# -- building versions ---------------------------------------------------------------

def test_a_keyring_key_kept_elsewhere_signs_the_same_draft_there():
    k1, root, online, online2 = POOL[0], POOL[1], POOL[2], POOL[3]
    v1 = signed(keyring.first(NewKey(root.public_key, (Role.KEYRING,)),
                              NewKey(online.public_key, (Role.PACKAGES,)), now=T0))
    draft = keyring.rotate(v1, online2.public_key, now=day(1))
    assert draft.key(online2.key_id).roles == (Role.PACKAGES,)
    # The store signs with the key it holds; the keyring key is elsewhere.
    partial = keyring.sign(draft, [online2], v1)
    assert keyring.missing_signers(partial, v1) == [root.key_id]
    assert reason(keyring.verify_next, v1, partial.dumps()) == Reason.MISSING_SIGNATURE
    # The draft travels as a document and comes back signed.
    elsewhere = keyring.sign(Keyring.parse(partial.dumps()), [root], Keyring.parse(v1.dumps()))
    assert keyring.verify_next(v1, elsewhere.dumps()) == elsewhere
    assert keyring.missing_signers(elsewhere, v1) == []
    # The retired online key was never needed: losing it loses nothing.
    assert online.key_id not in {s.key_id for s in elsewhere.signatures}
    assert reason(keyring.sign, draft, [k1], v1) == Reason.UNEXPECTED_SIGNER


def test_builders_refuse_what_a_device_would_refuse():
    k1, k2, k3 = POOL[0], POOL[1], POOL[2]
    v1 = signed(keyring.first(k1.public_key, now=T0))
    assert reason(keyring.revoke, v1, k1.key_id, now=day(1), replacement=k2.public_key) == \
        Reason.NO_TRUSTED_SIGNER
    assert reason(keyring.revoke, v1, "0" * 16, now=day(1)) == Reason.UNKNOWN_KEY
    assert reason(keyring.rotate, v1, k1.public_key, now=day(1)) == Reason.STATUS_REGRESSION
    assert reason(keyring.next_version, v1, now=day(1), retire=[k1.key_id]) == Reason.NO_ACTIVE_KEY
    assert reason(keyring.rotate, v1, k2.public_key, now=T0 - timedelta(days=1)) == Reason.MALFORMED
    assert reason(keyring.first, k1.public_key, k2.public_key, now=T0) == Reason.MALFORMED  # two packages keys
    assert reason(keyring.first, NewKey(k1.public_key, ()), now=T0) == Reason.MALFORMED  # no role
    with pytest.raises(TrustError):
        keyring.rotate(v1, "not base64", now=day(1))
    v2 = signed(keyring.rotate(v1, k2.public_key, now=day(1)), v1)
    v3 = signed(keyring.revoke(v2, k1.key_id, now=day(2)), v2)
    assert v3.key(k1.key_id).not_after == v2.key(k1.key_id).not_after  # when it stopped, kept
    assert reason(keyring.revoke, v3, k1.key_id, now=day(3)) == Reason.REVOKED_KEY
    assert reason(keyring.next_version, v3, now=day(3), add=[k1.public_key]) == Reason.STATUS_REGRESSION
    assert reason(keyring.revoke, v3, k2.key_id, now=day(3)) == Reason.NO_ACTIVE_KEY
    assert reason(keyring.revoke, v3, k2.key_id, now=day(3), replacement=k3.public_key) == \
        Reason.NO_TRUSTED_SIGNER

    class Impostor:  # claims k2's id, holds k3's key
        key_id, public_key = k2.key_id, k3.public_key
        sign = k3.sign
    draft = keyring.rotate(v3, k3.public_key, now=day(3))
    assert reason(keyring.sign, draft, [Impostor()], v3) == Reason.BAD_SIGNATURE


def test_the_only_keyring_key_is_revoked_in_two_steps():
    """A compromised single key: rotate to a new key (the old one vouches,
    as devices trust only it), then revoke it, vouched for by the new one."""
    k1, k2 = POOL[0], POOL[1]
    v1 = signed(keyring.first(k1.public_key, now=T0))
    v2 = signed(keyring.rotate(v1, k2.public_key, now=day(1)), v1)
    v3 = signed(keyring.revoke(v2, k1.key_id, now=day(1)), v2)
    assert [s.key_id for s in v3.signatures] == [k2.key_id]
    ring = keyring.verify_chain(k1.public_key, [v.dumps() for v in (v1, v2, v3)])
    assert ring.key(k1.key_id).status == Status.REVOKED
    message = package_message("com.example.notes", 1, "00" * 32, 1)
    assert reason(keyring.check_signature, ring, k1.key_id, base64.b64encode(k1.sign(message)).decode(),
                  message) == Reason.REVOKED_KEY


def test_a_key_only_start_needs_version_1():
    with pytest.raises(ValueError):
        keyring.verify_chain(POOL[0].public_key, [])
    v1 = signed(keyring.first(POOL[0].public_key, now=T0))
    assert keyring.verify_chain(v1, []) == v1
    # A version 1 shipped as it is (no pinned key): its own signatures only.
    assert keyring.verify_root(v1.dumps()) == v1
    assert reason(keyring.verify_root, keyring.sign(v1, []).to_json() | {"signatures": []}) == \
        Reason.MISSING_SIGNATURE


# -- the index -----------------------------------------------------------------------

def entry(package_id: str, signer: Ed25519Signer, version_code: int = 1) -> index.Entry:
    sha = hashlib.sha256(package_id.encode()).hexdigest()
    sig = base64.b64encode(signer.sign(package_message(package_id, version_code, sha, 10))).decode()
    return index.Entry(package_id, version_code, 10, sha, sig, signer.key_id)


def test_index_build_sign_verify():
    k1, k2 = POOL[0], POOL[1]
    v1 = signed(keyring.first(k1.public_key, now=T0))
    v2 = signed(keyring.rotate(v1, k2.public_key, now=day(1)), v1)
    made = index.make([entry("org.b.app", k2), entry("com.a.app", k1)], v2, k2, now=day(2))
    assert [e.package_id for e in made.packages] == ["com.a.app", "org.b.app"]
    assert (made.issued_at, made.expires) == ("2026-01-03T00:00:00Z", "2026-01-10T00:00:00Z")
    assert made.key_id == k2.key_id and made.keyring_version == 2
    assert made.signed_bytes().startswith(b"mosis-index-v1\n{")
    assert index.verify(made.dumps(), v2, now=day(2) - timedelta(minutes=4)) == made  # within clock skew
    assert index.verify(made.to_json(), v2, now=day(3), last_issued_at=made.issued_at).entry("org.b.app")
    old = index.make([], v2, k2, now=datetime(2000, 1, 1, tzinfo=UTC))
    assert reason(index.verify, old.dumps(), v2) == Reason.EXPIRED  # by the real clock
    fresh = index.make([], v2, k2, now=datetime.now(UTC), lifetime=timedelta(hours=1))
    assert index.verify(fresh.dumps(), v2).packages == ()
    # The store never signs an index devices must refuse.
    assert reason(index.sign, made, v2, k1) == Reason.UNEXPECTED_SIGNER
    v3 = signed(keyring.revoke(v2, k1.key_id, now=day(2)), v2)
    assert reason(index.build, [entry("com.a.app", k1)], v3, now=day(3)) == Reason.REVOKED_KEY
    forged = index.Entry(**{**entry("com.a.app", k2).to_json(), "size": 11})
    assert reason(index.build, [forged], v3, now=day(3)) == Reason.BAD_SIGNATURE
    assert reason(index.build, [entry("com.a.app", k2), entry("com.a.app", k2, 2)], v3, now=day(3)) == \
        Reason.MALFORMED
    assert reason(index.build, [index.Entry("Not An Id", 1, 1, "0" * 64, "", k2.key_id)], v3, now=day(3)) == \
        Reason.MALFORMED


# -- the shipped vectors -------------------------------------------------------------

VECTORS = json.loads((keyring_vectors.VECTORS / "index.json").read_text())["vectors"]


def test_the_vectors_are_what_the_generator_makes():
    built = keyring_vectors.build().files
    committed = {str(p.relative_to(keyring_vectors.VECTORS)): p.read_bytes()
                 for p in keyring_vectors.VECTORS.rglob("*") if p.is_file()}
    assert sorted(committed) == sorted(built)
    for path, data in built.items():
        assert committed[path] == data, f"{path} differs: rerun python -m tests.keyring_vectors"


def test_the_vectors_cover_every_reason_and_both_verdicts():
    assert len(VECTORS) >= 20
    seen = {v["expected"].get("reason") for v in VECTORS}
    assert {str(r) for r in Reason} <= seen
    assert sum(v["expected"]["verdict"] == "accept" for v in VECTORS) >= 5
    assert {v["kind"] for v in VECTORS} == {"keyring", "index", "signature"}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_vector_reaches_its_verdict(vector):
    verdict, detail = keyring_vectors.check(keyring_vectors.VECTORS, vector)
    expected = vector["expected"]
    assert verdict == expected["verdict"]
    assert detail == (expected["version"] if verdict == "accept" else expected["reason"])


def test_the_chain_signed_bytes_are_the_canonical_encoding_of_the_files():
    about = json.loads((keyring_vectors.VECTORS / "index.json").read_text())
    for item in about["chain"]:
        doc = json.loads((keyring_vectors.VECTORS / item["file"]).read_text())
        doc.pop("signatures")
        assert item["signed_bytes"].encode() == b"mosis-keyring-v1\n" + canonical.dumps(doc)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _paths(value, prefix=()):
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, child in children:
        yield from _paths(child, prefix + (name,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), any_json)
def test_hostile_documents_get_a_reason_code_and_nothing_else(data, value):
    """Any one member of a keyring or an index replaced by any JSON value:
    refused with a `TrustError` (or accepted, when it changes nothing)."""
    root = keyring_vectors.VECTORS
    ring4, ring5 = (Keyring.parse((root / f"chain/keyring-{n}.json").read_bytes()) for n in (4, 5))
    kind = data.draw(st.sampled_from(["keyring", "index"]))
    base = json.loads((root / ("chain/keyring-5.json" if kind == "keyring" else "indexes/valid.json")).read_text())
    path = data.draw(st.sampled_from(list(_paths(base))))
    doc = value
    if path:
        doc = json.loads(json.dumps(base))
        parent = doc
        for name in path[:-1]:
            parent = parent[name]
        parent[path[-1]] = value
    for form in (doc, json.dumps(doc), json.dumps(doc).encode()):
        try:
            if kind == "keyring":
                keyring.verify_next(ring4, form)
            else:
                index.verify(form, ring5, now=day(0).replace(month=5, day=3))
        except TrustError:
            pass


@pytest.mark.parametrize("kind, path", [
    ("keyring", ("keys", 0, "key_id")), ("keyring", ("keys", 0, "not_before")),
    ("keyring", ("keys", 0, "not_after")), ("keyring", ("signatures", 0, "key_id")),
    ("index", ("issued_at",)), ("index", ("packages", 0, "package_id")), ("index", ("packages", 0, "sha256")),
    ("index", ("packages", 0, "key_id")), ("index", ("signatures", 0, "key_id"))])
def test_a_trailing_newline_is_malformed(kind, path):
    root = keyring_vectors.VECTORS
    ring = Keyring.parse((root / "chain/keyring-4.json").read_bytes())
    doc = json.loads((root / ("chain/keyring-5.json" if kind == "keyring" else "indexes/valid.json")).read_text())
    parent = doc
    for name in path[:-1]:
        parent = parent[name]
    parent[path[-1]] += "\n"
    if kind == "keyring":
        assert reason(keyring.verify_next, ring, json.dumps(doc)) == Reason.MALFORMED
    else:
        assert reason(Index.parse, json.dumps(doc)) == Reason.MALFORMED


def test_docs_name_every_reason_code():
    text = (ROOT / "docs" / "signing.md").read_text()
    missing = [str(r) for r in Reason if f"`{r}`" not in text]
    assert not missing


def test_the_formats_import_no_server_library():
    code = ("import sys, mosis_format.keyring, mosis_format.index; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'flask', 'peewee', 'minio', 'psycopg2', 'PIL', 'apscheduler', 'requests', 'app'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- property: random rotations and revocations ----------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["rotate", "split", "add_keyring", "rotate_keyring", "revoke",
                                          "retire_keyring"]), st.integers(0, 50)), min_size=1, max_size=8)


def build_chain(ops) -> list[Keyring]:
    fresh = iter(POOL[1:])
    chain = [signed(keyring.first(POOL[0].public_key, now=T0))]
    for n, (op, pick) in enumerate(ops, start=1):
        prev, now = chain[-1], day(n)
        packages = prev.packages_key
        keyring_only = [k for k in prev.active(Role.KEYRING) if not k.has(Role.PACKAGES)]
        live = [k for k in prev.keys if k.status != Status.REVOKED]
        try:
            if op == "rotate":
                draft = keyring.rotate(prev, next(fresh).public_key, now=now)
            elif op == "split" and packages.has(Role.KEYRING):
                draft = keyring.next_version(prev, now=now, retire=[packages.key_id],
                                             add=[NewKey(next(fresh).public_key, (Role.KEYRING,)),
                                                  NewKey(next(fresh).public_key, (Role.PACKAGES,))])
            elif op == "add_keyring":
                draft = keyring.next_version(prev, now=now, add=[NewKey(next(fresh).public_key, (Role.KEYRING,))])
            elif op == "rotate_keyring" and keyring_only:
                old = keyring_only[pick % len(keyring_only)]
                draft = keyring.rotate(prev, next(fresh).public_key, now=now, retire=old.key_id)
            elif op == "revoke":
                old = live[pick % len(live)]
                replacement = next(fresh).public_key if old.active else None
                draft = keyring.revoke(prev, old.key_id, now=now, replacement=replacement)
            elif op == "retire_keyring" and len(prev.active(Role.KEYRING)) > 1 and keyring_only:
                draft = keyring.next_version(prev, now=now, retire=[keyring_only[pick % len(keyring_only)].key_id])
            else:
                continue
        except TrustError as e:
            # Only the one refusal a legal sequence can meet: revoking the last keyring key.
            assert e.code == Reason.NO_TRUSTED_SIGNER
            continue
        chain.append(signed(draft, prev))
    return chain


def _changed(doc: dict, edits) -> list[dict]:
    out = []
    for edit in edits:
        copy = json.loads(json.dumps(doc))
        edit(copy)
        if copy != doc:
            out.append(copy)
    return out


def _signature(signer: Ed25519Signer, doc: dict) -> dict:
    body = {k: v for k, v in doc.items() if k != "signatures"}
    sig = signer.sign(b"mosis-keyring-v1\n" + canonical.dumps(body))
    return {"key_id": signer.key_id, "signature": base64.b64encode(sig).decode()}


def tamperings(doc: dict, pick: int) -> list[dict]:
    """Every way to change one thing in a signed keyring document without
    signing it again (a signature added is a real one)."""
    edits = [lambda d, x=x: d.update(version=max(1, d["version"] + x)) for x in (-1, 1, 2)]
    for i, _ in enumerate(doc["signatures"]):
        edits += [lambda d, i=i: d["signatures"].pop(i),
                  lambda d, i=i: d["signatures"][i].update(
                      signature=keyring_vectors._flip(d["signatures"][i]["signature"])),
                  lambda d, i=i: d["signatures"].append(dict(d["signatures"][i]))]
    for i, _ in enumerate(doc["keys"]):
        edits += [lambda d, i=i, s=s: d["keys"][i].update(status=s) for s in ("active", "retired", "revoked")]
        edits += [lambda d, i=i, r=r: d["keys"][i].update(roles=r)
                  for r in (["keyring"], ["packages"], ["keyring", "packages"])]
        other = POOL[(pick + i) % len(POOL)]
        edits += [lambda d, i=i: d["keys"].pop(i),
                  lambda d, i=i: d["keys"][i].update(not_before="2020-01-01T00:00:00Z"),
                  lambda d, i=i: d["keys"][i].update(not_after="2030-01-01T00:00:00Z"),
                  lambda d, i=i: d["keys"][i].pop("not_after", None),
                  lambda d, i=i, o=other: d["keys"][i].update(key_id=o.key_id, public_key=o.public_key)]
    edits.append(lambda d: d["keys"].reverse())
    signers = {s.key_id: s for s in POOL[:3] + [BY_ID[k["key_id"]] for k in doc["keys"]]}
    signed_by = {s["key_id"] for s in doc["signatures"]}
    edits += [lambda d, s=s: d["signatures"].append(_signature(s, doc))
              for s in signers.values() if s.key_id not in signed_by]
    return _changed(doc, edits)


def illegal_changes(prev: dict, doc: dict) -> list[dict]:
    """Changes the chain rule forbids, signed again by the same keys: what
    a store holding every key still may not publish."""
    edits = [lambda d, x=x: d.update(version=max(1, d["version"] + x)) for x in (-1, 1)]
    for old in prev["keys"]:
        i = next(n for n, k in enumerate(doc["keys"]) if k["key_id"] == old["key_id"])
        edits += [lambda d, i=i: d["keys"].pop(i),
                  lambda d, i=i: d["keys"][i].update(not_before="2020-01-01T00:00:00Z"),
                  lambda d, i=i: d["keys"][i].update(roles=["packages"] if "keyring" in d["keys"][i]["roles"]
                                                     else ["keyring"])]
        if old["status"] != "active":
            edits += [lambda d, i=i: d["keys"][i].update(not_after="2030-01-01T00:00:00Z"),
                      lambda d, i=i: (d["keys"][i].update(status="active"), d["keys"][i].pop("not_after"))]
        if old["status"] == "revoked":
            edits.append(lambda d, i=i: d["keys"][i].update(status="retired"))
    out = []
    for changed in _changed(doc, edits):
        changed["signatures"] = [_signature(BY_ID[s["key_id"]], changed) for s in doc["signatures"]]
        out.append(changed)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(0, 10_000))
def test_random_rotations_and_revocations_verify_from_any_pin_and_no_mutation_passes(ops, pick):
    chain = build_chain(ops)
    docs = [r.dumps() for r in chain]
    # From the first key, and from every version a device may have pinned.
    assert keyring.verify_chain(POOL[0].public_key, docs) == chain[-1]
    for i, pinned in enumerate(chain):
        ring = pinned
        for j in range(i + 1, len(chain)):
            ring = keyring.verify_next(ring, docs[j])
            assert ring == chain[j]
        for j in range(i + 1):
            assert reason(keyring.verify_next, pinned, docs[j]) == Reason.ROLLBACK
        if i + 2 < len(chain):
            assert reason(keyring.verify_next, pinned, docs[i + 2]) == Reason.GAP
    # Any change to any version is refused by a device holding the one
    # before; one the chain rule forbids, even when signed again.
    for j in range(1, len(chain)):
        original = chain[j].to_json()
        for mutated in tamperings(original, pick):
            with pytest.raises(TrustError):
                keyring.verify_next(chain[j - 1], mutated)
        for mutated in illegal_changes(chain[j - 1].to_json(), original):
            assert reason(keyring.verify_next, chain[j - 1], mutated) != Reason.BAD_SIGNATURE
    # The invariants hold in every version.
    for ring in chain:
        assert len(ring.active(Role.PACKAGES)) == 1 and ring.active(Role.KEYRING)
