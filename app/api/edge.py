"""The edge's question on a cache miss: may this package be served?

nginx has checked the link's signature and expiry already. It asks here only
when its cache has no copy; the answer is an X-Accel-Redirect to its origin
location with a storage URL presigned for the internal endpoint, or a 404
(a pulled version stays unavailable even to holders of a valid link). Cache
hits never come here. nginx routes no public path to this blueprint.
"""

from __future__ import annotations

from flask import Blueprint, Response

from app import packages
from app.edge import ORIGIN_LOCATION, ORIGIN_QUERY_HEADER
from app.services import services

bp = Blueprint("edge", __name__, url_prefix="/edge")

# nginx uses the storage URL at once; a short life is plenty.
ORIGIN_URL_TTL = 300


@bp.get("/objects/<path:key>")
def origin(key):
    packages.servable_package(key)
    url = services().storage.presigned_get(key, ORIGIN_URL_TTL, internal=True)
    answer = Response(status=200, headers={"X-Accel-Redirect": ORIGIN_LOCATION,
                                           ORIGIN_QUERY_HEADER: url.partition("?")[2]})
    # nginx keeps this answer's Content-Type for the redirected response: the
    # edge sets the package's type itself.
    del answer.headers["Content-Type"]
    return answer
