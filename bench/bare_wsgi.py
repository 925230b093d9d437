"""The limit for bench/api.py: a bare WSGI app answering every request with
one constant JSON body (the size of a real download answer, from
MOSIS_BENCH_BODY), served by the same gunicorn with the API's settings."""

import os

BODY = os.environ.get("MOSIS_BENCH_BODY", '{"ok": true}').encode()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
