"""Prometheus metrics of the appliance (API and scheduler).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before the app is imported,
so these metrics are shared between workers through files; gauges say how
workers' values combine.

Those files are memory-mapped: a page first written when its disk is full
kills the process with SIGBUS. So their blocks are reserved (fallocate)
before a file is mapped or grown, which fails with an error instead, and any
failure of that store keeps the value in the process's memory: a full disk
costs metrics (this process's series stop being exported until it is
replaced), never a worker or a request.
"""

from __future__ import annotations

import logging
import os
import re
import time

from prometheus_client import Counter, Histogram, values
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger(__name__)


class _ReservedMmapedDict(MmapedDict):
    """prometheus_client's metrics file, its blocks allocated before they are
    mapped: no page of the mapping can be without a block (SIGBUS)."""

    def __init__(self, filename, read_mode=False):
        if not read_mode:
            with open(filename, "a+b") as f:
                size = os.fstat(f.fileno()).st_size
                try:
                    _reserve(f.fileno(), max(size, _INITIAL_SIZE))
                except OSError:
                    if size == 0:  # an empty file would break /metrics, which reads them all
                        os.unlink(filename)
                    raise
        super().__init__(filename, read_mode)

    def _init_value(self, key):
        encoded = len(key.encode("utf-8"))
        needed = self._used + 4 + encoded + (8 - (encoded + 4) % 8) + 16  # as the parent lays it out
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity != self._capacity:
            _reserve(self._f.fileno(), capacity)
        super()._init_value(key)


_INITIAL_SIZE = 1 << 16  # prometheus_client's first size of a file


def _reserve(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (95, 22):  # EOPNOTSUPP, EINVAL: the filesystem cannot reserve; nothing lost trying
            return
        raise


def _guarded(store):
    """A value class that keeps each value in `store` (the multiprocess
    files) while it can, and in memory from the first failure on."""

    class GuardedValue:
        _multiprocess = True

        def __init__(self, *args, **kwargs):
            self._memory = values.MutexValue(*args, **kwargs)
            try:
                self._store = store(*args, **kwargs)
            except Exception as e:  # a full disk, a missing directory
                self._store = None
                _lost(e)

        def _call(self, name: str, *args):
            if self._store is not None:
                try:
                    return getattr(self._store, name)(*args)
                except Exception as e:
                    self._store = None
                    _lost(e)
            # Not exported (/metrics reads the files): kept only so that the code counting goes on.
            return getattr(self._memory, name)(*args)

        def inc(self, amount):
            self._call("inc", amount)

        def set(self, value, timestamp=None):
            self._call("set", value, timestamp)

        def set_exemplar(self, exemplar):
            self._memory.set_exemplar(exemplar)

        def get(self):
            return self._call("get")

        def get_exemplar(self):
            return self._memory.get_exemplar()

    return GuardedValue


_warned = False


def _lost(error: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("metrics of process %d are no longer shared (%s): the disk of PROMETHEUS_MULTIPROC_DIR "
                    "may be full; they come back when gunicorn replaces the worker", os.getpid(), error)


if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not getattr(values.ValueClass, "_guarded", False):
    values.MmapedDict = _ReservedMmapedDict  # what the multiprocess value class opens its files with
    values.ValueClass = _guarded(values.ValueClass)
    values.ValueClass._guarded = True

# A process that inherits PROMETHEUS_MULTIPROC_DIR without gunicorn having
# made it (a command run beside the API) writes its files there too.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

UPLOADS_STARTED = Counter("mosis_uploads_started_total", "Versions created (upload URLs issued)")
UPLOADS_COMPLETED = Counter("mosis_uploads_completed_total", "Uploads completed and queued for validation")
UPLOADS_FAILED = Counter("mosis_uploads_failed_total", "Uploads that failed, by reason code", ["reason"])
VALIDATIONS = Counter("mosis_validations_total", "Validation outcomes, by result (ok or reason code)",
                      ["result"])
VALIDATION_SECONDS = Histogram("mosis_validation_duration_seconds", "Time to validate one package",
                               buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
DOWNLOAD_LINKS = Counter("mosis_download_links_total", "Download links issued")
EDGE_CACHE_BYPASSES = Counter("mosis_edge_cache_bypass_total",
                              "Package downloads the edge served without caching: its cache disk was full")
CACHE_PURGES = Counter("mosis_cache_purges_total", "Cache purge calls, by cache (edge, cloudflare) and result",
                       ["cache", "result"])
ASSET_UPLOADS = Counter("mosis_asset_uploads_total",
                        "Icon and screenshot uploads, by kind and result (ok, unchanged or error code)",
                        ["kind", "result"])
ASSET_PROCESSING_SECONDS = Histogram("mosis_asset_processing_seconds",
                                     "Time to check and re-encode one accepted image", ["kind"],
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

# The contract's failure reasons start at zero, so the first failure of a kind
# is a visible increase (rate() cannot see a series that appears at 1).
FAILURE_REASONS = (
    "too_large", "size_mismatch", "upload_missing", "validation_error", "sha256_mismatch",
    "invalid_zip", "manifest_missing", "manifest_invalid", "package_id_mismatch",
    "version_code_mismatch", "unsafe_path", "symlink", "duplicate_entry", "encrypted_entry",
    "too_many_entries", "too_large_unpacked", "compression_ratio", "crc_mismatch",
    "invalid_encoding", "storage_unreadable",
)
for _reason in FAILURE_REASONS:
    UPLOADS_FAILED.labels(reason=_reason)
VALIDATIONS.labels(result="ok")
# Incremented by the integrity scrub for every stored package whose bytes no
# longer match the sha256 its row recorded (bit rot or tampering).
INTEGRITY_MISMATCHES = Counter("mosis_integrity_mismatches_total",
                               "Packages whose stored bytes no longer match their row, by kind "
                               "(missing, size, sha256, manifest)", ["kind"])
for _kind in ("missing", "size", "sha256", "manifest"):
    INTEGRITY_MISMATCHES.labels(kind=_kind)
STORAGE_ERRORS = Counter("mosis_storage_errors_total",
                         "Storage calls that failed because storage was unreachable or unavailable",
                         ["operation"])

# Metrics that only the scheduler exports (storage usage, queue, costs, edge
# traffic) live in app.housekeeping.monitoring and app.edge.access_log: defined here, the API's
# workers would each export a zero for them.


def init_app(app) -> None:
    """Request metrics per route (templated, so labels stay bounded) and /metrics."""
    from flask import Response
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
    from prometheus_flask_exporter import PrometheusMetrics

    # A registry per app keeps app factories (tests, CLI) from colliding on
    # metric names; the module metrics above live in the default registry.
    flask_registry = CollectorRegistry(auto_describe=True)
    exporter = PrometheusMetrics(app, path=None, registry=flask_registry, export_defaults=False)
    exporter.info("flask_exporter_info", "Information about the Prometheus Flask exporter",
                  version=exporter.version)
    _track_requests(app, flask_registry)

    @app.get("/metrics")
    def prometheus_metrics():
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest(REGISTRY) + generate_latest(flask_registry)
        return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")


# Requests to these are not counted: Prometheus and health checks poll them.
UNTRACKED_PATHS = re.compile(r"^/metrics\Z|^/healthz\Z")


def _track_requests(app, registry) -> None:
    """The series prometheus_flask_exporter's defaults write (grouped by
    url_rule, its default buckets), recorded by hooks of our own: its
    generic ones cost several times the writes themselves on every request
    (attribute probes through the request proxy, label checks); these keep
    each label combination's series at hand."""
    from flask import g, request

    duration = Histogram("flask_http_request_duration_seconds", "Flask HTTP request duration in seconds",
                         ("method", "url_rule", "status"), registry=registry)
    total = Counter("flask_http_request_total", "Total number of HTTP requests", ("method", "status"),
                    registry=registry)
    exceptions = Counter("flask_http_request_exceptions_total",
                         "Total number of HTTP requests which resulted in an exception", ("method", "status"),
                         registry=registry)
    series: dict[tuple, tuple] = {}  # (method, url_rule, status) -> (duration, total) children

    def record(method: str, status: int) -> None:
        if g.get("metrics_recorded"):
            return
        g.metrics_recorded = True
        key = method, str(request.url_rule), str(status)
        children = series.get(key)
        if children is None:
            children = series[key] = (duration.labels(*key), total.labels(method, key[2]))
        started = g.get("metrics_started")
        if started is not None:
            children[0].observe(max(time.perf_counter() - started, 0))
        children[1].inc()

    @app.before_request
    def _metrics_start():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _metrics_record(response):
        req = request._get_current_object()
        if not UNTRACKED_PATHS.match(req.path):
            record(req.method, response.status_code)
        return response

    @app.teardown_request
    def _metrics_exception(exc):
        # An exception no handler answered: counted as a 500.
        if exc is None or UNTRACKED_PATHS.match(request.path):
            return
        exceptions.labels(request.method, "500").inc()
        record(request.method, 500)
