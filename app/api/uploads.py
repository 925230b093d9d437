"""Developer routes for unfinished uploads: resume, presign parts, abort."""

from __future__ import annotations

from flask import Blueprint, g, request

from app.api.auth import own_app, require_developer
from app.api.inputs import Field, integers, read_json
from app.catalog import packages, uploads
from app.services import services

bp = Blueprint("uploads", __name__, url_prefix="/v1/apps/<hexid:app_id>/versions/<code:version_code>")


def _version(app_id: str, version_code: int):
    return packages.version_of(own_app(app_id), version_code)


@bp.route("/upload", methods=["GET", "DELETE"])
@require_developer("read", DELETE="upload")
def upload(app_id, version_code):
    # One rule for both methods: with two rules on one path, werkzeug answers
    # 405 instead of 404 when the version_code converter refuses the URL.
    if request.method == "DELETE":
        return _abort(app_id, version_code)
    app = own_app(app_id)
    return {"upload": packages.upload_state(services(), app, version_code)}


def _abort(app_id: str, version_code: int):
    version = uploads.abort(services(), _version(app_id, version_code),
                            f"developer:{g.principal.developer.id}")
    return {"version": packages.version_dict(version)}


@bp.post("/upload/parts")
@require_developer("upload")
def presign_parts(app_id, version_code):
    svc = services()
    version = _version(app_id, version_code)  # the app first: another's is 404 whatever the body
    body = read_json({"part_numbers": Field(list)}, svc.settings.max_json_bytes)
    numbers = integers("part_numbers", body["part_numbers"])
    return uploads.presign_parts(svc, version, numbers)
