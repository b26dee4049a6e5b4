"""`sluice dedup IN OUT`: drop near-duplicates (MinHash LSH over word 2-grams (character 2-grams in scripts
without spaces), candidates verified by Jaccard >= 0.6 or containment >= 0.9 by default)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl
from pydantic import ValidationError

from operators.base import Decision
from operators.dedup import ExactDedup, LineDedup, MinHashDedup
from operators.errors import ConfigError
from pipelines.oneoff import add_io_arguments, run_job, write_table

T = TypeVar("T")
EXAMPLES = """examples:
  sluice dedup web.jsonl web.dedup.parquet                         near-duplicates of `text` (the default)
  sluice dedup alpaca.json out.parquet --fields instruction,input  instruction-aware key
  sluice dedup in.parquet out.parquet --clusters clusters.parquet  also write id -> cluster for every row
  sluice dedup in.parquet out.parquet --keep-by score_quality      keep each cluster's best-scored row
  sluice dedup new.jsonl out.parquet --against data/releases/web/v0003   drop rows an earlier release has
  sluice dedup new.jsonl out.parquet --against v1.index.parquet    ... or one saved with --save-index
  sluice dedup web.jsonl out.parquet --lines                       cut boilerplate sentences repeated across rows
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "dedup", help="drop near-duplicate rows (MinHash LSH); rejects name the surviving row",
        description="Drop near-duplicate rows: MinHash over n-grams of the normalised text (case, punctuation, "
                    "whitespace and Unicode folded; words, and single characters in Chinese, Japanese, Thai and "
                    "other scripts written without spaces), LSH bands tuned a little below the threshold, "
                    "candidates verified by the Jaccard similarity (or containment) of their shingles, "
                    "union-find clusters. Each cluster keeps one row; the others go to the rejects with "
                    "reason near_duplicate and the survivor's id. Defaults chosen on labelled sets: bench/README.md.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(p)
    p.add_argument("--fields", metavar="A,B", help="columns forming the dedup key instead of --text-field, e.g. "
                   "instruction,input or messages (empty or missing values count as empty text)")
    defaults = MinHashDedup.Params()
    p.add_argument("--threshold", type=float, default=defaults.threshold, metavar="T",
                   help=f"Jaccard similarity of a duplicate (default {defaults.threshold})")
    p.add_argument("--containment", type=float, default=defaults.containment, metavar="C",
                   help="also a duplicate: a candidate sharing >= C of the smaller row's shingles, e.g. a truncated "
                        f"copy (default {defaults.containment}; 1 for only whole copies)")
    p.add_argument("--ngram", type=int, default=defaults.ngram, metavar="N", help=f"shingle size (default {defaults.ngram})")
    p.add_argument("--char", action="store_true", help="character n-grams for every row (default: words, and "
                   "characters in scripts written without spaces)")
    p.add_argument("--word", action="store_true", help="whitespace-separated words for every row (a Chinese "
                   "sentence is then one word)")
    p.add_argument("--num-perm", type=int, default=defaults.num_perm, metavar="P",
                   help=f"MinHash permutations (default {defaults.num_perm})")
    p.add_argument("--no-jaccard", dest="jaccard", action="store_false", help="keep every LSH candidate without "
                   "checking its Jaccard similarity (a smaller index, more false positives; LSH tuned to T)")
    p.add_argument("--jaccard", dest="jaccard", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument("--verify", action="store_true", help="also require the full signatures to agree on >= T of "
                   "their positions (fewer false positives, lower recall)")
    p.add_argument("--keep-by", metavar="COLUMN", help="keep the row with the highest COLUMN in each cluster "
                   "(ties: smallest id); default: the first row in input order")
    p.add_argument("--exact", action="store_true", help="exact dedup on the normalised key instead of MinHash")
    p.add_argument("--lines", nargs="?", const="sentence", choices=["sentence", "line", "paragraph"], metavar="UNIT",
                   help="instead of dropping rows, cut out of --text-field every sentence (or UNIT: line, paragraph) "
                        "found in several rows, but from the first (line_dedup; rows left too short are rejected)")
    p.add_argument("--clusters", type=Path, metavar="FILE", help="write id, cluster (the survivor's id), "
                   "cluster_size and kept (is it the survivor) for every row to FILE (.parquet or .jsonl)")
    p.add_argument("--save-index", type=Path, metavar="FILE", help="write the MinHash index of the surviving rows "
                   "(band hashes, shingle sketches; signatures with --verify) to FILE (.parquet), for later --against runs")
    p.add_argument("--against", type=Path, action="append", default=[], metavar="PATH",
                   help="a release folder (its tables/<stage>.index.parquet) or an index saved by --save-index, "
                        "built with the same settings: rows near-duplicating one of its rows are dropped, naming "
                        "it; the earlier rows are not recomputed. Repeatable")
    p.set_defaults(handler=_dedup, jaccard=True)


class _Recording(MinHashDedup):
    """MinHashDedup that writes the command's extra outputs while the index is at hand: the clusters of every
    row (--clusters) and the survivors' index (--save-index); it keeps a summary line for the end."""

    clusters_to: Path | None = None
    index_to: Path | None = None
    notes: list[str] = []

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> Decision:
        clusters = self.grouped(index, parts)
        decision = self.decision(index, clusters)
        empty = index.filter(pl.col("shingles") == 0).select(pl.len()).collect().item()
        self.notes = [_summary(clusters, empty)]
        if self.clusters_to:
            every = self.every_row(index, clusters)
            write_table(every, self.clusters_to)
            self.notes.append(f"wrote {len(every):,} cluster assignments -> {self.clusters_to}")
        if self.index_to:
            write_table(decision.tables["index"], self.index_to)
            rows = pl.scan_parquet(self.index_to).select(pl.len()).collect().item()
            self.notes.append(f"wrote the index of the {rows:,} surviving rows -> {self.index_to}")
        return decision


def _dedup(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else [args.text_field]
    required = [] if args.fields else fields  # with --fields, empty parts are normal (e.g. Alpaca's input)
    if args.lines:
        if args.exact or args.fields or args.clusters or args.save_index or args.against or args.keep_by:
            raise ConfigError("--lines cuts units out of one --text-field; it takes none of --exact, --fields, "
                              "--clusters, --save-index, --against, --keep-by")
        run_job(args, [LineDedup(field=args.text_field, unit=args.lines)], fields=[args.text_field])
        return 0
    if args.exact:
        if args.clusters or args.save_index or args.against or args.verify:
            raise ConfigError("--clusters, --save-index, --against and --verify work with MinHash, "
                              "not with --exact")
        run_job(args, [ExactDedup(fields=fields)], fields=required)
        return 0
    op = options_error(lambda: _Recording(
        fields=fields, threshold=args.threshold, ngram=args.ngram, num_perm=args.num_perm, verify=args.verify,
        unit="char" if args.char else "word" if args.word else "auto", jaccard=args.jaccard,
        containment=args.containment if args.jaccard else None, keep="score" if args.keep_by else "first",
        score_column=args.keep_by, against=[str(a) for a in args.against]))
    if args.save_index and not args.save_index.name.endswith(".parquet"):
        raise ConfigError(f"{args.save_index}: --save-index writes Parquet; end the name in .parquet")
    op.clusters_to, op.index_to = args.clusters, args.save_index
    run_job(args, [op], fields=required)
    for note in op.notes:
        print(note)
    return 0


def options_error(build: Callable[[], T]) -> T:
    """Build an operator from command-line options; a rejected value is a usage error naming the option."""
    try:
        return build()
    except ValidationError as err:
        problems = [f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']} (got {e['input']!r})" if e["loc"]
                    else e["msg"].removeprefix("Value error, ") for e in err.errors()]
        raise ConfigError("; ".join(problems)) from None


def _summary(clusters: pl.DataFrame, empty: int) -> str:
    """One line about the clusters (rows in clusters of 2 or more) and the rows with an empty key."""
    ids = clusters["id"].implode()
    earlier = clusters.filter(~pl.col("kept") & ~pl.col("cluster").is_in(ids)).height
    return (f"\nnear-duplicate clusters: {clusters['cluster'].n_unique():,} ({len(clusters):,} rows, the largest "
            f"{clusters['cluster_size'].max() or 0:,})"
            + (f"; {earlier:,} rows duplicate a row of an earlier release" if earlier else "")
            + (f"; {empty:,} rows with an empty key kept as they are" if empty else ""))
