"""Health checks run in the background, their latest outcome read for free.

A `Probe` runs one check on a daemon thread of its own, every `interval`
seconds, in each process that asks for its state (gunicorn forks its workers
after the app is built: each worker starts its own on first use). Readers
never wait on the check: they read the latest outcome. A check still running
after `timeout` seconds counts as failed from then on, so a dependency that
stalls (accepts connections, never answers) is reported within
interval + timeout seconds, however long the check itself hangs.

The API's readiness (`/readyz`) is answered from these probes, so a flood of
readiness requests costs nothing; storage's reachability probe also lets
routes that need storage answer 503 at once while it stalls (takes requests
and does not answer; a storage that refuses connections fails calls quickly
by itself, and is not kept from the first call after it is back)
(app/platform/storage.py). An exception from a check is a failed outcome with its
message; the probe's thread never dies of it, and it ends when its probe is
garbage.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from app.platform import db
from app.platform.models import database

log = logging.getLogger(__name__)

# Every probe whose checks run in this process.
_RUNNING: weakref.WeakSet = weakref.WeakSet()


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "ok", or what failed (shown to operators: no addresses, no secrets)
    at: float  # time.monotonic() when it was known
    # The check got no answer in time (as opposed to a quick refusal): calls
    # to what it checks would hang, so they are better not made.
    stalled: bool = False


class Probe:
    def __init__(self, name: str, check: Callable[[], None], interval: float, timeout: float):
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self._check = check
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._outcome: Outcome | None = None
        self._running_since: float | None = None
        self._first = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def state(self, wait: float = 0) -> Outcome | None:
        """The latest outcome (None before the first check ends); `wait`
        bounds how long to wait for the first one."""
        self._ensure_running()
        if wait and self._outcome is None:  # past its timeout, a running check is a failure anyway
            self._first.wait(min(wait, self.timeout))
        since = self._running_since
        now = time.monotonic()
        if since is not None and now - since > self.timeout:
            return Outcome(False, f"no answer for {now - since:.1f} s", now, stalled=True)
        return self._outcome

    def stalled(self, longer_than: float) -> str | None:
        """What failed, if the latest check got no answer in time (its own
        timeout, or still none after `longer_than` seconds); None when it
        passed, failed quickly, is slow but not that slow, or is not known yet."""
        since = self._running_since
        now = time.monotonic()
        if since is not None and now - since > longer_than:
            return f"no answer for {now - since:.1f} s"
        self._ensure_running()
        outcome = self._outcome
        return outcome.detail if outcome is not None and outcome.stalled else None

    def _ensure_running(self) -> None:
        pid = os.getpid()
        if self._pid == pid or self._stopped.is_set():
            return
        with self._lock:
            if self._pid == pid:
                return
            # A new process (or the first use): the parent's thread did not come along.
            self._outcome, self._running_since, self._first = None, None, threading.Event()
            self._pid = pid
            self._thread = threading.Thread(target=_loop, args=(weakref.ref(self), pid, self._stopped),
                                            name=f"probe-{self.name}", daemon=True)
            self._thread.start()
            _RUNNING.add(self)

    def stop(self) -> None:
        """End the checks and wait for the one under way (it may be using a
        connection its owner is about to close)."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + self.interval)

    def run_once(self) -> Outcome:
        self._running_since = time.monotonic()
        error = None
        try:
            self._check()
            outcome = Outcome(True, "ok", time.monotonic())
        except Exception as e:  # any failure is the outcome, never the thread's end
            error = e
            # Public (/readyz): our own message, else only the kind of error
            # (a driver's message may name hosts and paths); the log has it all.
            detail = getattr(e, "message", None) or type(e).__name__
            outcome = Outcome(False, detail, time.monotonic(), stalled=bool(getattr(e, "stalled", False)))
        was = self._outcome
        self._outcome, self._running_since = outcome, None
        self._first.set()
        if (was is None or was.ok) and not outcome.ok:
            cause = getattr(error, "__cause__", None) or error
            log.warning("%s check failed: %s", self.name, cause if cause is not None else outcome.detail)
        elif was is not None and not was.ok and outcome.ok:
            log.info("%s check passes again", self.name)
        return outcome


def stop_all() -> None:
    """End the checks of every probe of this process (before its database
    connections are closed under them)."""
    for probe in list(_RUNNING):
        probe.stop()


def _loop(ref: weakref.ref, pid: int, stopped: threading.Event) -> None:
    while not stopped.is_set():
        probe = ref()
        if probe is None or probe._pid != pid:
            return
        probe.run_once()
        interval = probe.interval
        del probe  # hold no reference while asleep: an unused probe is garbage
        stopped.wait(interval)


@dataclass
class Health:
    """What the API checks: the database, storage's answers, storage's writes."""

    database: Probe
    storage: Probe
    storage_writes: Probe | None

    def stop(self) -> None:
        """End every probe's checks (before the database connections close)."""
        for probe in (self.database, self.storage, self.storage_writes):
            if probe is not None:
                probe.stop()

    def checks(self, wait: float) -> dict[str, str]:
        """{"database": "ok" | "error: …", "storage": …}; waits at most `wait`
        seconds in all for probes that have not finished their first check."""
        deadline = time.monotonic() + wait
        out = {}
        for name, probes in (("database", [self.database]),
                             ("storage", [p for p in (self.storage, self.storage_writes) if p])):
            details = []
            for probe in probes:
                # Once something failed, the rest is not waited for.
                outcome = probe.state(wait=0 if details else max(deadline - time.monotonic(), 0))
                if outcome is None:
                    if not details:
                        details.append("not checked yet")
                elif not outcome.ok:
                    details.append(outcome.detail)
            out[name] = "ok" if not details else "error: " + "; ".join(details)
        return out


def watch(svc) -> Health:
    """Start watching the database and storage for this API (a Services)."""
    settings = svc.settings
    interval = settings.health_probe_seconds
    # Readiness says 503 once a check has had no answer this long; the check
    # itself waits longer (a loaded machine answers late, not never).
    timeout = max(interval, 1.0)
    give_up = STALL_FACTOR * timeout

    def check_database() -> None:
        with database.connection_context():
            db.ping()

    health = Health(
        database=Probe("database", check_database, interval, timeout),
        storage=Probe("storage", lambda: svc.storage.check_reachable(give_up), interval, timeout),
        storage_writes=(Probe("storage writes", lambda: svc.storage.check_writable(give_up),
                              settings.storage_canary_seconds, give_up)
                        if settings.storage_canary_seconds else None),
    )
    svc.storage.watch(health.storage, settings.storage_call_slots, stalled_after=STALL_FACTOR * timeout / 2)
    return health


# A check gives up after this many times the readiness timeout; storage
# calls are refused at once after half that without an answer.
STALL_FACTOR = 5
