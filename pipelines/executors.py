"""Executors: where and how a run's per-shard calls execute. A new engine is a class here, nothing else.

The engine (pipelines/engine.py) never runs a shard itself: every stage hands its per-shard calls to
`executor.map(fn, jobs, label, cache, inline=False, **kwargs)`, which must return `call_cached(fn, job, cache,
**kwargs)` for every job, in job order (a `(result, reused)` pair each). `inline=True` marks calls that must
run in this process (a generator's tasks share the run's LLM client). The flow (pipelines/flow.py) asks the
executor whether the run is a Prefect flow (`prefect`), for that flow's task runner and for anything the
runner needs around the run (`session`).

- `Local` (`sluice run --no-prefect`; the one-off verbs with `--workers`): a loop in this process, or
  threads of it, with progress on a terminal.
- `PrefectThreads` (the default): every call a Prefect task on a thread pool, one thread per core.
- `PrefectDask` (`--runner dask [--dask-address HOST:PORT]`): Prefect tasks here whose calls run on a Dask
  cluster (a local one, one worker process per core, unless a scheduler's address is given); inline calls
  stay in the driver.

To add one (say Ray): subclass `PrefectThreads` and pass `prefect_map` a `call` that runs `call_cached` there (as
`PrefectDask` does), or write a class with `prefect = False` and a `map` of your own; then add it to `EXECUTORS`.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from operators.errors import ConfigError, SluiceError
from pipelines import interrupts, storage
from pipelines.cache import ShardCache
from pipelines.engine import Job, call_cached, map_local
from pipelines.progress import Progress
from pipelines.readers import Source, gzipped


class Executor(Protocol):
    prefect: bool  # the run is a Prefect flow (with this executor's task runner)

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        """call_cached(fn, job, cache, **kwargs) for every job, in job order."""

    def task_runner(self) -> Any:
        """The Prefect task runner of the flow (when `prefect`)."""

    def session(self, inputs: tuple[Source, ...] = ()) -> Any:
        """A context manager around the whole run (set-up the runner needs, e.g. a shared API for workers);
        `inputs`: the run's, whose copies the processes that read them may fetch ahead (see fetch_ahead)."""


class Local:
    """In this process, no Prefect, no start-up cost: one call after another, or the calls on `workers` threads
    (the one-off verbs: Polars, NumPy and rensa's hashing work outside Python's global lock, so shards overlap;
    MinHash's index ~1.2x on 2 cores, bench/README.md). Results in job order either way; `inline` calls in turn."""

    prefect = False

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigError(f"--workers {workers}: give at least 1")
        self.workers = workers

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        if self.workers == 1 or inline or len(jobs) < 2:
            return map_local(fn, jobs, label, cache, **kwargs)
        progress = Progress(label, total=sum(j.part.rows for j in jobs))
        pool = ThreadPoolExecutor(min(self.workers, len(jobs)), thread_name_prefix=label)
        try:
            futures = [pool.submit(call_cached, fn, job, cache, **kwargs) for job in jobs]
            results = []
            for job, future in zip(jobs, futures):
                results.append(future.result())
                progress.advance(job.part.rows)
        finally:
            pool.shutdown(cancel_futures=True)  # on an error, the shards not started are not started
        progress.close()
        return results

    def task_runner(self) -> None:
        return None

    @contextmanager
    def session(self, inputs: tuple[Source, ...] = ()) -> Iterator[None]:
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
    def session(self, inputs: tuple[Source, ...] = ()) -> Iterator[None]:
        """The tasks read in this process: the inputs the planner and the first read tasks read from local copies
        are fetched while Prefect's API starts (see fetch_ahead)."""
        fetch_ahead(first_spans(inputs), spans_planned(inputs))
        yield


ONE_THREAD = {"POLARS_MAX_THREADS": "1"}  # a worker per core: Polars in it uses that core (Dask does so for BLAS)
# Dask's own bookkeeping in a worker (an event-loop check every 20 ms, a sampling profiler every 10 ms, system and
# memory monitors) took ~25% of a worker's CPU beside Sluice's shard tasks (bench/README "#18 cluster"): slowed
# for the local cluster; README asks the same of `dask worker` processes, as environment variables (quiet_env).
QUIET_DASK = {"distributed.admin.tick.interval": "1s", "distributed.worker.profile.enabled": False,
              "distributed.admin.system-monitor.interval": "5s", "distributed.worker.memory.monitor-interval": "1s"}


def quiet_env() -> dict[str, str]:
    """QUIET_DASK as the environment variables a `dask scheduler` or `dask worker` process reads."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value) for key, value in QUIET_DASK.items()}
SHIP_ONCE = 1 << 20  # pickled bytes above which a stage parameter is sent to the cluster once, not with every task


def ship(client: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `params` over SHIP_ONCE pickled bytes (a global stage's decision), as futures of copies
    sent to every worker at once: each worker gets one copy, not one with every task. On one worker only, the
    tasks that need it would queue there (Dask places a task by its data): at 1M rows, 14 of 20 exact_dedup.apply
    tasks ran on one of 2 workers, 1.8 s, against 1.45 s with a copy on each."""
    import cloudpickle

    big = [name for name, value in params.items() if len(cloudpickle.dumps(value)) > SHIP_ONCE]
    return dict(zip(big, client.scatter([params[name] for name in big], hash=False, broadcast=True))) if big else {}


class PrefectDask(PrefectThreads):
    """Prefect tasks whose calls run on a Dask cluster: `address` of a running scheduler (`dask scheduler`
    and `dask worker` on other machines), else a local cluster of one single-threaded worker process per core.

    Each shard is a Prefect task in this process (its states, retries and name in the UI, as with threads) whose
    body hands `call_cached` to Dask and waits for it. So workers run plain functions: they need the Sluice
    code and access to the run's folders (an object store, or a filesystem every worker mounts), but no Prefect
    API (a worker that reached none would start a temporary Prefect server of its own). A stage's parameters
    travel with each task, but a big one (a global stage's decision) goes to each worker once per stage (ship).
    A worker lost mid-run costs its running tasks: the scheduler gives them to another worker. A task goes, where
    it can, to the worker that wrote its input and keeps a copy of it (Part.kept_by, storage.keep): on an object
    store it then reads its input from that worker's memory, not from the store."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.client: Any = None
        self.checked: set[str] = set()
        self.workers: dict[str, str] = {}  # a worker process's storage.HERE -> its address
        self.unknown: set[str] = set()  # keepers no worker answered for

    def map(self, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
            **kwargs: Any) -> list[tuple[Any, bool]]:
        if inline or not jobs:
            return prefect_map(fn, jobs, label, cache, inline, **kwargs)
        self._check_folder(cache if cache is not None else kwargs.get("store"))  # read tasks cache themselves
        client = self.client
        asked = kwargs.pop("asked", False)  # see call_cached: per attempt, so not one of the shipped parameters
        near = self._near(jobs)
        shipped = ship(client, kwargs)
        params = kwargs | shipped

        def on_dask(fn: Callable, job: Job, cache: ShardCache | None, asked: bool = False) -> tuple[Any, bool]:
            place = {"workers": [near[job.key, job.name]], "allow_other_workers": True} \
                if (job.key, job.name) in near else {}
            future = client.submit(call_cached, fn, job, cache, key=f"{label}[{job.name}]-{uuid.uuid4().hex[:8]}",
                                   pure=False, asked=asked, **place, **params)
            return future.result()

        order = interleaved([near.get((job.key, job.name)) for job in jobs])
        try:
            done = prefect_map(fn, [jobs[i] for i in order], label, cache, call=on_dask, asked=asked)
        finally:
            if shipped:
                client.cancel(list(shipped.values()))
        return [result for _, result in sorted(zip(order, done), key=lambda pair: pair[0])]

    def _near(self, jobs: list[Job]) -> dict[tuple[str, str], str]:
        """The worker each job's input is kept by ((key, name) of a job -> the worker's address), if any: workers
        are asked who they are when a job names a process not yet known (a new worker, the run's second map)."""
        keepers = {(job.key, job.name): keeper for job in jobs if (keeper := getattr(job.part, "kept_by", None))}
        if not set(keepers.values()) <= set(self.workers) | self.unknown:
            try:  # (placing a job is a saving only: a worker that fails to answer has its jobs go anywhere)
                answers = self.client.run(storage_here, on_error="ignore")
            except OSError:  # one that went away as it was asked
                answers = {}
            self.workers = {here: address for address, here in answers.items()}
            self.unknown |= set(keepers.values()) - set(self.workers)  # the driver, a worker gone: not asked again
        return {job: self.workers[keeper] for job, keeper in keepers.items() if keeper in self.workers}

    def task_runner(self) -> Any:
        from prefect.task_runners import ThreadPoolTaskRunner

        threads = sum(self.client.nthreads().values()) if self.client is not None else 0
        return ThreadPoolTaskRunner(max_workers=max(2 * threads, os.cpu_count() or 2))  # waiting threads

    @contextmanager
    def session(self, inputs: tuple[Source, ...] = ()) -> Iterator[None]:
        """The Dask client of the run (and the local cluster it needs when no scheduler address was given). While
        Prefect's API starts, each worker fetches the input its first read task reads from a local copy, and
        this process those it plans spans of (see fetch_ahead)."""
        from distributed import Client, LocalCluster

        with ExitStack() as stack:
            if self.address:
                try:
                    self.client = stack.enter_context(Client(self.address, timeout="10s"))
                except OSError as err:
                    raise SluiceError(f"--dask-address {self.address}: no Dask scheduler answered ({err}); start one "
                                      "with `dask scheduler` and workers with `dask worker ADDRESS`") from None
            else:
                import dask

                with dask.config.set(QUIET_DASK):  # the workers' configuration is the nanny's at their start
                    cluster = stack.enter_context(LocalCluster(n_workers=os.cpu_count() or 2, threads_per_worker=1,
                                                               dashboard_address=None, memory_limit=0, env=ONE_THREAD))
                self.client = stack.enter_context(Client(cluster))
            if not self.client.nthreads():
                self.client.wait_for_workers(1, timeout=120)
            self.client.run(warm_up, first_spans(inputs), wait=False)
            fetch_ahead((), spans_planned(inputs))
            threading.Thread(target=self._warm_scheduler, args=(self.client,), name="warm-scheduler", daemon=True).start()
            try:
                yield
            finally:
                self.client = None

    def _warm_scheduler(self, client: Any) -> None:
        """Have the scheduler import the code a task graph names: it unpickles every graph it is sent, so its
        first one (the read stage's) waited 1.5-2 s for those imports. Sent at the run's start, in a thread
        of its own (the call waits for the answer), while the driver waits for Prefect's API."""
        try:
            client.run_on_scheduler(import_task_code)
        except BaseException as err:  # noqa: BLE001 (only a head start: the run goes on)
            if self.client is not client:  # the session ended first (a run that stopped early): nothing to say
                return
            logging.getLogger(__name__).warning("the Dask scheduler %s could not import Sluice's code (%s: %s); its task "
                                                "graphs will fail to load unless it runs where Sluice is installed",
                                                self.address or "of the local cluster", type(err).__name__, err)

    def _check_folder(self, cache: ShardCache | None) -> None:
        """Fail at once, and clearly, when the workers cannot see the run's local shard cache."""
        if cache is None or cache.remote or str(cache.folder) in self.checked:
            return
        folder = Path(cache.folder)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        try:
            seen = self.client.run(os.path.isfile, str(probe))
        finally:
            probe.unlink()
        if blind := sorted(worker for worker, found in seen.items() if not found):
            raise SluiceError(f"the Dask workers {', '.join(blind)} cannot see the shard cache {folder}: put "
                              "release.dir on an object store (s3://...) or on a filesystem every worker mounts")
        self.checked.add(str(cache.folder))


def interleaved(places: list[str | None]) -> list[int]:
    """Indexes of `places` taken from each place in turn (a, a, b, b -> a, b, a, b): jobs sent to the workers
    that keep their inputs, in that order, keep every worker busy while a few at a time are waited for."""
    groups: dict[str | None, list[int]] = {}
    for i, place in enumerate(places):
        groups.setdefault(place, []).append(i)
    return [i for turn in itertools.zip_longest(*groups.values()) for i in turn if i is not None]


def storage_here() -> str:
    """storage.HERE of the process it runs in (sent to the workers: which copies each keeps)."""
    return storage.HERE


def import_task_code() -> None:
    """Import the code that a shard task's pickled call names (the engine, every operator, the readers, the
    release writer): on the scheduler, which unpickles each task graph it is sent, and on the workers (warm_up)."""
    import operators  # noqa: F401  (registers every operator)
    from pipelines import reading, release  # noqa: F401  (with them the engine, cache, readers and storage)


async def warm_up(fetch: tuple[str, ...] = ()) -> None:
    """Import what a shard task needs (the engine, every operator, storage) and, on a worker set up for S3, build
    its S3 client, so that a worker's first task does not wait for them; then fetch the inputs of `fetch` (see
    fetch_ahead). Sent to the workers when the run connects, while the driver starts Prefect's API. (A
    coroutine: Dask runs those without waiting for them.)"""
    warm_process()
    fetch_ahead(fetch)


def warm_process(client: bool = True) -> None:
    """Import the task code (import_task_code) and, with `client` (a worker), let its buffers be reused
    (reuse_buffers) and, in a process set up for S3, build its S3 client: what a run's first task would wait for
    (warm_up at a run's start, or pipelines.preload at the process's)."""
    import_task_code()
    if client:
        reuse_buffers()
    if client and any(name.startswith("AWS_") for name in os.environ):  # a worker set up for S3: its client too
        storage.warm("s3")


BUFFERS_REUSED = 32 << 20  # bytes: glibc serves allocations up to this size from its heap (its own maximum)
HEAP_KEPT = 256 << 20  # bytes of freed heap a worker keeps for later buffers instead of returning them to the OS


def reuse_buffers() -> None:
    """Let this worker reuse the memory of the multi-MB buffers it frees (a file's bytes, a downloaded body, the
    1 MB chunks hashed for a request's signature) instead of mapping new memory for each. Dask's nanny starts a
    worker with MALLOC_TRIM_THRESHOLD_=65536 (freed memory goes back to the OS at once), which also fixes
    glibc's mmap threshold at 128 KB: every bigger buffer is then a new mapping whose pages the kernel zeroes
    on first touch. Page faults were ~16% of an S3 worker's CPU samples (bench/README #18 cluster, session 12).
    glibc only: elsewhere (musl, macOS) nothing is changed."""
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameters (malloc.h)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(m_mmap_threshold, BUFFERS_REUSED)
        libc.mallopt(m_trim_threshold, HEAP_KEPT)
    except (OSError, AttributeError):  # not glibc
        pass


def first_spans(inputs: tuple[Source, ...]) -> tuple[str, ...]:
    """The first input at a URL that read tasks read as spans (Parquet, uncompressed JSONL), each task from its
    own process's local copy: the first read task of every process reads it when it has several spans (when it
    has one, the other processes' copies are the size of one shard). Later inputs are fetched by the tasks
    that need them: fetching every input ahead would copy each single-span file to every worker."""
    return tuple(str(src.path) for src in inputs if storage.is_remote(src.path) and
                 (src.format == "parquet" or (src.format == "jsonl" and not gzipped(src.path))))[:1]


def spans_planned(inputs: tuple[Source, ...]) -> tuple[str, ...]:
    """The inputs at URLs whose spans the planner finds in its own local copy (uncompressed JSONL)."""
    return tuple(str(src.path) for src in inputs if storage.is_remote(src.path) and src.format == "jsonl"
                 and not gzipped(src.path))


FETCH_AHEAD = 256 << 20  # bytes: a bigger input is not fetched ahead (a run whose reads are cached reads none)


def fetch_ahead(guessed: tuple[str, ...], planned: tuple[str, ...] = ()) -> None:
    """Download this process's local copies (storage.local_copy) of the inputs its first read tasks read
    (`guessed`) and of those its planner finds spans in (`planned`), on a thread of their own, so that they are
    there when needed instead of each waited for (~0.5-1.5 s for 100 MB on loopback S3) after Prefect's API
    has started (~7 s, in which the workers are idle). The planner reads its copies on every run; a read task
    is a guess made before the read is planned (a run whose reads all come from the cache, a re-tuned stage,
    needs no copy), so a guessed object over FETCH_AHEAD bytes is left to the tasks. A fetch that fails is
    left to whoever needs the copy, who retries it and says what is wrong; a copy of another version than the
    one planned on (the object was overwritten in between) is not used (local_copy)."""
    urls = tuple(dict.fromkeys(planned + guessed))

    def fetch() -> None:
        for url in urls:
            try:
                version = storage.object_version(url)
                if url in planned or (storage.version_size(version) or FETCH_AHEAD + 1) <= FETCH_AHEAD:
                    storage.local_copy(url, version)
            except Exception as err:  # noqa: BLE001 (only a head start)
                logging.getLogger(__name__).debug("fetching %s ahead failed: %s", storage.display(url), err)

    if urls:
        threading.Thread(target=fetch, name="fetch-ahead", daemon=True).start()


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
                call: Callable = call_cached, **kwargs: Any) -> list[tuple[Any, bool]]:
    """The calls as Prefect tasks of the running flow (on its task runner); inline ones in this process.
    `call(fn, job, cache, **kwargs)` is the task's body (an executor may run `call_cached` elsewhere)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.exceptions import TerminationSignal

    def attempt(fn: Callable, job: Job, cache: ShardCache | None, **kwargs: Any) -> tuple[Any, bool]:
        if kwargs.get("asked"):  # the driver's look-up holds for the first attempt only (see call_cached)
            from prefect.runtime import task_run

            kwargs["asked"] = task_run.run_count <= 1
        return call(fn, job, cache, **kwargs)

    shard_task = task(attempt, name=label, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
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
