"""Bearer-token authentication: the admin token and developers' tokens.

Developer tokens are random, shown once, and stored only as SHA-256 (they
carry 256 bits of entropy, so a slow hash adds nothing). The admin token is
compared in constant time. Neither is ever logged.

Every developer route names the scope it needs in its decorator
(`require_developer("read")`, a method may need another); the OpenAPI
document and the tests read it from the view (`required_scope`). A token
without the scope is refused with 403 `insufficient_scope` naming it; an
expired token with 401 `token_expired`; a token limited to some apps finds
the others missing (404, as another developer's app). Every call of a
developer token that changes something is in the audit log with the
token's id.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from dataclasses import dataclass

from flask import current_app, g, request

from app.catalog import packages
from app.catalog.accounts import allows_app, hash_token, is_expired, scopes_of
from app.platform.clock import utcnow
from app.platform.errors import Forbidden, NotFound, Unauthorized
from app.platform.models import ApiToken, App, Developer, record_audit
from app.services import services

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)  # avoid a write on every request
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mosis"'}


@dataclass(frozen=True)
class Principal:
    kind: str  # "admin" or "developer"
    developer: Developer | None = None
    token: ApiToken | None = None  # the developer's token

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
    if is_expired(row, now):
        raise Unauthorized("this token has expired; ask for a new one", code="token_expired",
                           headers=CHALLENGE)
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return Principal("developer", row.developer, row)


def _principal() -> Principal:
    principal = authenticate(_bearer(), services().settings.admin_token)
    if principal is None:
        raise Unauthorized("a valid bearer token is required", headers=CHALLENGE)
    return principal


def require_admin(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        principal = _principal()
        if principal.kind != "admin":
            raise Forbidden("this route is for admins only")
        g.principal = principal
        return view(*args, **kwargs)

    wrapper.required_role = "admin"
    return wrapper


def scope_for(view, method: str) -> str | None:
    """The scope a developer route needs for `method` (None: not a developer route)."""
    scopes = getattr(view, "required_scope", None)
    return None if scopes is None else scopes.get(method, scopes[None])


def require_developer(scope: str, **by_method: str):
    """A developer route needing `scope` (or, for a method named in
    `by_method`, that method's scope)."""
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = _principal()
            if principal.kind != "developer":
                raise Forbidden("this route is for developers only")
            needed = scope_for(wrapper, request.method)
            if needed not in scopes_of(principal.token):
                raise Forbidden(f"this token lacks the {needed!r} scope this route needs",
                                code="insufficient_scope", details={"scope": needed})
            g.principal = principal
            response = current_app.make_response(view(*args, **kwargs))
            if request.method not in READ_METHODS and response.status_code < 400:
                record_audit(principal.actor, "token.used", "token", principal.token.id,
                             method=request.method, path=request.path, status=response.status_code)
            return response

        wrapper.required_role = "developer"
        wrapper.required_scope = {None: scope, **by_method}
        return wrapper

    return decorator


def own_app(app_id: str) -> App:
    """The caller's app `app_id`, if the token may touch it (404 otherwise,
    as for another developer's app)."""
    if not allows_app(g.principal.token, app_id):
        raise NotFound("no such app", code="app_not_found")
    return packages.app_of(g.principal.developer, app_id)


def may_register_apps() -> None:
    """A token limited to some apps cannot claim new ones."""
    if g.principal.token.apps is not None:
        raise Forbidden("this token is limited to some apps and cannot register new ones")
