"""The `sluice` command line. Exit codes: 0 success, 1 failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from operators.errors import ConfigError, SluiceError
from pipelines import interrupts, storage
from pipelines.storage import writable_location
from pipelines.commands import COMMAND_MODULES

# The interpreter's last garbage collection at exit walks every object of the libraries a run loaded (Prefect,
# pydantic, Polars, Dask: ~0.7 s at the end of every `sluice run`, bench/README "#18 cluster") only to free memory
# the OS takes back anyway; frozen objects are skipped. Registered at import: it runs after every exit hook
# registered later (the Prefect server's stop, Prefect's and Dask's own), files are closed by then.
atexit.register(gc.freeze)



def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with interrupts.handled():
            code = args.handler(args) or 0
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return code
    except BrokenPipeError:  # `sluice ... | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except SluiceError as err:
        print(f"sluice: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk, a permission, a folder that is a file: where and what, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"sluice: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, 130 or 143 (see pipelines/interrupts.py)
        return interrupts.finish(err)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe says nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice turns raw and synthetic text into versioned, accounted-for LLM training data.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run a pipeline config and publish a new release version",
                              description="Run a pipeline config (a Prefect flow) and publish a new release version.")
    run.add_argument("config", type=Path, help="pipeline YAML, e.g. configs/demo.yaml")
    run.add_argument("--no-prefect", action="store_true", help="run in-process without Prefect (same engine)")
    run.add_argument("--runner", choices=["local", "dask"], default="local",
                     help="where shard tasks run: threads here (local) or a Dask cluster (dask)")
    run.add_argument("--dask-address", metavar="HOST:PORT",
                     help="an existing Dask scheduler (default with --runner dask: a LocalCluster, one worker per core)")
    run.add_argument("--releases", type=writable_location, help="release root, a folder or a URL such as s3://bucket/releases "
                     "(default: release.dir of the config, else ./data/releases)")
    run.add_argument("--force", action="store_true",
                     help="publish a new version even if the latest one was made from the same config, inputs and code")
    run.add_argument("--on-error", choices=["fail", "skip"],
                     help="bad input rows, for every input: stop naming file and line (fail) or reject and count "
                          "them (skip); default: each input's `on_error` (fail)")
    run.set_defaults(handler=_run)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(commands)

    deploy = commands.add_parser("deploy", help="serve a config as a scheduled Prefect deployment",
                                 description="Serve a pipeline config as a scheduled deployment on a Prefect server "
                                 "(PREFECT_API_URL); runs until interrupted. Each scheduled run publishes a new version.")
    deploy.add_argument("config", type=Path)
    when = deploy.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a cron schedule, e.g. "0 2 * * *" (02:00 daily)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    deploy.add_argument("--releases", type=writable_location, help="release root, a folder or a URL (default: release.dir of the config)")
    deploy.set_defaults(handler=_deploy)

    server = commands.add_parser("server", help="start a local Prefect server (UI and API) on 127.0.0.1",
                                 description="Start a local Prefect server on 127.0.0.1 (UI and API), for "
                                 "schedules and a UI of past runs. Then: export PREFECT_API_URL=http://127.0.0.1:PORT/api")
    server.add_argument("--port", type=int, default=4200)
    server.set_defaults(handler=_server)

    ops = commands.add_parser("operators", help="list every registered operator with its parameters",
                              description="List every registered operator with its parameters and defaults.")
    ops.set_defaults(handler=_operators)

    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.flow import run_pipeline, server_while_loading

    with server_while_loading(args.config, args.releases) if not args.no_prefect else nullcontext():
        pipeline = config.load(args.config, on_error=args.on_error)
    if args.no_prefect and (args.runner != "local" or args.dask_address):
        raise ConfigError("--runner dask runs Prefect tasks on Dask; it cannot be combined with --no-prefect")
    folder, outcome = run_pipeline(pipeline, args.releases, use_prefect=not args.no_prefect,
                                   runner="dask" if args.dask_address else args.runner, dask_address=args.dask_address,
                                   force=args.force)
    if outcome is None:
        print(f"unchanged: {storage.name(storage.parent(folder))}/{storage.name(folder)} already holds this result (same config, input files "
              f"and code); nothing published. --force publishes a new version anyway.\n{storage.display(folder)}")
        return 0
    print(outcome.ledger.table())
    if outcome.reused:
        print(f"\nresumed: {outcome.reused} shard results reused from the cache, {outcome.computed} computed")
    print(f"\nreleased {len(outcome.ledger.stages) and outcome.ledger.stages[-1].rows_out:,} rows -> "
          f"{storage.display(folder)}")
    if not storage.is_remote(folder):
        _say_cache_size(folder.parent)
    return 0


def _say_cache_size(dataset_dir: Path) -> None:
    from pipelines.card import human_bytes
    from pipelines.commands.cache import folder_bytes

    cache = dataset_dir / ".cache"
    if cache.is_dir():
        print(f"shard cache: {human_bytes(folder_bytes(cache))} in {cache} (lets a re-run resume; "
              f"`sluice cache clear {dataset_dir.name}` frees it)")


def _deploy(args: argparse.Namespace) -> int:
    from pipelines.flow import serve

    serve(args.config, args.releases, args.cron, args.interval)
    return 0


def _server(args: argparse.Namespace) -> int:
    from pipelines.flow import PREFECT_DEFAULTS

    env = {**PREFECT_DEFAULTS, **os.environ}
    prefect = Path(sys.executable).parent / "prefect"
    print(f"Prefect server on http://127.0.0.1:{args.port} (API: export PREFECT_API_URL=http://127.0.0.1:{args.port}/api)",
          flush=True)
    # The server becomes this process (same pid): a signal that stops `sluice server` stops the server, and
    # nothing is left running behind it.
    os.execve(prefect, [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(args.port)], env)


def _operators(args: argparse.Namespace) -> int:
    from operators import all_operators

    for name, cls in all_operators().items():
        kind = next(c.__name__ for c in cls.__mro__[1:] if c.__module__ == "operators.base")  # Filter, Mapper, ...
        print(f"{name}  ({kind})  {cls.summary()}")
        for field, info in cls.Params.model_fields.items():
            default = "required" if info.is_required() else f"default {json.dumps(info.get_default(call_default_factory=True))}"
            note = f"  {info.description}" if info.description else ""
            print(f"    {field}: {_type_name(info.annotation)}, {default}{note}")
    return 0


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace("typing.", "")


if __name__ == "__main__":
    sys.exit(main())
