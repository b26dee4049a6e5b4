"""`sluice inspect PATH`: read rows of a release or any Parquet file in the terminal."""

from __future__ import annotations

import argparse

import polars as pl

from operators.errors import ConfigError
from pipelines.inspection import open_table, pick, reason_counts, render_rows, where
from pipelines.release import DEFAULT_ROOT
from pipelines.storage import location_arg

EXAMPLES = """examples:
  sluice inspect demo-web                                  first rows of the latest demo-web release
  sluice inspect demo-web/v0002 --sample 5                 five random rows (--seed for others)
  sluice inspect demo-web --where "score_words_text > 2000 AND source LIKE 'redpajama%'"
  sluice inspect demo-web --rejects --where "reason = 'length_filter:too_few_words'"
  sluice inspect out.parquet --rejects                     rows a one-off job dropped (out.rejects.parquet)
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "inspect", help="show rows of a release or Parquet file, wrapped, with scores and provenance",
        description="Show rows of a release or any Parquet file: long fields wrapped, scores and provenance "
                    "(and, with --rejects, why each row was dropped).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="release folder, DATASET/VERSION, DATASET (latest), a .parquet file or a folder of them")
    p.add_argument("--where", metavar="EXPR", help="SQL condition on the columns, e.g. \"score_words_text < 100\"")
    p.add_argument("--sample", type=int, metavar="N", help="N random rows instead of the first ones")
    p.add_argument("--seed", type=int, default=0, help="random seed for --sample (default 0: same rows every time)")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="rows to show without --sample (default 10)")
    p.add_argument("--rejects", action="store_true", help="the rejected rows, with their reasons")
    p.add_argument("--columns", metavar="A,B", help="only these columns (the id is always shown)")
    p.add_argument("--full", action="store_true", help="do not shorten long fields (default: 1,200 characters)")
    p.add_argument("--width", type=int, metavar="N", help="wrap at N characters (default: the terminal's width)")
    p.add_argument("--releases", type=location_arg, default=None,
                   help="release root, a folder or a URL (default: ./data/releases)")
    p.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    for name in ("sample", "limit"):
        if (getattr(args, name) or 0) < 0:
            raise ConfigError(f"--{name} must be 0 or more")
    table = open_table(args.path, args.releases or DEFAULT_ROOT, rejects=args.rejects)
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    if unknown := [c for c in columns or [] if c not in table.schema]:
        raise ConfigError(f"--columns: no column {', '.join(unknown)} in {table.label} (columns: {', '.join(table.schema)})")
    frame = where(table, args.where)
    rows, matching = pick(frame, args.limit, args.sample, args.seed)
    total = table.frame.select(pl.len()).collect().item() if args.where else matching
    scope = f"{matching:,} of {total:,} rows match --where" if args.where else f"{total:,} rows"
    how = f"{len(rows):,} random (seed {args.seed})" if args.sample is not None else f"the first {len(rows):,}"
    print(f"{table.label}: {scope}, {len(table.schema)} columns; showing {how}")
    if args.rejects and (counts := reason_counts(frame)):
        print("reasons: " + ", ".join(f"{reason} {n:,}" for reason, n in counts))
    if len(rows):
        print("\n" + render_rows(rows, 1, args.width, None if args.full else 1200, columns))
    return 0
