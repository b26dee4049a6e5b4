"""A pipeline run: the engine's stages, then the release writer; as a Prefect flow or in-process.

With Prefect, every per-shard call of a stage is a task named `<stage>[<shard>]`, and a global stage's decision
is the barrier between its index and apply tasks. Without Prefect (`--no-prefect`) the very same functions run in
a loop. Where the calls run is an executor's business (pipelines/executors.py: local loop, Prefect threads,
Prefect on Dask). Either way finished shard results go to the dataset's cache folder, so a re-run resumes.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import yaml

from operators.errors import ConfigError, SluiceError
from pipelines import config, interrupts, prefect_app, storage
from pipelines.cache import ShardCache
from pipelines.config import Pipeline
from pipelines.engine import MapFn, Outcome, execute
from pipelines.executors import executor_for, prefect_map
from pipelines.readers import same_input
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
# Our temporary server registers no block types at start: that step first imports every installed Prefect
# integration (prefect-dask, hence Dask: ~1 CPU s of the server's ~7 s start, which is on the run's critical
# path). A run uses no blocks; a user's own server (or one set in the environment) still registers them.
SERVER_DEFAULTS = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false", "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
PREFECT_LOG = ".prefect.log"  # in the dataset's folder: Prefect's own log lines of `sluice run`


def run_pipeline(pipeline: Pipeline, root: storage.Location | None = None, use_prefect: bool = True,
                 runner: str = "local", dask_address: str | None = None,
                 force: bool = False) -> tuple[storage.Location, Outcome | None]:
    """Run `pipeline` and publish its release; return the version folder and the outcome (for its books:
    its parts point into the shard cache, whose spilled read shards are gone once the release is out).

    If the latest version was made from the same resolved config, input files and code, nothing runs and
    nothing is published: the result is (that version, None). `force` publishes a new version anyway."""
    root = root or pipeline.release_dir or DEFAULT_ROOT
    dataset = pipeline.config.dataset
    executor = executor_for(use_prefect, runner, dask_address)
    server = None
    if executor.prefect:  # the API server starts first: it answers ~7 s later, meanwhile the run gets ready
        local = local_dir(root, dataset)
        server = _start_for(local)
    if not force and (held := unchanged_version(pipeline, storage.join(root, dataset))):
        return held, None
    if not executor.prefect:
        return _run(pipeline, root, executor.map)
    from prefect import flow

    # the inputs are fetched and a cluster's workers warm up while Prefect's API starts
    with prefect_log_to_file(local / PREFECT_LOG), executor.session(tuple(pipeline.sources)):
        use_api_server(server)
        version = next_version(storage.join(root, dataset))
        run = flow(_run, name=f"sluice-{dataset}", flow_run_name=f"{dataset}/{version}",
                   validate_parameters=False, task_runner=executor.task_runner())
        with _no_heartbeats(server):
            return run(pipeline, root, executor.map)


def _no_heartbeats(server: ApiServer | None) -> Any:
    """Prefect's flow-run heartbeats let a lasting server mark a run that died as crashed; they run on a thread
    that the flow's end waits for (up to 1 s, it sleeps in 1 s steps). Our temporary server ends with the
    run, so a run on it sends none; a user's server gets them as Prefect sets them."""
    if server is None or os.environ.get("PREFECT_API_URL") != server.url:
        return nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


@contextmanager
def server_while_loading(config_path: Path, releases: storage.Location | None = None) -> Iterator[None]:
    """`sluice run` with Prefect, around config.load: the run's temporary API server (see ApiServer) starts
    before it, so that the server's start overlaps the config's checks too (on an object store they list the
    inputs and probe the release folder: ~1 s). Only the YAML's fields are validated first, for the dataset's
    folder (the server's log goes there); a config that fails that starts nothing. If config.load fails, the
    server is stopped and the folders and log made for it are removed: a bad config leaves nothing behind."""
    try:
        fields = config.PipelineConfig.model_validate(yaml.safe_load(config_path.read_text(encoding="utf-8")))
        root = releases or (config.location(config_path.parent, fields.release.dir) if fields.release.dir
                            else DEFAULT_ROOT)
    except (OSError, ValueError, yaml.YAMLError):  # pydantic's ValidationError is a ValueError
        yield
        return
    local = local_dir(root, fields.dataset)
    made = [folder for folder in [local, *local.parents] if not folder.exists()]
    had_log, had_server = (local / PREFECT_LOG).exists(), _server is not None and _server.alive()
    try:
        server = _start_for(local)
    except OSError:  # the folder cannot be made (e.g. a file in its way): start nothing, config.load says why
        yield
        return
    try:
        yield
    except BaseException:
        if server is not None and not had_server:
            server.stop()
            if not had_log:
                (local / PREFECT_LOG).unlink(missing_ok=True)
        for folder in made:  # deepest first; only if empty
            with suppress(OSError):
                folder.rmdir()
        raise


def _start_for(local: Path) -> ApiServer | None:
    quiet_prefect()
    local.mkdir(parents=True, exist_ok=True)
    return start_api_server(local / PREFECT_LOG)


def local_dir(root: storage.Location, dataset: str) -> Path:
    """The dataset's folder for files that must be local (Prefect's log, the LLM response cache): the
    dataset's own folder, or for releases on an object store ~/.cache/sluice/<bucket and path>/<dataset>."""
    if not storage.is_remote(root):
        return Path(root) / dataset
    where = str(root).replace("://", "/").replace(":", "_")
    return sluice_cache() / where / dataset


def sluice_cache() -> Path:
    """~/.cache/sluice (or under XDG_CACHE_HOME): local files that are not a dataset's own."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice"


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


class ApiServer:
    """Prefect's temporary API server for this process's runs, started by Sluice itself: the command, app factory
    and settings Prefect's own temporary server uses (prefect.server.api.server.SubprocessASGIServer), but
    started without importing Prefect's server code here (~7 s) and without waiting for it, so its start-up
    (~8 s) overlaps the run's own (input hashing, imports, the Dask connection); `use_api_server` waits for it.

    Its database is the run's own (pipelines/prefect_app.py): a SQLite file in a temporary folder, removed when the
    server stops, so runs leave no history in ~/.prefect/prefect.db (it only grew: a one-run server never runs
    Prefect's clean-up service) and two runs at once do not share one file, whose write lock made a run's calls
    wait up to PREFECT_SERVER_DATABASE_TIMEOUT. It starts as a copy of an empty database Prefect migrated at an
    earlier run (`template`, ~1 MB per Prefect version in ~/.cache/sluice; a new file costs ~8 CPU s of
    migrations). A database the user configured for Prefect is used instead, as by Prefect's own server.

    Its error output is appended to `log` (the run's Prefect log): a request the run's death cuts short is not a
    traceback on the user's terminal. It runs in a session of its own: Ctrl-C in a terminal signals the whole
    foreground process group, a server in that group would die at once, and Prefect's client would then retry
    it for a minute and a half, printing kilobytes of connection errors; in its own session it outlives the
    interrupt long enough for the run to record it. It is stopped when the process exits (atexit) and before a
    forced exit (`interrupts`); outside the run's process group nothing else would stop it if the run itself
    were killed (SIGKILL, the OOM killer), so on Linux the kernel sends it SIGTERM when the run dies (and it
    removes its folder as it exits). Its output goes to `log` too, never to the run's stdout: a server still
    finishing a request after the run exited held the pipe of `sluice run | ...` open until it did."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.folder = Path(tempfile.mkdtemp(prefix=prefect_app.FOLDER))
        self.template = sluice_cache() / f"prefect-{importlib.metadata.version('prefect')}.db"
        try:
            self.process, self.port = self._spawn()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        atexit.register(self.stop)
        interrupts.on_hard_exit(self.abandon)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> tuple[subprocess.Popen, int]:
        """The server's process and port: a socket bound here and handed to uvicorn (`--fd`), so no other
        process can take the port while the server imports Prefect (8-30 s)."""
        assert importlib.util.find_spec("prefect") is not None, "Prefect is not installed"
        env = {**SERVER_DEFAULTS, **os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", prefect_app.RUN_DB: str(self.database),
               prefect_app.TEMPLATE: str(self.template)}
        if "prefect" in sys.modules:  # settings this process was given in code (e.g. temporary_settings)
            from prefect.settings import get_current_settings

            env |= get_current_settings().to_environment_variables(exclude_unset=True)
        # the server holds its own copies of the log's and the socket's descriptors
        with open(self.log, "ab") as errors, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).resolve().parents[1]),
                 "--factory", f"{prefect_app.__name__}:create_app", "--fd", str(sock.fileno()),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=errors, stderr=errors, pass_fds=(sock.fileno(),), start_new_session=True,
                preexec_fn=_dies_with(os.getpid()))
            return process, sock.getsockname()[1]

    @property
    def database(self) -> Path:
        return self.folder / "prefect.db"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> None:
        """Return once the server answers; a clear error if it exits or does not answer within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise SluiceError(f"Prefect's temporary API server exited at start (code {code}); its errors are in "
                                  f"{self.log}. Run with --no-prefect, or set PREFECT_API_URL to a running server")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=10) as answer:
                    if answer.status == 200:
                        self._keep_template()
                        return
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SluiceError(f"Prefect's temporary API server did not answer within {timeout:.0f} s (its errors "
                                  f"are in {self.log}); raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, run "
                                  "with --no-prefect, or set PREFECT_API_URL to a running server")
            time.sleep(0.1)

    def _keep_template(self) -> None:
        """The first server on a new database (no template yet for this Prefect version) answers once Prefect has
        migrated it: keep a copy (SQLite's online backup: a consistent copy of a file in use) for later runs."""
        if self.template.exists() or not self.database.exists():  # made already, or the user's database is used
            return
        part = self.template.with_name(f"{self.template.name}.{os.getpid()}.part")
        with suppress(OSError, sqlite3.Error):  # without a template, runs only start slower
            self.template.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.database)) as source, closing(sqlite3.connect(part)) as copy:
                source.backup(copy)
            os.replace(part, self.template)
        part.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Before a forced exit: ask the server to stop, and remove its folder without waiting for it."""
        if self.alive():
            self.process.terminate()
        shutil.rmtree(self.folder, ignore_errors=True)

    def stop(self) -> None:
        """Stop the server (as Prefect stops its own: SIGTERM, SIGKILL after 5 s), remove its folder (its database)
        and stop pointing Prefect at it."""
        if self.alive():
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        if os.environ.get("PREFECT_API_URL") == self.url:
            del os.environ["PREFECT_API_URL"]
            _refresh_prefect_settings()


_server: ApiServer | None = None  # this process's temporary server, used by its later runs while it lives


def start_api_server(log: Path) -> ApiServer | None:
    """Start Prefect's temporary API server for this run (see ApiServer), unless PREFECT_API_URL names one (in the
    environment, or, when Prefect is loaded, in its settings) or this process's server is still running."""
    global _server
    if _server is not None and _server.alive():
        return _server
    if _server is not None and os.environ.get("PREFECT_API_URL") == _server.url:  # ours, died since (killed, OOM)
        del os.environ["PREFECT_API_URL"]
        _refresh_prefect_settings()
    if os.environ.get("PREFECT_API_URL") or ("prefect" in sys.modules and _configured_api_url()):
        return None
    _server = ApiServer(log)
    return _server


def use_api_server(server: ApiServer | None) -> None:
    """Wait until `server` answers and point this process's Prefect at it. A PREFECT_API_URL that Prefect's
    settings take from elsewhere (a profile, prefect.toml, .env) is the user's server: ours is stopped."""
    if server is None:
        return
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if os.environ.get("PREFECT_API_URL") != server.url and _configured_api_url():
        server.stop()
        return
    server.wait(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = server.url
    _refresh_prefect_settings()


def _configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _refresh_prefect_settings() -> None:
    """Make a changed PREFECT_API_URL Prefect's setting in every thread, including those started without this
    thread's context (Prefect reads its global settings once, at import)."""
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when `parent` dies (prctl PR_SET_PDEATHSIG); None elsewhere."""
    if sys.platform != "linux":
        return None

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlopen in a child forked from threads

    def set_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
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
    same operator fingerprints, same input files (readers.same_input) and the same Sluice code."""
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
            and [i["path"] for i in manifest.get("inputs", [])] == [storage.display(s.path) for s in pipeline.sources]
            and all(same_input(src, i) for src, i in zip(pipeline.sources, manifest["inputs"])))
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
