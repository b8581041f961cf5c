"""A tiny progress bar on stderr (no tqdm dependency): count, rate, ETA.

On a terminal it redraws one line; otherwise (logs, CI) it writes a plain line every few seconds, so a batch
run's log stays readable.

The ETA is shown only once it means something: the rate it uses is measured from the first unit done (model
loading, planning and the first chunk's warm-up are not counted as work), over at least ``ETA_MIN_FRACTION`` of the
total and ``ETA_MIN_SECONDS``; before that it reads ``--:--``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ETA_MIN_FRACTION = 0.05  # of the total, done after the first unit
ETA_MIN_SECONDS = 3.0  # since the first unit


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class ProgressBar:
    """Progress of one task. ``unit`` "frames" shows fps; "bytes" shows sizes and a transfer rate."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        unit: str = "frames",
        stream: TextIO | None = None,
        interval: float | None = None,
        width: int = 28,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.width = width
        self.done = 0
        self.clock = clock
        self.start = clock()
        self._first: tuple[float, int] | None = None  # (time, count) of the first progress
        self._last_draw = -1e9
        self._closed = False

    def rate(self) -> float:
        elapsed = self.clock() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left, or None until the rate since the first unit is measured over enough work and time."""
        if self.total is None or self._first is None:
            return None
        t0, n0 = self._first
        seconds, units = self.clock() - t0, self.done - n0
        if units <= 0 or units < ETA_MIN_FRACTION * self.total or seconds < ETA_MIN_SECONDS:
            return None
        return max(0.0, (self.total - self.done) * seconds / units)

    def render(self) -> str:
        rate = self.rate()
        eta = self.eta()
        if self.unit == "bytes":
            count = _fmt_bytes(self.done) + (f"/{_fmt_bytes(self.total)}" if self.total else "")
            speed = f"{_fmt_bytes(rate)}/s"
        else:
            count = f"{self.done}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
            speed = f"{rate:.2f} fps" if self.unit == "frames" else f"{rate:.2f} {self.unit}/s"
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * self.width)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% "
        else:
            bar = ""
        elapsed = _fmt_time(self.clock() - self.start)
        return f"{self.label} {bar}{count} {speed} elapsed {elapsed} ETA {_fmt_time(eta)}"

    def _draw(self, final: bool = False) -> None:
        line = self.render()
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_draw = self.clock()

    def update(self, n: int = 1) -> None:
        """Add ``n`` units; redraws at most every ``interval`` seconds."""
        self.set(self.done + n)

    def set(self, done: int, total: int | None = None) -> None:
        """Set the absolute count (downloads report absolute byte counts)."""
        if self._first is None and done > 0:
            self._first = (self.clock(), done)
        self.done = done
        if total is not None and total > 0:
            self.total = total
        if self.clock() - self._last_draw >= self.interval:
            self._draw()

    def close(self) -> None:
        """Draw the final state once."""
        if not self._closed:
            self._closed = True
            self._draw(final=True)
