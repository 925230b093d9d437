"""The edge access log reader: counts every line once, across restarts and rotation."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from app.edge import access_log as edge_log
from app.edge.access_log import area_of, parse_line, tail
from app.platform.models import EdgeTraffic, LogCursor, database
from tests.monitoring_helpers import edge_line, sample

DAY = dt.date(2026, 11, 30)


@pytest.fixture
def log_path(services, tmp_path):
    path = tmp_path / "logs" / "edge-access.log"
    path.parent.mkdir()
    with database.connection_context():
        yield path


def traffic(area: str, day: dt.date = DAY) -> dict:
    row = EdgeTraffic.get_or_none((EdgeTraffic.day == day) & (EdgeTraffic.area == area))
    if row is None:
        return {}
    return {"requests": row.requests, "downloads": row.downloads, "bytes_sent": row.bytes_sent,
            "cache_hits": row.cache_hits, "errors": row.errors}


def total_requests() -> int:
    return sum(r.requests for r in EdgeTraffic.select())


def append(path, *lines: str) -> None:
    with open(path, "a") as f:
        f.write("".join(lines))


def test_lines_become_counters_and_daily_totals_once(log_path):
    before = {
        "hit": sample("mosis_edge_requests_total", area="packages", status="200", cache="hit"),
        "bytes": sample("mosis_edge_sent_bytes_total", area="packages", cache="hit"),
        "downloads": sample("mosis_edge_downloads_total", cache="hit"),
        "malformed": sample("mosis_edge_log_lines_total", result="malformed"),
        "errors": sample("mosis_edge_errors_total", area="packages"),
        "slow": sample("mosis_edge_request_duration_seconds_bucket", area="assets", le="0.25"),
    }
    append(log_path,
           edge_line(bytes_sent=5000, cache="HIT"),
           edge_line(uri="/packages/d/a/1/package.mosis", status=206, bytes_sent=700, cache="HIT"),
           edge_line(uri="/packages/d/a/2/package.mosis", status=502, bytes_sent=300, cache="MISS"),
           edge_line(uri="/assets/a/icon-64.png?v=3", bytes_sent=2000, cache="MISS",
                     request_time=0.2),
           edge_line(uri="/v1/packages/com.x.y/download", bytes_sent=400, cache=""),
           "this is not json\n",
           edge_line(uri="/assets/a/icon-32.png").rstrip("\n")[:40])  # still being written
    assert tail(log_path) == 6
    assert traffic("packages") == {"requests": 3, "downloads": 2, "bytes_sent": 6000, "cache_hits": 2,
                                   "errors": 1}
    assert traffic("assets") == {"requests": 1, "downloads": 0, "bytes_sent": 2000, "cache_hits": 0,
                                 "errors": 0}
    assert traffic("api")["requests"] == 1
    assert sample("mosis_edge_requests_total", area="packages", status="200", cache="hit") == before["hit"] + 1
    assert sample("mosis_edge_sent_bytes_total", area="packages", cache="hit") == before["bytes"] + 5700
    assert sample("mosis_edge_downloads_total", cache="hit") == before["downloads"] + 2
    assert sample("mosis_edge_errors_total", area="packages") == before["errors"] + 1
    assert sample("mosis_edge_log_lines_total", result="malformed") == before["malformed"] + 1
    assert sample("mosis_edge_request_duration_seconds_bucket", area="assets", le="0.25") == before["slow"] + 1
    assert sample("mosis_edge_log_unread_bytes") == 40  # the partial line waits

    # Reading again (another run, or a restarted scheduler: the position is in
    # the database) counts nothing twice; the partial line counts once complete.
    assert tail(log_path) == 0
    assert total_requests() == 5
    append(log_path, edge_line(uri="/assets/a/icon-32.png")[40:])
    assert tail(log_path) == 1
    assert traffic("assets")["requests"] == 2
    assert sample("mosis_edge_log_unread_bytes") == 0


def test_days_come_from_the_request_time(log_path):
    append(log_path, edge_line(time="2026-11-29T23:59:59+00:00"),
           edge_line(time="2026-11-30T01:00:00+02:00"),  # 23:00 UTC the day before
           edge_line(time="2026-11-30T00:00:00Z"))
    tail(log_path)
    assert traffic("packages", dt.date(2026, 11, 29))["requests"] == 2
    assert traffic("packages", dt.date(2026, 11, 30))["requests"] == 1


def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(log_path):
    append(log_path, edge_line(), edge_line())
    assert tail(log_path) == 2
    append(log_path, edge_line())
    rotated = log_path.with_name(log_path.name + ".1")
    os.rename(log_path, rotated)
    append(rotated, edge_line())  # nginx writes to the old file until it reopens
    append(log_path, edge_line(uri="/assets/a/icon-32.png"), edge_line(uri="/assets/a/icon-64.png"))
    before = sample("mosis_edge_log_rotations_total", result="read_to_end")
    assert tail(log_path) == 4
    assert traffic("packages")["requests"] == 4 and traffic("assets")["requests"] == 2
    assert sample("mosis_edge_log_rotations_total", result="read_to_end") == before + 1
    assert tail(log_path) == 0

    # Rotated and already deleted (or compressed): only the new file can be read.
    os.rename(log_path, rotated)
    rotated.unlink()
    append(log_path, edge_line(uri="/v1/apps"))

    def followed():  # the new file may reuse the deleted one's inode: then only its start differs
        return (sample("mosis_edge_log_rotations_total", result="old_file_gone")
                + sample("mosis_edge_log_rotations_total", result="truncated"))

    before = followed()
    assert tail(log_path) == 1
    assert followed() == before + 1
    assert total_requests() == 7


def test_truncation_in_place_starts_again_from_the_top(log_path):
    append(log_path, edge_line(), edge_line(), edge_line())
    assert tail(log_path) == 3
    with open(log_path, "w") as f:  # copytruncate, then nginx writes on
        f.write(edge_line(uri="/assets/a/icon-32.png"))
    assert tail(log_path) == 1
    # Truncated and regrown past the old position before the reader looked:
    # the first bytes differ, so it is a new file all the same.
    with open(log_path, "w") as f:
        f.write("".join(edge_line(uri="/v1/apps", time=f"2026-11-30T11:00:0{i}+00:00") for i in range(5)))
    assert tail(log_path) == 5
    assert traffic("packages")["requests"] == 3
    assert traffic("assets")["requests"] == 1
    assert traffic("api")["requests"] == 5


def test_a_missing_log_is_not_an_error(log_path):
    assert tail(log_path) == 0
    append(log_path, edge_line())
    assert tail(log_path) == 1


def test_a_cursor_moved_by_another_reader_discards_the_batch(log_path, monkeypatch):
    append(log_path, edge_line(), edge_line())
    tail(log_path)
    append(log_path, edge_line())
    add_lines = edge_log.Batch.add_lines

    def race(self, data):
        add_lines(self, data)
        # Another scheduler reads the same line and commits first.
        LogCursor.update(offset=LogCursor.offset + len(data)).where(LogCursor.name == "edge-access").execute()

    monkeypatch.setattr(edge_log.Batch, "add_lines", race)
    before = sample("mosis_edge_requests_total", area="packages", status="200", cache="hit")
    with pytest.raises(edge_log.CursorMoved):
        tail(log_path)
    assert total_requests() == 2  # the loser counted nothing, in the database or in metrics
    assert sample("mosis_edge_requests_total", area="packages", status="200", cache="hit") == before


@pytest.mark.parametrize("method, uri, area", [
    ("GET", "/packages/d/a/1/package.mosis", "packages"),
    ("HEAD", "/packages/d/a/1/package.mosis?X-Amz-Signature=x", "packages"),
    ("GET", "/assets/a/icon-64.png", "assets"),
    ("GET", "/v1/packages/com.x.y", "api"),
    ("GET", "/readyz", "api"),
    ("PUT", "/mosis/temp/abc/package.mosis?X-Amz-Signature=x", "uploads"),
    ("GET", "/mosis/temp/abc/package.mosis", "other"),
    ("GET", "/", "other"),
])
def test_areas(method, uri, area):
    assert area_of(method, uri) == area


def test_what_counts_as_a_download_and_a_cache_hit():
    head = parse_line(edge_line(method="HEAD").encode())
    assert head.area == "packages" and not head.is_download
    assert parse_line(edge_line(status=206).encode()).is_download
    assert not parse_line(edge_line(status=304).encode()).is_download
    assert parse_line(edge_line(cache="STALE").encode()).from_cache
    assert not parse_line(edge_line(cache="MISS").encode()).from_cache
    assert parse_line(edge_line(cache="").encode()).cache == "none"
    assert parse_line(edge_line(cache="WEIRD").encode()).cache == "other"
    naive = parse_line(edge_line(time="2026-11-30T10:00:00").encode())
    assert naive.at == dt.datetime(2026, 11, 30, 10)


@pytest.mark.parametrize("line", [
    b"", b"[]", b"{}", b'{"time": "yesterday", "status": 200, "method": "GET", "uri": "/"}',
    b'{"time": "2026-11-30T10:00:00Z", "status": "oops", "method": "GET", "uri": "/"}',
    b'{"time": "2026-11-30T10:00:00Z", "status": 700, "method": "GET", "uri": "/"}',
    b'{"time": "2026-11-30T10:00:00Z", "status": 200, "method": "GET", "uri": "/", "bytes_sent": -1}',
])
def test_malformed_lines_are_refused(line):
    assert parse_line(line) is None


@pytest.fixture
def lines_before_start(services):
    """Five lines in the edge log before the scheduler starts (it reads them at once)."""
    path = services.settings.resolved_edge_access_log
    path.parent.mkdir(parents=True, exist_ok=True)
    append(path, *[edge_line() for _ in range(5)])
    return path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_killed_scheduler_resumes_where_it_stopped(services, lines_before_start, live_stack):
    """Real scheduler processes: lines read before a crash are not read again."""
    import time

    from app.platform.models import JobState
    from app.native import start_scheduler

    path = lines_before_start

    def wait_for(requests: int) -> None:
        deadline = time.monotonic() + 60
        while total_requests() != requests:
            assert time.monotonic() < deadline, f"{total_requests()} requests counted, not {requests}"
            time.sleep(0.3)

    wait_for(5)
    live_stack.scheduler.kill()  # a crash, not a clean stop
    append(path, *[edge_line() for _ in range(3)])
    os.rename(path, path.with_name(path.name + ".1"))
    append(path, edge_line(uri="/assets/a/icon-64.png"), edge_line(uri="/assets/a/icon-64.png"))
    # Due now, and no lease left (as if the crashed run's lease had run out).
    JobState.update(next_run_after=None, lease_expires_at=None).where(JobState.name == "edge_log").execute()

    live_stack.scheduler = start_scheduler(live_stack.env, services.settings.data_dir / "logs")
    live_stack.scheduler.wait_ready(60)
    try:
        wait_for(10)
        runs = JobState.get_by_id("edge_log").runs
        deadline = time.monotonic() + 60
        while JobState.get_by_id("edge_log").runs < runs + 1:  # a later run finds nothing new
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert total_requests() == 10
        assert traffic("packages")["requests"] == 8 and traffic("assets")["requests"] == 2
    finally:
        live_stack.scheduler.stop()
