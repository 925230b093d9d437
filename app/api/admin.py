"""Admin routes: developers and their tokens, moderation, retention."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import Blueprint, request

from app.api.auth import require_admin
from app.api.inputs import EMAIL_RE, REASON, Field, read_json
from app.api.tokens import read_grant
from app.catalog import accounts, packages, signatures
from app.housekeeping import cost, replica, retention, usage
from app.platform.config import ConfigError
from app.platform.errors import ApiError, BadRequest
from app.services import services

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


@bp.post("/developers")
@require_admin
def create_developer():
    body = read_json({"name": Field(str, min_len=1, max_len=200),
                      "email": Field(str, min_len=3, max_len=320, pattern=EMAIL_RE,
                                     hint="an e-mail address")},
                     services().settings.max_json_bytes)
    developer, token, row = accounts.create_developer(body["name"], body["email"])
    return {"developer": accounts.developer_dict(developer), "token": token, "token_id": row.id}, 201


@bp.get("/developers")
@require_admin
def list_developers():
    return {"developers": [accounts.developer_dict(d) for d in accounts.developers()]}


@bp.get("/developers/<hexid:developer_id>/tokens")
@require_admin
def list_tokens(developer_id):
    return {"tokens": [accounts.token_dict(t) for t in accounts.tokens_of(developer_id)]}


@bp.post("/developers/<hexid:developer_id>/tokens")
@require_admin
def issue_token(developer_id):
    token, row = accounts.new_token(developer_id, grant=read_grant())
    return {"token": token, "token_id": row.id, "details": accounts.token_dict(row)}, 201


@bp.delete("/tokens/<hexid:token_id>")
@require_admin
def revoke_token(token_id):
    return {"token": accounts.token_dict(accounts.revoke_token(token_id))}


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


# -- usage and costs -----------------------------------------------------------------

COST_WHAT_IF = ("storage_gb", "requests", "egress_gb")


def _what_if_usage() -> dict:
    """Usage figures given in the query string (to price a what-if month)."""
    out = {}
    for name, raw in request.args.items(multi=True):
        if name not in COST_WHAT_IF:
            raise BadRequest(f"unknown parameter {name!r}; known: {', '.join(COST_WHAT_IF)}",
                             code="unknown_parameter", details={"parameter": name})
        try:
            value = Decimal(raw)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value < 0 or value > Decimal("1e15"):
            raise BadRequest(f"{name} must be a number from 0 to 1e15", code="invalid_parameter",
                             details={"parameter": name})
        out[name] = value
    return out


@bp.get("/storage")
@require_admin
def storage_usage():
    return usage.storage_report(services())


@bp.get("/replica")
@require_admin
def replica_status():
    return replica.status(services())


@bp.get("/costs")
@require_admin
def costs():
    what_if = _what_if_usage()
    try:
        return cost.cost_report(services().settings, overrides=what_if)
    except ConfigError as e:  # the operator's prices file broke after start
        raise ApiError(str(e), status=503, code="prices_unavailable") from None


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


# -- signing keys (docs/signing.md, runbook) -------------------------------------------


@bp.post("/signing-keys/rotate")
@require_admin
def rotate_signing_key():
    return signatures.rotate(services())


@bp.post("/signing-keys/<keyid:key_id>/revoke")
@require_admin
def revoke_signing_key(key_id):
    return signatures.revoke(services(), key_id)
