"""Version-code rules hold under concurrent requests, enforced by the database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import peewee as pw
import pytest

from app.platform.models import App, Version, VersionStatus, database
from tests.helpers import build_package


def _parallel(n, fn):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def test_racing_creates_of_one_code_yield_one_version(api, app):
    dev = api.new_developer()
    a = api.create_app(dev)
    data = build_package(a["package_id"], 5)

    def create():
        with app.test_client() as c:
            return c.post(f"/v1/apps/{a['id']}/versions", headers=dev["headers"],
                          json={"version_code": 5, "version_name": "5", "size": len(data)}).status_code

    codes = _parallel(8, create)
    assert sorted(codes) == [201] + [409] * 7
    assert Version.select().where(Version.version_code == 5).count() == 1


def test_racing_publishes_leave_one_current_version(api, app):
    dev = api.new_developer()
    a = api.create_app(dev)
    for code in (1, 2, 3):
        api.submit(dev, a, code)

    def publish(code):
        with app.test_client() as c:
            return c.post(f"/v1/apps/{a['id']}/versions/{code}/publish", headers=dev["headers"]).status_code

    with ThreadPoolExecutor(3) as pool:
        results = dict(zip((1, 2, 3), pool.map(publish, (1, 2, 3))))
    with database.connection_context():
        published = list(Version.select().where(Version.status == VersionStatus.PUBLISHED))
        assert len(published) == 1
        winner = App.get_by_id(a["id"]).max_published_code
    assert published[0].version_code == winner
    assert results[3] == 200  # the highest code can always be published
    for code, status in results.items():
        assert status in (200, 409)


def test_the_database_itself_refuses_a_second_live_version_code(api):
    dev = api.new_developer()
    a = api.create_app(dev)
    api.create_version(dev, a, 9, b"x" * 10)
    with pytest.raises(pw.IntegrityError):
        with database.atomic():
            Version.create(app=a["id"], version_code=9, version_name="9", declared_size=1)
    # a released code (failed) may be taken again
    Version.update(status=VersionStatus.FAILED).where(Version.version_code == 9).execute()
    Version.create(app=a["id"], version_code=9, version_name="9", declared_size=1)


def test_the_database_itself_refuses_two_published_versions(api):
    dev = api.new_developer()
    a = api.create_app(dev)
    api.ship(dev, a, 1)
    api.submit(dev, a, 2)
    with pytest.raises(pw.IntegrityError):
        with database.atomic():
            Version.update(status=VersionStatus.PUBLISHED).where(Version.version_code == 2).execute()
