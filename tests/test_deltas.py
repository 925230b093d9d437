"""Delta updates, server side: the queue that makes patches, the download
API's `delta`, and removal with the versions (real SeaweedFS, SQLite and
PostgreSQL). The edge serving a patch is in tests/test_edge.py, the client's
use of one in tests/test_cli.py."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.catalog import deltas, signatures
from app.platform import keys
from app.platform.clock import utcnow
from app.platform.models import Delta, DeltaStatus
from mosis_format import keyring as kr
from mosis_format.delta import apply, signed_message
from tests.delta_packages import app_files
from tests.helpers import ADMIN, build_package, sha256


def ship(api, dev, app, code: int, files: dict[str, bytes]) -> dict:
    return api.ship(dev, app, code, build_package(app["package_id"], code, files))


@pytest.fixture
def published(api, services):
    """An app with versions 1, 2 (a small change) and 3 (all new): the
    scheduler's queue run once."""
    dev = api.new_developer()
    app = api.create_app(dev)
    packages = {1: build_package(app["package_id"], 1, app_files(7, 1)),
                2: build_package(app["package_id"], 2, app_files(7, 2))}
    for code in (1, 2):
        api.ship(dev, app, code, packages[code])
    return dev, app, packages


def rows(app_id: str) -> dict[tuple[int, int], Delta]:
    return {(d.from_version_code, d.to_version_code): d for d in Delta.select().where(Delta.app == app_id)}


def test_the_queue_makes_signed_patches_and_skips_those_above_the_ratio(api, services, published, tmp_path):
    dev, app, packages = published
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.PENDING  # queued by the publish itself
    assert deltas.run_pending(services, "worker-a") == ["ready"]
    patch = rows(app["id"])[(1, 2)]
    assert patch.status == DeltaStatus.READY and patch.attempts == 1 and patch.lease_owner is None
    assert patch.size <= services.settings.delta_max_ratio * len(packages[2])
    key = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    stored = b"".join(services.storage.stream(key))
    assert len(stored) == patch.size and sha256(stored) == patch.sha256
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(services.signing_key.public_info()["public_key"]))
    public.verify(base64.b64decode(patch.signature), signed_message(
        app["package_id"], 1, sha256(packages[1]), 2, sha256(packages[2]), patch.sha256, patch.size))
    (tmp_path / "1.mosis").write_bytes(packages[1])
    (tmp_path / "p").write_bytes(stored)
    apply(tmp_path / "1.mosis", tmp_path / "p", tmp_path / "2.mosis")
    assert (tmp_path / "2.mosis").read_bytes() == packages[2]

    # Version 3 shares nothing with 1 or 2: both patches are larger than the ratio allows.
    ship(api, dev, app, 3, app_files(99, 3))
    assert sorted(deltas.run_pending(services, "worker-a")) == ["too_large", "too_large"]
    found = rows(app["id"])
    for source in (1, 2):
        assert found[(source, 3)].status == DeltaStatus.SKIPPED and found[(source, 3)].reason == "too_large"
        assert services.storage.stat(f"deltas/{dev['id']}/{app['id']}/{source}-3.patch") is None
    assert deltas.queue_depth() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_only_the_newest_previous_versions_are_sources(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    for code in range(1, 6):
        api.ship(dev, app, code)
    sources = sorted(f for f, t in rows(app["id"]) if t == 5)
    assert sources == [2, 3, 4]  # MOSIS_DELTA_FROM_VERSIONS: 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_crashed_worker_s_patch_is_claimed_again_after_its_lease(services, published):
    _, app, _ = published
    now = utcnow()
    claimed = deltas.claim_next("worker-a", now)  # and the worker dies
    assert claimed is not None and claimed.attempts == 1
    assert deltas.claim_next("worker-b", now + dt.timedelta(seconds=60)) is None  # leased
    later = now + dt.timedelta(seconds=deltas.LEASE_SECONDS + 1)
    again = deltas.claim_next("worker-b", later)
    assert again.id == claimed.id and again.attempts == 2 and again.lease_owner == "worker-b"
    assert deltas.make_claimed(services, again, "worker-b") == "ready"
    # The first worker, back to life, cannot finish what it no longer holds.
    assert not deltas._finish(claimed, "worker-a", DeltaStatus.FAILED, reason="late")
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.READY


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_patch_that_keeps_crashing_fails_and_the_full_download_stays(client, services, published):
    _, app, packages = published
    now = utcnow()
    for attempt in range(deltas.MAX_ATTEMPTS + 1):
        claimed = deltas.claim_next("worker-a", now + dt.timedelta(seconds=attempt * (deltas.LEASE_SECONDS + 1)))
    assert claimed.attempts == deltas.MAX_ATTEMPTS + 1
    assert deltas.make_claimed(services, claimed, "worker-a") == "attempts_exhausted"
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.FAILED
    r = client.get(f"/v1/packages/{app['package_id']}/download?from_version_code=1")
    assert r.status_code == 200 and "delta" not in r.json and r.json["sha256"] == sha256(packages[2])


def test_the_download_answer_has_a_delta_only_from_a_version_with_a_patch(client, services, published):
    dev, app, packages = published
    base = f"/v1/packages/{app['package_id']}/download"
    assert "delta" not in client.get(f"{base}?from_version_code=1").json  # not made yet: no error
    deltas.run_pending(services, "worker-a")
    plain = client.get(base)
    assert plain.status_code == 200 and "delta" not in plain.json
    for query in ("from_version_code=1", f"from_sha256={sha256(packages[1])}"):
        r = client.get(f"{base}?{query}")
        assert r.status_code == 200, r.json
        delta = r.json["delta"]
        assert set(delta) == {"url", "size", "sha256", "algorithm", "from_version_code", "from_sha256",
                              "signature", "key_id", "expires_at"}
        assert delta["key_id"] == services.signing_key.key_id
        assert delta["algorithm"] == "mosis-zipdelta-v1" and delta["from_version_code"] == 1
        assert delta["from_sha256"] == sha256(packages[1]) and delta["expires_at"] == r.json["expires_at"]
        assert f"/deltas/{dev['id']}/{app['id']}/1-2.patch?expires=" in delta["url"]
        assert {k: v for k, v in r.json.items() if k not in ("delta", "download_url")} == \
            {k: v for k, v in plain.json.items() if k != "download_url"}
    # A version without a patch, an unknown one, a sha256 nobody has: the full download only.
    for query in ("from_version_code=2", "from_version_code=77", f"from_sha256={'0' * 64}",
                  f"from_version_code=1&from_sha256={'0' * 64}"):
        r = client.get(f"{base}?{query}")
        assert r.status_code == 200 and "delta" not in r.json, query
    for query, name in (("from_version_code=abc", "from_version_code"), ("from_version_code=0", "from_version_code"),
                        ("from_version_code=2147483648", "from_version_code"),
                        ("from_version_code=1&from_version_code=1", "from_version_code"),
                        (f"from_sha256={'A' * 64}", "from_sha256"), ("from_sha256=12", "from_sha256")):
        r = client.get(f"{base}?{query}")
        assert r.status_code == 400, query
        assert r.json["error"]["code"] == "invalid_parameter" and r.json["error"]["details"] == {"parameter": name}


def test_pulling_a_version_removes_the_patches_to_and_from_it(client, services, published):
    dev, app, packages = published
    deltas.run_pending(services, "worker-a")
    key = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    purged: list[list[str]] = []
    services.cache_purgers.append(purged.append)
    version_1 = client.get(f"/v1/apps/{app['id']}/versions/1", headers=dev["headers"]).json["version"]
    r = client.post(f"/v1/admin/versions/{version_1['id']}/pull", json={"reason": "broken"}, headers=ADMIN)
    assert r.status_code == 200
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.REMOVED
    assert services.storage.stat(key) is None
    assert any(key in keys for keys in purged)  # the edge and the CDN forget it too
    r = client.get(f"/v1/packages/{app['package_id']}/download?from_version_code=1")
    assert r.status_code == 200 and "delta" not in r.json
    assert deltas.servable(key) is None


def test_pulling_the_target_removes_its_patches(client, services, published):
    dev, app, _ = published
    deltas.run_pending(services, "worker-a")
    version_2 = client.get(f"/v1/apps/{app['id']}/versions/2", headers=dev["headers"]).json["version"]
    assert deltas.servable(f"deltas/{dev['id']}/{app['id']}/1-2.patch") is not None
    r = client.post(f"/v1/admin/versions/{version_2['id']}/pull", json={"reason": "broken"}, headers=ADMIN)
    assert r.status_code == 200
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.REMOVED
    assert services.storage.stat(f"deltas/{dev['id']}/{app['id']}/1-2.patch") is None
    assert client.get(f"/v1/packages/{app['package_id']}/download?from_version_code=1").status_code == 404


def test_a_patch_made_while_its_source_was_pulled_is_not_kept(client, services, published):
    dev, app, _ = published
    claimed = deltas.claim_next("worker-a")
    version_1 = client.get(f"/v1/apps/{app['id']}/versions/1", headers=dev["headers"]).json["version"]
    assert client.post(f"/v1/admin/versions/{version_1['id']}/pull", json={"reason": "x"},
                       headers=ADMIN).status_code == 200
    assert deltas.make_claimed(services, claimed, "worker-a") == "version_gone"
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.REMOVED
    assert services.storage.stat(f"deltas/{dev['id']}/{app['id']}/1-2.patch") is None


def test_retention_purging_the_source_deletes_the_patch(client, services, published):
    from app.housekeeping.retention import run_retention

    dev, app, packages = published
    deltas.run_pending(services, "worker-a")
    key = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    forecast = run_retention(services, utcnow() + dt.timedelta(days=400), dry_run=True)
    (item,) = [i for i in forecast["items"] if i["app_id"] == app["id"]]
    assert key in [o["key"] for o in item["objects"]]  # counted in what the purge frees
    run_retention(services, utcnow() + dt.timedelta(days=400))
    assert services.storage.stat(key) is None
    assert rows(app["id"])[(1, 2)].status == DeltaStatus.REMOVED
    r = client.get(f"/v1/packages/{app['package_id']}/download?from_sha256={sha256(packages[1])}")
    assert r.status_code == 200 and "delta" not in r.json


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_patch_bytes_sent_and_the_full_bytes_they_replaced_reach_the_costs(client, services, published):
    from app.edge.access_log import tail
    from app.platform.models import EdgeTraffic
    from tests.monitoring_helpers import edge_line

    dev, app, packages = published
    deltas.run_pending(services, "worker-a")
    patch = rows(app["id"])[(1, 2)]
    uri = f"/deltas/{dev['id']}/{app['id']}/1-2.patch"
    now = utcnow().strftime("%Y-%m-%dT%H:%M:%S+00:00")
    log = services.settings.resolved_edge_access_log
    log.parent.mkdir(parents=True, exist_ok=True)
    half = patch.size // 2
    log.write_text(edge_line(uri=uri, bytes_sent=patch.size + 300, cache="MISS", time=now)  # whole
                   + edge_line(uri=uri, status=206, bytes_sent=half + 300, time=now)  # a resumed half
                   + edge_line(uri=uri, status=404, bytes_sent=400, time=now))  # refused: replaces nothing
    assert tail(log) == 3
    replaced = len(packages[2]) + len(packages[2]) * half // patch.size
    (row,) = EdgeTraffic.select().where(EdgeTraffic.area == "deltas")
    assert row.replaced_bytes == replaced and row.downloads == 0  # patches are not package downloads
    report = client.get("/v1/admin/costs", headers=ADMIN).json["deltas"]
    sent = patch.size + half + 1000
    assert report["patch_bytes_sent"] == sent and report["full_bytes_replaced"] == replaced
    assert report["egress_saved_bytes"] == replaced - sent > 0



# -- signatures under a changing keyring -------------------------------------------------------

def offered(client, package_id: str, from_version_code: int = 1) -> dict:
    """The download answer's delta, its signature checked as a device does:
    with the key its key_id names in the store's current keyring."""
    info = client.get(f"/v1/packages/{package_id}/download?from_version_code={from_version_code}").json
    delta = info["delta"]
    ring = kr.Keyring.parse(client.get("/v1/signing-keys").json)
    kr.check_signature(ring, delta["key_id"], delta["signature"], signed_message(
        package_id, delta["from_version_code"], delta["from_sha256"], info["version_code"], info["sha256"],
        delta["sha256"], delta["size"]))
    return delta


def test_rotation_re_signs_ready_patches_and_the_offer_names_the_new_key(client, services, published):
    _, app, _ = published
    deltas.run_pending(services, "worker-a")
    first = services.signing_key.key_id
    assert rows(app["id"])[(1, 2)].key_id == first and offered(client, app["package_id"])["key_id"] == first
    # The keyring alone first: the patch keeps the retired key's signature, which still counts.
    _, new = keys.rotate(services.keys)
    assert offered(client, app["package_id"])["key_id"] == first
    # The job, one row at a time: the versions first, the patch last; every step verifies.
    steps = 0
    while signatures.resign_all(services, limit=1):
        steps += 1
        assert offered(client, app["package_id"])["key_id"] in {first, new.key_id}
    assert steps == 3  # versions 1 and 2, then the patch
    patch = rows(app["id"])[(1, 2)]
    assert patch.key_id == new.key_id and offered(client, app["package_id"])["signature"] == patch.signature
    # A rotation through the API moves it again, at once.
    r = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert offered(client, app["package_id"])["key_id"] == r.json["new_key"] == rows(app["id"])[(1, 2)].key_id


def test_no_patch_signed_by_a_revoked_key_is_served(client, services, published):
    _, app, packages = published
    deltas.run_pending(services, "worker-a")
    first = services.signing_key.key_id
    r = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN)
    assert r.status_code == 200, r.json
    new = r.json["new_key"]
    # As if the job had not reached the patch: still signed by the first key.
    patch = rows(app["id"])[(1, 2)]
    old_signature = services.signing_key.sign_delta(app["package_id"], 1, patch.from_sha256, 2, patch.to_sha256,
                                                     patch.sha256, patch.size)
    Delta.update(signature=old_signature, key_id=first).where(Delta.id == patch.id).execute()
    # The keyring revokes it; before any re-signing, the offer is signed anew.
    keys.revoke(services.keys, first)
    for query in ("from_version_code=1", f"from_sha256={sha256(packages[1])}"):
        delta = client.get(f"/v1/packages/{app['package_id']}/download?{query}").json["delta"]
        assert delta["key_id"] == new and delta["signature"] != old_signature
    assert offered(client, app["package_id"])["key_id"] == new
    assert Delta.select().where(Delta.key_id == first).count() == 0


def test_revoking_re_signs_every_ready_patch_it_signed(client, services, published):
    _, app, _ = published
    deltas.run_pending(services, "worker-a")
    first = services.signing_key.key_id
    r = client.post("/v1/admin/signing-keys/rotate", headers=ADMIN)
    assert r.status_code == 200, r.json
    _, newer = keys.rotate(services.keys)  # the next key, the job not run: the patch keeps the previous one's
    assert rows(app["id"])[(1, 2)].key_id == r.json["new_key"]
    r = client.post(f"/v1/admin/signing-keys/{r.json['new_key']}/revoke", headers=ADMIN)
    assert r.status_code == 200, r.json
    patch = rows(app["id"])[(1, 2)]
    assert patch.key_id == newer.key_id and offered(client, app["package_id"])["key_id"] == newer.key_id
    assert first not in {d.key_id for d in Delta.select()}


def test_the_migration_names_the_key_that_signed_each_stored_patch(services, published):
    from app.platform.migrations import migrate_database
    from app.platform.models import SchemaMigration, database

    _, app, _ = published
    assert deltas.run_pending(services, "worker-a") == ["ready"]
    first = services.signing_key.key_id
    _, new = keys.rotate(services.keys)  # the active key at migration time did not sign the patch
    patch = rows(app["id"])[(1, 2)]
    db = database.obj
    with db.connection_context():
        db.execute_sql("ALTER TABLE delta DROP COLUMN key_id")
        SchemaMigration.delete().where(SchemaMigration.version == 200).execute()
    assert 200 in migrate_database()
    assert rows(app["id"])[(1, 2)].key_id == first != new.key_id
    # A signature no key of the keyring made: left unnamed, and signed anew before it is offered.
    Delta.update(signature=new.sign_delta("x.y", 1, "0" * 64, 2, "0" * 64, "0" * 64, 1), key_id=None).where(
        Delta.id == patch.id).execute()
    with db.connection_context():
        SchemaMigration.delete().where(SchemaMigration.version == 200).execute()
    assert 200 in migrate_database()
    assert rows(app["id"])[(1, 2)].key_id is None
    assert signatures.resign_all(services) == 3  # versions 1 and 2 (first key), and the patch
    assert rows(app["id"])[(1, 2)].key_id == new.key_id
