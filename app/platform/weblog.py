"""Structured logs, request ids and response headers of the API.

Every request carries an id: the edge's `X-Request-ID` when it sent a sane
one, else a new one. It is echoed in the response, stamped on every log line
written while the request runs, and on the one access line written when it
ends. Log lines are JSON objects (one per line), so the edge's, the API's
and the scheduler's logs can be joined on `request_id`. Secrets never reach
the log: no headers, no query strings, no bodies.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, g, has_request_context, request

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
access_log = logging.getLogger("mosis.access")

# Browsers never need to render, frame or sniff API responses.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-site",
}


class JsonFormatter(logging.Formatter):
    # json.dumps(default=...) builds an encoder per call; this one is shared
    # (encoding keeps no state between calls) and writes the same text.
    _encode = json.JSONEncoder(default=str).encode

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._second: tuple | None = None  # (second, converter, its text): one strftime a second

    def _time(self, record: logging.LogRecord) -> str:
        key = int(record.created), self.converter
        cached = self._second
        if cached is None or cached[:2] != key:
            cached = self._second = (*key, self.formatTime(record, "%Y-%m-%dT%H:%M:%S"))
        return f"{cached[2]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context() and "request_id" in g:
            line["request_id"] = g.request_id
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._encode(line)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line to stderr, as JSON unless `fmt` is "text"."""
    logging.Formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    if fmt == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def init_app(app: Flask) -> None:
    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        headers = response.headers
        headers.set("X-Request-ID", g.get("request_id", ""))
        # One pass over the headers instead of a search per default.
        present = {name.lower() for name in headers.keys()}
        headers.extend([(name, value) for name, value in SECURITY_HEADERS.items() if name.lower() not in present])
        # Answers depend on who asks and change often: nobody stores them
        # unless a route says otherwise. (Not an X-Accel-Redirect hand-over:
        # nginx would keep the header for the object it then serves.)
        if "x-accel-redirect" not in present and "cache-control" not in present:
            headers.add("Cache-Control", "no-store")
        principal = g.get("principal")
        method, path, status = request.method, request.path, response.status_code
        if access_log.isEnabledFor(logging.INFO):
            # The record made and handled as access_log.info() would, less the
            # search of the stack for the caller's line, which no format shows.
            access_log.handle(access_log.makeRecord(
                access_log.name, logging.INFO, __file__, 0, "%s %s %s", (method, path, status), None,
                func="_finish", extra={"fields": {
                    "method": method, "path": path, "status": status,
                    "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
                    "actor": principal.actor if principal else None,
                    "remote_addr": request.remote_addr,
                }}))
        return response
