"""A pipeline run: the engine's stages, then the release writer; as a Prefect flow or in-process.

With Prefect, every per-shard call of a stage is a task named `<stage>[<shard>]`, and a global stage's decision
is the barrier between its index and apply tasks. Without Prefect (`--no-prefect`) the very same functions run in
a loop. Where the calls run is an executor's business (pipelines/executors.py: local loop, Prefect threads,
Prefect on Dask). Either way finished shard results go to the dataset's cache folder, so a re-run resumes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from operators.errors import ConfigError, SluiceError
from pipelines import config, interrupts, storage
from pipelines.cache import ShardCache
from pipelines.config import Pipeline
from pipelines.engine import MapFn, Outcome, execute
from pipelines.executors import executor_for, prefect_map
from pipelines.readers import input_sha256
from pipelines.release import (DEFAULT_ROOT, code_version, dataset_lock, next_version, publish, read_manifest,
                               versions)
from pipelines.generation import LLMRun, llm_run, release_usage

# Prefect's own chatter is not the user's output, and nothing may call home.
PREFECT_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",  # the temporary server logs shutdown races as errors
    # A busy 2-core machine needs more patience than Prefect's defaults (20 s start-up, 10 s SQLite statements).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
}
PREFECT_LOG = ".prefect.log"  # in the dataset's folder: Prefect's own log lines of `sluice run`


def run_pipeline(pipeline: Pipeline, root: storage.Location | None = None, use_prefect: bool = True,
                 runner: str = "local", dask_address: str | None = None,
                 force: bool = False) -> tuple[storage.Location, Outcome | None]:
    """Run `pipeline` and publish its release; return the version folder and the outcome (for its books:
    its parts point into the shard cache, whose spilled read shards are gone once the release is out).

    If the latest version was made from the same resolved config, input files and code, nothing runs and
    nothing is published: the result is (that version, None). `force` publishes a new version anyway."""
    root = root or pipeline.release_dir or DEFAULT_ROOT
    if not force and (held := unchanged_version(pipeline, storage.join(root, pipeline.config.dataset))):
        return held, None
    executor = executor_for(use_prefect, runner, dask_address)
    if not executor.prefect:
        return _run(pipeline, root, executor.map)
    quiet_prefect()
    from prefect import flow

    dataset = pipeline.config.dataset
    local = local_dir(root, dataset)
    local.mkdir(parents=True, exist_ok=True)
    with prefect_log_to_file(local / PREFECT_LOG), executor.session():
        _start_api_server(local / PREFECT_LOG)  # meanwhile a cluster's workers import what their tasks need (PrefectDask.session)
        version = next_version(storage.join(root, dataset))
        run = flow(_run, name=f"sluice-{dataset}", flow_run_name=f"{dataset}/{version}",
                   validate_parameters=False, task_runner=executor.task_runner())
        return run(pipeline, root, executor.map)


def local_dir(root: storage.Location, dataset: str) -> Path:
    """The dataset's folder for files that must be local (Prefect's log, the LLM response cache): the
    dataset's own folder, or for releases on an object store ~/.cache/sluice/<bucket and path>/<dataset>."""
    if not storage.is_remote(root):
        return Path(root) / dataset
    where = str(root).replace("://", "/").replace(":", "_")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice" / where / dataset


@contextmanager
def prefect_log_to_file(path: Path) -> Iterator[None]:
    """Prefect's log lines (state changes, its view of a crash, its API client's complaints) go to `path`,
    not the terminal: the user's output is Sluice's own, one line per error."""
    import logging

    file = logging.FileHandler(path, encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    moved: list[tuple[logging.Logger, logging.Handler]] = []
    for name in ("", "uvicorn", "fastapi", "prefect._internal"):  # where Prefect's logging.yml writes to stderr
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h).__module__.startswith("prefect.")]:
            logger.removeHandler(handler)
            moved.append((logger, handler))
        if any(logger is m for m, _ in moved):
            logger.addHandler(file)
    try:
        yield
    finally:
        for logger in {id(m): m for m, _ in moved}.values():
            logger.removeHandler(file)
        for logger, handler in moved:
            logger.addHandler(handler)
        file.close()


def _start_api_server(log: Path) -> None:
    """Start Prefect's temporary API server (unless PREFECT_API_URL names one) in a session of its own, its
    error output appended to `log` (the run's Prefect log): a request the run's death cuts short is not a
    traceback on the user's terminal.

    Ctrl-C in a terminal signals the whole foreground process group; a server in that group would die at
    once, and Prefect's client would then retry it for a minute and a half, printing kilobytes of connection
    errors. In its own session the server outlives the interrupt long enough for the run to record it; Prefect
    stops it at exit (and `interrupts` on a forced exit). Outside the run's process group nothing else would
    stop it if the run itself were killed (SIGKILL, the OOM killer), so on Linux the kernel sends it SIGTERM
    when the run dies. Prefect offers no option for either, so its Popen gets them for the duration of the start."""
    from prefect.server.api import server as api
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    ephemeral = api.SubprocessASGIServer()  # the instance Prefect's own client uses
    interrupts.on_hard_exit(lambda: ephemeral.server_process and ephemeral.server_process.terminate())
    if not ephemeral.running:
        popen = api.subprocess.Popen
        with open(log, "ab") as errors:  # the server holds its own copy of the descriptor
            api.subprocess.Popen = functools.partial(popen, start_new_session=True, stderr=errors,
                                                     preexec_fn=_dies_with(os.getpid()))
            try:
                ephemeral.start()
            finally:
                api.subprocess.Popen = popen


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when `parent` dies (prctl PR_SET_PDEATHSIG); None elsewhere."""
    if sys.platform != "linux":
        return None

    def set_death_signal() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def quiet_prefect() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def scheduled_run(config_path: str, releases: str | None = None) -> str:
    """The flow a deployment serves: load the config at run time (so edits take effect), run, publish
    (nothing when neither the config nor the inputs nor the code changed since the latest version)."""
    pipeline = config.load(config_path)
    root = storage.location(releases) if releases else pipeline.release_dir or DEFAULT_ROOT
    if held := unchanged_version(pipeline, storage.join(root, pipeline.config.dataset)):
        return str(held)
    folder, _ = _run(pipeline, root, prefect_map)
    return str(folder)


def unchanged_version(pipeline: Pipeline, dataset_dir: storage.Location) -> storage.Location | None:
    """The latest version of the dataset if a run of `pipeline` would reproduce it: same resolved config,
    same operator fingerprints, same input files (by sha256) and the same Sluice code."""
    published = versions(dataset_dir)
    if not published:
        return None
    try:
        manifest = read_manifest(storage.join(dataset_dir, published[-1]))
    except SluiceError:
        return None
    same = (manifest.get("config_hash") == pipeline.config_hash
            and manifest.get("fingerprints") == {s.name: s.operator.fingerprint for s in pipeline.stages}
            and manifest.get("code_version") == code_version()
            and [(i["path"], i["sha256"]) for i in manifest.get("inputs", [])]
            == [(storage.display(src.path), input_sha256(src.path))
               for src in pipeline.sources])
    return storage.join(dataset_dir, published[-1]) if same else None


def serve(config_path: Path, releases: Path | None, cron: str | None, interval: float | None) -> None:
    """Serve `config_path` as a scheduled deployment until interrupted (needs a Prefect server)."""
    quiet_prefect()
    from prefect import flow
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ConfigError("a schedule needs a Prefect server: start one with `sluice server` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (or point it at your server or Prefect Cloud)")
    pipeline = config.load(config_path)  # validate now, not at 2 a.m.
    deployment = flow(scheduled_run, name="sluice-scheduled", log_prints=False)
    deployment.serve(name=pipeline.config.dataset, cron=cron, interval=interval,
                     parameters={"config_path": str(config_path.resolve()),
                                 "releases": (str(releases) if storage.is_remote(releases) else
                                              str(releases.resolve())) if releases else None},
                     print_starting_message=False)


def _run(pipeline: Pipeline, root: storage.Location, map_fn: MapFn) -> tuple[storage.Location, Outcome]:
    with dataset_lock(storage.join(root, pipeline.config.dataset)):
        return _run_locked(pipeline, root, map_fn)


def _run_locked(pipeline: Pipeline, root: storage.Location, map_fn: MapFn) -> tuple[storage.Location, Outcome]:
    folder = storage.join(root, pipeline.config.dataset, ".cache")
    cache = ShardCache(folder if storage.is_remote(folder) else folder.resolve())  # absolute: Dask workers read it
    try:
        with ExitStack() as stack:
            llm = None
            if pipeline.generates:
                llm = stack.enter_context(llm_run(pipeline.config.endpoint, pipeline.config.local_model,
                                                  pipeline.llm_cache(local_dir(root, pipeline.config.dataset).parent)))
            return _publish(pipeline, root, map_fn, cache, llm)
    finally:
        cache.drop_spills()  # a failed run gives the disk back too


def _publish(pipeline: Pipeline, root: storage.Location, map_fn: MapFn, cache: ShardCache,
             llm: LLMRun | None = None) -> tuple[storage.Location, Outcome]:
    outcome = execute(pipeline, map_fn, cache, llm)
    if not pipeline.config.release.allow_empty:
        refuse_empty_release(outcome)
    info: dict[str, Any] = {
        "config_path": str(pipeline.path),
        "config": pipeline.resolved,
        "config_hash": pipeline.config_hash,
        "fingerprints": {s.name: s.operator.fingerprint for s in pipeline.stages},
        "column_notes": {col: note for s in pipeline.stages for col, note in s.operator.columns().items()},
        "thresholds": [{"stage": s.name, **t._asdict()} for s in pipeline.stages for t in s.operator.thresholds()],
        "resumed": {"shard_results_reused": outcome.reused, "shard_results_computed": outcome.computed},
    }
    if generation := release_usage(outcome.usage, llm):
        info["generation"] = generation
    folder = publish(root, pipeline.config.dataset, outcome, info, pipeline.config.release.rows_per_file, map_fn)
    cache.prune()
    if _in_prefect_flow():
        _publish_artifact(folder, outcome)
    return folder, outcome


def _in_prefect_flow() -> bool:
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def refuse_empty_release(outcome: Outcome) -> None:
    """A release of 0 rows is almost always a mistake (a wrong mapping, format or threshold): say what
    dropped the rows instead of publishing it. `release: {allow_empty: true}` publishes it anyway."""
    ledger = outcome.ledger
    if not ledger.stages or ledger.stages[-1].rows_out:
        return
    read = ledger.stages[0].rows_in
    drops = Counter({reason: n for stage in ledger.stages for reason, n in stage.dropped.items()})
    top = ", ".join(f"{reason} {n:,}" for reason, n in drops.most_common(3)) or "no rows in the inputs"
    inputs = ", ".join(str(i["path"]) for i in outcome.inputs)
    raise SluiceError(f"the release would hold 0 rows: {read:,} rows read from {inputs}, all dropped ({top}); "
                      "nothing was published. Fix the inputs or stages, or set `release: {allow_empty: true}` "
                      "to publish an empty release")


def _publish_artifact(folder: storage.Location, outcome: Outcome) -> None:
    from prefect.artifacts import create_markdown_artifact

    dataset, version = storage.name(storage.parent(folder)), storage.name(folder)
    ledger = outcome.ledger
    rows = "\n".join(
        f"| {s.stage} | {s.op} | {s.rows_in:,} | {s.rows_out:,} | {s.reasons()} |"
        for s in ledger.stages
    )
    markdown = (f"# {dataset} {version}\n\nRelease: `{storage.display(folder)}`\n\n"
                f"| stage | op | rows in | rows out | dropped |\n|---|---|---|---|---|\n{rows}\n")
    create_markdown_artifact(markdown, key=f"sluice-{dataset.lower().replace('_', '-')}",
                             description=f"{dataset} {version}: row accounting")
