"""The limit for bench/api.py: a bare WSGI app answering every request with
one constant JSON body (the size of a real download answer, from
MOSIS_BENCH_BODY), served by the same gunicorn with the API's settings.

`flask_app` is the framework's own floor, for reference: Flask answering
the same body from a route of the same shape, with nothing else."""

import json
import os

from flask import Flask

BODY = os.environ.get("MOSIS_BENCH_BODY", '{"ok": true}').encode()
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


flask_app = Flask(__name__)
flask_app.json.sort_keys = False
_ANSWER = json.loads(BODY)


@flask_app.get("/v1/packages/<package_id>/download")
def download(package_id):
    return dict(_ANSWER)
