"""The version lifecycle: its statuses, every transition between them, and the
one function that performs a transition in the database.

The transitions (docs/api.md shows the same table; tests/test_lifecycle.py
holds both to TRANSITIONS):

| from | to | operation | caused by | sets |
|---|---|---|---|---|
| uploading | validating | `complete` | the developer completes the upload; the package is in place | `uploaded_at` |
| uploading | failed | `refuse` | completing finds the upload too large or not the declared size | `failed_at` |
| uploading | abandoned | `abort` | the developer gives the upload up | — |
| validating | draft | `validate` | the validation worker accepts the package | `validated_at` |
| validating | failed | `fail` | the validation worker refuses the package | `failed_at` |
| draft | published | `publish` | the developer publishes it | `published_at` |
| published | superseded | `supersede` | a newer version of the app is published | `superseded_at` |
| draft, validating | rejected | `reject` | an admin rejects it | `rejected_at` |
| draft, published, superseded | pulled | `pull` | an admin pulls it | `pulled_at` |
| uploading, draft, superseded, failed, rejected, pulled | purging | `expire` | retention: its time in its status ran out | — |
| purging, failed | purged | `purge` | retention deleted its objects | `purged_at` |
| purging | abandoned | `abandon` | retention deleted the temp upload of an expired upload | `purged_at` |

Invariants:

- Every status change is `transition()`: one conditional UPDATE, `... WHERE
  id = ? AND status IN (<allowed sources>) [AND <extra conditions>]`, setting
  the status, `updated_at`, the transition's timestamp and the caller's
  fields at once. Of two racing transitions of one version exactly one
  matches; the other changes nothing, learns so (False) and re-reads the row.
- A transition ends any validation lease: only a `validating` version holds one.
- `abandoned` and `purged` are terminal: nothing leaves them. `published` is
  left only for `superseded` or `pulled`: retention never takes it.
- The database keeps the rest (models.py): a version_code is unique per app
  among versions not in RELEASED, and an app has at most one `published`
  version. A transition that would break either raises IntegrityError.
- A caller writes its audit event in the same transaction as the transition
  when the two must go together, so a retried operation neither loses nor
  doubles it.

A crash mid-way: the UPDATE is one statement, so the row is before or after
it, never between. What an operation does besides the row is ordered so that
the row never offers an object that is gone: `complete` copies the upload to
its final key before the row says `validating` (a retry finds the final
object and goes on) and deletes the temp object only after; `abort` and
retention change the row before deleting, so what a crash leaves behind is
objects no offered version needs (retention finishes `purging` rows first on
its next run; the orphan sweep and the stale multipart cleanup take the
rest). See app.housekeeping.retention and app.catalog.packages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.platform.clock import utcnow

if TYPE_CHECKING:  # annotations only: the models take their statuses from here
    from app.platform.models import Version


class VersionStatus:
    UPLOADING = "uploading"
    VALIDATING = "validating"
    DRAFT = "draft"
    PUBLISHED = "published"  # the app's current version; at most one per app
    SUPERSEDED = "superseded"  # was published, a newer one replaced it
    FAILED = "failed"
    REJECTED = "rejected"
    PULLED = "pulled"
    ABANDONED = "abandoned"
    PURGED = "purged"
    # Retention took it: no longer offered, its objects are being deleted.
    PURGING = "purging"

    ALL = (UPLOADING, VALIDATING, DRAFT, PUBLISHED, SUPERSEDED, FAILED, REJECTED, PULLED,
           ABANDONED, PURGED, PURGING)
    # Statuses that release their version_code for reuse.
    RELEASED = (FAILED, ABANDONED, PURGED)
    # Versions whose package the edge may still serve to a link holder: links
    # are issued for the published one and stay good for their lifetime after
    # a newer version supersedes it; a pulled (or any other) one is refused.
    SERVABLE = (PUBLISHED, SUPERSEDED)


S = VersionStatus


@dataclass(frozen=True)
class Transition:
    op: str
    sources: tuple[str, ...]
    target: str
    cause: str
    stamp: str | None = None  # the timestamp column it sets to the transition's time


TRANSITIONS = (
    Transition("complete", (S.UPLOADING,), S.VALIDATING,
               "the developer completes the upload; the package is in place", "uploaded_at"),
    Transition("refuse", (S.UPLOADING,), S.FAILED,
               "completing finds the upload too large or not the declared size", "failed_at"),
    Transition("abort", (S.UPLOADING,), S.ABANDONED, "the developer gives the upload up"),
    Transition("validate", (S.VALIDATING,), S.DRAFT, "the validation worker accepts the package",
               "validated_at"),
    Transition("fail", (S.VALIDATING,), S.FAILED, "the validation worker refuses the package",
               "failed_at"),
    Transition("publish", (S.DRAFT,), S.PUBLISHED, "the developer publishes it", "published_at"),
    Transition("supersede", (S.PUBLISHED,), S.SUPERSEDED, "a newer version of the app is published",
               "superseded_at"),
    Transition("reject", (S.DRAFT, S.VALIDATING), S.REJECTED, "an admin rejects it", "rejected_at"),
    Transition("pull", (S.DRAFT, S.PUBLISHED, S.SUPERSEDED), S.PULLED, "an admin pulls it", "pulled_at"),
    Transition("expire", (S.UPLOADING, S.DRAFT, S.SUPERSEDED, S.FAILED, S.REJECTED, S.PULLED), S.PURGING,
               "retention: its time in its status ran out"),
    # A failed version whose version_code a newer version took cannot be
    # claimed (purging holds the code): retention purges it straight away.
    Transition("purge", (S.PURGING, S.FAILED), S.PURGED, "retention deleted its objects", "purged_at"),
    Transition("abandon", (S.PURGING,), S.ABANDONED,
               "retention deleted the temp upload of an expired upload", "purged_at"),
)
BY_OP = {t.op: t for t in TRANSITIONS}
# Every allowed (from, to) status change.
EDGES = frozenset((source, t.target) for t in TRANSITIONS for source in t.sources)
TERMINAL = tuple(s for s in S.ALL if not any(source == s for source, _ in EDGES))


class LifecycleError(Exception):
    """A transition the table does not have was asked for: a programming error."""


def transition(version: Version, op: str, *, sources: tuple[str, ...] | None = None, where=None,
               now: dt.datetime | None = None, **fields) -> bool:
    """Perform `op` on `version` if its row is still in one of `sources`.

    `sources` (default: all of the operation's) may narrow the statuses the
    row must be in, e.g. to the one the caller saw; `where` adds conditions
    (a peewee expression); `fields` are further columns to set. `now` is the
    time stamped (default: the clock). Returns whether the row changed.
    Raises LifecycleError for an unknown operation, a source the operation
    does not leave from, or fields that would set the status or a stamp.
    """
    t = BY_OP.get(op)
    if t is None:
        raise LifecycleError(f"no transition {op!r}; the lifecycle has {', '.join(BY_OP)}")
    sources = t.sources if sources is None else tuple(sources)
    wrong = [s for s in sources if s not in t.sources]
    if wrong or not sources:
        raise LifecycleError(f"{op} does not lead from {wrong or 'nothing'} to {t.target}")
    stamps = {x.stamp for x in TRANSITIONS} | {"status", "updated_at"}
    if stamps & set(fields):
        raise LifecycleError(f"{op} sets {sorted(stamps & set(fields))} itself")
    now = now or utcnow()
    # The row's own class: this module sits below the models (they take their statuses from here).
    model = type(version)
    changes = {"status": t.target, "updated_at": now, "lease_owner": None, "lease_expires_at": None,
               **({t.stamp: now} if t.stamp else {}), **fields}
    condition = (model.id == version.id) & model.status.in_(sources)
    if where is not None:
        condition &= where
    return bool(model.update(**changes).where(condition).execute())


def markdown_table() -> str:
    """TRANSITIONS as the table in this docstring and docs/api.md."""
    lines = ["| from | to | operation | caused by | sets |", "|---|---|---|---|---|"]
    lines += [f"| {', '.join(t.sources)} | {t.target} | `{t.op}` | {t.cause} | "
              f"{f'`{t.stamp}`' if t.stamp else '—'} |" for t in TRANSITIONS]
    return "\n".join(lines)
