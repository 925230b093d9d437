"""The store's keyring, rotation and revocation, seen from a device.

A device pins the store's first key, follows every keyring version with
mosis_format's verifier, and checks every download answer it is given
against the keyring it holds; the store rotates and revokes between and
during the re-signing, and no answer is ever one the device must refuse.
"""

from __future__ import annotations

import base64
import json
import threading

import pytest

from app.catalog import signatures
from app.platform import keys
from app.platform.models import KeyringVersion, Version
from mosis_format import index as mindex
from mosis_format import keyring as kr
from mosis_format.signing import Reason, TrustError, package_message
from tests.helpers import ADMIN


class Device:
    """What a phone keeps: the first key it shipped with, then the last
    keyring it verified; it checks downloads against it."""

    def __init__(self, client, pinned: str):
        self.client, self.pinned, self.ring = client, pinned, None

    def update(self) -> kr.Keyring:
        current = self.client.get("/v1/signing-keys").json
        start = self.ring.version if self.ring else 0
        docs = [self.client.get(f"/v1/signing-keys/{v}").json for v in range(start + 1, current["version"] + 1)]
        self.ring = kr.verify_chain(self.ring or self.pinned, docs)
        assert self.ring.to_json() == current
        return self.ring

    def check_download(self, package_id: str) -> str:
        info = self.client.get(f"/v1/packages/{package_id}/download").json
        message = package_message(package_id, info["version_code"], info["sha256"], info["size"])
        try:
            kr.check_signature(self.ring, info["key_id"], info["signature"], message)
        except TrustError as e:
            if e.code != Reason.UNKNOWN_KEY:
                raise
            self.update()  # a key it does not know yet: follow the keyring, check again
            kr.check_signature(self.ring, info["key_id"], info["signature"], message)
        return info["key_id"]


@pytest.fixture
def shipped(api, client):
    dev = api.new_developer()
    apps = [api.create_app(dev) for _ in range(3)]
    for app in apps:
        api.ship(dev, app, 1)
        api.ship(dev, app, 2)  # version 1 superseded
    first = client.get("/v1/signing-key").json
    device = Device(client, first["public_key"])
    device.update()
    return {"dev": dev, "packages": [a["package_id"] for a in apps], "first": first, "device": device}


def test_version_1_is_the_existing_key_and_signing_key_answers_the_active_one(client, services, shipped):
    ring = shipped["device"].ring
    assert ring.version == 1 and [k.key_id for k in ring.keys] == [services.signing_key.key_id]
    assert shipped["first"]["key_id"] == services.signing_key.key_id
    assert client.get("/v1/signing-keys/2").json["error"]["code"] == "keyring_version_not_found"
    r = client.get("/v1/signing-keys/1")
    assert r.headers["ETag"] and client.get("/v1/signing-keys/1", headers={
        "If-None-Match": r.headers["ETag"]}).status_code == 304
    assert all(v.key_id == services.signing_key.key_id for v in Version.select() if v.signature)


def test_rotation_and_revocation_never_serve_an_unverifiable_signature(client, services, shipped):
    device, packages = shipped["device"], shipped["packages"]
    first = shipped["first"]["key_id"]
    # Rotate the keyring alone: nothing re-signed yet, every answer still verifies.
    _, new = keys.rotate(services.keys)
    assert {device.check_download(p) for p in packages} == {first}
    assert device.ring.version == 1  # the retired key is still the one it knows
    # Re-sign one version at a time; between each step, every answer verifies.
    while signatures.resign_all(services, limit=1):
        for p in packages:
            assert device.check_download(p) in {first, new.key_id}
    assert {device.check_download(p) for p in packages} == {new.key_id}
    assert device.update().version == 2
    assert client.get("/v1/signing-key").json["key_id"] == new.key_id
    # A version signed by the first key, as if the job had not reached it.
    Version.update(signature=services.signing_key.sign_package("x.y", 1, "0" * 64, 1), key_id=first).where(
        Version.status == "published").execute()
    # Revoke the first key: a download never hands out its signature again.
    r = client.post(f"/v1/admin/signing-keys/{first}/revoke", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["keyring"]["version"] == 3 and r.json["active_key"] == new.key_id
    assert {device.check_download(p) for p in packages} == {new.key_id}
    assert device.update().key(first).status == kr.Status.REVOKED
    assert Version.select().where(Version.key_id == first).count() == 0


def test_rotation_and_revocation_under_load(app, client, shipped):
    """Downloads run in threads, each a device that follows the keyring and
    then asks for a download: while the store rotates and revokes, every
    answer verifies against a keyring at least as new as the device's."""
    packages, first = shipped["packages"], shipped["first"]
    stop, lock = threading.Event(), threading.Lock()
    seen: list[tuple[int, str]] = []  # (keyring version the device held, key_id)
    errors: list[BaseException] = []

    def downloads():
        device = Device(app.test_client(), first["public_key"])
        try:
            while not stop.is_set():
                for p in packages:
                    held = device.update().version  # before the answer: it is at least as new
                    key_id = device.check_download(p)
                    with lock:
                        seen.append((held, key_id))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=downloads) for _ in range(3)]
    for t in threads:
        t.start()

    def after(n: int) -> None:  # let the devices download n more times
        with lock:
            goal = len(seen) + n
        while len(seen) < goal and not errors:
            stop.wait(0.01)

    try:
        after(6)
        rotated = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN)
        assert rotated.status_code == 200, rotated.json
        after(12)
        revoked = client.post(f"/v1/admin/signing-keys/{first['key_id']}/revoke", headers=ADMIN)
        assert revoked.status_code == 200, revoked.json
        after(12)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    new = rotated.json["new_key"]
    assert {k for _, k in seen} == {first["key_id"], new}
    # Once a device holds the keyring that revokes the first key, it never sees its signature.
    assert [k for v, k in seen if v == 3] and all(k == new for v, k in seen if v == 3)


def test_a_device_refuses_forgery_rollback_revoked_signatures_and_expired_indexes(client, services, shipped):
    device = shipped["device"]
    first = shipped["first"]
    assert client.post("/v1/admin/signing-keys/rotate", headers=ADMIN).status_code == 200
    v1, v2 = (client.get(f"/v1/signing-keys/{v}").json for v in (1, 2))
    ring1 = kr.verify_root(v1, first["public_key"])
    ring2 = kr.verify_next(ring1, v2)
    # Forged: a key swapped in by someone without the store's keys.
    attacker = keys.SigningKey.generate()
    forged = kr.sign(kr.rotate(ring1, attacker.public_key, now=keys._aware()), [attacker], ring1)
    with pytest.raises(TrustError) as e:
        kr.verify_next(ring1, forged.dumps())
    assert e.value.code == Reason.MISSING_SIGNATURE
    tampered = json.loads(json.dumps(v2))
    tampered["keys"][1]["not_before"] = "2000-01-01T00:00:00Z"
    with pytest.raises(TrustError) as e:
        kr.verify_next(ring1, tampered)
    assert e.value.code == Reason.BAD_SIGNATURE
    # Rollback: version 1 offered to a device that holds version 2.
    with pytest.raises(TrustError) as e:
        kr.verify_next(ring2, v1)
    assert e.value.code == Reason.ROLLBACK
    # A signature by the revoked key.
    assert client.post(f"/v1/admin/signing-keys/{first['key_id']}/revoke", headers=ADMIN).status_code == 200
    ring3 = device.update()
    old = services.signing_key.sign_package("com.example.a", 1, "0" * 64, 10)
    with pytest.raises(TrustError) as e:
        kr.check_signature(ring3, first["key_id"], old, package_message("com.example.a", 1, "0" * 64, 10))
    assert e.value.code == Reason.REVOKED_KEY
    # Its own keyring: every version in the database is what the device walked.
    assert [r.version for r in KeyringVersion.select().order_by(KeyringVersion.version)] == [1, 2, 3]
    assert mindex  # the index is checked in tests/test_catalog_index.py


def test_the_only_keyring_key_cannot_be_revoked_and_an_absent_keyring_key_stops_rotation(app, client, services,
                                                                                         shipped):
    first = shipped["first"]["key_id"]
    r = client.post(f"/v1/admin/signing-keys/{first}/revoke", headers=ADMIN)
    assert r.status_code == 409 and r.json["error"]["details"] == {"reason": "no_trusted_signer"}
    assert client.post(f"/v1/admin/signing-keys/{'0' * 16}/revoke", headers=ADMIN).status_code == 404
    # Split the roles: a keyring key kept off the server.
    offline = keys.SigningKey.generate()
    path = services.settings.data_dir / "offline.key"
    path.write_bytes(base64.b64encode(offline.private.private_bytes_raw()))
    result = app.test_cli_runner().invoke(args=["signing-keys", "split", str(path)])
    assert result.exit_code == 0, result.output
    ring = kr.Keyring.parse(json.loads(result.output)["keyring"])
    assert [k.key_id for k in ring.active(kr.Role.KEYRING)] == [offline.key_id]
    assert ring.packages_key.key_id != first and not (services.keys.dir / f"{offline.key_id}.pem").exists()
    r = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN)
    assert r.status_code == 409 and r.json["error"]["code"] == "keyring_key_missing"
    assert r.json["error"]["details"] == {"missing": [offline.key_id]}
    # Handed over for the one command, it works.
    out = signatures.rotate(services, "cli", services.keys.with_keys([offline]))
    assert out["keyring"]["version"] == 3 and out["active_key"] != first
    assert shipped["device"].update().version == 3


def test_flask_commands_rotate_and_revoke(app, client, services, shipped, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["signing-keys", "rotate"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["keyring"]["version"] == 2 and out["resigned"] == 6
    result = runner.invoke(args=["signing-keys", "revoke", shipped["first"]["key_id"]])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["keyring"]["version"] == 3
    result = runner.invoke(args=["signing-keys", "revoke", "ffffffffffffffff"])
    assert result.exit_code != 0 and "signing_key_not_found" in result.output
    assert shipped["device"].update().version == 3
    for p in shipped["packages"]:
        assert shipped["device"].check_download(p) == out["active_key"]
