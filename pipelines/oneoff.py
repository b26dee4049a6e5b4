"""One-off jobs (`sluice dedup IN OUT`, `sluice filter IN OUT`, ...): one input file, some operators,
in-process with the same engine the flows use, no orchestration start-up.

OUT keeps every input column and `id` (rows without one get a stable content-hash id) and is Parquet or
JSON lines by its extension; dropped rows go to `<OUT stem>.rejects.parquet` with their reasons; the
accounting table is printed. Bad input rows are counted rejects unless `--on-error fail`.
Shards run on `--workers` threads (default: one per core), the results in shard order, so the output is the
same with any number of workers.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
from pathlib import Path
from typing import get_args

import polars as pl

from operators.base import Operator
from operators.errors import ConfigError
from pipelines.config import Stage
from pipelines.cache import ShardCache
from pipelines.engine import Outcome, Part, run_stages, scan
from pipelines.executors import Local
from pipelines.readers import Format, Source, detect_format

OUTPUT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


def add_io_arguments(parser: argparse.ArgumentParser, text_field: bool = True) -> None:
    """The arguments every one-off verb shares."""
    parser.add_argument("input", type=Path, help="JSONL(.gz), JSON array, Parquet or CSV file")
    parser.add_argument("output", type=Path, help="output file: .parquet, .jsonl or .jsonl.gz")
    if text_field:
        parser.add_argument("--text-field", default="text", metavar="F", help="column holding the text (default: text)")
    parser.add_argument("--format", choices=get_args(Format), help="input format (default: by extension)")
    parser.add_argument("--on-error", choices=["skip", "fail"], default="skip",
                        help="bad input rows: reject and count them (skip, default) or stop (fail)")
    parser.add_argument("--shard-rows", type=int, default=50_000, metavar="N", help="rows per processing shard")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="shards processed at once, on threads of this process (default: one per core; "
                             "memory grows by about a shard per worker)")


def run_job(args: argparse.Namespace, operators: list[Operator], fields: list[str]) -> Outcome:
    """Read `args.input`, run `operators` as stages, write `args.output` and its rejects, print the books.

    `fields` are the input columns the operators need: each must be a non-empty string in every row. Between
    stages the rows wait on disk in a scratch folder beside the output (removed at the end), so memory holds a
    few shards and a global stage's index, not the whole input; the outcome returned is for its books."""
    source = _source(args, fields)
    output = _check_output(args.output, args.input)
    stages = [Stage(op.name, op) for op in operators]
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects = rejects_path(output)
    with tempfile.TemporaryDirectory(prefix=f".{output_stem(output)}.scratch-", dir=output.parent) as scratch:
        outcome = run_stages([source], stages, args.shard_rows, Local(args.workers).map, ShardCache(Path(scratch)))
        write_parts(outcome.parts, output)
        if outcome.rejected:
            write_parts(outcome.rejected, rejects)
        elif rejects.exists():
            rejects.unlink()  # a stale file from an earlier run would contradict this run's counts
    print(outcome.ledger.table())
    kept = outcome.ledger.stages[-1].rows_out
    print(f"\nwrote {kept:,} rows -> {output}" + (f"; {outcome.ledger.total_dropped:,} rejects -> {rejects}"
                                                  if outcome.rejected else ""))
    return outcome


def output_stem(output: Path) -> str:
    """`out` for out.parquet, out.jsonl and out.jsonl.gz: the name a job's side files share."""
    return output.name.removesuffix(".gz").rsplit(".", 1)[0]


def rejects_path(output: Path) -> Path:
    return output.with_name(f"{output_stem(output)}.rejects.parquet")


def write_table(frame: pl.DataFrame | pl.LazyFrame, path: Path) -> None:
    """Write a table as Parquet, JSON lines or gzipped JSON lines by `path`'s name (a lazy one streamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    lazy = frame.lazy()
    if path.name.endswith(".parquet"):
        lazy.sink_parquet(tmp, compression="zstd", statistics=True)
    elif path.name.endswith(".jsonl.gz"):
        with gzip.open(tmp, "wb") as fh:
            for batch in lazy.collect_batches():
                batch.write_ndjson(fh)
    else:
        lazy.sink_ndjson(tmp)
    tmp.replace(path)  # never a half-written output under the real name


def write_parts(parts: list[Part], path: Path) -> None:
    """The rows of `parts`, in order, as one table (columns that differ between parts are unified)."""
    write_table(scan(parts), path)


def _source(args: argparse.Namespace, fields: list[str]) -> Source:
    fmt = args.format or detect_format(args.input)
    if fmt is None:
        raise ConfigError(f"{args.input}: cannot tell the input format from the name; pass --format")
    return Source(args.input, fmt, {f: f for f in fields}, source=args.input.name.split(".")[0], on_error=args.on_error,
                  configured=False)


def _check_output(output: Path, input_: Path) -> Path:
    if not output.name.endswith(OUTPUT_SUFFIXES):
        raise ConfigError(f"{output}: the output must end in {', '.join(OUTPUT_SUFFIXES)}")
    if output.resolve() == input_.resolve():
        raise ConfigError(f"{output}: the output would overwrite the input; choose another file")
    return output
