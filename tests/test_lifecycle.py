"""The lifecycle table is the one description of the version statuses: the
docs and the OpenAPI document follow it, and its transition function moves
only along it, one winner per race."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from app.platform import lifecycle
from app.platform.lifecycle import BY_OP, EDGES, TERMINAL, TRANSITIONS, LifecycleError, transition
from app.platform.models import App, Developer, Version, VersionStatus as S, database

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_show_the_table():
    table = lifecycle.markdown_table()
    assert table in (ROOT / "docs" / "api.md").read_text()
    assert table in lifecycle.__doc__
    assert len(table.splitlines()) == len(TRANSITIONS) + 2


def test_the_openapi_status_enum_is_the_lifecycles(client):
    schema = client.get("/v1/openapi.json").json["components"]["schemas"]["VersionStatus"]
    assert schema["enum"] == list(S.ALL)


def test_every_status_is_reached_from_uploading_and_only_abandoned_and_purged_are_final():
    reached, frontier = {S.UPLOADING}, [S.UPLOADING]
    while frontier:
        source = frontier.pop()
        for a, b in EDGES:
            if a == source and b not in reached:
                reached.add(b)
                frontier.append(b)
    assert reached == set(S.ALL)
    assert set(TERMINAL) == {S.ABANDONED, S.PURGED}
    assert all(t.target in S.ALL and set(t.sources) <= set(S.ALL) for t in TRANSITIONS)
    assert len(BY_OP) == len(TRANSITIONS)
    # Retention never takes the current published version.
    assert (S.PUBLISHED, S.PURGING) not in EDGES and (S.PUBLISHED, S.PURGED) not in EDGES


def _version(status: str) -> Version:
    dev = Developer.create(name="l", email=f"{uuid.uuid4().hex}@example.com")
    app = App.create(developer=dev, package_id=f"com.lc.a{uuid.uuid4().hex[:10]}", name="L")
    return Version.create(app=app, version_code=1, version_name="1", declared_size=4, status=status)


def _row(version: Version) -> Version:
    return Version.get_by_id(version.id)


def test_a_transition_not_in_the_table_is_refused_and_changes_nothing(services):
    v = _version(S.DRAFT)
    with pytest.raises(LifecycleError):
        transition(v, "resurrect")
    with pytest.raises(LifecycleError):  # publish leaves only from draft
        transition(v, "publish", sources=(S.PULLED,))
    with pytest.raises(LifecycleError):
        transition(v, "publish", sources=())
    with pytest.raises(LifecycleError):  # the status and the stamps are the table's
        transition(v, "publish", status=S.PURGED)
    with pytest.raises(LifecycleError):
        transition(v, "reject", published_at=v.created_at)
    assert _row(v).status == S.DRAFT and _row(v).updated_at == v.updated_at


def test_a_transition_sets_its_stamp_and_ends_the_lease(services):
    v = _version(S.VALIDATING)
    Version.update(lease_owner="w", lease_expires_at=v.created_at).where(Version.id == v.id).execute()
    assert transition(v, "validate", where=Version.lease_owner == "w", sha256="0" * 64)
    row = _row(v)
    assert (row.status, row.sha256, row.lease_owner, row.lease_expires_at) == (S.DRAFT, "0" * 64, None, None)
    assert row.validated_at is not None and row.validated_at == row.updated_at
    assert row.failed_at is None
    # From draft, it no longer validates.
    assert not transition(row, "validate")


def test_an_extra_condition_that_does_not_hold_changes_nothing(services):
    v = _version(S.VALIDATING)
    Version.update(lease_owner="someone-else").where(Version.id == v.id).execute()
    assert not transition(v, "fail", where=Version.lease_owner == "me", error_code="x")
    assert _row(v).status == S.VALIDATING and _row(v).error_code is None


def test_of_two_transitions_from_the_same_state_the_second_loses_cleanly(services):
    v = _version(S.DRAFT)
    seen_by_first, seen_by_second = _row(v), _row(v)  # both saw a draft
    assert transition(seen_by_first, "publish")
    assert not transition(seen_by_second, "reject", sources=(seen_by_second.status,), status_reason="no")
    row = _row(v)
    assert row.status == S.PUBLISHED and row.rejected_at is None and row.status_reason is None


def test_racing_transitions_from_the_same_state_have_exactly_one_winner(services):
    for _ in range(3):
        v = _version(S.DRAFT)
        ops = ["publish", "reject", "pull", "expire"]
        barrier, results = threading.Barrier(len(ops)), {}

        def run(op):
            with database.connection_context():
                barrier.wait()
                with database.atomic():
                    # Each one from the status it saw, as callers do.
                    results[op] = transition(v, op, sources=(S.DRAFT,))

        threads = [threading.Thread(target=run, args=(op,)) for op in ops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [op for op, won in results.items() if won]
        assert len(results) == len(ops) and len(winners) == 1, results
        assert _row(v).status == BY_OP[winners[0]].target
