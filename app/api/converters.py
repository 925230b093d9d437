"""URL converters: a path segment that is not a valid id matches no route (404)."""

from __future__ import annotations

from werkzeug.routing import BaseConverter, ValidationError

from mosis_format.validation import MAX_VERSION_CODE


class HexIdConverter(BaseConverter):
    regex = "[0-9a-f]{32}"


class KeyIdConverter(BaseConverter):
    """A signing key's id: 16 lowercase hex digits."""

    regex = "[0-9a-f]{16}"


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
