"""Progress of long stages: a live bar on a terminal, plain lines in logs and CI, nothing for short work.

- bar (stderr is a terminal, CI unset): one redrawn line, `normalize [#####-----] 45% 12,345/27,000 rows
  1,234 rows/s ETA 0:12`.
- plain (logs, CI, pipes): a whole line every `interval` seconds while a stage runs, and a closing line if it
  ran that long; stages shorter than `interval` print nothing, so quick runs keep clean logs.
- off: nothing.

SLUICE_PROGRESS=bar|plain|off overrides the choice; SLUICE_PROGRESS_INTERVAL sets the plain interval (s).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

MODES = ("bar", "plain", "off")
REDRAW = 0.2  # seconds between bar redraws


def default_mode(stream: TextIO) -> str:
    chosen = os.environ.get("SLUICE_PROGRESS", "").strip().lower()
    if chosen in MODES:
        return chosen
    return "bar" if stream.isatty() and not os.environ.get("CI") else "plain"


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "rows", *, mode: str | None = None,
                 stream: TextIO | None = None, interval: float | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.mode = mode or default_mode(self.stream)
        self.interval = interval if interval is not None else float(os.environ.get("SLUICE_PROGRESS_INTERVAL", 30))
        self.done = 0
        self.start = self._last = time.monotonic()
        self._printed = False

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.mode == "bar" and now - self._last >= REDRAW:
            self._write(f"\r\x1b[K{self.status(now)}", now)
        elif self.mode == "plain" and now - self._last >= self.interval:
            self._write(f"{self.status(now)}\n", now)

    def close(self) -> None:
        now = time.monotonic()
        if self.mode == "bar":
            self._write(f"\r\x1b[K{self.status(now)}\n", now)
        elif self.mode == "plain" and (self._printed or now - self.start >= self.interval):
            elapsed = now - self.start
            self._write(f"{self.label}: done, {self.done:,} {self.unit} in {_clock(elapsed)} "
                        f"({self.done / max(elapsed, 1e-9):,.0f} {self.unit}/s)\n", now)

    def status(self, now: float | None = None) -> str:
        """`label [####------] 40% 4,000/10,000 rows 1,234 rows/s ETA 0:05` (no bar, share or ETA without a total)."""
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.label} {self.done:,} {self.unit} {rate:,.0f} {self.unit}/s"
        share = min(self.done / self.total, 1.0)
        bar = "#" * round(20 * share) + "-" * (20 - round(20 * share))
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        return (f"{self.label} [{bar}] {share:4.0%} {self.done:,}/{self.total:,} {self.unit} "
                f"{rate:,.0f} {self.unit}/s ETA {eta}")

    def _write(self, text: str, now: float) -> None:
        self._last, self._printed = now, True
        self.stream.write(text)
        self.stream.flush()


def _clock(seconds: float) -> str:
    """0:07, 12:30, 1:02:03."""
    s = max(int(round(seconds)), 0)
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
