"""MinHash dedup at scale, the operator's own cost: index shard by shard, decide once, no reader, no writer.

    .venv/bin/python bench/dedup/make_data.py scale /tmp/dedup-scale 1000000
    .venv/bin/python bench/dedup/scale.py index /tmp/dedup-scale/scale_1000000.parquet /tmp/dedup-scale/index_1m.parquet
    .venv/bin/python bench/dedup/scale.py decide /tmp/dedup-scale/index_1m.parquet --copies 5

`sluice dedup IN OUT` (bench/dedup/run.py) measures the verb end to end, reader and writer included (the
reader turns every row into a Python dict, for JSON and Parquet alike: pipelines/readers.py), and holds every
row in memory. `index` reads the Parquet file with Polars one shard at a time, calls the same
`MinHashDedup.index` the engine calls on each shard, keeps only the index (the text is dropped), and saves
it. `decide` runs `MinHashDedup.decide` once on a saved index, optionally on `--copies` K re-keyed copies of
it (new ids, band hashes XOR-ed with a per-copy constant: K times the rows with the same bucket structure),
which measures the one global step at K times the rows without recomputing K times the signatures.
Each prints wall and CPU seconds (this process; Polars' threads included), the peak RSS, and for `index`
the CPU seconds per 100k rows and the index's bytes per row.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from operators.dedup import MinHashDedup
from operators.dedup.minhash import BAND


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def index(data: Path, out: Path, rows: int | None, shard_rows: int) -> None:
    total = pq.ParquetFile(data).metadata.num_rows
    rows = min(rows or total, total)
    op = MinHashDedup()
    op.layout  # the band optimiser (datasketch import) is not part of the per-row cost
    wall, cpu = time.perf_counter(), cpu_seconds()
    parts = []
    for start in range(0, rows, shard_rows):
        shard = pl.scan_parquet(data).slice(start, min(shard_rows, rows - start)).collect()
        parts.append(op.index(shard))
        done = start + len(shard)
        print(f"  {done:,} rows: {time.perf_counter() - wall:.0f} s wall, {cpu_seconds() - cpu:.0f} s CPU", flush=True)
        del shard
    table = pl.concat(parts)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    table.write_parquet(out)
    print(f"index | {rows:,} rows | {wall:.0f} s wall | {cpu:.0f} s CPU | {cpu / rows * 1e5:.1f} CPU s per 100k rows | "
          f"peak RSS {peak_rss_gib():.2f} GiB | {table.estimated_size() / rows:.0f} bytes/row in memory | "
          f"{out.stat().st_size / rows:.0f} bytes/row as Parquet")


def decide(saved: Path, copies: int) -> None:
    table = pl.read_parquet(saved)
    bands = [c for c in table.columns if c.startswith(BAND)]
    salts = np.random.default_rng(0).integers(1, 2**63, size=copies, dtype=np.uint64)
    table = pl.concat([table.with_columns(pl.format("{}~{}", "id", pl.lit(k)).alias("id") if k else pl.col("id"),
                                          *[(pl.col(b) ^ pl.lit(salts[k], dtype=pl.UInt64)) if k else pl.col(b)
                                            for b in bands])
                       for k in range(copies)])
    op = MinHashDedup()
    op.layout
    before = peak_rss_gib()
    wall, cpu = time.perf_counter(), cpu_seconds()
    decision = op.decide(table)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"decide | {len(table):,} rows ({copies} x {len(table) // copies:,}) | {wall:.0f} s wall | {cpu:.0f} s CPU | "
          f"{cpu / len(table) * 1e5:.1f} CPU s per 100k rows | peak RSS {peak_rss_gib():.2f} GiB "
          f"(index loaded: {before:.2f}) | removed {len(decision.drops):,}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("index")
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--rows", type=int, help="only the first N rows")
    p.add_argument("--shard-rows", type=int, default=50_000)
    p = sub.add_parser("decide")
    p.add_argument("saved", type=Path)
    p.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    if args.step == "index":
        index(args.data, args.out, args.rows, args.shard_rows)
    else:
        decide(args.saved, args.copies)


if __name__ == "__main__":
    main()
