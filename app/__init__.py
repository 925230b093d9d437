"""The Mosis storage appliance.

`create_app` builds the API (gunicorn: `app:create_app()`, `flask --app app`).
Importing `app` or any module below it loads nothing else: the scheduler and
the tools import what they use, and the scheduler must reach its first line
before prometheus_client is loaded (see app/scheduler.py).
"""

from __future__ import annotations


def create_app(settings=None, *, services=None):
    """The API's Flask application (app/web.py); settings from the environment when None."""
    from app.web import create_app as build  # see the module docstring: only when asked for

    return build(settings, services=services)
