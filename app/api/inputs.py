"""Strict reading of request bodies: every field checked before anything runs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.platform.errors import ApiError, BadRequest, TooLarge
from mosis_format.validation import MAX_VERSION_CODE, PACKAGE_ID_RE

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
HEX_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
# What neither database can store (NUL on PostgreSQL, a lone surrogate in
# UTF-8) or no name should hold; tabs and line breaks stay allowed.
# The OpenAPI document states the control characters (escapes both Python
# and JSON Schema read); lone surrogates are not text in any schema.
CONTROL_CHARACTERS = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f"
UNSTORABLE_RE = re.compile(f"[{CONTROL_CHARACTERS}\\ud800-\\udfff]")


@dataclass(frozen=True)
class Field:
    kind: type  # int, str, bool or list
    required: bool = True
    minimum: int | None = None
    maximum: int | None = None
    min_len: int | None = None
    max_len: int | None = None
    pattern: re.Pattern | None = None
    hint: str = ""

    def check(self, name: str, value):
        if value is None and not self.required:
            return None
        if self.kind is int:
            value = _whole(value)
        if not _is_kind(value, self.kind):
            raise BadRequest(f"{name} must be {_KIND_NAMES[self.kind]}", code="invalid_field",
                             details={"field": name})
        if self.kind is int:
            if self.minimum is not None and value < self.minimum:
                raise BadRequest(f"{name} must be at least {self.minimum}", code="invalid_field",
                                 details={"field": name})
            if self.maximum is not None and value > self.maximum:
                raise BadRequest(f"{name} must be at most {self.maximum}", code="invalid_field",
                                 details={"field": name})
        if self.kind is str:
            if self.min_len is not None and len(value) < self.min_len or (
                    self.max_len is not None and len(value) > self.max_len):
                raise BadRequest(f"{name} must be {self.min_len}-{self.max_len} characters",
                                 code="invalid_field", details={"field": name})
            if UNSTORABLE_RE.search(value):
                raise BadRequest(f"{name} must not contain control characters or unpaired surrogates",
                                 code="invalid_field", details={"field": name})
            if self.pattern is not None and not self.pattern.fullmatch(value):
                raise BadRequest(f"{name} is not valid{': ' + self.hint if self.hint else ''}",
                                 code="invalid_field", details={"field": name})
        return value


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "a list"}


def _whole(value):
    """3.0 as 3: JSON, and JSON Schema's integer, do not tell them apart."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integers(name: str, values: list) -> list[int]:
    """A list field's items as integers, or 400 `invalid_field`."""
    out = [_whole(v) for v in values]
    if not all(_is_kind(v, int) for v in out):
        raise BadRequest(f"{name} must be a list of integers", code="invalid_field", details={"field": name})
    return out


def _is_kind(value, kind) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def query_value(name: str, pattern: re.Pattern, hint: str) -> str | None:
    """A query parameter given at most once and matching `pattern`, None when
    absent; else 400 `invalid_parameter`."""
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1 or not pattern.fullmatch(values[0]):
        raise BadRequest(f"{name} must be {hint}, given once", code="invalid_parameter",
                         details={"parameter": name})
    return values[0]


def query_version_code(name: str) -> int | None:
    """A version code (1 to MAX_VERSION_CODE) in the query, or None."""
    hint = f"a version code from 1 to {MAX_VERSION_CODE}"
    value = query_value(name, VERSION_CODE_RE, hint)
    if value is not None and int(value) > MAX_VERSION_CODE:
        raise BadRequest(f"{name} must be {hint}", code="invalid_parameter", details={"parameter": name})
    return int(value) if value is not None else None


VERSION_CODE_RE = re.compile(r"[1-9][0-9]{0,9}")

# Fields shared by several routes.
PACKAGE_ID = Field(str, min_len=3, max_len=128, pattern=PACKAGE_ID_RE,
                   hint="lower-case dotted segments such as com.example.notes")
APP_NAME = Field(str, min_len=1, max_len=80)
VERSION_CODE = Field(int, minimum=1, maximum=MAX_VERSION_CODE)
VERSION_NAME = Field(str, min_len=1, max_len=64)
REASON = Field(str, min_len=1, max_len=2000)


def _body_too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"the request body is larger than {max_bytes} bytes", code="body_too_large",
                    details={"limit": max_bytes})


def takes_upload(view):
    """Marks a route whose body is a file: read_upload sets its limit, not
    limit_body. Put it right under the route decorator."""
    view.takes_upload = True
    return view


def limit_body(max_bytes: int) -> None:
    """Before anything else runs (authentication included): a body over the
    JSON limit is refused on any route but uploads, whether the route reads
    it or not. A declared length is checked as is; a chunked body is read
    here, capped one past the limit, and kept for read_json."""
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if getattr(view, "takes_upload", False):
        return
    if request.content_length is not None and request.content_length > max_bytes:
        raise _body_too_large(max_bytes)
    # Werkzeug's cap ends the stream there, silently: one byte more tells
    # a body at the limit from a longer one.
    request.max_content_length = max_bytes + 1
    if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        _read_body(max_bytes)


def _read_body(max_bytes: int) -> bytes:
    """The body, kept for later readers; refused past `max_bytes`."""
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _body_too_large(max_bytes) from None
    if len(data) > max_bytes:
        raise _body_too_large(max_bytes)
    return data


def read_json(spec: dict[str, Field], max_bytes: int) -> dict:
    """The request's JSON object, checked against `spec`; unknown keys refused."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _body_too_large(max_bytes)
    if request.mimetype != "application/json":
        raise ApiError("send the body as application/json", status=415,
                       code="unsupported_media_type")
    raw = _read_body(max_bytes)  # from limit_body's cache when it read a chunked body
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:  # a few KiB of `[[[[` is enough
        raise BadRequest("the body is not valid JSON: it is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", code="unknown_field",
                         details={"field": unknown[0]})
    out = {}
    for name, field in spec.items():
        if name not in body:
            if field.required:
                raise BadRequest(f"{name} is required", code="missing_field", details={"field": name})
            out[name] = None
            continue
        out[name] = field.check(name, body[name])
    return out


# Room for the multipart envelope (boundaries, part headers) around the file.
MULTIPART_OVERHEAD = 64 * 1024


def read_upload(field: str, max_bytes: int) -> bytes:
    """The one file of a multipart/form-data body, refused (413) past `max_bytes`.

    A declared Content-Length over the limit is refused before a byte is read;
    a body without one is cut off by the stream cap. Werkzeug spools file
    parts larger than 500 KiB to a temporary file, so memory holds at most
    the file itself, once.
    """
    too_large = TooLarge(f"the file is larger than {max_bytes} bytes", code="file_too_large",
                         details={"limit": max_bytes})
    if request.content_length is not None and request.content_length > max_bytes + MULTIPART_OVERHEAD:
        raise too_large
    if request.mimetype != "multipart/form-data":
        raise ApiError(f"send the file as multipart/form-data in the field {field!r}", status=415,
                       code="unsupported_media_type")
    request.max_content_length = max_bytes + MULTIPART_OVERHEAD
    try:
        files, form = request.files, request.form
    except RequestEntityTooLarge:
        raise too_large from None
    unknown = sorted((set(files) | set(form)) - {field})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; send only {field!r}", code="unknown_field",
                         details={"field": unknown[0]})
    if field not in files or len(files.getlist(field)) != 1:
        raise BadRequest(f"send exactly one file in the multipart field {field!r}", code="missing_file",
                         details={"field": field})
    data = files[field].stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large
    return data
