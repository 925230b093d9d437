"""Property: over random histories and clocks, retention never touches an app's
current published version, takes exactly the versions whose time ran out, and
deletes only the objects of the versions it takes."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.platform.config import DAY, HOUR, RetentionPolicy
from app.platform.models import App, Developer, Version, VersionStatus as S, utcnow
from app.catalog.packages import download_info, keys_of
from app.housekeeping.retention import run_retention
from app.platform.storage import temp_key

POLICY = RetentionPolicy()
# The oracle, written out from the contract's table: status -> (clock columns, limit, outcome).
EXPECTED_RULES = {
    S.UPLOADING: (("created_at",), POLICY.temp_upload, S.ABANDONED),
    S.FAILED: (("failed_at", "updated_at"), POLICY.failed, S.PURGED),
    S.REJECTED: (("rejected_at", "updated_at"), POLICY.rejected, S.PURGED),
    S.DRAFT: (("validated_at", "updated_at"), POLICY.draft, S.PURGED),
    S.SUPERSEDED: (("superseded_at", "updated_at"), POLICY.superseded, S.PURGED),
    S.PULLED: (("pulled_at", "updated_at"), POLICY.pulled, S.PURGED),
}
STAMPS = ("created_at", "updated_at", "validated_at", "published_at", "superseded_at", "rejected_at",
          "failed_at", "pulled_at")
HISTORY_STATUSES = [S.UPLOADING, S.VALIDATING, S.DRAFT, S.PUBLISHED, S.SUPERSEDED, S.FAILED,
                    S.REJECTED, S.PULLED, S.ABANDONED]
LIMITS = sorted({v[1] for v in EXPECTED_RULES.values()})

# Ages straddle every limit closely, and range far beyond.
ages = st.one_of(
    st.integers(0, 3 * 365 * DAY),
    st.builds(lambda limit, d: max(0, limit + d), st.sampled_from(LIMITS), st.integers(-2, 2)),
)
stamp_ages = st.fixed_dictionaries({name: st.one_of(st.none(), ages) for name in STAMPS})
versions = st.lists(st.tuples(st.sampled_from(HISTORY_STATUSES), stamp_ages, st.booleans()),
                    min_size=1, max_size=5)
histories = st.lists(versions, min_size=1, max_size=3)
clocks = st.lists(st.one_of(st.integers(0, 3 * 365 * DAY),
                            st.builds(lambda limit, d: limit + d, st.sampled_from(LIMITS),
                                      st.integers(-2, 2))),
                  min_size=1, max_size=3).map(sorted)


def _build(svc, history, base):
    """Rows and objects of one history; returns the versions created."""
    dev = Developer.create(name="p", email=f"{uuid.uuid4().hex}@example.com")
    created = []
    for versions_of_app in history:
        app = App.create(developer=dev, package_id=f"com.prop.a{uuid.uuid4().hex[:10]}", name="P")
        published_seen = False
        for code, (status, stamp_age, reused) in enumerate(versions_of_app, start=1):
            if status == S.PUBLISHED:
                if published_seen:
                    status = S.SUPERSEDED
                published_seen = True
            stamps = {name: base - dt.timedelta(seconds=age)
                      for name, age in stamp_age.items() if age is not None}
            stamps.setdefault("created_at", base)
            stamps.setdefault("updated_at", stamps["created_at"])
            if reused:
                # An older failed version whose code this one took again.
                older = Version.create(app=app, version_code=code, version_name="old", declared_size=4,
                                       status=S.FAILED, size=4, sha256="0" * 64,
                                       created_at=stamps["created_at"] - dt.timedelta(seconds=1),
                                       updated_at=stamps["created_at"],
                                       failed_at=stamps["created_at"] - dt.timedelta(seconds=1))
                created.append(older)
            v = Version.create(app=app, version_code=code, version_name=str(code), declared_size=4,
                               status=status, size=4, sha256="0" * 64, signature="sig", **stamps)
            created.append(v)
            _put_objects(svc, v)
    return created


def _put_objects(svc, v):
    package, manifest = keys_of(v)
    if v.status == S.UPLOADING:
        svc.storage.put(temp_key(v.upload_id), b"temp")
    elif v.status != S.ABANDONED:
        svc.storage.put(package, f"pkg-{v.id}".encode())
        if v.status != S.VALIDATING:
            svc.storage.put(manifest, b"{}")


def _expected_after(v, now) -> str:
    rule = EXPECTED_RULES.get(v.status)
    if rule is None:
        return v.status
    columns, limit, outcome = rule
    started = next(getattr(v, c) for c in columns if getattr(v, c) is not None)
    return outcome if now - started > dt.timedelta(seconds=limit) else v.status


@hsettings(max_examples=20, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories, offsets=clocks)
def test_retention_keeps_what_it_must_and_takes_what_ran_out(services, history, offsets):
    base = utcnow()
    created = _build(services, history, base)
    published = {v.app_id: v for v in created if v.status == S.PUBLISHED}
    expected = {v.id: v.status for v in created}
    for offset in offsets:
        now = base + dt.timedelta(seconds=offset)
        run_retention(services, now)
        for v in created:
            expected[v.id] = _expected_after(v, now) if expected[v.id] == v.status else expected[v.id]
        rows = {r.id: r for r in Version.select().where(Version.id.in_([v.id for v in created]))}

        for app_id, current in published.items():
            row = rows[current.id]
            assert row.status == S.PUBLISHED and row.purged_at is None
            package, manifest = keys_of(row)
            assert services.storage.exists(package) and services.storage.exists(manifest)
            assert download_info(services, App.get_by_id(app_id).package_id)["version_code"] == row.version_code
        for v in created:
            assert rows[v.id].status == expected[v.id], (v.status, now - base)
            package, _ = keys_of(v)
            taken_here = expected[v.id] != v.status
            newest_for_code = not any(o.app_id == v.app_id and o.version_code == v.version_code
                                      and o.created_at > v.created_at for o in created)
            if taken_here:
                assert rows[v.id].purged_at is not None and rows[v.id].purged_at <= now
                assert not services.storage.exists(temp_key(v.upload_id))
                if newest_for_code:
                    assert not services.storage.exists(package)
            elif v.status not in (S.UPLOADING, S.ABANDONED) and newest_for_code:
                assert services.storage.exists(package), (v.status, "lost an object it still needs")
