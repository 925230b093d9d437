"""Errors with stable codes, and the JSON shape every API error takes."""

from __future__ import annotations


class ApiError(Exception):
    """An error a caller can act on: HTTP status, stable code, human message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class Unavailable(ApiError):
    """A dependency (database, storage) is down; the caller should retry."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kw):
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(retry_after))
