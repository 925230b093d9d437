"""Progress on stderr, and an optional cap on transfer speed.

On a terminal the bar is redrawn in place and its line stays open; whatever
else goes to stderr first calls `end_line()`, so a note or an error always
starts on a line of its own, never after the bar.
"""

from __future__ import annotations

import sys
import time


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_rate(text: str) -> int:
    """`500K`, `4M`, `1.5M`, `100000` -> bytes per second."""
    units = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    raw = text.strip().upper().removesuffix("B").removesuffix("/S")
    unit = raw[-1] if raw and raw[-1] in units else ""
    try:
        value = float(raw[:len(raw) - len(unit)] if unit else raw) * units[unit]
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (try 500K or 4M)") from None
    if value < 1:
        raise ValueError(f"the rate must be positive, got {text!r}")
    return int(value)


_line_open = False  # a bar is drawn on stderr's current line


def end_line() -> None:
    """End the bar's line, if one is open, before printing to stderr."""
    global _line_open
    if _line_open:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _line_open = False


class Progress:
    """A bar redrawn in place on a terminal; elsewhere a line now and then
    (at most every 10 %), so logs of scripted runs stay short."""

    def __init__(self, label: str, total: int, done: int = 0, enabled: bool = True):
        self.label, self.total, self.done = label, max(total, 1), done
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.started = time.monotonic()
        self.start_done = done
        self._last_draw = 0.0
        self._last_decile = done * 10 // self.total

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def rewind(self, n: int) -> None:
        """Bytes sent by an attempt that failed are sent again."""
        self.done = max(0, self.done - n)

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def _draw(self, final: bool = False) -> None:
        global _line_open
        if not self.enabled:
            return
        pct = min(100, self.done * 100 // self.total)
        if self.tty:
            now = time.monotonic()
            if not final and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = pct * 30 // 100
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}% "
                             f"{human_bytes(self.done)}/{human_bytes(self.total)} "
                             f"{human_bytes(self._rate())}/s\x1b[K")  # clear what a longer line left
            _line_open = not final
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
            return
        decile = self.done * 10 // self.total
        if decile > self._last_decile or final:
            self._last_decile = decile
            print(f"{self.label}: {pct}% ({human_bytes(self.done)} of {human_bytes(self.total)})",
                  file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and (self.tty or self._last_decile < 10):
            self._draw(final=True)


class RateLimit:
    """Sleeps so that the average speed stays at or below `rate` bytes/s."""

    def __init__(self, rate: int | None):
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    def take(self, n: int) -> None:
        if not self.rate:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)
