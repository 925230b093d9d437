"""The Mosis storage appliance: Flask application factory."""

from __future__ import annotations

import logging

import peewee as pw
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from app.platform.config import Settings, settings_for_process
from app.platform.errors import ApiError
from app.platform.models import database

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, services=None) -> Flask:
    """The API. Without `settings` (gunicorn, `flask --app app`), they come
    from the environment, and a value the appliance cannot run with stops
    the process with one line naming it."""
    from app import api, cli
    from app.platform import health, metrics, weblog
    from app.services import build_services

    settings = settings or settings_for_process()
    # No static files: every route is the API's (and documented in app/api/openapi.py).
    flask_app = Flask(__name__, static_folder=None)
    flask_app.config["JSON_SORT_KEYS"] = False
    flask_app.json.sort_keys = False
    svc = flask_app.extensions["mosis"] = services or build_services(settings)
    svc.health = health.watch(svc)

    weblog.init_app(flask_app)
    _behind_proxies(flask_app, settings.proxy_hops)
    _connect_per_request(flask_app)
    _json_errors(flask_app)
    metrics.init_app(flask_app)
    api.register(flask_app)
    cli.register(flask_app)
    return flask_app


def _behind_proxies(flask_app: Flask, hops: int) -> None:
    """Believe X-Forwarded-For/-Proto from the `hops` proxies in front (the
    edge: one; it already resolved Cloudflare's client address)."""
    if hops:
        flask_app.wsgi_app = ProxyFix(flask_app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def _connect_per_request(flask_app: Flask) -> None:
    # The connection is taken on the request's first query (peewee connects
    # when needed), not before every request: a route that needs no database
    # (/healthz, /metrics) keeps answering while the database is down.
    @flask_app.teardown_request
    def _close_db(exc):
        if not database.is_closed():
            database.close()


def _error_response(err: ApiError):
    response = jsonify(err.to_dict())
    response.status_code = err.status
    for name, value in err.headers.items():
        response.headers[name] = value
    return response


def _json_errors(flask_app: Flask) -> None:
    """Every error leaves as `{"error": {"code", "message"}}`, never HTML."""

    @flask_app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return _error_response(err)

    @flask_app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        if err.code == 413:
            code = "body_too_large"
        allowed = getattr(err, "valid_methods", None)
        return _error_response(ApiError(err.description or err.name, code=code, status=err.code,
                                        headers={"Allow": ", ".join(allowed)} if allowed else None))

    @flask_app.errorhandler(pw.OperationalError)
    @flask_app.errorhandler(pw.InterfaceError)
    def _database_down(err):
        log.warning("database unavailable: %s", err)
        return _error_response(ApiError("the database is unavailable; retry shortly", status=503,
                                        code="database_unavailable", headers={"Retry-After": "5"}))

    @flask_app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return _error_response(ApiError("internal error; it has been logged", status=500,
                                        code="internal_error"))
