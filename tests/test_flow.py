"""The developer journey through the API, on SQLite and PostgreSQL, against real S3."""

from __future__ import annotations

import base64

import pytest

from app.platform.models import Version
from app.platform.signing import signed_message, verify
from app.platform.storage import temp_key
from tests.helpers import ADMIN, build_package, bytes_behind_link, sha256


def test_upload_validate_publish_download(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 7)

    r = api.create_version(dev, app, 7, data)
    assert r.status_code == 201
    version, upload = r.json["version"], r.json["upload"]
    assert version["status"] == "uploading"
    assert upload["method"] == "PUT" and "X-Amz-Signature" in upload["url"]
    assert f"/temp/" in upload["url"]

    assert api.upload(upload, data).status_code == 200
    r = api.complete(dev, app, 7)
    assert r.status_code == 202 and r.json["version"]["status"] == "validating"
    assert api.validate_queue() == ["ok"]

    version = api.version(dev, app, 7)
    assert version["status"] == "draft"
    assert version["sha256"] == sha256(data) and version["size"] == len(data)
    assert version["manifest"]["package_id"] == app["package_id"]
    assert version["error"] is None

    r = api.publish(dev, app, 7)
    assert r.status_code == 200 and r.json["version"]["status"] == "published"

    r = client.get(f"/v1/packages/{app['package_id']}/download")
    assert r.status_code == 200
    info = r.json
    assert info["version_code"] == 7 and info["size"] == len(data) and info["sha256"] == sha256(data)
    assert bytes_behind_link(api.services, info) == data

    key = client.get("/v1/signing-key").json
    assert key["algorithm"] == "ed25519"
    assert len(base64.b64decode(key["public_key"])) == 32
    message = signed_message(app["package_id"], 7, sha256(data), len(data))
    assert verify(key["public_key"], info["signature"], message)
    assert not verify(key["public_key"], info["signature"], message + b"x")

    listing = client.get(f"/v1/packages/{app['package_id']}").json
    assert listing["name"] == "Test App" and listing["latest"]["version_code"] == 7


def test_storage_layout_follows_the_contract(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    version = api.submit(dev, app, 3)
    prefix = f"packages/{dev['id']}/{app['id']}/3/"
    keys = sorted(o.key for o in services.storage.list(prefix))
    assert keys == [prefix + "manifest.json", prefix + "package.mosis"]
    # the temp object is gone once the package moved into place
    upload_id = Version.get_by_id(version["id"]).upload_id
    assert services.storage.stat(temp_key(upload_id)) is None


def test_complete_is_idempotent_and_needs_an_upload(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 1)
    r = api.create_version(dev, app, 1, data)
    missing = api.complete(dev, app, 1)
    assert missing.status_code == 409 and missing.json["error"]["code"] == "upload_missing"
    api.upload(r.json["upload"], data)
    first = api.complete(dev, app, 1)
    second = api.complete(dev, app, 1)
    assert first.status_code == second.status_code == 202
    assert second.json["version"]["status"] == "validating"
    api.validate_queue()
    third = api.complete(dev, app, 1)
    assert third.status_code == 202 and third.json["version"]["status"] == "draft"


def test_declared_size_must_match_the_upload(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 1)
    r = api.create_version(dev, app, 1, data + b"", with_sha=False)
    api.upload(r.json["upload"], data + b"extra")
    r = api.complete(dev, app, 1)
    assert r.status_code == 409 and r.json["error"]["code"] == "size_mismatch"
    v = api.version(dev, app, 1)
    assert v["status"] == "failed" and v["error"]["code"] == "size_mismatch"
    # a failed version frees its code: the developer can try again
    again = api.submit(dev, app, 1)
    assert again["status"] == "draft"


def test_declared_sha256_must_match(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    good = build_package(app["package_id"], 2)
    other = build_package(app["package_id"], 2, files={"x": b"y" * len(b"")})
    r = api.client.post(f"/v1/apps/{app['id']}/versions", headers=dev["headers"], json={
        "version_code": 2, "version_name": "2", "size": len(other), "sha256": sha256(good)})
    api.upload(r.json["upload"], other)
    assert api.complete(dev, app, 2).status_code == 202
    assert api.validate_queue() == ["sha256_mismatch"]
    v = api.version(dev, app, 2)
    assert v["status"] == "failed" and v["error"]["code"] == "sha256_mismatch"
    assert "sha256" in v["error"]["message"]


def test_manifest_must_match_the_app_and_version(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    wrong_code = build_package(app["package_id"], 99)
    v = api.submit(dev, app, 5, wrong_code)
    assert v["status"] == "failed" and v["error"]["code"] == "version_code_mismatch"
    wrong_app = build_package("com.other.app", 6)
    v = api.submit(dev, app, 6, wrong_app)
    assert v["status"] == "failed" and v["error"]["code"] == "package_id_mismatch"


def test_version_codes_are_unique_and_increasing(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 10)
    assert api.create_version(dev, app, 10, data).status_code == 201
    dup = api.create_version(dev, app, 10, data)
    assert dup.status_code == 409 and dup.json["error"]["code"] == "version_exists"

    api.ship(dev, app, 11)
    lower = api.create_version(dev, app, 9, build_package(app["package_id"], 9))
    assert lower.status_code == 409 and lower.json["error"]["code"] == "version_code_not_increasing"
    same = api.create_version(dev, app, 11, build_package(app["package_id"], 11))
    assert same.status_code == 409


def test_publishing_an_older_draft_after_a_newer_is_refused(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.submit(dev, app, 20)
    api.submit(dev, app, 21)
    assert api.publish(dev, app, 21).status_code == 200
    r = api.publish(dev, app, 20)
    assert r.status_code == 409 and r.json["error"]["code"] == "version_code_not_increasing"
    assert api.version(dev, app, 20)["status"] == "draft"
    assert client.get(f"/v1/packages/{app['package_id']}/download").json["version_code"] == 21


def test_publishing_supersedes_the_previous_version(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    assert api.publish(dev, app, 1).status_code == 200  # publishing again is harmless
    api.ship(dev, app, 2)
    assert api.version(dev, app, 1)["status"] == "superseded"
    assert api.version(dev, app, 2)["status"] == "published"
    assert client.get(f"/v1/packages/{app['package_id']}/download").json["version_code"] == 2


def test_only_drafts_can_be_published(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = build_package(app["package_id"], 1)
    api.create_version(dev, app, 1, data)
    r = api.publish(dev, app, 1)
    assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"


def test_download_of_unknown_or_unpublished_package_is_404(api, client):
    assert client.get("/v1/packages/com.nobody.here/download").status_code == 404
    dev = api.new_developer()
    app = api.create_app(dev)
    api.submit(dev, app, 1)
    r = client.get(f"/v1/packages/{app['package_id']}/download")
    assert r.status_code == 404 and r.json["error"]["code"] == "package_not_found"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_download_answers_when_its_prepared_statement_is_gone(api, client):
    """PostgreSQL sessions prepare the download's query once; a session
    that lost it (DEALLOCATE ALL, DISCARD ALL) prepares it again."""
    from app.platform.models import database

    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    url = f"/v1/packages/{app['package_id']}/download"
    first = client.get(url)
    assert first.status_code == 200

    def prepared() -> list[str]:
        with database.connection_context():
            return [name for name, in database.execute_sql("SELECT name FROM pg_prepared_statements")]

    assert any(name.startswith("mosis_compiled_") for name in prepared())
    with database.connection_context():
        database.execute_sql("DEALLOCATE ALL")
    assert prepared() == []
    r = client.get(url)
    assert r.status_code == 200 and r.json["version_code"] == first.json["version_code"]
    assert any(name.startswith("mosis_compiled_") for name in prepared())


def test_admin_reject_and_pull(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    draft = api.submit(dev, app, 1)
    r = client.post(f"/v1/admin/versions/{draft['id']}/reject", json={"reason": "malware"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"]["status"] == "rejected"
    assert api.publish(dev, app, 1).status_code == 409

    live = api.ship(dev, app, 2)
    r = client.post(f"/v1/admin/versions/{live['id']}/pull", json={"reason": "broken"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["version"]["status"] == "pulled"
    assert r.json["version"]["reason"] == "broken"
    assert client.get(f"/v1/packages/{app['package_id']}/download").status_code == 404


def test_package_id_is_unique_across_developers(api):
    a, b = api.new_developer(), api.new_developer()
    app = api.create_app(a)
    r = api.client.post("/v1/apps", json={"package_id": app["package_id"], "name": "x"},
                        headers=b["headers"])
    assert r.status_code == 409 and r.json["error"]["code"] == "package_id_taken"
