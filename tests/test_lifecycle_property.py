"""Property: whatever developers, admins, the validation worker and retention
do, in any order and twice at once, every status change a version makes is
one of the lifecycle's transitions, and abandoned and purged stay so.

The database itself records every status change (a trigger on the version
table), so a step that moves a version twice (retention: `purging`, then
`purged`) shows both moves.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings as hsettings, strategies as st

from app.catalog.validation_worker import run_pending
from app.housekeeping.retention import run_retention
from app.platform.clock import utcnow
from app.platform.config import DAY, HOUR
from app.platform.db import is_postgres
from app.platform.lifecycle import EDGES, TERMINAL
from app.platform.models import Version, VersionStatus as S, database
from tests.helpers import ADMIN, build_package, sha256

SQLITE_LOG = [
    "CREATE TABLE IF NOT EXISTS status_log (n INTEGER PRIMARY KEY AUTOINCREMENT, "
    "version_id TEXT, old TEXT, new TEXT)",
    "CREATE TRIGGER IF NOT EXISTS status_log_insert AFTER INSERT ON version BEGIN "
    "INSERT INTO status_log (version_id, old, new) VALUES (NEW.id, NULL, NEW.status); END",
    "CREATE TRIGGER IF NOT EXISTS status_log_update AFTER UPDATE OF status ON version "
    "WHEN OLD.status IS NOT NEW.status BEGIN "
    "INSERT INTO status_log (version_id, old, new) VALUES (NEW.id, OLD.status, NEW.status); END",
]
PG_LOG = [
    "CREATE TABLE IF NOT EXISTS status_log (n BIGSERIAL PRIMARY KEY, version_id TEXT, old TEXT, new TEXT)",
    """CREATE OR REPLACE FUNCTION status_log_row() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'INSERT' THEN
           INSERT INTO status_log (version_id, old, new) VALUES (NEW.id, NULL, NEW.status);
         ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
           INSERT INTO status_log (version_id, old, new) VALUES (NEW.id, OLD.status, NEW.status);
         END IF;
         RETURN NEW;
       END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS status_log_row ON version",
    "CREATE TRIGGER status_log_row AFTER INSERT OR UPDATE ON version FOR EACH ROW "
    "EXECUTE FUNCTION status_log_row()",
]


@pytest.fixture
def status_log(services):
    for statement in PG_LOG if is_postgres(database.obj) else SQLITE_LOG:
        database.execute_sql(statement)


def _log_since(n: int) -> list[tuple[int, str, str | None, str]]:
    return list(database.execute_sql(
        "SELECT n, version_id, old, new FROM status_log WHERE n > %s ORDER BY n"
        % int(n)).fetchall())


def _statuses() -> dict[str, str]:
    return dict(Version.select(Version.id, Version.status).tuples())


codes = st.integers(1, 2)
kinds = st.sampled_from(["good", "good", "bad", "short", "not uploaded"])
clocks = st.sampled_from([0, 2 * HOUR, 2 * DAY, 40 * DAY, 400 * DAY])
# create: created and uploaded (a good package, one that fails validation,
# one short of its declared size) or created only; submit: created,
# uploaded, completed and validated at once; ship: submitted and published;
# retention: run at a clock that far ahead.
OPS = ["submit", "reject", "create", "abort", "complete", "ship", "complete twice", "validate", "publish",
       "publish twice", "pull", "retention"]
moves = st.tuples(st.sampled_from(OPS), codes, kinds, clocks)
# Each journey starts with a version or two on their way, so the moves have something to move.
steps = st.builds(lambda start, rest: start + rest,
                  st.lists(st.tuples(st.sampled_from(["submit", "ship"]), codes, kinds, clocks),
                           min_size=1, max_size=2),
                  st.lists(moves, min_size=2, max_size=10))


class Journey:
    """One developer's app, driven through the real API."""

    def __init__(self, api, flask_app, services):
        self.api, self.flask_app, self.services = api, flask_app, services
        self.dev = api.new_developer()
        self.app = api.create_app(self.dev)

    def _path(self, code: int, tail: str = "") -> str:
        return f"/v1/apps/{self.app['id']}/versions/{code}{tail}"

    def _twice(self, method: str, path: str) -> list[int]:
        def call(_):
            with self.flask_app.test_client() as c:
                return c.open(path, method=method, headers=self.dev["headers"]).status_code
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(call, range(2)))

    def _version_id(self, code: int) -> str | None:
        r = self.api.client.get(self._path(code), headers=self.dev["headers"])
        return r.json["version"]["id"] if r.status_code == 200 else None

    def do(self, op: str, code: int, kind: str = "good", clock: int = 0) -> list[int]:
        """Perform one step; the HTTP statuses it got."""
        client, headers = self.api.client, self.dev["headers"]
        if op == "create":
            data = build_package(self.app["package_id"], code + (100 if kind == "bad" else 0))
            r = client.post(f"/v1/apps/{self.app['id']}/versions", headers=headers, json={
                "version_code": code, "version_name": f"1.{code}", "size": len(data), "sha256": sha256(data)})
            if r.status_code != 201 or kind == "not uploaded":
                return [r.status_code]
            upload = r.json["upload"]
            put = requests.request(upload["method"], upload["url"], data=data[:-1] if kind == "short" else data,
                                   headers=upload["headers"], timeout=60)
            return [r.status_code, put.status_code]
        if op == "submit":
            return self.do("create", code, kind) + self.do("complete", code) + self.do("validate", code)
        if op == "ship":
            return self.do("submit", code) + self.do("publish", code)
        if op == "complete":
            return [client.post(self._path(code, "/complete"), headers=headers).status_code]
        if op == "complete twice":
            return self._twice("POST", self._path(code, "/complete"))
        if op == "publish":
            return [client.post(self._path(code, "/publish"), headers=headers).status_code]
        if op == "publish twice":
            return self._twice("POST", self._path(code, "/publish"))
        if op == "abort":
            return [client.delete(self._path(code, "/upload"), headers=headers).status_code]
        if op in ("reject", "pull"):
            version_id = self._version_id(code)
            if version_id is None:
                return []
            return [client.post(f"/v1/admin/versions/{version_id}/{op}", headers=ADMIN,
                                json={"reason": "property"}).status_code]
        if op == "validate":
            run_pending(self.services)
            return []
        if op == "retention":
            report = run_retention(self.services, utcnow() + dt.timedelta(seconds=clock))
            assert report["errors"] == []
            return []
        raise AssertionError(op)


def _check_step(before: dict[str, str], after: dict[str, str], log: list) -> None:
    chains: dict[str, list[str | None]] = {}
    for _, version_id, old, new in log:
        if old is None:
            assert new == S.UPLOADING, f"a version was created {new}"
            assert version_id not in before
        else:
            assert (old, new) in EDGES, f"{old} -> {new} is not in the lifecycle"
            assert old not in TERMINAL
        chain = chains.setdefault(version_id, [before.get(version_id)])
        assert chain[-1] == old, f"{version_id}: the log jumps from {chain[-1]} to {old}"
        chain.append(new)
    for version_id, status in after.items():
        chain = chains.get(version_id, [before.get(version_id)])
        assert chain[-1] == status, (version_id, chain, status)
        if before.get(version_id) in TERMINAL:
            assert status == before[version_id], "a terminal status changed"
    assert set(before) <= set(after), "a version row disappeared"


@hsettings(max_examples=25, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(journey_steps=steps)
# Besides what hypothesis draws, journeys that take every transition of the table.
@example(journey_steps=[("submit", 1, "good", 0), ("reject", 1, "", 0), ("retention", 1, "", 8 * DAY)])
@example(journey_steps=[("create", 1, "good", 0), ("complete", 1, "", 0), ("reject", 1, "", 0)])
@example(journey_steps=[("submit", 1, "good", 0), ("pull", 1, "", 0), ("ship", 2, "good", 0),
                        ("ship", 3, "good", 0), ("pull", 2, "", 0), ("pull", 3, "", 0),
                        ("retention", 1, "", 400 * DAY)])
@example(journey_steps=[("create", 1, "not uploaded", 0), ("abort", 1, "", 0), ("create", 1, "good", 0),
                        ("complete twice", 1, "", 0), ("validate", 1, "", 0), ("publish twice", 1, "", 0),
                        ("ship", 2, "good", 0), ("retention", 1, "", 400 * DAY)])
@example(journey_steps=[("create", 1, "short", 0), ("complete", 1, "", 0), ("create", 2, "good", 0),
                        ("retention", 1, "", 2 * DAY)])
@example(journey_steps=[("submit", 1, "bad", 0), ("submit", 1, "good", 0), ("retention", 1, "", 2 * DAY)])
def test_every_status_change_is_a_transition_of_the_lifecycle(api, app, services, status_log,
                                                               journey_steps):
    journey = Journey(api, app, services)
    seen = _log_since(0)
    last = seen[-1][0] if seen else 0
    for step in journey_steps:
        before = _statuses()
        answers = journey.do(*step)
        assert all(code < 500 for code in answers), (step, answers)
        after = _statuses()
        log = _log_since(last)
        if log:
            last = log[-1][0]
        _check_step(before, after, log)
