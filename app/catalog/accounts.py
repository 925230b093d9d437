"""Developer accounts and their API tokens (issued, listed, revoked by the admin)."""

from __future__ import annotations

import peewee as pw

from app.api.auth import issue_token
from app.platform.errors import Conflict, NotFound
from app.platform.models import ApiToken, Developer, database, record_audit, utcnow
from app.catalog.packages import iso


def create_developer(name: str, email: str, actor: str = "admin") -> tuple[Developer, str, ApiToken]:
    """A new developer and its first token (the plain token is returned only here)."""
    try:
        with database.atomic():
            developer = Developer.create(name=name, email=email.lower())
            token, row = issue_token(developer)
            record_audit(actor, "developer.created", "developer", developer.id, token_id=row.id)
    except pw.IntegrityError:
        raise Conflict("a developer with this e-mail exists already", code="email_taken") from None
    return developer, token, row


def developer_by_id(developer_id: str) -> Developer:
    developer = Developer.get_or_none(Developer.id == developer_id)
    if developer is None:
        raise NotFound("no such developer", code="developer_not_found")
    return developer


def developers() -> list[Developer]:
    return list(Developer.select().order_by(Developer.created_at))


def new_token(developer_id: str, actor: str = "admin") -> tuple[str, ApiToken]:
    """Another token for a developer (to rotate: issue one, then revoke the old)."""
    developer = developer_by_id(developer_id)
    with database.atomic():
        token, row = issue_token(developer)
        record_audit(actor, "token.issued", "developer", developer.id, token_id=row.id)
    return token, row


def tokens_of(developer_id: str) -> list[ApiToken]:
    developer = developer_by_id(developer_id)
    return list(ApiToken.select().where(ApiToken.developer == developer).order_by(ApiToken.created_at))


def revoke_token(token_id: str, actor: str = "admin") -> ApiToken:
    """Revoke at once: the next request with this token is refused. Idempotent."""
    row = ApiToken.get_or_none(ApiToken.id == token_id)
    if row is None:
        raise NotFound("no such token", code="token_not_found")
    if row.revoked_at is None:
        with database.atomic():
            (ApiToken.update(revoked_at=utcnow())
             .where((ApiToken.id == token_id) & ApiToken.revoked_at.is_null()).execute())
            record_audit(actor, "token.revoked", "developer", row.developer_id, token_id=token_id)
    return ApiToken.get_by_id(token_id)


def developer_dict(d: Developer) -> dict:
    return {"id": d.id, "name": d.name, "email": d.email, "created_at": iso(d.created_at)}


def token_dict(t: ApiToken) -> dict:
    return {"id": t.id, "developer_id": t.developer_id, "prefix": t.prefix,
            "created_at": iso(t.created_at), "last_used_at": iso(t.last_used_at),
            "revoked_at": iso(t.revoked_at)}
