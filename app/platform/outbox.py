"""The replica outbox: what the off-site replica must learn, recorded with
the change that caused it.

Invariants:

- A caller enqueues inside the database transaction that makes an object
  offered (a completed upload, a validated manifest, a stored asset, a
  backup) or no longer offered (a purge, a removed asset, a pruned backup):
  the row commits with the change or not at all, so a crash at any point
  loses no copy and no delete.
- Only keys under REPLICATED prefixes are queued (never temp/ uploads nor
  health canaries), and nothing is queued while no replica is configured.
- A delete is due MOSIS_REPLICA_DELETE_DELAY_SECONDS after it is queued;
  a copy at once. The rows are drained by app.housekeeping.replica.
- enqueue_missing (`flask --app app replica sync`) queues a copy of every
  object the store holds that the outbox does not know: no copy of it pending
  or done, no delete of it queued. Run twice, the second run queues nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from itertools import islice

from app.platform.clock import utcnow
from app.platform.config import Settings
from app.platform.models import ReplicaOutbox
from app.platform.objectstore import ObjectStore
from app.platform.storage import ASSETS, BACKUPS, PACKAGES

REPLICATED = (PACKAGES, ASSETS, BACKUPS, "deltas")
COPY, DELETE = "copy", "delete"


def replicated(key: str) -> bool:
    return key.split("/", 1)[0] in REPLICATED


def _enqueue(settings: Settings, op: str, keys: Iterable[str], delay: int, now: dt.datetime | None) -> int:
    if not settings.replica_configured:
        return 0
    now = now or utcnow()
    due = now + dt.timedelta(seconds=delay)
    rows = [{"key": k, "op": op, "created_at": now, "due_at": due} for k in dict.fromkeys(keys) if replicated(k)]
    if rows:
        ReplicaOutbox.insert_many(rows).execute()
    return len(rows)


def enqueue_copies(settings: Settings, keys: Iterable[str], now: dt.datetime | None = None) -> int:
    """Queue copies of `keys` to the replica; returns how many rows were written."""
    return _enqueue(settings, COPY, keys, 0, now)


def enqueue_deletes(settings: Settings, keys: Iterable[str], now: dt.datetime | None = None) -> int:
    """Queue deletes of `keys` on the replica, due after the delete delay."""
    return _enqueue(settings, DELETE, keys, settings.replica_delete_delay, now)


def _known(keys: list[str]) -> set[str]:
    """Those of `keys` the outbox knows: a copy pending or done, or a delete queued."""
    copy = (ReplicaOutbox.op == COPY) & (ReplicaOutbox.outcome.is_null() | (ReplicaOutbox.outcome == "copied"))
    return {r.key for r in ReplicaOutbox.select(ReplicaOutbox.key).distinct()
            .where(ReplicaOutbox.key.in_(keys) & ((ReplicaOutbox.op == DELETE) | copy))}


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(islice(items, size)):
        yield batch


def enqueue_missing(settings: Settings, store: ObjectStore, prefixes: Iterable[str] = REPLICATED,
                    batch: int = 500) -> dict:
    """Queue copies of what `store` holds under `prefixes` and the outbox does
    not know (see the module's invariants); counts of objects seen, queued and known."""
    counts = {"objects": 0, "queued": 0, "known": 0}
    if not settings.replica_configured:
        return counts
    keys = (o.key for prefix in prefixes for o in store.list(f"{prefix.rstrip('/')}/"))
    for chunk in _batches(keys, batch):
        known = _known(chunk)  # one query per batch of listed keys
        counts["objects"] += len(chunk)
        counts["known"] += len(known)
        counts["queued"] += enqueue_copies(settings, [k for k in chunk if k not in known])
    return counts
