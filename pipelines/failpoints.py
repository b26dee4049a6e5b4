"""Crash-safety testing: `SLUICE_KILL_AT=point:N` kills this process with SIGKILL the N-th time `point` is hit.

Points: read.shard, cache.put, stage.done, publish.write, publish.seal, publish.rename. Unset (always, outside
tests), `hit` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter = Counter()


def hit(point: str) -> None:
    target = os.environ.get("SLUICE_KILL_AT")
    if not target:
        return
    name, _, count = target.partition(":")
    if name != point:
        return
    _hits[point] += 1
    if _hits[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
