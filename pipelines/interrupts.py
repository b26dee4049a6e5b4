"""Ctrl-C and SIGTERM end a command within seconds, with one line and exit 130 (SIGINT) or 143 (SIGTERM).

The signal raises `Interrupted` (a KeyboardInterrupt) in the main thread, so locks, temporary folders and
spilled shards are cleaned up on the way out as for any error. Worker threads cannot be stopped that way (a
Prefect task keeps running its shard, and Prefect waits for it), so a watchdog ends the process `GRACE`
seconds later whatever it is doing, after stopping the child processes registered with `on_hard_exit`. Both
ways leave the shard cache intact: entries are written to a temporary folder and renamed, so the next run
resumes from every finished shard. A second signal ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE = 3.0  # seconds between the signal and the forced exit
NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

_received: list[int] = []
_cleanups: list[Callable[[], None]] = []
_said: list[bool] = []


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(NAMES.get(signum, "interrupted"))
        self.signum = signum


def exit_code(err: BaseException | None = None) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    signum = getattr(err, "signum", None) or (_received[0] if _received else signal.SIGINT)
    return 128 + signum


def message(err: BaseException | None = None) -> str:
    return f"sluice: {NAMES.get(exit_code(err) - 128, 'interrupted')}"


def finish(err: BaseException) -> int:
    """Say it once; after a real signal leave now (worker threads may still be busy), else return the code."""
    _say()
    if _received:
        _hard_exit()
    return exit_code(err)


def on_hard_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` (stop a child process) before a forced exit."""
    _cleanups.append(cleanup)


@contextmanager
def handled() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in NAMES}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def noticed(signum: int) -> None:
    """A signal arrived (seen by our handler, or by Prefect's, which turns SIGTERM into its own exception and
    hands it on only after every running task has finished): exit within GRACE seconds; a second one: now."""
    if _received:
        _hard_exit()
    _received.append(signum)
    watchdog = threading.Timer(GRACE, _hard_exit)
    watchdog.daemon = True
    watchdog.start()


def _handler(signum: int, frame: object) -> None:
    noticed(signum)
    raise Interrupted(signum)


def _hard_exit() -> None:
    for cleanup in _cleanups:
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - exiting anyway; a cleanup that fails must not keep the process alive
            pass
    try:
        _say()
        sys.stdout.flush()
    finally:
        os._exit(exit_code())


def _say() -> None:
    if not _said:
        _said.append(True)
        sys.stderr.write(message() + "\n")
        sys.stderr.flush()
