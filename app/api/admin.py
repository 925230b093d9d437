"""Admin routes: developers and their tokens, moderation, retention."""

from __future__ import annotations

import peewee as pw
from flask import Blueprint

from app import packages, retention
from app.api.inputs import EMAIL_RE, REASON, Field, read_json
from app.auth import issue_token, require_admin
from app.errors import BadRequest, Conflict
from app.models import Developer, database, record_audit
from app.packages import iso
from app.services import services

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


def developer_dict(d: Developer) -> dict:
    return {"id": d.id, "name": d.name, "email": d.email, "created_at": iso(d.created_at)}


@bp.post("/developers")
@require_admin
def create_developer():
    body = read_json({"name": Field(str, min_len=1, max_len=200),
                      "email": Field(str, min_len=3, max_len=320, pattern=EMAIL_RE,
                                     hint="an e-mail address")},
                     services().settings.max_json_bytes)
    try:
        with database.atomic():
            developer = Developer.create(name=body["name"], email=body["email"].lower())
            token, row = issue_token(developer)
            record_audit("admin", "developer.created", "developer", developer.id, token_id=row.id)
    except pw.IntegrityError:
        raise Conflict("a developer with this e-mail exists already", code="email_taken") from None
    return {"developer": developer_dict(developer), "token": token, "token_id": row.id}, 201


@bp.post("/versions/<hexid:version_id>/reject")
@require_admin
def reject(version_id):
    body = read_json({"reason": REASON}, services().settings.max_json_bytes)
    return {"version": packages.version_dict(packages.reject(version_id, body["reason"]))}


@bp.post("/versions/<hexid:version_id>/pull")
@require_admin
def pull(version_id):
    svc = services()
    body = read_json({"reason": REASON}, svc.settings.max_json_bytes)
    return {"version": packages.version_dict(packages.pull(svc, version_id, body["reason"]))}


@bp.post("/retention/run")
@require_admin
def run_retention():
    """Apply the retention policy now, or forecast it (`dry_run`, optionally at `now`)."""
    svc = services()
    body = read_json({"dry_run": Field(bool),
                      "now": Field(str, required=False, min_len=1, max_len=64)},
                     svc.settings.max_json_bytes)
    now = None
    if body["now"] is not None:
        if not body["dry_run"]:
            raise BadRequest("now forecasts only: send it with dry_run true", code="now_requires_dry_run",
                             details={"field": "now"})
        try:
            now = retention.parse_instant(body["now"])
        except ValueError:
            raise BadRequest("now must be an ISO 8601 time such as 2027-01-31T12:00:00Z",
                             code="invalid_field", details={"field": "now"}) from None
    return retention.run_retention(svc, now, dry_run=body["dry_run"], actor="admin")
