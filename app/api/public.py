"""Public routes: what devices ask for."""

from __future__ import annotations

from flask import Blueprint

from app import assets, packages
from app.services import services

bp = Blueprint("public", __name__, url_prefix="/v1")


@bp.get("/packages/<package_id:package_id>")
def package(package_id):
    app, version = packages.published_app(package_id)
    return {
        "package_id": app.package_id,
        "name": app.name,
        "latest": {
            "version": version.version_name,
            "version_code": version.version_code,
            "size": version.size,
            "sha256": version.sha256,
            "published_at": packages.iso(version.published_at),
            "manifest": version.manifest,
        },
        **assets.listing(services(), app),
    }


@bp.get("/packages/<package_id:package_id>/download")
def download(package_id):
    return packages.download_info(services(), package_id)


@bp.get("/signing-key")
def signing_key():
    return services().signing_key.public_info()


@bp.get("/openapi.json")
def openapi():
    from flask import current_app

    from app.openapi import document

    return document(current_app, services().settings)
