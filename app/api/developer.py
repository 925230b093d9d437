"""Developer routes: apps, versions, uploads and publishing."""

from __future__ import annotations

from flask import Blueprint, g

from app.api.auth import may_register_apps, own_app, require_developer
from app.api.inputs import APP_NAME, PACKAGE_ID, SHA256_RE, VERSION_CODE, VERSION_NAME, Field, read_json
from app.catalog import packages
from app.services import services

bp = Blueprint("developer", __name__, url_prefix="/v1/apps")


def _max_json() -> int:
    return services().settings.max_json_bytes


@bp.post("")
@require_developer("upload")
def create_app():
    may_register_apps()
    body = read_json({"package_id": PACKAGE_ID, "name": APP_NAME}, _max_json())
    app = packages.create_app(g.principal.developer, body["package_id"], body["name"])
    return {"app": packages.app_dict(app)}, 201


@bp.get("")
@require_developer("read")
def list_apps():
    token = g.principal.token
    return {"apps": [packages.app_dict(a) for a in packages.apps_of(g.principal.developer)
                     if token.apps is None or a.id in token.apps]}


@bp.get("/<hexid:app_id>")
@require_developer("read")
def get_app(app_id):
    return {"app": packages.app_dict(own_app(app_id))}


@bp.post("/<hexid:app_id>/versions")
@require_developer("upload")
def create_version(app_id):
    app = own_app(app_id)
    svc = services()
    body = read_json({
        "version_code": VERSION_CODE,
        "version_name": VERSION_NAME,
        "size": Field(int, minimum=1),
        "sha256": Field(str, required=False, pattern=SHA256_RE, hint="64 lower-case hex digits"),
    }, _max_json())
    version, upload = packages.create_version(svc, app, body["version_code"], body["version_name"],
                                              body["size"], body["sha256"])
    return {"version": packages.version_dict(version), "upload": upload}, 201


@bp.get("/<hexid:app_id>/versions")
@require_developer("read")
def list_versions(app_id):
    return {"versions": [packages.version_dict(v) for v in packages.versions_of(own_app(app_id))]}


@bp.get("/<hexid:app_id>/versions/<code:version_code>")
@require_developer("read")
def get_version(app_id, version_code):
    return {"version": packages.version_dict(packages.version_of(own_app(app_id), version_code))}


@bp.post("/<hexid:app_id>/versions/<code:version_code>/complete")
@require_developer("upload")
def complete_upload(app_id, version_code):
    version = packages.complete_upload(services(), own_app(app_id), version_code)
    return {"version": packages.version_dict(version)}, 202


@bp.post("/<hexid:app_id>/versions/<code:version_code>/publish")
@require_developer("publish")
def publish(app_id, version_code):
    version = packages.publish(services(), own_app(app_id), version_code)
    return {"version": packages.version_dict(version)}, 200
