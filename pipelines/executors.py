"""Executors: where and how a run's per-shard calls execute. A new engine is a class here, nothing else.

The engine (pipelines/engine.py) never runs a shard itself: every stage hands its per-shard calls to
`executor.map(fn, jobs, label, cache, inline=False, **kwargs)`, which must return `call_cached(fn, job, cache,
**kwargs)` for every job, in job order (a `(result, reused)` pair each). `inline=True` marks calls that must
run in this process (a generator's tasks share the run's LLM client). The flow (pipelines/flow.py) asks the
executor whether the run is a Prefect flow (`prefect`), for that flow's task runner and for anything the
runner needs around the run (`session`).

- `Local` (`sluice run --no-prefect`): a loop in this process, with progress on a terminal.
- `PrefectThreads` (the default): every call a Prefect task on a thread pool, one thread per core.
- `PrefectDask` (`--runner dask [--dask-address HOST:PORT]`): Prefect tasks on a Dask cluster (a local one,
  one worker process per core, unless an address is given); inline calls stay in the driver.

To add one (say Ray): subclass `PrefectThreads` and return Prefect's Ray task runner from `task_runner()`, or
write a class with `prefect = False` and a `map` of your own; then add it to `EXECUTORS`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from operators.errors import SluiceError
from pipelines import interrupts
from pipelines.cache import ShardCache
from pipelines.engine import Job, call_cached, map_local
from pipelines.progress import Progress


class Executor(Protocol):
    prefect: bool  # the run is a Prefect flow (with this executor's task runner)

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        """call_cached(fn, job, cache, **kwargs) for every job, in job order."""

    def task_runner(self) -> Any:
        """The Prefect task runner of the flow (when `prefect`)."""

    def session(self) -> Any:
        """A context manager around the whole run (set-up the runner needs, e.g. a shared API for workers)."""


class Local:
    """In this process, one call after another: no Prefect, no start-up cost."""

    prefect = False

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        return map_local(fn, jobs, label, cache, **kwargs)

    def task_runner(self) -> None:
        return None

    @contextmanager
    def session(self) -> Iterator[None]:
        yield


class PrefectThreads:
    """Every call a Prefect task (`<stage>[<shard>]`, retried on I/O errors) on a pool of threads."""

    prefect = True

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        return prefect_map(fn, jobs, label, cache, inline, **kwargs)

    def task_runner(self) -> Any:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2)

    @contextmanager
    def session(self) -> Iterator[None]:
        yield


class PrefectDask(PrefectThreads):
    """Prefect tasks on a Dask cluster: `address` of a running scheduler, else a local cluster."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def task_runner(self) -> Any:
        from prefect_dask import DaskTaskRunner

        # Shards travel to workers inside the task graph; Dask's advice to load data through Dask itself is
        # not the user's concern.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        if self.address:
            return DaskTaskRunner(address=self.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": os.cpu_count() or 2, "threads_per_worker": 1,
                                              "dashboard_address": None})

    @contextmanager
    def session(self) -> Iterator[None]:
        """Dask workers are separate processes that only see environment variables: without one API URL there,
        each would start its own temporary API. Export the configured one, or start one for this run."""
        from prefect.settings import PREFECT_API_URL

        server = None
        url = PREFECT_API_URL.value()
        if not url:
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            server.start()
            url = server.api_url
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            if server is not None:
                server.stop()


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": lambda address=None: PrefectThreads(),
                                                 "dask": PrefectDask}
RUNNERS = tuple(EXECUTORS)


def executor_for(use_prefect: bool = True, runner: str = "local", address: str | None = None) -> Executor:
    if not use_prefect:
        return Local()
    if runner not in EXECUTORS:
        raise SluiceError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")
    return EXECUTORS[runner](address)


def prefect_map(fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
                **kwargs: Any) -> list[tuple[Any, bool]]:
    """The calls as Prefect tasks of the running flow (on its task runner); inline ones in this process."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.exceptions import TerminationSignal

    shard_task = task(call_cached, name=label, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
                      retry_condition_fn=_transient)
    if inline:  # tasks of this process, one after another (a generator's requests run concurrently inside)
        return [shard_task.with_options(task_run_name=f"{label}[{job.name}]")(fn, job, cache, **kwargs)
                for job in jobs]
    futures = [shard_task.with_options(task_run_name=f"{label}[{job.name}]").submit(fn, job, cache, **kwargs)
               for job in jobs]
    progress = Progress(label, total=sum(job.part.rows for job in jobs))  # as map_local shows it
    results = []
    try:
        for future, job in zip(futures, jobs):
            results.append(future.result())
            progress.advance(job.part.rows)
        progress.close()
        return results
    except TerminationSignal as err:  # Prefect's SIGTERM: it would wait for the running tasks before passing it on
        interrupts.noticed(err.signal)
        raise


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may succeed a second time (I/O, a lost worker), never a user's mistake or a bug."""
    try:
        state.result()
    except SluiceError:
        return False
    except (OSError, TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False
