"""The `sluice` command line. Exit codes: 0 success, 1 failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from operators.errors import SluiceError
from pipelines.commands import COMMAND_MODULES



def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except SluiceError as err:
        print(f"sluice: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("sluice: interrupted", file=sys.stderr)
        return 130


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
    run.add_argument("--releases", type=Path, help="release root (default: release.dir of the config, else ./data/releases)")
    run.set_defaults(handler=_run)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(commands)

    ops = commands.add_parser("operators", help="list every registered operator with its parameters",
                              description="List every registered operator with its parameters and defaults.")
    ops.set_defaults(handler=_operators)

    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.flow import run_pipeline

    pipeline = config.load(args.config)
    folder, outcome = run_pipeline(pipeline, args.releases, use_prefect=not args.no_prefect)
    print(outcome.ledger.table())
    if outcome.reused:
        print(f"\nresumed: {outcome.reused} shard results reused from the cache, {outcome.computed} computed")
    print(f"\nreleased {len(outcome.ledger.stages) and outcome.ledger.stages[-1].rows_out:,} rows -> {folder}")
    return 0


def _operators(args: argparse.Namespace) -> int:
    from operators import all_operators

    for name, cls in all_operators().items():
        print(f"{name}  ({cls.__mro__[1].__name__})  {cls.summary()}")
        for field, info in cls.Params.model_fields.items():
            default = "required" if info.is_required() else f"default {json.dumps(info.get_default(call_default_factory=True))}"
            note = f"  {info.description}" if info.description else ""
            print(f"    {field}: {_type_name(info.annotation)}, {default}{note}")
    return 0


def _type_name(annotation: object) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace("typing.", "")


if __name__ == "__main__":
    sys.exit(main())
