"""HTTP layer: thin handlers that read input, call plain functions, shape JSON."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import BaseConverter, ValidationError

from mosis_format.validation import MAX_VERSION_CODE


class HexIdConverter(BaseConverter):
    regex = "[0-9a-f]{32}"


class Int32Converter(BaseConverter):
    """A number the database can hold: a larger one matches no route (404),
    it never overflows a query."""

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_VERSION_CODE:
            raise ValidationError()
        return number

    def to_url(self, value) -> str:
        return str(int(value))


class VersionCodeConverter(Int32Converter):
    regex = "[1-9][0-9]{0,9}"


class PositionConverter(Int32Converter):
    """A screenshot's position."""

    regex = "[0-9]{1,10}"


class PackageIdConverter(BaseConverter):
    regex = "[a-z][a-z0-9_]{0,127}(?:\\.[a-z][a-z0-9_]{0,127}){1,63}"

    def to_python(self, value: str) -> str:
        if len(value) > 128:
            raise ValidationError()
        return value


def register(app: Flask) -> None:
    from app.api import admin, assets, developer, ops, public, uploads
    from app.api import edge

    from app.api.inputs import limit_body
    from app.services import services

    # Before any route runs, authentication included: an oversized body costs
    # no database work and meets the same answer everywhere.
    app.before_request(lambda: limit_body(services().settings.max_json_bytes))
    app.url_map.converters.update(hexid=HexIdConverter, code=VersionCodeConverter,
                                  package_id=PackageIdConverter, position=PositionConverter)
    for module in (ops, public, developer, uploads, assets, admin):
        app.register_blueprint(module.bp)
    app.register_blueprint(edge.bp)
