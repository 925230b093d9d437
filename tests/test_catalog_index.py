"""The signed catalog index (`/v1/index.json`), seen from a device.

The device holds the keyring it verified (from the store's first key) and
checks each index with mosis_format.index.verify: the index lists every
app's current version exactly as its download answers it, is signed anew
whenever the catalog or the keyring changes and before a third of its life
has passed, and an expired, stale or rolled-back one is refused.
"""

from __future__ import annotations

import datetime as dt

import pytest

from app.catalog import signatures
from app.platform.models import SignedIndex
from mosis_format import canonical
from mosis_format import index as mindex
from mosis_format import keyring as kr
from mosis_format.signing import Reason, TrustError
from tests.helpers import ADMIN


def follow(client, ring: kr.Keyring | None = None) -> kr.Keyring:
    """The device's keyring after following the store's chain."""
    current = client.get("/v1/signing-keys").json["version"]
    start = ring.version if ring else 0
    docs = [client.get(f"/v1/signing-keys/{v}").json for v in range(start + 1, current + 1)]
    return kr.verify_chain(ring or client.get("/v1/signing-key").json["public_key"], docs)


def entry_of(download: dict, package_id: str) -> dict:
    return {"package_id": package_id, "version_code": download["version_code"], "size": download["size"],
            "sha256": download["sha256"], "signature": download["signature"], "key_id": download["key_id"]}


@pytest.fixture
def catalog(api, client):
    dev = api.new_developer()
    apps = sorted((api.create_app(dev) for _ in range(3)), key=lambda a: a["package_id"])
    api.ship(dev, apps[0], 1)
    api.ship(dev, apps[0], 2)  # version 1 superseded: not listed
    api.ship(dev, apps[1], 1)
    api.submit(dev, apps[2], 1)  # a draft only: not listed
    return {"dev": dev, "apps": apps, "ring": follow(client)}


def test_the_index_lists_every_current_version_signed_by_the_active_key(client, services, catalog):
    ring, apps = catalog["ring"], catalog["apps"]
    r = client.get("/v1/index.json")
    assert r.status_code == 200 and r.headers["Cache-Control"].startswith("public, max-age=")
    index = mindex.verify(r.json, ring)
    assert index.keyring_version == 1 and index.key_id == ring.packages_key.key_id
    listed = [apps[0]["package_id"], apps[1]["package_id"]]
    assert [e.to_json() for e in index.packages] == [
        entry_of(client.get(f"/v1/packages/{p}/download").json, p) for p in listed]
    assert index.entry(apps[0]["package_id"]).version_code == 2
    issued, expires = (canonical.parse_time(t) for t in (index.issued_at, index.expires))
    assert expires - issued == dt.timedelta(seconds=services.settings.index_lifetime) == dt.timedelta(days=7)
    # What is served is what is stored, and asked again it is the same answer.
    assert mindex.Index.parse(SignedIndex.get_by_id(1).document) == index
    again = client.get("/v1/index.json", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == r.headers["ETag"]
    # A tampered index is refused.
    forged = {**r.json, "packages": [{**r.json["packages"][0], "version_code": 1}, r.json["packages"][1]]}
    with pytest.raises(TrustError) as e:
        mindex.verify(forged, ring)
    assert e.value.code == Reason.BAD_SIGNATURE


def test_the_index_is_signed_anew_on_publish_pull_and_keyring_changes(api, client, catalog):
    dev, apps, ring = catalog["dev"], catalog["apps"], catalog["ring"]
    first = mindex.verify(client.get("/v1/index.json").json, ring)
    # Publish: the draft becomes the app's current version.
    api.publish(dev, apps[2], 1)
    published = mindex.verify(client.get("/v1/index.json").json, ring, last_issued_at=first.issued_at)
    assert [e.package_id for e in published.packages] == [a["package_id"] for a in apps]
    # Supersede: a newer version replaces the entry.
    api.ship(dev, apps[1], 2)
    superseded = mindex.verify(client.get("/v1/index.json").json, ring, last_issued_at=published.issued_at)
    assert superseded.entry(apps[1]["package_id"]).version_code == 2
    # Pull: the app has no current version any more.
    version_id = api.version(dev, apps[1], 2)["id"]
    assert client.post(f"/v1/admin/versions/{version_id}/pull", headers=ADMIN,
                       json={"reason": "malware"}).status_code == 200
    pulled = mindex.verify(client.get("/v1/index.json").json, ring, last_issued_at=superseded.issued_at)
    assert pulled.entry(apps[1]["package_id"]) is None and len(pulled.packages) == 2
    # Rotate: signed by the new key under keyring version 2; the old index is stale.
    rotated = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN).json
    ring2 = follow(client, ring)
    doc = client.get("/v1/index.json").json
    index2 = mindex.verify(doc, ring2, last_issued_at=pulled.issued_at)
    assert index2.keyring_version == 2 and index2.key_id == rotated["new_key"]
    assert {e.key_id for e in index2.packages} == {rotated["new_key"]}
    with pytest.raises(TrustError) as e:
        mindex.verify(pulled.dumps(), ring2)
    assert e.value.code == Reason.STALE_KEYRING
    # A device that has not followed the rotation is told to.
    with pytest.raises(TrustError) as e:
        mindex.verify(doc, ring)
    assert e.value.code == Reason.KEYRING_UPDATE_NEEDED
    # Revoke the first key: the index never names it.
    assert client.post(f"/v1/admin/signing-keys/{ring.packages_key.key_id}/revoke",
                       headers=ADMIN).status_code == 200
    ring3 = follow(client, ring2)
    index3 = mindex.verify(client.get("/v1/index.json").json, ring3, last_issued_at=index2.issued_at)
    assert index3.keyring_version == 3 and ring.packages_key.key_id not in {e.key_id for e in index3.packages}


def test_the_scheduler_signs_a_fresh_index_before_half_its_life_and_repairs_a_missed_change(services, catalog):
    row, signed = signatures.refresh_index(services)
    assert not signed  # publishing signed it already
    issued = row.issued_at
    life = row.expires_at - issued
    assert signatures.index_job(services, issued + life / 4) == {"items": 0}
    assert SignedIndex.get_by_id(1).issued_at == issued
    assert signatures.index_job(services, issued + life / 3) == {"items": 1}
    fresh = SignedIndex.get_by_id(1)
    assert fresh.issued_at == (issued + life / 3).replace(microsecond=0)
    assert fresh.expires_at - fresh.issued_at == life
    assert fresh.issued_at - issued < life / 2
    # A change whose refresh was missed: the job signs the index anew.
    SignedIndex.update(digest="0" * 64).execute()
    assert signatures.index_job(services, fresh.issued_at) == {"items": 1}
    assert SignedIndex.get_by_id(1).digest != "0" * 64
    # Never backwards: a refresh at an earlier clock keeps the later issued_at.
    SignedIndex.update(digest="0" * 64).execute()
    row, _ = signatures.refresh_index(services, issued)
    assert row.issued_at == fresh.issued_at


def test_an_expired_or_rolled_back_index_is_refused(client, catalog):
    ring = catalog["ring"]
    doc = client.get("/v1/index.json").json
    index = mindex.verify(doc, ring)
    expires = canonical.parse_time(index.expires)
    assert mindex.verify(doc, ring, now=expires - dt.timedelta(seconds=1)) == index
    with pytest.raises(TrustError) as e:
        mindex.verify(doc, ring, now=expires)
    assert e.value.code == Reason.EXPIRED
    later = canonical.format_time(canonical.parse_time(index.issued_at) + dt.timedelta(seconds=1))
    with pytest.raises(TrustError) as e:
        mindex.verify(doc, ring, last_issued_at=later)
    assert e.value.code == Reason.ROLLBACK
