"""The edge's question on a cache miss: may this package be served?

nginx has checked the link's signature and expiry already. It asks here only
when its cache has no copy; the answer is an X-Accel-Redirect to its origin
location with a storage URL presigned for the internal endpoint (the
uncached one when the cache's disk has no room for the package; the URL
makes storage answer with the package's type and file name), or a 404
(a pulled version stays unavailable even to holders of a valid link). Delta
patches (`deltas/…`) are asked about the same way: served while both their
versions are. Cache hits never come here. nginx routes no public path to this blueprint.

Assets come here too when the bucket is not public (MOSIS_S3_PUBLIC_ASSETS
false): they are served to anyone, so the answer is a presigned URL and no
question asked; a missing one is storage's 404, which nginx keeps briefly.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from app.catalog import deltas, packages
from app.edge.nginx import (
    ASSET_ORIGIN_LOCATION,
    ORIGIN_LOCATION,
    ORIGIN_QUERY_HEADER,
    ORIGIN_UNCACHED_LOCATION,
    cache_has_room,
)
from app.platform import metrics
from app.platform.errors import NotFound
from app.platform.storage import ASSET_KEY_RE, ASSETS, DELTAS
from app.services import services

log = logging.getLogger(__name__)

bp = Blueprint("edge", __name__, url_prefix="/edge")

# nginx uses the storage URL at once; a short life is plenty.
ORIGIN_URL_TTL = 300


@bp.get("/objects/<path:key>")
def origin(key):
    svc = services()
    if key.startswith(f"{ASSETS}/") and not svc.settings.s3_public_assets:
        # Checked before it becomes a storage URL: nothing but an asset's key.
        if not ASSET_KEY_RE.fullmatch(key):
            raise NotFound("no such asset", code="asset_not_found")
        return _redirect(ASSET_ORIGIN_LOCATION, svc.storage.presigned_get(key, ORIGIN_URL_TTL, internal=True))
    if key.startswith(f"{DELTAS}/"):
        found = deltas.servable(key)
        if found is None:
            raise NotFound("no such patch, or it is no longer available", code="delta_not_found")
        delta, package_id = found
        size = delta.size
        headers = _attachment(f"{package_id}-{delta.from_version_code}-{delta.to_version_code}.patch")
    else:
        version = packages.servable_package(key)
        size, headers = version.size, package_response_headers(version)
    url = svc.storage.presigned_get(key, ORIGIN_URL_TTL, internal=True, response_headers=headers)
    location = ORIGIN_LOCATION
    if not cache_has_room(svc.settings.resolved_edge_cache_dir, size or 0):
        # Served from storage all the same, only not kept.
        location = ORIGIN_UNCACHED_LOCATION
        metrics.EDGE_CACHE_BYPASSES.inc()
        log.warning("edge cache disk full: %s served without caching", key)
    return _redirect(location, url)


def package_response_headers(version) -> dict[str, str]:
    """What storage answers a package with, kept in the edge's cache with it:
    bytes to save, under a name a person recognises."""
    return _attachment(f"{version.app.package_id}-{version.version_code}.mosis")


def _attachment(name: str) -> dict[str, str]:
    return {"response-content-type": "application/octet-stream",
            "response-content-disposition": f'attachment; filename="{name}"'}


def _redirect(location: str, url: str) -> Response:
    answer = Response(status=200, headers={"X-Accel-Redirect": location,
                                           ORIGIN_QUERY_HEADER: url.partition("?")[2]})
    # nginx keeps this answer's Content-Type for the redirected response: the
    # edge sets the package's type itself.
    del answer.headers["Content-Type"]
    return answer
