"""`sluice decontaminate IN OUT`: drop rows that contain a benchmark test item (bundled sets and user files)."""

from __future__ import annotations

import argparse

from operators.dedup import Decontaminate
from operators.dedup.decontam import BENCHMARKS
from pipelines.commands.dedup import options_error
from pipelines.oneoff import add_io_arguments, run_job

EXAMPLES = f"""examples:
  sluice decontaminate train.jsonl clean.parquet                     every text field against all benchmarks
  sluice decontaminate train.jsonl clean.parquet --benchmarks gsm8k,mmlu --fields instruction,output
  sluice decontaminate train.jsonl flagged.parquet --keep             only add contaminated / contamination columns
  sluice decontaminate train.jsonl clean.parquet --extra my_eval.jsonl   also a private test set (a text column)

bundled benchmarks: {', '.join(BENCHMARKS)}
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "decontaminate", help="drop rows containing benchmark test items (GSM8K, MMLU, HellaSwag, HumanEval, TruthfulQA)",
        description="Flag rows that contain a benchmark test item: a shared word 13-gram confirmed by the row "
                    "holding most of the item's word trigrams; a short item (4-25 words) found as a whole inside "
                    "one field, from 7 words with one word different (not one of its two rarest words), and "
                    "under 6 words only when it makes up at least half of the field. Flagged rows go to the "
                    "rejects with reason contaminated and detail <benchmark>:<item id>.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(p, text_field=False)
    p.add_argument("--benchmarks", default="all", metavar="all|A,B", help="bundled benchmarks to check (default all)")
    p.add_argument("--fields", metavar="A,B", help="columns to check (default: every text column, messages included)")
    p.add_argument("--extra", action="append", default=[], metavar="FILE",
                   help="a user test set (.jsonl/.parquet/.csv with a text column, optional id); repeatable")
    p.add_argument("--ngram", type=int, default=13, metavar="N", help="word n-gram that counts as evidence (default 13)")
    p.add_argument("--min-overlap", type=float, default=0.6, metavar="F",
                   help="share of an item's word trigrams a row must contain (default 0.6)")
    p.add_argument("--keep", action="store_true", help="keep flagged rows; only add the columns")
    p.set_defaults(handler=_decontaminate)


def _decontaminate(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    op = options_error(lambda: Decontaminate(
        benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()], extra=args.extra, fields=fields,
        ngram=args.ngram, min_overlap=args.min_overlap, drop=not args.keep))
    outcome = run_job(args, [op], fields=[])
    found = {b: c["rows"] for b, c in outcome.ledger.stages[-1].stats["benchmarks"].items() if c["rows"]}
    print("\ncontaminated rows by benchmark: "
          + (", ".join(f"{b} {n:,}" for b, n in sorted(found.items(), key=lambda x: -x[1])) if found else "none"))
    return 0
