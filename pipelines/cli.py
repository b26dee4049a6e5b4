"""The `sluice` command line. Exit codes: 0 success, 1 failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from operators.errors import SluiceError
from pipelines.commands import COMMAND_MODULES

RELEASES_HELP = "release root (default: ./data/releases, or release.dir of the config)"


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
    run.add_argument("--releases", type=Path, help=RELEASES_HELP)
    run.set_defaults(handler=_run)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(commands)

    ops = commands.add_parser("operators", help="list every registered operator with its parameters",
                              description="List every registered operator with its parameters and defaults.")
    ops.set_defaults(handler=_operators)

    release = commands.add_parser("release", help="list, show or verify published releases",
                                  description="List, show or verify published releases.")
    verbs = release.add_subparsers(title="release commands", metavar="VERB")
    for name, handler, text in (
        ("list", _release_list, "every dataset and version under the release root"),
        ("show", _release_show, "a release's manifest summary and row accounting"),
        ("verify", _release_verify, "re-hash every file and re-count every row; exit 1 naming what differs"),
    ):
        verb = verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "list":
            verb.add_argument("release", help="release folder, DATASET/VERSION, or DATASET (latest version)")
        verb.add_argument("--releases", type=Path, default=None, help=RELEASES_HELP)
        verb.set_defaults(handler=handler)
    release.set_defaults(handler=lambda a: (release.print_help(), 2)[1])
    return parser


def _run(args: argparse.Namespace) -> int:
    from pipelines import config
    from pipelines.flow import run_pipeline

    pipeline = config.load(args.config)
    folder, outcome = run_pipeline(pipeline, args.releases, use_prefect=not args.no_prefect)
    print(outcome.ledger.table())
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


def _root(args: argparse.Namespace) -> Path:
    from pipelines.release import DEFAULT_ROOT

    return args.releases or DEFAULT_ROOT


def _release_list(args: argparse.Namespace) -> int:
    from pipelines.release import listing

    entries = listing(_root(args))
    if not entries:
        print(f"no releases under {_root(args)}")
    for e in entries:
        rows = f"{e['rows']:,}" if isinstance(e["rows"], int) else "?"
        print(f"{e['dataset']}/{e['version']}  {rows:>12} rows  {e['created_at'] or '?'}  {e['path']}")
    return 0


def _release_show(args: argparse.Namespace) -> int:
    from pipelines.accounting import Ledger
    from pipelines.release import read_manifest, resolve

    folder = resolve(args.release, _root(args))
    m = read_manifest(folder)
    print(f"{m['dataset']} {m['version']}  created {m['created_at']}  config sha256 {m['config_hash'][:16]}")
    print(f"{folder}\n")
    print(f"rows {m['rows']:,} in {len(m['shards'])} shard(s); rejected {m['rejected_rows']:,}")
    print("inputs:")
    for i in m["inputs"]:
        print(f"  {i['path']}  {i['rows']:,} rows  sha256 {i['sha256'][:16]}")
    print("schema: " + ", ".join(f"{k} {v}" for k, v in m["schema"].items()))
    print("\n" + Ledger.from_json(m["stages"]).table())
    return 0


def _release_verify(args: argparse.Namespace) -> int:
    from pipelines.release import read_manifest, resolve, verify

    folder = resolve(args.release, _root(args))
    problems = verify(folder)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    m = read_manifest(folder)
    files = len(m["shards"]) + len(m["rejects"])
    print(f"OK {folder}: {files} files re-hashed, {m['rows']:,} rows and {m['rejected_rows']:,} rejects re-counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
