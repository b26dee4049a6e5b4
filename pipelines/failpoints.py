"""Crash and fault testing at named points of a run.

`SLUICE_KILL_AT=point:N` kills this process with SIGKILL the N-th time `point` is hit (N defaults to 1).
`SLUICE_FAIL_AT=point:N:ERRNO` raises OSError(ERRNO) there instead, e.g. `publish.write:1:ENOSPC` for a full
disk, `publish.write:1:EACCES` for a permission error. `SLUICE_PAUSE_AT=point:N:FILE` creates FILE there and
sleeps (a test then signals the process mid-run, as a user's Ctrl-C would).

Points: read.shard, cache.put, stage.done, publish.write, publish.seal, publish.rename (a release run);
llm.cached (an LLM answer committed to the response cache), generate.step (a generation step finished),
generate.write (the generated rows written, the side files not yet). Unset (always, outside tests), `hit` is
two dictionary lookups.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter
from pathlib import Path

_hits: Counter = Counter()


def hit(point: str) -> None:
    if kill := os.environ.get("SLUICE_KILL_AT"):
        if _reached(kill, point, "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
    if pause := os.environ.get("SLUICE_PAUSE_AT"):
        if _reached(pause, point, "pause"):
            Path(pause.split(":", 2)[2]).touch()
            time.sleep(600)
    if fail := os.environ.get("SLUICE_FAIL_AT"):
        if _reached(fail, point, "fail"):
            code = getattr(errno, fail.split(":")[2])
            raise OSError(code, os.strerror(code))


def _reached(target: str, point: str, mode: str) -> bool:
    name, _, rest = target.partition(":")
    if name != point:
        return False
    _hits[mode, point] += 1
    return _hits[mode, point] >= int(rest.split(":")[0] or 1)
