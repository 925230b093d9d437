"""The corpus through the real path: declare, upload to S3, complete, validation queue.

Runs against real S3 (SeaweedFS): the whole corpus on SQLite, and on
PostgreSQL one case of each reason code and a few valid ones (the database
is not where packages differ). Every hostile package must end `failed` with its reason code and message in
`GET …/versions/{code}`, be counted in /metrics, leave nothing in `temp/` or
the local temporary directory, and leave every other version as it was.
"""

from __future__ import annotations

import tempfile


from app.platform.models import Version
from app.platform.storage import temp_key
from tests.corpus import CASES, Case
from tests.helpers import build_package, bytes_behind_link, sha256
from tests.monitoring_helpers import scraped_by

def validation_counts(client) -> dict[str, float]:
    return scraped_by(client.get("/metrics").get_data(as_text=True), "mosis_validations_total", "result")


def downloaded(client, services, package_id: str) -> bytes:
    info = client.get(f"/v1/packages/{package_id}/download").json
    content = bytes_behind_link(services, info)
    assert sha256(content) == info["sha256"]
    return content


def submit_case(api, services, dev, app, code: int, case: Case) -> dict:
    """Drive one case through the API; return what the developer sees of it."""
    data = case.build(app["package_id"], code)
    base = services.settings
    services.settings = base.replace(limits=case.package_limits(base.limits))
    try:
        body = {"version_code": code, "version_name": f"1.0.{code}", "size": case.declare_size(data)}
        if case.declare_sha256(data):
            body["sha256"] = case.declare_sha256(data)
        r = api.client.post(f"/v1/apps/{app['id']}/versions", json=body, headers=dev["headers"])
        if r.status_code != 201:  # refused at declaration (too large): nothing stored
            return {"stage": "declare", "http": r.status_code, "error": r.json["error"]}
        assert api.upload(r.json["upload"], data).status_code == 200
        r = api.complete(dev, app, code)
        outcomes = api.validate_queue() if r.status_code == 202 else []
        version = api.version(dev, app, code)
        return {"stage": "validate", "http": r.status_code, "outcomes": outcomes, **version}
    finally:
        services.settings = base


def representative(cases: list[Case]) -> list[Case]:
    """One case of each reason code, and the valid cases that stress the reader most."""
    picked, codes = [], set()
    for case in cases:
        if case.code and case.code not in codes or case.name in (
                "valid_zip64_end_records", "valid_data_descriptors", "valid_nested_archive"):
            picked.append(case)
            codes.add(case.code)
    return picked


def test_corpus_through_upload_complete_and_queue(api, client, services, tmp_path, monkeypatch):
    corpus = [c for c in CASES if c.via_api]
    if services.settings.resolved_database_url.startswith("postgresql"):
        corpus = representative(corpus)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))

    # Bystanders: another developer's published app, and this app's own
    # published version 1. Nothing below may change them.
    other_dev = api.new_developer("Other")
    other_app = api.create_app(other_dev)
    other_bytes = build_package(other_app["package_id"], 3, files={"big.bin": bytes(range(256)) * 400})
    api.ship(other_dev, other_app, 3, other_bytes)
    dev = api.new_developer()
    app = api.create_app(dev)
    own_bytes = build_package(app["package_id"], 1)
    api.ship(dev, app, 1, own_bytes)
    before = validation_counts(client)

    expected_counts: dict[str, int] = {}
    for code, case in enumerate(corpus, start=10):
        seen = submit_case(api, services, dev, app, code, case)
        if case.code is None:
            assert seen["http"] == 202 and seen["outcomes"] == ["ok"], (case.name, seen)
            assert seen["status"] == "draft" and seen["manifest"]["version_code"] == code
            expected_counts["ok"] = expected_counts.get("ok", 0) + 1
            continue
        if seen["stage"] == "declare":
            assert case.code == "too_large" and seen["http"] == 413, (case.name, seen)
            assert seen["error"]["code"] == "too_large"
            continue
        assert seen["status"] == "failed" and seen["http"] in (202, 409), (case.name, seen)
        assert seen["outcomes"] in ([case.code], []), (case.name, seen)  # the worker never crashed
        assert seen["error"]["code"] == case.code, (case.name, seen["error"])
        assert case.says in seen["error"]["message"], (case.name, seen["error"])
        assert seen["manifest"] is None and seen["signature"] is None
        if seen["outcomes"]:
            expected_counts[case.code] = expected_counts.get(case.code, 0) + 1
        upload_id = Version.get_by_id(seen["id"]).upload_id
        assert services.storage.stat(temp_key(upload_id)) is None, case.name

    # The failed ones are failed, with their reports; the valid ones are drafts.
    listing = client.get(f"/v1/apps/{app['id']}/versions", headers=dev["headers"]).json["versions"]
    statuses = {v["version_code"]: v["status"] for v in listing}
    assert statuses[1] == "published"
    assert sum(1 for s in statuses.values() if s == "failed") == sum(
        1 for c in corpus if c.code and c.code != "too_large")

    # Counted in metrics by reason code.
    after = validation_counts(client)
    for code, n in expected_counts.items():
        assert after.get(code, 0) - before.get(code, 0) == n, code

    # Nothing left behind: no temp upload of this app, no local temporary file.
    upload_ids = {v.upload_id for v in Version.select().where(Version.app == app["id"])}
    leftovers = [o.key for o in services.storage.list("temp/") if o.key.split("/")[1] in upload_ids]
    assert leftovers == []
    assert list(scratch.iterdir()) == []

    # Every other version is as it was: published, downloadable, byte-identical.
    assert downloaded(client, services, other_app["package_id"]) == other_bytes
    assert downloaded(client, services, app["package_id"]) == own_bytes
    assert client.get(f"/v1/packages/{app['package_id']}/download").json["version_code"] == 1
