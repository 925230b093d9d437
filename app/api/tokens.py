"""Developer routes for tokens: a token with the `tokens` scope issues
narrower, no longer-lived tokens for its developer, lists and revokes them
(app.catalog.accounts keeps the rule). `read_grant` reads the body the
admin's issuing route takes too."""

from __future__ import annotations

from flask import Blueprint, g, request

from app.api.auth import require_developer
from app.api.inputs import Field, read_json
from app.catalog import accounts
from app.housekeeping.retention import parse_instant
from app.platform.errors import BadRequest
from app.services import services

bp = Blueprint("tokens", __name__, url_prefix="/v1/tokens")


def _strings(name: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not all(isinstance(v, str) for v in value) or len(value) > 1000:
        raise BadRequest(f"{name} must be a list of strings", code="invalid_field", details={"field": name})
    return tuple(value)


def read_grant() -> accounts.Grant:
    """`{"scopes", "apps", "expires_at"}`, each optional; no body at all is `{}`."""
    if not request.content_length and request.mimetype != "application/json":
        return accounts.Grant()
    body = read_json({"scopes": Field(list, required=False), "apps": Field(list, required=False),
                      "expires_at": Field(str, required=False, min_len=1, max_len=64)},
                     services().settings.max_json_bytes)
    expires = None
    if body["expires_at"] is not None:
        try:
            expires = parse_instant(body["expires_at"])
        except ValueError:
            raise BadRequest("expires_at must be an ISO 8601 time such as 2027-01-31T12:00:00Z",
                             code="invalid_field", details={"field": "expires_at"}) from None
    return accounts.Grant(_strings("scopes", body["scopes"]), _strings("apps", body["apps"]), expires)


@bp.get("")
@require_developer("tokens")
def list_tokens():
    return {"tokens": [accounts.token_dict(t) for t in accounts.issued_by(g.principal.token)]}


@bp.post("")
@require_developer("tokens")
def issue_token():
    token, row = accounts.sub_token(g.principal.token, read_grant())
    return {"token": token, "token_id": row.id, "details": accounts.token_dict(row)}, 201


@bp.delete("/<hexid:token_id>")
@require_developer("tokens")
def revoke_token(token_id):
    return {"token": accounts.token_dict(accounts.revoke_issued(g.principal.token, token_id))}
