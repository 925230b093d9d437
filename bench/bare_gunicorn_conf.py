"""The API's gunicorn settings (app/gunicorn_conf.py) for the bare WSGI app
of bench/api.py: everything the same but the hook that resets the API's
storage connections after fork, which the bare app has none of."""

from app.gunicorn_conf import *  # noqa: F401,F403


def post_fork(server, worker):
    pass
