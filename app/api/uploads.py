"""Developer routes for unfinished uploads: resume, presign parts, abort."""

from __future__ import annotations

from flask import Blueprint, g

from app import packages, uploads
from app.api.inputs import Field, read_json
from app.auth import require_developer
from app.errors import BadRequest
from app.services import services

bp = Blueprint("uploads", __name__, url_prefix="/v1/apps/<hexid:app_id>/versions/<code:version_code>")


def _version(app_id: str, version_code: int):
    return packages.version_of(packages.app_of(g.principal.developer, app_id), version_code)


@bp.get("/upload")
@require_developer
def upload_state(app_id, version_code):
    app = packages.app_of(g.principal.developer, app_id)
    return {"upload": packages.upload_state(services(), app, version_code)}


@bp.post("/upload/parts")
@require_developer
def presign_parts(app_id, version_code):
    svc = services()
    body = read_json({"part_numbers": Field(list)}, svc.settings.max_json_bytes)
    numbers = body["part_numbers"]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise BadRequest("part_numbers must be a list of integers", code="invalid_field",
                         details={"field": "part_numbers"})
    return uploads.presign_parts(svc, _version(app_id, version_code), numbers)


@bp.delete("/upload")
@require_developer
def abort_upload(app_id, version_code):
    version = uploads.abort(services(), _version(app_id, version_code),
                            f"developer:{g.principal.developer.id}")
    return {"version": packages.version_dict(version)}
