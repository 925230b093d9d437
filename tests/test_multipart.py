"""Resumable multipart uploads through the API, against real S3 (SeaweedFS),
on SQLite and PostgreSQL. Part sizes are S3's minimum (5 MiB) to keep tests small."""

from __future__ import annotations

import datetime as dt
import os
import zipfile

import pytest
import requests

from app.catalog import uploads
from app.platform.config import MiB, S3_MIN_PART_BYTES, ConfigError, Settings
from app.platform.models import Version, database
from app.platform.storage import temp_key
from tests.helpers import build_package, sha256

PART = S3_MIN_PART_BYTES


@pytest.fixture
def settings(settings):
    # Anything over 6 MiB uploads in 5 MiB parts.
    return settings.replace(multipart_threshold_bytes=6 * MiB, multipart_part_bytes=PART)


def big_package(package_id: str, code: int, parts: float = 2.2) -> bytes:
    """A valid package of about `parts` parts (random bytes do not compress)."""
    return build_package(package_id, code, files={"blob.bin": os.urandom(int(parts * PART))},
                         compression=zipfile.ZIP_STORED)


def presign(api, dev, app, code, numbers):
    return api.client.post(f"/v1/apps/{app['id']}/versions/{code}/upload/parts",
                           json={"part_numbers": numbers}, headers=dev["headers"])


def put_parts(api, dev, app, code, data, numbers, part_size=PART):
    r = presign(api, dev, app, code, numbers)
    assert r.status_code == 200, r.json
    for part in r.json["parts"]:
        n = part["part_number"]
        chunk = data[(n - 1) * part_size:n * part_size]
        assert part["size"] == len(chunk)
        put = requests.put(part["url"], data=chunk, headers=part["headers"], timeout=60)
        assert put.status_code == 200, put.text


def state(api, dev, app, code):
    return api.client.get(f"/v1/apps/{app['id']}/versions/{code}/upload", headers=dev["headers"])


def abort(api, dev, app, code):
    return api.client.delete(f"/v1/apps/{app['id']}/versions/{code}/upload", headers=dev["headers"])


def test_large_packages_upload_in_parts_and_small_ones_in_one_put(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    small = build_package(app["package_id"], 1)
    r = api.create_version(dev, app, 1, small)
    assert r.status_code == 201 and r.json["upload"]["kind"] == "single"
    assert r.json["upload"]["method"] == "PUT"

    data = big_package(app["package_id"], 2)
    r = api.create_version(dev, app, 2, data)
    assert r.status_code == 201, r.json
    upload = r.json["upload"]
    assert upload["kind"] == "multipart" and "url" not in upload
    assert upload["part_size"] == PART and upload["part_count"] == 3 and upload["size"] == len(data)
    assert r.json["version"]["status"] == "uploading"


def test_multipart_upload_resumes_from_the_parts_storage_holds(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 4)
    assert api.create_version(dev, app, 4, data).status_code == 201

    put_parts(api, dev, app, 4, data, [1])
    # the connection broke here; the client asks what storage holds
    r = state(api, dev, app, 4)
    assert r.status_code == 200, r.json
    held = r.json["upload"]
    assert [p["part_number"] for p in held["parts"]] == [1]
    assert held["parts"][0]["size"] == PART and held["uploaded_bytes"] == PART

    # completing now says which parts are missing, and changes nothing
    r = api.complete(dev, app, 4)
    assert r.status_code == 409 and r.json["error"]["code"] == "upload_incomplete"
    assert r.json["error"]["details"]["missing_parts"] == [2, 3]
    assert api.version(dev, app, 4)["status"] == "uploading"

    put_parts(api, dev, app, 4, data, [3, 2])  # any order
    r = api.complete(dev, app, 4)
    assert r.status_code == 202 and r.json["version"]["status"] == "validating"
    assert api.validate_queue() == ["ok"]
    version = api.version(dev, app, 4)
    assert version["status"] == "draft"
    assert version["sha256"] == sha256(data) and version["size"] == len(data)
    # the parts became one object, moved into place; nothing left in temp/
    upload_id = Version.get_by_id(version["id"]).upload_id
    assert services.storage.stat(temp_key(upload_id)) is None
    assert list(services.storage.list_multipart_uploads(f"temp/{upload_id}/")) == []
    # completing again is harmless
    assert api.complete(dev, app, 4).status_code == 202


def test_complete_survives_a_crash_after_storage_joined_the_parts(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 5, parts=1.5)
    api.create_version(dev, app, 5, data)
    put_parts(api, dev, app, 5, data, [1, 2])
    row = Version.get(Version.version_code == 5)
    # a first complete joined the parts on storage, then died before the row changed
    uploads.assemble(services, row)
    assert services.storage.stat(temp_key(row.upload_id)).size == len(data)
    r = api.complete(dev, app, 5)
    assert r.status_code == 202, r.json
    assert api.validate_queue() == ["ok"]
    assert api.version(dev, app, 5)["sha256"] == sha256(data)


def test_parts_of_the_wrong_size_fail_the_upload(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 6)
    api.create_version(dev, app, 6, data)
    r = presign(api, dev, app, 6, [1, 2, 3])
    for part in r.json["parts"]:
        n = part["part_number"]
        body = data[(n - 1) * PART:n * PART] + (b"x" if n == 3 else b"")
        assert requests.put(part["url"], data=body, timeout=60).status_code == 200
    r = api.complete(dev, app, 6)
    assert r.status_code == 409 and r.json["error"]["code"] == "size_mismatch"
    assert "part 3" in r.json["error"]["message"]
    v = api.version(dev, app, 6)
    assert v["status"] == "failed" and v["error"]["code"] == "size_mismatch"
    row = Version.get_by_id(v["id"])
    assert services.storage.list_parts(temp_key(row.upload_id), row.multipart_upload_id) is None
    # the code is free again
    assert api.create_version(dev, app, 6, data).status_code == 201


def test_part_requests_are_checked(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 7)
    api.create_version(dev, app, 7, data)
    for numbers, code in (([0], "invalid_field"), ([4], "invalid_field"), ([], "invalid_field"),
                          (["1"], "invalid_field"), ([True], "invalid_field"), ([1.5], "invalid_field"),
                          (list(range(1, 102)), "invalid_field")):
        r = presign(api, dev, app, 7, numbers)
        assert r.status_code == 400 and r.json["error"]["code"] == code, (numbers, r.json)
    r = api.client.post(f"/v1/apps/{app['id']}/versions/7/upload/parts", json={"part_numbers": 1},
                        headers=dev["headers"])
    assert r.status_code == 400
    r = presign(api, dev, app, 7, [1, 1, 2.0])
    assert [p["part_number"] for p in r.json["parts"]] == [1, 2]
    assert r.json["parts"][0]["method"] == "PUT" and "partNumber=1" in r.json["parts"][0]["url"]

    # a single-PUT version has no parts, but GET …/upload gives it a fresh URL
    small = build_package(app["package_id"], 8)
    api.create_version(dev, app, 8, small)
    r = presign(api, dev, app, 8, [1])
    assert r.status_code == 409 and r.json["error"]["code"] == "not_multipart"
    r = state(api, dev, app, 8)
    assert r.status_code == 200 and r.json["upload"]["kind"] == "single"
    assert requests.put(r.json["upload"]["url"], data=small, headers=r.json["upload"]["headers"],
                        timeout=30).status_code == 200
    assert api.complete(dev, app, 8).status_code == 202
    for r in (state(api, dev, app, 8), presign(api, dev, app, 8, [1]), abort(api, dev, app, 8)):
        assert r.status_code == 409 and r.json["error"]["code"] in ("invalid_state", "not_multipart")

    # another developer's version does not exist for them
    other = api.new_developer("Eve")
    assert presign(api, other, app, 7, [1]).status_code == 404
    assert state(api, other, app, 7).status_code == 404
    assert abort(api, other, app, 7).status_code == 404
    assert state(api, dev, app, 99).status_code == 404


def test_aborting_an_upload_frees_its_code_and_drops_its_parts(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 9)
    api.create_version(dev, app, 9, data)
    put_parts(api, dev, app, 9, data, [1])
    row = Version.get(Version.version_code == 9)
    r = abort(api, dev, app, 9)
    assert r.status_code == 200 and r.json["version"]["status"] == "abandoned"
    assert abort(api, dev, app, 9).status_code == 200  # twice is harmless
    assert services.storage.list_parts(temp_key(row.upload_id), row.multipart_upload_id) is None
    r = api.complete(dev, app, 9)
    assert r.status_code == 409 and r.json["error"]["code"] == "invalid_state"
    # the same code can be uploaded again, in full
    r = api.create_version(dev, app, 9, data)
    assert r.status_code == 201
    put_parts(api, dev, app, 9, data, [1, 2, 3])
    assert api.complete(dev, app, 9).status_code == 202
    assert api.validate_queue() == ["ok"]


def test_a_failed_version_row_leaves_no_multipart_upload_behind(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 10)
    assert api.create_version(dev, app, 10, data).status_code == 201
    before = {u.upload_id for u in services.storage.list_multipart_uploads("temp/")}
    r = api.create_version(dev, app, 10, data)
    assert r.status_code == 409 and r.json["error"]["code"] == "version_exists"
    after = {u.upload_id for u in services.storage.list_multipart_uploads("temp/")}
    assert after == before


def test_cleanup_job_aborts_uploads_no_version_will_finish(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    data = big_package(app["package_id"], 11, parts=1.5)
    api.create_version(dev, app, 11, data)  # live, within retention
    api.create_version(dev, app, 12, build_package(app["package_id"], 12) + b"")  # single PUT
    api.create_version(dev, app, 13, big_package(app["package_id"], 13, parts=1.5))
    put_parts(api, dev, app, 13, data, [1])
    live = Version.get(Version.version_code == 11)
    gone = Version.get(Version.version_code == 13)
    # the version of 13 was abandoned by the retention job (its parts stay behind)
    Version.update(status="abandoned").where(Version.id == gone.id).execute()
    # and a crash left an upload without a version
    stray_key = temp_key("f" * 32)
    stray = services.storage.create_multipart(stray_key)

    def open_ids():
        return {u.upload_id for u in services.storage.list_multipart_uploads("temp/")}

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with database.connection_context():
        result = uploads.abort_stale_multipart_uploads(services, now)
    assert gone.multipart_upload_id not in open_ids()
    assert {live.multipart_upload_id, stray} <= open_ids()  # the stray may still be starting
    assert result["aborted"] >= 1

    later = now + dt.timedelta(seconds=services.settings.retention.temp_upload + 60)
    with database.connection_context():
        uploads.abort_stale_multipart_uploads(services, later)
    assert not {live.multipart_upload_id, stray} & open_ids()


def test_the_cleanup_job_runs_as_a_recorded_housekeeping_job(api, services):
    from app.platform.jobs import run_job
    from app.platform.models import JobState
    from app.scheduler import HOUSEKEEPING

    job = next(j for j in HOUSEKEEPING if j.fn is uploads.abort_stale_multipart_uploads)
    assert job.period <= dt.timedelta(hours=1)
    dev = api.new_developer()
    app = api.create_app(dev)
    api.create_version(dev, app, 1, big_package(app["package_id"], 1, parts=1.5))
    row = Version.get(Version.version_code == 1)
    later = row.created_at + dt.timedelta(seconds=services.settings.retention.temp_upload + 1)
    result = run_job(job, services, "scheduler-a", later)
    assert result["aborted"] >= 1
    assert services.storage.list_parts(temp_key(row.upload_id), row.multipart_upload_id) is None
    with database.connection_context():
        state = JobState.get_by_id(job.name)
    assert state.runs == 1 and state.last_items == result["items"] and state.last_error is None
    assert run_job(job, services, "scheduler-b", later) is None  # not due again yet


def test_part_plan():
    s = Settings(multipart_threshold_bytes=64 * MiB, multipart_part_bytes=8 * MiB)
    assert uploads.part_size_for(64 * MiB, s) is None
    assert uploads.part_size_for(64 * MiB + 1, s) == 8 * MiB
    # S3 allows 10 000 parts: larger packages get larger parts
    huge = 200_000 * MiB
    part = uploads.part_size_for(huge, s)
    assert part % MiB == 0 and uploads.part_count(huge, part) <= uploads.MAX_PARTS
    assert [uploads.expected_part_size(11, 5, n) for n in (1, 2, 3)] == [5, 5, 1]


def test_part_size_setting():
    env = {"MOSIS_MULTIPART_THRESHOLD_BYTES": "1000", "MOSIS_MULTIPART_PART_BYTES": str(6 * MiB)}
    s = Settings.from_env(env)
    assert s.multipart_threshold_bytes == 1000 and s.multipart_part_bytes == 6 * MiB
    assert Settings.from_env({}).multipart_threshold_bytes == 64 * MiB
    with pytest.raises(ConfigError, match="MOSIS_MULTIPART_PART_BYTES"):
        Settings.from_env({"MOSIS_MULTIPART_PART_BYTES": str(5 * MiB - 1)})


def test_migration_adds_the_multipart_columns_to_an_older_schema(services):
    from app.platform.migrations import migrate_database
    from app.platform.models import SchemaMigration

    db = database.obj
    with db.connection_context():
        for column in ("multipart_upload_id", "part_size"):
            db.execute_sql(f"ALTER TABLE version DROP COLUMN {column}")
        SchemaMigration.delete().where(SchemaMigration.version == 100).execute()
    assert 100 in migrate_database()
    with db.connection_context():
        columns = {c.name for c in db.get_columns("version")}
    assert {"multipart_upload_id", "part_size"} <= columns
    assert migrate_database() == []
