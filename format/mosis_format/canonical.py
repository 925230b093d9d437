"""Canonical JSON: the bytes a keyring or a catalog index is signed over
(docs/signing.md, "Canonical encoding", is the normative text).

A signed document is re-encoded by whoever checks it, so the encoding must
be reproducible byte for byte by any implementation: objects with members
sorted by name, no whitespace, strings written as they are (only `"` and
`\\` escaped; control characters are not allowed), integers from 0 to
2**53 - 1 and nothing else (no floats, booleans or null), UTF-8.

`loads` is the strict reader for documents from the network: duplicate
member names, floats, NaN and anything that is not UTF-8 JSON are refused
with `ValueError`. Timestamps are RFC 3339 UTC with whole seconds
(`2026-01-31T12:00:00Z`); `format_time` and `parse_time` are the only way
in and out. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

MAX_INTEGER = 2**53 - 1
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z")


def dumps(value) -> bytes:
    """The canonical encoding of `value` (dicts, lists, str, int only)."""
    return "".join(_encode(value)).encode("utf-8")


def _encode(value):
    if isinstance(value, dict):
        yield "{"
        for i, name in enumerate(sorted(value)):
            if not isinstance(name, str):
                raise TypeError(f"member name {name!r} is not a string")
            yield ("," if i else "") + _string(name) + ":"
            yield from _encode(value[name])
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _encode(item)
        yield "]"
    elif isinstance(value, str):
        yield _string(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_INTEGER:
            raise ValueError(f"integer {value} is outside 0..2**53-1")
        yield str(value)
    else:
        raise TypeError(f"{type(value).__name__} has no canonical encoding")


def _string(s: str) -> str:
    if any(c < " " or "\ud800" <= c <= "\udfff" for c in s):
        raise ValueError(f"string {s!r} holds a control character or a lone surrogate")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _no_float(text: str):
    raise ValueError(f"number {text} is not an integer")


def _unique(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"member {name!r} appears twice")
        out[name] = value
    return out


def loads(data):
    """A JSON document from the network (bytes or text), read strictly;
    anything else is taken as already read (the caller's schema checks it)."""
    if not isinstance(data, (bytes, bytearray, str)):
        return data
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8: {e}") from None
    return json.loads(data, object_pairs_hook=_unique, parse_float=_no_float,
                      parse_constant=_no_constant)


def format_time(moment: datetime) -> str:
    """`moment` (timezone-aware) as RFC 3339 UTC, whole seconds."""
    if moment.tzinfo is None:
        raise ValueError("a timestamp must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text) -> datetime:
    """A canonical timestamp back to an aware datetime; anything else
    (offsets, fractions, lowercase, an impossible date) is a ValueError."""
    match = _TIME.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"timestamp {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    return datetime(*map(int, match.groups()), tzinfo=UTC)  # ValueError for an impossible date
