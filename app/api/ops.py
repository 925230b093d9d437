"""Operations routes: liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from app.services import services

bp = Blueprint("ops", __name__)

# How long a process's first readiness request waits for the first checks.
READY_WAIT = 3.0


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    # From the background checks (app/platform/health.py): a flood of these costs
    # nothing, and a stalled dependency cannot hold the request.
    checks = services().health.checks(wait=READY_WAIT)
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, (200 if ready else 503)
