"""Bearer-token authentication: the admin token and developers' tokens.

Developer tokens are random, shown once, and stored only as SHA-256 (they
carry 256 bits of entropy, so a slow hash adds nothing). The admin token is
compared in constant time. Neither is ever logged.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import g, request

from app.platform.errors import Forbidden, Unauthorized
from app.platform.models import ApiToken, Developer, utcnow

TOKEN_PREFIX = "mos_"
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)  # avoid a write on every request


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def issue_token(developer: Developer) -> tuple[str, ApiToken]:
    """Create a token for `developer`; the plain token is returned only here."""
    token = new_token()
    row = ApiToken.create(developer=developer, token_hash=hash_token(token), prefix=token[:12])
    return token, row


@dataclass(frozen=True)
class Principal:
    kind: str  # "admin" or "developer"
    developer: Developer | None = None

    @property
    def actor(self) -> str:
        return "admin" if self.kind == "admin" else f"developer:{self.developer.id}"


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(token: str | None, admin_token: str) -> Principal | None:
    if not token:
        return None
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin")
    row = (ApiToken.select(ApiToken, Developer).join(Developer)
           .where(ApiToken.token_hash == hash_token(token)).first())
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return Principal("developer", row.developer)


def _require(kind: str):
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            from app.services import services  # the app's configured services
            principal = authenticate(_bearer(), services().settings.admin_token)
            if principal is None:
                raise Unauthorized("a valid bearer token is required",
                                   headers={"WWW-Authenticate": 'Bearer realm="mosis"'})
            if principal.kind != kind:
                raise Forbidden(f"this route is for {kind}s only")
            g.principal = principal
            return view(*args, **kwargs)

        wrapper.required_role = kind
        return wrapper

    return decorator


require_admin = _require("admin")
require_developer = _require("developer")
