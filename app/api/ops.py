"""Operations routes: liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from app import db
from app.errors import Unavailable
from app.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    checks = {}
    try:
        db.ping()
        checks["database"] = "ok"
    except Exception as e:  # any failure means not ready
        checks["database"] = f"error: {type(e).__name__}"
    try:
        services().storage.ping()
        checks["storage"] = "ok"
    except Unavailable as e:
        checks["storage"] = f"error: {e.message}"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, (200 if ready else 503)
