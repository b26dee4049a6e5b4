"""Progress on a terminal (rows/s, ETA); silent when stderr is not a terminal (CI, logs)."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "rows") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.start = self._last = time.monotonic()
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.2:
            self._last = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        text = f"{self.label}: {self.done:,} {self.unit} ({rate:,.0f}/s"
        if self.total:
            left = (self.total - self.done) / rate if rate else 0
            text += f", {100 * self.done / self.total:.0f}%, ETA {left:.0f}s"
        sys.stderr.write(f"\r\x1b[K{text})")
        sys.stderr.flush()
