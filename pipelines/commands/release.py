"""`sluice release list|show|verify|diff`: look at published releases."""

from __future__ import annotations

import argparse
import json
import sys
from pipelines import storage
from pipelines.accounting import Ledger
from pipelines.release import DEFAULT_ROOT, listing, read_manifest, resolve, verify
from pipelines.storage import Location, location_arg

RELEASES_HELP = "release root, a folder or a URL such as s3://bucket/releases (default: ./data/releases)"


def add_command(commands: argparse._SubParsersAction) -> None:
    release = commands.add_parser("release", help="list, show, verify or compare published releases",
                                  description="List, show, verify or compare published releases.")
    verbs = release.add_subparsers(title="release commands", metavar="VERB")
    for name, handler, text in (
        ("list", _list, "every dataset and version under the release root"),
        ("show", _show, "a release's manifest summary and row accounting"),
        ("verify", _verify, "re-hash every file and re-count every row; exit 1 naming what differs"),
    ):
        verb = verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "list":
            verb.add_argument("release", help="release folder, DATASET/VERSION, or DATASET (latest version)")
        verb.add_argument("--releases", type=location_arg, default=None, help=RELEASES_HELP)
        verb.set_defaults(handler=handler)
    _add_diff(verbs)
    release.set_defaults(handler=lambda args: (release.print_help(), 2)[1])


def _add_diff(verbs: argparse._SubParsersAction) -> None:
    text = "rows added/removed/changed by id, schema changes, and row-count, drop-reason and config deltas"
    diff = verbs.add_parser("diff", help=text, description=f"Compare release A with release B: {text}.")
    diff.add_argument("a", help="the older release (folder, DATASET/VERSION, DATASET) or a Parquet file")
    diff.add_argument("b", help="the newer one")
    diff.add_argument("--examples", type=int, default=5, metavar="N", help="ids to show per kind of change (default 5)")
    diff.add_argument("--json", action="store_true", help="print the diff as JSON")
    diff.add_argument("--releases", type=location_arg, default=None, help=RELEASES_HELP)
    diff.set_defaults(handler=_diff)


def _root(args: argparse.Namespace) -> Location:
    return args.releases or DEFAULT_ROOT


def _list(args: argparse.Namespace) -> int:
    entries = listing(_root(args))
    if not entries:
        print(f"no releases under {storage.display(_root(args))}")
    for e in entries:
        rows = f"{e['rows']:,}" if isinstance(e["rows"], int) else "?"
        print(f"{e['dataset']}/{e['version']}  {rows:>12} rows  {e['created_at'] or '?'}  {e['path']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    folder = resolve(args.release, _root(args))
    m = read_manifest(folder)
    print(f"{m['dataset']} {m['version']}  created {m['created_at']}  config sha256 {m['config_hash'][:16]}")
    print(storage.display(folder))
    views = [f"{what} {storage.display(storage.join(folder, name))}" for what, name in
             (("card", "README.md"), ("report", "report.html")) if storage.is_file(storage.join(folder, name))]
    print("  ".join(views) + "\n")
    print(f"rows {m['rows']:,} in {len(m['shards'])} shard(s); rejected {m['rejected_rows']:,}")
    print("inputs:")
    for i in m["inputs"]:
        print(f"  {i['path']}  {i['rows']:,} rows  sha256 {i['sha256'][:16]}")
    print("schema: " + ", ".join(f"{k} {v}" for k, v in m["schema"].items()))
    print("\n" + Ledger.from_json(m["stages"]).table())
    return 0


def _verify(args: argparse.Namespace) -> int:
    folder = resolve(args.release, _root(args))
    problems = verify(folder)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    m = read_manifest(folder)
    files = len(m["shards"]) + len(m["rejects"])
    print(f"OK {storage.display(folder)}: {files} files re-hashed, {m['rows']:,} rows and {m['rejected_rows']:,} rejects re-counted")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from pipelines.diff import diff_tables, format_diff
    from pipelines.inspection import open_table

    result = diff_tables(open_table(args.a, _root(args)), open_table(args.b, _root(args)), max(args.examples, 0))
    print(json.dumps(result, indent=2, default=str) if args.json else format_diff(result))
    return 0
