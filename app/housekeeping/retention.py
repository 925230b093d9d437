"""Retention: versions whose time ran out lose their objects; rows stay as history.

The policy (app.platform.config.RetentionPolicy, each limit configurable):

    uploading   created_at    + temp_upload (1 h)  -> abandoned
    failed      failed_at     + failed      (24 h) -> purged
    rejected    rejected_at   + rejected    (7 d)  -> purged
    draft       validated_at  + draft       (30 d) -> purged
    superseded  superseded_at + superseded  (1 y)  -> purged
    pulled      pulled_at     + pulled      (30 d) -> purged
    published   never: the current published version is kept whatever the clock says

A limit runs out once a version has been in its status for longer than the
limit. Purging a version keeps its row (`purged`, `purged_at`, `purge_reason`,
`purged_from`) and writes an audit event.

Order of operations, so that a crash anywhere loses nothing and never leaves
a row that is offered pointing at a deleted object:

1. claim: the lifecycle's `expire`, a conditional UPDATE `<status> -> purging`.
   From here the version is not offered for anything (publish, pull and
   download need other statuses), and it keeps holding its version_code, so
   no new upload can land on its keys while they are deleted. If the version changed meanwhile (published,
   pulled), the UPDATE matches nothing and retention leaves it alone.
2. retire the delta patches to and from it (app.catalog.deltas: the rows
   first), make the edge and CDN forget the package and the patches, delete
   its objects (package, manifest, temp upload, patches), and make them
   forget it once more (a cache fill
   started before the claim may end during the deletes); deleting what is
   already gone is not an error, so this step can be repeated.
3. finish: `purge` (or `abandon`), a conditional UPDATE `purging -> purged`
   (or `abandoned`), with the audit event, in one transaction.

A crash after 1 or 2 leaves a `purging` row; every run finishes such rows
first, whatever the clock says. The one exception to the claim is a `failed`
version whose version_code was taken again by a newer version: the keys
belong to the newer one, so only its own temp upload is deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import peewee as pw
from prometheus_client import Counter

from app.catalog import deltas
from app.catalog.packages import keys_of
from app.platform.clock import iso, utcnow
from app.platform.config import RetentionPolicy, Settings
from app.platform.jobs import Job
from app.platform.lifecycle import transition
from app.platform.models import App, Version, database, record_audit
from app.platform.models import VersionStatus as S
from app.platform.outbox import enqueue_deletes
from app.platform.storage import temp_key

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

RETENTION_VERSIONS = Counter("mosis_retention_versions_total",
                             "Versions retention purged or abandoned, by the status they had",
                             ["status"])
RETENTION_BYTES = Counter("mosis_retention_bytes_total", "Bytes of objects retention deleted")


@dataclass(frozen=True)
class Rule:
    status: str  # versions in this status ...
    limit: str  # ... for longer than this RetentionPolicy field ...
    clock: tuple[str, ...]  # ... counted from the first of these columns that is set
    outcome: str  # become this

    def limit_seconds(self, policy: RetentionPolicy) -> int:
        return getattr(policy, self.limit)

    def clock_expr(self):
        columns = [getattr(Version, name) for name in self.clock]
        return columns[0] if len(columns) == 1 else pw.fn.COALESCE(*columns)

    def clock_of(self, version: Version) -> dt.datetime:
        return next(getattr(version, n) for n in self.clock if getattr(version, n) is not None)

    def reason(self, policy: RetentionPolicy) -> str:
        limit = human_duration(self.limit_seconds(policy))
        if self.status == S.UPLOADING:
            return f"upload not completed within {limit}"
        return f"{self.status} for longer than {limit}"


RULES = (
    Rule(S.UPLOADING, "temp_upload", ("created_at",), S.ABANDONED),
    Rule(S.FAILED, "failed", ("failed_at", "updated_at"), S.PURGED),
    Rule(S.REJECTED, "rejected", ("rejected_at", "updated_at"), S.PURGED),
    Rule(S.DRAFT, "draft", ("validated_at", "updated_at"), S.PURGED),
    Rule(S.SUPERSEDED, "superseded", ("superseded_at", "updated_at"), S.PURGED),
    Rule(S.PULLED, "pulled", ("pulled_at", "updated_at"), S.PURGED),
)
RULE_BY_STATUS = {r.status: r for r in RULES}
# The lifecycle's transition that finishes a purge, by its outcome.
FINISH = {S.PURGED: "purge", S.ABANDONED: "abandon"}


def human_duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


# -- what goes ------------------------------------------------------------------


@dataclass
class Expiry:
    """One version retention takes now, and what it deletes."""

    version: Version
    from_status: str  # the status retention takes it from
    outcome: str  # purged or abandoned
    reason: str
    clock_started_at: dt.datetime | None
    expires_at: dt.datetime | None  # None for a purge already under way
    keys: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # key -> bytes, for objects that exist

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())

    def as_dict(self) -> dict:
        v = self.version
        return {
            "version_id": v.id, "app_id": v.app_id, "package_id": v.app.package_id,
            "version_code": v.version_code, "version_name": v.version_name,
            "status": self.from_status, "outcome": self.outcome, "reason": self.reason,
            "since": iso(self.clock_started_at), "expired_at": iso(self.expires_at),
            "objects": [{"key": k, "size": self.sizes[k]} for k in self.keys if k in self.sizes],
            "bytes": self.bytes,
        }


def owns_its_keys(version: Version) -> bool:
    """Whether the package/manifest keys of (app, version_code) are this version's.

    They belong to the newest version with that code: a failed version's code
    may be taken again, and the new upload lands on the same keys.
    """
    newer = (Version.select(Version.id)
             .where((Version.app == version.app_id) & (Version.version_code == version.version_code)
                    & (Version.id != version.id)
                    & ((Version.created_at > version.created_at)
                       | ((Version.created_at == version.created_at) & (Version.id > version.id))))
             .exists())
    return not newer


def _keys(version: Version) -> list[str]:
    own = [*keys_of(version), *deltas.keys_touching(version)] if owns_its_keys(version) else []
    return own + [temp_key(version.upload_id)]


def _with_app():
    return Version.select(Version, App).join(App)


def expired(policy: RetentionPolicy, now: dt.datetime) -> list[Expiry]:
    """Every version retention takes at `now`: interrupted purges first, then each rule."""
    found = []
    for v in _with_app().where(Version.status == S.PURGING).order_by(Version.updated_at):
        from_status = v.purged_from or S.PURGED
        outcome = S.ABANDONED if from_status == S.UPLOADING else S.PURGED
        found.append(Expiry(v, from_status, outcome, v.purge_reason or "purge under way", None, None,
                            _keys(v)))
    for rule in RULES:
        limit = dt.timedelta(seconds=rule.limit_seconds(policy))
        try:
            cutoff = now - limit
        except OverflowError:  # a forecast at the beginning of time: nothing is old enough
            continue
        query = (_with_app().where((Version.status == rule.status) & (rule.clock_expr() < cutoff))
                 .order_by(rule.clock_expr(), Version.id))
        for v in query:
            started = rule.clock_of(v)
            found.append(Expiry(v, rule.status, rule.outcome, rule.reason(policy), started,
                                started + limit, _keys(v)))
    return found


def _measure(svc: Services, expiry: Expiry) -> None:
    """Fill in the sizes of the objects that exist (what the purge frees)."""
    for key in expiry.keys:
        info = svc.storage.stat(key)
        if info is not None:
            expiry.sizes[key] = info.size


# -- the purge, step by step ---------------------------------------------------------


def claim(expiry: Expiry, now: dt.datetime) -> bool:
    """Step 1: take the version out of its status; False if it changed meanwhile."""
    v = expiry.version
    if v.status == S.PURGING:
        return True
    try:
        with database.atomic():
            return transition(v, "expire", sources=(expiry.from_status,), now=now,
                              purged_from=expiry.from_status, purge_reason=expiry.reason)
    except pw.IntegrityError:
        # A failed version whose code a newer version took meanwhile: the
        # keys are the newer one's now. Leave them, take only its temp upload.
        expiry.keys = [temp_key(v.upload_id)]
        expiry.sizes = {k: n for k, n in expiry.sizes.items() if k in expiry.keys}
        return True


def forget_cached(svc: Services, expiry: Expiry) -> None:
    """Make the edge and the CDN forget the version's package and manifest."""
    svc.purge_cached([k for k in expiry.keys if not k.startswith("temp/")])


def delete_objects(svc: Services, expiry: Expiry) -> None:
    """Step 2: delete the objects; repeatable (deleting what is gone succeeds)."""
    # Claimed, the version is refused on a cache miss, and so are its
    # patches; no patch to or from it is offered (or made) from here on.
    # Forgetting cached copies first means a link holder gets a 404 from
    # here on, even if the deletes hang or the process dies during them.
    deltas.retire(expiry.version, "purged")
    forget_cached(svc, expiry)
    svc.storage.delete(*expiry.keys)
    # Again: a cache fill the edge started before the claim may have ended since.
    forget_cached(svc, expiry)


def finish(expiry: Expiry, now: dt.datetime, actor: str, settings: Settings) -> bool:
    """Step 3: record the version as purged (or abandoned), with its audit
    event and the (delayed) deletes of its objects on the replica."""
    v = expiry.version
    # A failed version may have been left unclaimed (see claim); any other
    # version is finished only from purging.
    sources = (S.PURGING,) + ((S.FAILED,) if expiry.from_status == S.FAILED else ())
    with database.atomic():
        changed = transition(v, FINISH[expiry.outcome], sources=sources, now=now,
                             purged_from=expiry.from_status, purge_reason=expiry.reason)
        if changed:
            enqueue_deletes(settings, expiry.keys, now)
            record_audit(actor, f"version.{expiry.outcome}", "version", v.id,
                         reason=expiry.reason, previous_status=expiry.from_status,
                         version_code=v.version_code, objects=expiry.keys, bytes=expiry.bytes)
    return bool(changed)


def purge(svc: Services, expiry: Expiry, now: dt.datetime, actor: str = "system") -> bool:
    """Claim, delete, finish. True if this call recorded the purge."""
    if not claim(expiry, now):
        return False
    delete_objects(svc, expiry)
    if not finish(expiry, now, actor, svc.settings):
        return False
    RETENTION_VERSIONS.labels(expiry.from_status).inc()
    RETENTION_BYTES.inc(expiry.bytes)
    return True


# -- runs ---------------------------------------------------------------------------------


def run_retention(svc: Services, now: dt.datetime | None = None, dry_run: bool = False,
                  actor: str = "system") -> dict:
    """Apply the policy at `now` (or only report what it would take, with sizes)."""
    now = now or utcnow()
    items, errors, freed = [], [], 0
    for expiry in expired(svc.settings.retention, now):
        try:
            _measure(svc, expiry)
            if not dry_run and not purge(svc, expiry, now, actor):
                continue  # the version changed meanwhile: no longer expired
        except Exception as e:  # one version's trouble must not stop the others
            log.exception("retention of version %s failed", expiry.version.id)
            errors.append({"version_id": expiry.version.id, "error": str(e)})
            continue
        items.append(expiry.as_dict())
        freed += expiry.bytes
    by_status: dict[str, dict] = {}
    for item in items:
        entry = by_status.setdefault(item["status"], {"versions": 0, "bytes": 0})
        entry["versions"] += 1
        entry["bytes"] += item["bytes"]
    return {"dry_run": dry_run, "now": iso(now), "items": items, "errors": errors,
            "totals": {"versions": len(items), "bytes": freed, "by_status": by_status}}


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 / RFC 3339 instant (`2027-01-31T12:00:00Z`, an offset, or naive UTC) as naive UTC.

    Raises ValueError for anything else. Instants whose UTC lies beyond the
    years 1-9999 (year 1 at +14:00) become the first or last representable one.
    """
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            value = dt.datetime.min if value.year == dt.MINYEAR else dt.datetime.max
    return value


def retention_job(svc: Services, now: dt.datetime) -> dict:
    report = run_retention(svc, now)
    if report["errors"]:
        log.warning("retention: %d versions could not be purged", len(report["errors"]))
    return {"items": report["totals"]["versions"], "errors": len(report["errors"]),
            "bytes": report["totals"]["bytes"]}


# Every 10 minutes, so an abandoned upload goes within 1 h 10 min.
JOB = Job("retention", retention_job, period=dt.timedelta(minutes=10))
JOBS = (JOB,)
