"""Public routes: what devices ask for.

Every answer here is the same for whoever asks, so shared caches may keep it
(the edge micro-caches them; docs/edge.md): each carries a strong ETag of
its body, answers a matching If-None-Match with 304, and says how long it
may be kept (`Cache-Control: public, max-age=…, stale-while-revalidate=…`,
MOSIS_PUBLIC_*). Errors stay `no-store`. Publishing and pulling purge the
cached answers that name a package. When the edge's cache disk has no room
for an answer, the answer tells the edge not to keep it (`X-Accel-Expires:
0`): nginx drops a response whose cache file it cannot write.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, current_app, jsonify, request

from app.api.inputs import SHA256_RE, query_value, query_version_code
from app.api.openapi import document
from app.catalog import assets, packages, signatures
from app.edge.nginx import cache_has_room
from app.platform import keys
from app.platform.clock import iso
from app.services import services

bp = Blueprint("public", __name__, url_prefix="/v1")


def cache_control(max_age: int, stale: int) -> str:
    if max_age <= 0:
        return "no-cache"  # kept, but asked again (with the ETag) every time
    return f"public, max-age={max_age}, stale-while-revalidate={stale}"


def shared(body: dict, max_age: int) -> Response:
    """`body` as an answer caches may share for `max_age` seconds."""
    settings = services().settings
    response = jsonify(body)
    data = response.get_data()
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    response.headers["Cache-Control"] = cache_control(max_age, settings.public_read_stale)
    if not cache_has_room(settings.resolved_edge_cache_dir, len(data)):
        response.headers["X-Accel-Expires"] = "0"  # read by the edge, never passed on
    return response.make_conditional(request)


@bp.get("/packages/<package_id:package_id>")
def package(package_id):
    app, version = packages.published_app(package_id)
    return shared({
        "package_id": app.package_id,
        "name": app.name,
        "latest": {
            "version": version.version_name,
            "version_code": version.version_code,
            "size": version.size,
            "sha256": version.sha256,
            "published_at": iso(version.published_at),
            "manifest": version.manifest,
        },
        **assets.listing(services(), app),
    }, services().settings.public_read_max_age)


@bp.get("/packages/<package_id:package_id>/download")
def download(package_id):
    # The version the device has: a patch from it comes along when one is ready (docs/deltas.md).
    from_code = query_version_code("from_version_code")
    from_sha256 = query_value("from_sha256", SHA256_RE, "64 lower-case hex digits")
    return shared(packages.download_info(services(), package_id, from_code, from_sha256),
                  services().settings.public_read_max_age)


@bp.get("/signing-key")
def signing_key():
    """The active packages key (what devices before the keyring pinned)."""
    key = services().keys.current().packages_key
    return shared({"algorithm": key.algorithm, "key_id": key.key_id, "public_key": key.public_key},
                  services().settings.public_read_max_age)


@bp.get("/signing-keys")
def keyring():
    return shared(keys.document(services().keys.current()), services().settings.public_read_max_age)


@bp.get("/signing-keys/<code:version>")
def keyring_version(version):
    # A version never changes once made.
    return shared(keys.document(keys.version(version)), services().settings.public_static_max_age)


@bp.get("/index.json")
def catalog_index():
    """The signed catalog index (docs/signing.md); it changes on publish and
    pull, which purge it."""
    return shared(signatures.served_index(services()), services().settings.public_read_max_age)


@bp.get("/openapi.json")
def openapi():
    return shared(document(current_app, services().settings), services().settings.public_static_max_age)
