"""Developer accounts and their API tokens (issued, listed, revoked by the admin).

Tokens are random, shown once, and stored only as SHA-256 (they carry 256
bits of entropy, so a slow hash adds nothing); app.api.auth checks them.

A token holds scopes (a subset of SCOPES), optionally a list of app ids it
is limited to, and optionally an expiry. A token with the `tokens` scope
issues tokens for its developer that are never broader than itself: no
scope it lacks, no app outside its own, no later expiry. Revoking a token
revokes every token it issued, and theirs, at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, replace

import peewee as pw

from app.platform.clock import iso, utcnow
from app.platform.errors import BadRequest, Conflict, Forbidden, NotFound
from app.platform.models import ApiToken, App, Developer, database, record_audit

TOKEN_PREFIX = "mos_"
# read: look at apps and versions; upload: register apps, declare versions,
# upload and complete them; publish; assets: icons and screenshots;
# tokens: issue and revoke narrower tokens.
SCOPES = ("read", "upload", "publish", "assets", "tokens")


def scopes_of(row: ApiToken) -> tuple[str, ...]:
    """A token's scopes; one from before scopes has every one."""
    return SCOPES if row.scopes is None else tuple(s for s in SCOPES if s in row.scopes)


def allows_app(row: ApiToken, app_id: str) -> bool:
    return row.apps is None or app_id in row.apps


def is_expired(row: ApiToken, now: dt.datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now


@dataclass(frozen=True)
class Grant:
    """What a new token may do: None for scopes or apps means everything."""

    scopes: tuple[str, ...] | None = None
    apps: tuple[str, ...] | None = None
    expires_at: dt.datetime | None = None


def _check_grant(developer: Developer, grant: Grant) -> Grant:
    if grant.scopes is not None:
        unknown = sorted(set(grant.scopes) - set(SCOPES))
        if unknown:
            raise BadRequest(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}",
                             code="invalid_field", details={"field": "scopes"})
        grant = replace(grant, scopes=tuple(s for s in SCOPES if s in grant.scopes))
    if grant.apps is not None:
        apps = tuple(dict.fromkeys(grant.apps))
        owned = {a.id for a in App.select(App.id).where((App.developer == developer) & App.id.in_(apps))}
        missing = [a for a in apps if a not in owned]
        if missing:
            raise NotFound(f"no app {missing[0]} of this developer", code="app_not_found")
        grant = replace(grant, apps=apps)
    if grant.expires_at is not None and grant.expires_at <= utcnow():
        raise BadRequest("expires_at is in the past", code="invalid_field", details={"field": "expires_at"})
    return grant


def narrower(parent: ApiToken, grant: Grant) -> Grant:
    """`grant` limited to what `parent` holds; refused where it asks for more."""
    held = scopes_of(parent)
    wanted = held if grant.scopes is None else grant.scopes
    missing = [s for s in wanted if s not in held]
    if missing:
        raise Forbidden(f"this token lacks the {missing[0]!r} scope, so it cannot grant it",
                        code="insufficient_scope", details={"scope": missing[0]})
    apps = grant.apps if grant.apps is not None else parent.apps
    if parent.apps is not None and any(a not in parent.apps for a in apps):
        outside = next(a for a in apps if a not in parent.apps)
        raise NotFound(f"no app {outside} of this token", code="app_not_found")
    expires = grant.expires_at or parent.expires_at
    if parent.expires_at is not None and expires > parent.expires_at:
        raise BadRequest("expires_at is later than this token's own expiry", code="invalid_field",
                         details={"field": "expires_at"})
    return Grant(tuple(wanted), tuple(apps) if apps is not None else None, expires)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _random_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(developer: Developer, grant: Grant = Grant(), parent: str | None = None) -> tuple[str, ApiToken]:
    """Create a token for `developer`; the plain token is returned only here."""
    token = _random_token()
    row = ApiToken.create(developer=developer, token_hash=hash_token(token), prefix=token[:12],
                          scopes=None if grant.scopes is None else list(grant.scopes),
                          apps=None if grant.apps is None else list(grant.apps),
                          expires_at=grant.expires_at, parent=parent)
    return token, row


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


def new_token(developer_id: str, actor: str = "admin", grant: Grant = Grant()) -> tuple[str, ApiToken]:
    """Another token for a developer (to rotate: issue one, then revoke the old)."""
    developer = developer_by_id(developer_id)
    grant = _check_grant(developer, grant)
    with database.atomic():
        token, row = issue_token(developer, grant)
        record_audit(actor, "token.issued", "developer", developer.id, token_id=row.id,
                     scopes=row.scopes, apps=row.apps)
    return token, row


def sub_token(parent: ApiToken, grant: Grant) -> tuple[str, ApiToken]:
    """A token issued by the token `parent`, no broader than it."""
    developer = parent.developer
    grant = narrower(parent, _check_grant(developer, grant))
    with database.atomic():
        token, row = issue_token(developer, grant, parent=parent.id)
        record_audit(f"developer:{developer.id}", "token.issued", "developer", developer.id,
                     token_id=row.id, by_token=parent.id, scopes=row.scopes, apps=row.apps)
    return token, row


def issued_by(parent: ApiToken) -> list[ApiToken]:
    """The tokens `parent` issued, and the ones they issued, oldest first."""
    found, frontier = [], [parent.id]
    while frontier:
        rows = list(ApiToken.select().where(ApiToken.parent.in_(frontier)).order_by(ApiToken.created_at))
        found += rows
        frontier = [r.id for r in rows]
    return found


def revoke_issued(parent: ApiToken, token_id: str) -> ApiToken:
    """Revoke a token `parent` issued (directly or not); others are not found."""
    if token_id not in {t.id for t in issued_by(parent)}:
        raise NotFound("no such token issued by this token", code="token_not_found")
    return revoke_token(token_id, f"developer:{parent.developer_id}")


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
            ids = [token_id, *(t.id for t in issued_by(row))]
            (ApiToken.update(revoked_at=utcnow())
             .where(ApiToken.id.in_(ids) & ApiToken.revoked_at.is_null()).execute())
            record_audit(actor, "token.revoked", "developer", row.developer_id, token_id=token_id,
                         with_issued=ids[1:])
    return ApiToken.get_by_id(token_id)


def developer_dict(d: Developer) -> dict:
    return {"id": d.id, "name": d.name, "email": d.email, "created_at": iso(d.created_at)}


def token_dict(t: ApiToken) -> dict:
    return {"id": t.id, "developer_id": t.developer_id, "prefix": t.prefix,
            "created_at": iso(t.created_at), "last_used_at": iso(t.last_used_at),
            "revoked_at": iso(t.revoked_at), "scopes": list(scopes_of(t)), "apps": t.apps,
            "expires_at": iso(t.expires_at), "parent_id": t.parent}
