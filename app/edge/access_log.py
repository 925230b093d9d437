"""Edge traffic from nginx's JSON access log, tailed by the scheduler.

nginx writes one JSON object per line to MOSIS_EDGE_ACCESS_LOG (default
`$MOSIS_DATA_DIR/logs/edge-access.log`) with the fields: time (ISO 8601),
remote_addr, request_id, method, uri, status, bytes_sent, body_bytes_sent,
request_time (seconds), upstream_response_time, upstream_status, cache
($upstream_cache_status: HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED,
BYPASS or empty), host, user_agent. `uri` is the path as sent, never the
query (links and uploads carry signatures there).

The `edge_log` housekeeping job reads what was appended since its last run and
turns it into Prometheus counters (requests, downloads, bytes sent, cache
status, request time) and per-day totals in the database (`edge_traffic`, the
input of cost tracking). Delta patches (area `deltas`) also count the bytes of
full packages they replaced: the target's size in proportion to the share of
the patch sent (a resumed range counts its part), from the patch's row. Its position (`log_cursor`) is committed in the same
transaction as the totals, so a line is counted once even across crashes and
restarts. Rotation is followed: when the file at the path is another file
(new inode, or different first bytes after a truncation), the rest of the
old file is read first if it is still beside it (`edge-access.log.1`, or any
name starting with the log's name: logrotate's `delaycompress` keeps it
readable), then the new file from its start.

Why not an exporter: Debian's prometheus-nginx-exporter reads only
stub_status (connections and request totals: no status, bytes, cache status
or per-path split) and mtail would export counters but could not record the
per-day totals that cost tracking needs. This reader is small and does both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import peewee as pw
from prometheus_client import Counter, Gauge, Histogram

from app.platform.clock import utcnow
from app.platform.jobs import Job
from app.platform.models import Delta, EdgeTraffic, LogCursor, database
from app.platform.storage import parse_delta_key

log = logging.getLogger(__name__)

CURSOR_NAME = "edge-access"
POLL_PERIOD = dt.timedelta(seconds=10)
# A run reads at most MAX_CHUNKS_PER_RUN chunks; a scheduler that dies mid-run
# holds the job this long, not the default hour.
MAX_RUNTIME = dt.timedelta(minutes=5)
CHUNK = 4 * 1024 * 1024  # bytes read and committed at a time
MAX_CHUNKS_PER_RUN = 64
HEAD_BYTES = 256  # fingerprint of a file's start

AREAS = ("packages", "deltas", "assets", "uploads", "api", "other")
CACHE_STATUSES = ("hit", "miss", "expired", "stale", "updating", "revalidated", "bypass")
# Responses whose body came from the edge's cache, not from storage.
SERVED_FROM_CACHE = {"hit", "stale", "updating", "revalidated"}

EDGE_REQUESTS = Counter("mosis_edge_requests_total", "Requests the edge answered",
                        ["area", "status", "cache"])
EDGE_ERRORS = Counter("mosis_edge_errors_total", "Requests the edge answered with a 5xx status",
                      ["area"])
EDGE_SENT_BYTES = Counter("mosis_edge_sent_bytes_total", "Bytes the edge sent to clients (egress)",
                          ["area", "cache"])
EDGE_DOWNLOADS = Counter("mosis_edge_downloads_total",
                         "Package downloads the edge served (GET /packages/... answered 200 or 206)",
                         ["cache"])
EDGE_DELTA_REPLACED_BYTES = Counter(
    "mosis_edge_delta_replaced_bytes_total",
    "Bytes of full packages that the delta patches the edge sent replaced (compare "
    "mosis_edge_sent_bytes_total{area=\"deltas\"}: the difference is egress saved)")
EDGE_REQUEST_SECONDS = Histogram(
    "mosis_edge_request_duration_seconds", "Time the edge took to answer, by area", ["area"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
EDGE_LOG_LINES = Counter("mosis_edge_log_lines_total", "Access log lines read, by result (ok, malformed)",
                         ["result"])
EDGE_LOG_ROTATIONS = Counter("mosis_edge_log_rotations_total",
                             "Log files followed to a new file, by whether the old one was read to its end",
                             ["result"])
EDGE_LOG_UNREAD = Gauge("mosis_edge_log_unread_bytes", "Bytes of the access log not read yet")
EDGE_LAST_REQUEST = Gauge("mosis_edge_log_last_request_timestamp_seconds",
                          "Unix time of the latest request read from the access log")
# Start at zero so the first lines of a kind are a visible increase.
for _result in ("ok", "malformed"):
    EDGE_LOG_LINES.labels(_result)
for _area in AREAS:
    EDGE_ERRORS.labels(_area)


# -- one line ---------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    at: dt.datetime  # UTC
    area: str
    method: str
    status: int
    cache: str
    bytes_sent: int
    request_time: float
    path: str = ""
    body_bytes: int = 0

    @property
    def is_download(self) -> bool:
        return self.area == "packages" and self.method == "GET" and self.status in (200, 206)

    @property
    def is_patch(self) -> bool:
        """A delta patch sent (whole or a range)."""
        return self.area == "deltas" and self.method == "GET" and self.status in (200, 206)

    @property
    def from_cache(self) -> bool:
        return self.cache in SERVED_FROM_CACHE


def area_of(method: str, uri: str) -> str:
    path = uri.split("?", 1)[0]
    if path.startswith("/packages/"):
        return "packages"
    if path.startswith("/deltas/"):
        return "deltas"
    if path.startswith("/assets/"):
        return "assets"
    if path.startswith("/v1/") or path in ("/healthz", "/readyz", "/metrics"):
        return "api"
    if method in ("PUT", "POST") and "/temp/" in path:
        return "uploads"  # presigned uploads pass through the edge to storage
    return "other"


def parse_line(line: bytes) -> Request | None:
    """The request a log line describes, or None if the line is not one of ours."""
    try:
        entry = json.loads(line)
        at = dt.datetime.fromisoformat(entry["time"])
        status = int(entry["status"])
        bytes_sent = int(entry.get("bytes_sent") or 0)
        body_bytes = int(entry.get("body_bytes_sent") or 0)
        request_time = float(entry.get("request_time") or 0)
        method, uri = str(entry["method"]), str(entry["uri"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not 100 <= status <= 599 or bytes_sent < 0 or request_time < 0:
        return None
    at = at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at.astimezone(dt.timezone.utc)
    cache = str(entry.get("cache") or "").lower() or "none"
    if cache not in CACHE_STATUSES and cache != "none":
        cache = "other"
    return Request(at.replace(tzinfo=None), area_of(method, uri), method, status, cache, bytes_sent,
                   request_time, uri.split("?", 1)[0], max(body_bytes, 0))


def _patch_sizes(path: str) -> tuple[int, int] | None:
    """(patch size, target package size) of the patch at a /deltas/ path, if known."""
    parsed = parse_delta_key(path.lstrip("/"))
    if parsed is None:
        return None
    _, app_id, from_code, to_code = parsed
    row = (Delta.select(Delta.size, Delta.to_size)
           .where((Delta.app == app_id) & (Delta.from_version_code == from_code)
                  & (Delta.to_version_code == to_code) & Delta.size.is_null(False))
           .order_by(Delta.created_at.desc()).tuples().first())
    return row if row and row[0] and row[1] else None


# -- a batch of lines --------------------------------------------------------------------

@dataclass
class Batch:
    traffic: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0, 0, 0]))
    requests: list[Request] = field(default_factory=list)
    malformed: int = 0
    patches: dict = field(default_factory=dict)  # path -> (patch size, target size) or None
    replaced: int = 0

    def replaced_by(self, req: Request) -> int:
        """Full-package bytes a delta patch download stood in for."""
        if not req.is_patch:
            return 0
        if req.path not in self.patches:
            self.patches[req.path] = _patch_sizes(req.path)
        sizes = self.patches[req.path]
        if sizes is None:
            return 0
        patch, target = sizes
        return target * min(req.body_bytes, patch) // patch

    def add_lines(self, data: bytes) -> None:
        for line in data.splitlines():
            if not line.strip():
                continue
            req = parse_line(line)
            if req is None:
                self.malformed += 1
                continue
            self.requests.append(req)
            row = self.traffic[(req.at.date(), req.area)]
            row[0] += 1
            row[1] += req.is_download
            row[2] += req.bytes_sent
            row[3] += req.from_cache
            row[4] += req.status >= 500
            replaced = self.replaced_by(req)
            row[5] += replaced
            self.replaced += replaced

    def save_totals(self) -> None:
        for (day, area), (requests, downloads, sent, hits, errors, replaced) in self.traffic.items():
            T = EdgeTraffic
            (T.insert(day=day, area=area, requests=requests, downloads=downloads, bytes_sent=sent,
                      cache_hits=hits, errors=errors, replaced_bytes=replaced)
             .on_conflict(conflict_target=[T.day, T.area], update={
                 T.replaced_bytes: T.replaced_bytes + pw.EXCLUDED.replaced_bytes,
                 T.requests: T.requests + pw.EXCLUDED.requests,
                 T.downloads: T.downloads + pw.EXCLUDED.downloads,
                 T.bytes_sent: T.bytes_sent + pw.EXCLUDED.bytes_sent,
                 T.cache_hits: T.cache_hits + pw.EXCLUDED.cache_hits,
                 T.errors: T.errors + pw.EXCLUDED.errors})
             .execute())

    def export(self) -> None:
        """Prometheus counters: only once the batch is committed."""
        EDGE_LOG_LINES.labels("ok").inc(len(self.requests))
        EDGE_DELTA_REPLACED_BYTES.inc(self.replaced)
        if self.malformed:
            EDGE_LOG_LINES.labels("malformed").inc(self.malformed)
        for req in self.requests:
            EDGE_REQUESTS.labels(req.area, str(req.status), req.cache).inc()
            EDGE_SENT_BYTES.labels(req.area, req.cache).inc(req.bytes_sent)
            EDGE_REQUEST_SECONDS.labels(req.area).observe(req.request_time)
            if req.status >= 500:
                EDGE_ERRORS.labels(req.area).inc()
            if req.is_download:
                EDGE_DOWNLOADS.labels(req.cache).inc()
        if self.requests:
            latest = max(r.at for r in self.requests)
            EDGE_LAST_REQUEST.set(latest.replace(tzinfo=dt.timezone.utc).timestamp())


# -- the cursor ------------------------------------------------------------------------------

class CursorMoved(Exception):
    """Another reader advanced the cursor meanwhile: this batch is not ours to count."""


@dataclass(frozen=True)
class Position:
    inode: int | None
    offset: int
    head_sha256: str | None
    head_len: int


def _position(cursor: LogCursor) -> Position:
    return Position(cursor.inode, cursor.offset, cursor.head_sha256, cursor.head_len)


def _head(f, length: int) -> str:
    f.seek(0)
    return hashlib.sha256(f.read(length)).hexdigest()


def _same_file(f, st: os.stat_result, pos: Position) -> bool:
    if pos.inode != st.st_ino:
        return False
    if pos.head_len == 0:
        return True
    return st.st_size >= pos.head_len and _head(f, pos.head_len) == pos.head_sha256


def _fingerprinted(f, size: int, pos: Position) -> Position:
    """`pos` with a head fingerprint as long as the file now allows."""
    length = min(size, HEAD_BYTES)
    if pos.head_len >= length:
        return pos
    return Position(pos.inode, pos.offset, _head(f, length), length)


def _commit(path: Path, old: Position, new: Position, batch: Batch | None) -> None:
    with database.atomic():
        where = (LogCursor.name == CURSOR_NAME) & (LogCursor.offset == old.offset)
        where &= LogCursor.inode.is_null() if old.inode is None else (LogCursor.inode == old.inode)
        moved = (LogCursor.update(path=str(path), inode=new.inode, offset=new.offset,
                                  head_sha256=new.head_sha256, head_len=new.head_len,
                                  updated_at=utcnow()).where(where).execute())
        if not moved:
            raise CursorMoved()
        if batch is not None:
            batch.save_totals()
    if batch is not None:
        batch.export()


def _read_complete_lines(f, offset: int) -> tuple[bytes, int]:
    """Complete lines from `offset` (at most CHUNK bytes) and the offset after them."""
    f.seek(offset)
    data = f.read(CHUNK)
    end = data.rfind(b"\n")
    if end >= 0:
        return data[:end + 1], offset + end + 1
    if len(data) == CHUNK:  # one line longer than a chunk: not ours, skip it
        return data, offset + len(data)
    return b"", offset


def _drain(f, path: Path, pos: Position, budget: list[int]) -> tuple[Position, int]:
    """Read `f` from `pos` to its last complete line; return the new position and lines read."""
    lines = 0
    while budget[0] > 0:
        data, offset = _read_complete_lines(f, pos.offset)
        if offset == pos.offset:
            break
        budget[0] -= 1
        batch = Batch()
        batch.add_lines(data)
        new = _fingerprinted(f, os.fstat(f.fileno()).st_size,
                             Position(pos.inode, offset, pos.head_sha256, pos.head_len))
        _commit(path, pos, new, batch)
        pos = new
        lines += len(batch.requests) + batch.malformed
    return pos, lines


def _rotated_file(path: Path, inode: int | None) -> Path | None:
    """The file that was at `path` before rotation, found beside it by its inode."""
    if inode is None:
        return None
    try:
        for entry in os.scandir(path.parent):
            if entry.name.startswith(path.name) and entry.name != path.name \
                    and entry.is_file(follow_symlinks=False) and entry.inode() == inode:
                return Path(entry.path)
    except OSError:
        return None
    return None


def tail(path: Path) -> int:
    """Read what the log gained since the last call; return the lines read."""
    LogCursor.insert(name=CURSOR_NAME, path=str(path)).on_conflict_ignore().execute()
    pos = _position(LogCursor.get_by_id(CURSOR_NAME))
    budget = [MAX_CHUNKS_PER_RUN]
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        EDGE_LOG_UNREAD.set(0)
        return 0
    lines = 0
    with f:
        st = os.fstat(f.fileno())
        if not _same_file(f, st, pos) or st.st_size < pos.offset:
            if pos.inode == st.st_ino:  # truncated in place (copytruncate)
                EDGE_LOG_ROTATIONS.labels("truncated").inc()
            elif (old_path := _rotated_file(path, pos.inode)) is not None:
                with open(old_path, "rb") as old:
                    pos, lines = _drain(old, path, pos, budget)
                if budget[0] == 0:  # more of the old file next run
                    return lines
                EDGE_LOG_ROTATIONS.labels("read_to_end").inc()
            elif pos.inode is not None:
                log.warning("edge log %s was replaced and the old file is gone; its unread lines "
                            "are lost", path)
                EDGE_LOG_ROTATIONS.labels("old_file_gone").inc()
            new = _fingerprinted(f, st.st_size, Position(st.st_ino, 0, None, 0))
            _commit(path, pos, new, None)
            pos = new
        pos, more = _drain(f, path, pos, budget)
        lines += more
        EDGE_LOG_UNREAD.set(max(os.fstat(f.fileno()).st_size - pos.offset, 0))
    return lines


def edge_log_job(svc, now: dt.datetime) -> int:
    """Housekeeping job: count what the edge served since the last run."""
    try:
        return tail(svc.settings.resolved_edge_access_log)
    except CursorMoved:
        log.info("edge log cursor moved by another scheduler; skipping this run")
        return 0


JOBS = (Job("edge_log", edge_log_job, POLL_PERIOD, max_runtime=MAX_RUNTIME),)
