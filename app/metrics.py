"""Prometheus metrics of the appliance (API and scheduler).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before the app is imported,
so these metrics are shared between workers through files; gauges say how
workers' values combine.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Histogram

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
# traffic) live in app.monitoring and app.edge_log: defined here, the API's
# workers would each export a zero for them.


def init_app(app) -> None:
    """Request metrics per route (templated, so labels stay bounded) and /metrics."""
    from flask import Response
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
    from prometheus_flask_exporter import PrometheusMetrics

    # A registry per app keeps app factories (tests, CLI) from colliding on
    # metric names; the module metrics above live in the default registry.
    flask_registry = CollectorRegistry(auto_describe=True)
    PrometheusMetrics(app, path=None, registry=flask_registry, group_by="url_rule",
                      excluded_paths=["^/metrics$", "^/healthz$"])

    @app.get("/metrics")
    def prometheus_metrics():
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest(REGISTRY) + generate_latest(flask_registry)
        return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")
