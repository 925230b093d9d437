"""Time as the store keeps it: naive UTC in the database, ISO 8601 with `Z` in JSON.

SQLite and PostgreSQL store the same naive UTC datetimes; storage answers
with aware ones. Every conversion between the two goes through here.
"""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, as naive UTC: stored the same way on SQLite and PostgreSQL."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware datetime as naive UTC; a naive one is taken to be UTC already."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def iso(value: dt.datetime | None) -> str | None:
    """A naive UTC datetime as JSON shows it: `2026-12-07T09:12:21Z`, to the second."""
    return None if value is None else value.replace(microsecond=0).isoformat() + "Z"


def unix(value: dt.datetime) -> float:
    """A naive UTC datetime as Unix time."""
    return value.replace(tzinfo=dt.timezone.utc).timestamp()
