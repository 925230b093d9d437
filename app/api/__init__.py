"""HTTP layer: thin handlers that read input, call plain functions, shape JSON."""

from __future__ import annotations

from flask import Flask

from app.api import admin, assets, developer, edge, ops, public, tokens, uploads
from app.api.converters import (
    HexIdConverter,
    KeyIdConverter,
    PackageIdConverter,
    PositionConverter,
    VersionCodeConverter,
)
from app.api.inputs import limit_body
from app.services import services


def register(app: Flask) -> None:
    # Before any route runs, authentication included: an oversized body costs
    # no database work and meets the same answer everywhere.
    app.before_request(lambda: limit_body(services().settings.max_json_bytes))
    app.url_map.converters.update(hexid=HexIdConverter, code=VersionCodeConverter,
                                  package_id=PackageIdConverter, position=PositionConverter,
                                  keyid=KeyIdConverter)
    for module in (ops, public, developer, uploads, assets, tokens, admin):
        app.register_blueprint(module.bp)
    app.register_blueprint(edge.bp)
