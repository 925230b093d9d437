"""Cost tracking: daily usage snapshots and a monthly bill per hosting option.

Usage comes from the appliance's own records:

- storage: the latest bucket scan (app.housekeeping.usage), billed as GB-months;
- requests and egress: what the edge served for packages, delta patches,
  assets and uploads (app.edge.access_log), the traffic a storage/CDN provider
  would carry. The report also shows what delta patches saved: the bytes of
  the full packages they replaced minus the patch bytes sent. API calls
  are served by the appliance's own host under every option, so they are
  not billed here.

The `usage_snapshot` job writes one row per complete UTC day (storage held,
requests, egress). The month is projected from the last 30 complete days
(`days_per_month` / days covered); before the first complete day, from
today's traffic so far.

Prices live in one JSON file (app/prices.json, or MOSIS_PRICES_FILE): each
option is a list of line items, each a usage quantity times a unit price,
minus an optional included allowance. Every line of an estimate carries its
arithmetic, so an admin can check it by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import peewee as pw

from app.housekeeping.usage import latest_scan, scan_and_store
from app.platform.clock import iso, utcnow
from app.platform.config import ConfigError
from app.platform.jobs import Job
from app.platform.models import EdgeTraffic, LogCursor, StorageScan, UsageSnapshot, database

# Usage quantities a price can apply to, and the unit each is counted in.
UNITS = {
    "storage_gb": "GB-month",
    "requests_million": "million requests",
    "egress_gb": "GB",
    "month": "month",
}
# Edge areas a storage/CDN provider carries (see app.edge.access_log).
BILLED_AREAS = ("packages", "deltas", "assets", "uploads")
WINDOW_DAYS = 30
SNAPSHOT_PERIOD = dt.timedelta(days=1)
CENT = Decimal("0.01")


# -- prices ------------------------------------------------------------------------

@dataclass(frozen=True)
class LineItem:
    item: str
    usage: str
    usd_per_unit: Decimal
    included: Decimal = Decimal(0)
    note: str = ""


@dataclass(frozen=True)
class Option:
    id: str
    name: str
    items: tuple[LineItem, ...]
    capacity_gb: Decimal | None = None


@dataclass(frozen=True)
class Prices:
    path: str
    taken: str
    source: str
    currency: str
    bytes_per_gb: int
    days_per_month: int
    options: tuple[Option, ...]


def _decimal(value, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
    return number


def _parse_prices(path: str, raw: dict) -> Prices:
    def need(obj: dict, key: str, kind: type, where: str):
        if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
            raise ConfigError(f"{path}: {where}{key} is missing or not a {kind.__name__}")
        return obj[key]

    options = []
    for i, o in enumerate(need(raw, "options", list, "")):
        where = f"options[{i}]."
        items = []
        for j, it in enumerate(need(o, "items", list, where)):
            at = f"{where}items[{j}]."
            usage = need(it, "usage", str, at)
            if usage not in UNITS:
                raise ConfigError(f"{path}: {at}usage must be one of {', '.join(UNITS)}, got {usage!r}")
            items.append(LineItem(need(it, "item", str, at), usage,
                                  _decimal(it.get("usd_per_unit"), f"{path}: {at}usd_per_unit"),
                                  _decimal(it.get("included", 0), f"{path}: {at}included"),
                                  str(it.get("note", ""))))
        capacity = o.get("capacity_gb")
        options.append(Option(need(o, "id", str, where), need(o, "name", str, where), tuple(items),
                              None if capacity is None else _decimal(capacity, f"{path}: {where}capacity_gb")))
    ids = [o.id for o in options]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: option ids must be unique")
    bytes_per_gb = int(_decimal(raw.get("bytes_per_gb", 1024**3), f"{path}: bytes_per_gb"))
    days = int(_decimal(raw.get("days_per_month", 30), f"{path}: days_per_month"))
    if bytes_per_gb < 1 or days < 1:
        raise ConfigError(f"{path}: bytes_per_gb and days_per_month must be at least 1")
    return Prices(path, need(raw, "taken", str, ""), str(raw.get("source", "")),
                  str(raw.get("currency", "USD")), bytes_per_gb, days, tuple(options))


_cache: dict[str, tuple[tuple, Prices]] = {}


def load_prices(path: Path | str) -> Prices:
    """The prices in `path`, checked; re-read when the file changes."""
    path = str(path)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        cached = _cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the prices file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"the prices file {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"the prices file {path} must hold a JSON object")
    prices = _parse_prices(path, raw)
    _cache[path] = (stamp, prices)
    return prices


# -- usage ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    """A month of usage: storage held, requests and egress (projected)."""

    storage_bytes: int
    requests: Decimal
    egress_bytes: Decimal
    basis: str

    def quantities(self, prices: Prices) -> dict[str, Decimal]:
        gb = Decimal(prices.bytes_per_gb)
        return {"storage_gb": Decimal(self.storage_bytes) / gb,
                "requests_million": self.requests / Decimal(1_000_000),
                "egress_gb": self.egress_bytes / gb,
                "month": Decimal(1)}


def _billed_traffic(day: dt.date) -> tuple[int, int, int]:
    """(requests, egress bytes, downloads) the edge served for billed areas on `day`."""
    row = (EdgeTraffic.select(pw.fn.COALESCE(pw.fn.SUM(EdgeTraffic.requests), 0),
                              pw.fn.COALESCE(pw.fn.SUM(EdgeTraffic.bytes_sent), 0),
                              pw.fn.COALESCE(pw.fn.SUM(EdgeTraffic.downloads), 0))
           .where((EdgeTraffic.day == day) & EdgeTraffic.area.in_(BILLED_AREAS)).tuples().first())
    return tuple(int(v) for v in row)


def monthly_usage(now: dt.datetime, days_per_month: int) -> Usage:
    """This month's usage, projected from what the appliance recorded."""
    scan = latest_scan()
    storage = scan.total_bytes if scan else 0
    today = now.date()
    snaps = list(UsageSnapshot.select()
                 .where((UsageSnapshot.day >= today - dt.timedelta(days=WINDOW_DAYS))
                        & (UsageSnapshot.day < today))
                 .order_by(UsageSnapshot.day))
    scale_days = Decimal(days_per_month)
    if snaps:
        covered = (today - snaps[0].day).days
        factor = scale_days / covered
        basis = (f"{covered} complete day(s) {snaps[0].day.isoformat()} .. "
                 f"{(today - dt.timedelta(days=1)).isoformat()}, scaled to {days_per_month} days")
        requests = sum(s.requests for s in snaps)
        egress = sum(s.egress_bytes for s in snaps)
    else:
        # No complete day yet: scale today's traffic so far (at least an hour's worth).
        start = dt.datetime.combine(today, dt.time())
        cursor = LogCursor.get_or_none(LogCursor.name == "edge-access")
        if cursor is not None and cursor.created_at > start:
            start = cursor.created_at
        elapsed = max((now - start).total_seconds(), 3600.0)
        factor = scale_days * 86400 / Decimal(str(elapsed))
        basis = f"today's traffic so far ({elapsed / 3600:.1f} h), scaled to {days_per_month} days"
        requests, egress, _ = _billed_traffic(today)
    return Usage(storage, Decimal(requests) * factor, Decimal(egress) * factor, basis)


# -- estimates --------------------------------------------------------------------------

def _fmt(number: Decimal) -> str:
    """A quantity for people: at most four decimals, no trailing zeros."""
    text = f"{number.quantize(Decimal('0.0001'), ROUND_HALF_UP):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _line(item: LineItem, quantity: Decimal) -> tuple[dict, Decimal]:
    unit = UNITS[item.usage]
    billable = max(quantity - item.included, Decimal(0))
    usd = (billable * item.usd_per_unit).quantize(CENT, ROUND_HALF_UP)
    amount = f"{_fmt(quantity)} {unit}"
    if item.included:
        amount = f"({_fmt(quantity)} - {_fmt(item.included)} included) {unit}"
    return {"item": item.item, "usage": item.usage, "quantity": float(quantity), "unit": unit,
            "included": float(item.included), "usd_per_unit": float(item.usd_per_unit),
            "usd": float(usd), "arithmetic": f"{amount} x ${_fmt(item.usd_per_unit)} = ${usd}",
            "note": item.note}, usd


def estimate(prices: Prices, usage: Usage) -> list[dict]:
    """The month's bill under each option, line by line."""
    quantities = usage.quantities(prices)
    out = []
    for option in prices.options:
        lines, amounts = zip(*(_line(item, quantities[item.usage]) for item in option.items)) \
            if option.items else ((), ())
        total = sum(amounts, Decimal(0)).quantize(CENT)
        warnings = []
        if option.capacity_gb is not None and quantities["storage_gb"] > option.capacity_gb:
            warnings.append(f"storage of {_fmt(quantities['storage_gb'])} GB exceeds the "
                            f"{_fmt(option.capacity_gb)} GB this price assumes")
        out.append({"option": option.id, "name": option.name, "total_usd": float(total),
                    "arithmetic": " + ".join(f"${a}" for a in amounts) + f" = ${total}",
                    "items": list(lines), "warnings": warnings})
    return out


def cost_report(settings, now: dt.datetime | None = None, overrides: dict | None = None) -> dict:
    """`GET /v1/admin/costs`: measured (or given) usage and the bill per option."""

    now = now or utcnow()
    prices = load_prices(settings.resolved_prices_file)
    usage = monthly_usage(now, prices.days_per_month)
    if overrides:
        gb = Decimal(prices.bytes_per_gb)
        usage = Usage(
            int(overrides["storage_gb"] * gb) if "storage_gb" in overrides else usage.storage_bytes,
            overrides.get("requests", usage.requests),
            overrides["egress_gb"] * gb if "egress_gb" in overrides else usage.egress_bytes,
            "given: " + ", ".join(sorted(overrides)) + "; the rest measured (" + usage.basis + ")")
    q = usage.quantities(prices)
    history = (UsageSnapshot.select().order_by(UsageSnapshot.day.desc()).limit(WINDOW_DAYS))
    return {
        "generated_at": iso(now),
        "prices": {"file": prices.path, "taken": prices.taken, "source": prices.source,
                   "currency": prices.currency, "bytes_per_gb": prices.bytes_per_gb},
        "usage": {"storage_gb": float(q["storage_gb"]), "requests": float(usage.requests),
                  "egress_gb": float(q["egress_gb"]), "basis": usage.basis},
        "options": estimate(prices, usage),
        "deltas": delta_savings(now, prices.bytes_per_gb),
        "history": [{"day": s.day.isoformat(), "storage_bytes": s.storage_bytes,
                     "storage_objects": s.storage_objects, "requests": s.requests,
                     "egress_bytes": s.egress_bytes, "downloads": s.downloads} for s in history],
    }


def delta_savings(now: dt.datetime, bytes_per_gb: int) -> dict:
    """Egress delta patches saved over the last WINDOW_DAYS days (today included)."""
    since = now.date() - dt.timedelta(days=WINDOW_DAYS - 1)
    sent, replaced = (EdgeTraffic.select(pw.fn.COALESCE(pw.fn.SUM(EdgeTraffic.bytes_sent), 0),
                                         pw.fn.COALESCE(pw.fn.SUM(EdgeTraffic.replaced_bytes), 0))
                      .where((EdgeTraffic.area == "deltas") & (EdgeTraffic.day >= since)).tuples().first())
    saved = max(int(replaced) - int(sent), 0)
    return {"since": since.isoformat(), "patch_bytes_sent": int(sent), "full_bytes_replaced": int(replaced),
            "egress_saved_bytes": saved, "egress_saved_gb": float(Decimal(saved) / Decimal(bytes_per_gb))}


# -- the daily snapshot -----------------------------------------------------------------

def _storage_on(day: dt.date) -> StorageScan | None:
    """The last scan made on or before `day`, else the first one after it."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    return (StorageScan.select().where(StorageScan.scanned_at < end)
            .order_by(StorageScan.scanned_at.desc()).first()
            or StorageScan.select().order_by(StorageScan.scanned_at).first())


def _first_day_with_data() -> dt.date | None:
    days = [EdgeTraffic.select(pw.fn.MIN(EdgeTraffic.day)).scalar(),
            StorageScan.select(pw.fn.MIN(StorageScan.scanned_at)).scalar()]
    days = [d.date() if isinstance(d, dt.datetime) else d for d in days if d is not None]
    days = [dt.date.fromisoformat(d) if isinstance(d, str) else d for d in days]
    return min(days) if days else None


def snapshot_usage(svc, now: dt.datetime) -> int:
    """Housekeeping job: write a snapshot for every complete day not yet written."""
    today = now.date()
    last = UsageSnapshot.select(pw.fn.MAX(UsageSnapshot.day)).scalar()
    if isinstance(last, str):
        last = dt.date.fromisoformat(last)
    first = last + dt.timedelta(days=1) if last else _first_day_with_data()
    if first is None or first >= today:
        return 0
    first = max(first, today - dt.timedelta(days=WINDOW_DAYS + 5))
    if StorageScan.select().count() == 0:
        scan_and_store(svc, now)
    written = 0
    day = first
    while day < today:
        scan = _storage_on(day)
        requests, egress, downloads = _billed_traffic(day)
        with database.atomic():
            (UsageSnapshot.insert(day=day, storage_bytes=scan.total_bytes,
                                  storage_objects=scan.total_objects, requests=requests,
                                  egress_bytes=egress, downloads=downloads, taken_at=utcnow())
             .on_conflict_ignore().execute())
        written += 1
        day += dt.timedelta(days=1)
    return written


JOBS = (Job("usage_snapshot", snapshot_usage, SNAPSHOT_PERIOD),)
