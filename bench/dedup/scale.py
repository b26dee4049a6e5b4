"""MinHash dedup at scale, the operator's own cost: index shard by shard, decide once, no reader, no writer.

    .venv/bin/python bench/dedup/make_data.py scale /tmp/dedup-scale 5000000
    .venv/bin/python bench/dedup/scale.py /tmp/dedup-scale/scale_5000000.parquet [--rows N] [--shard-rows 50000]

`sluice dedup IN OUT` (bench/dedup/run.py) measures the verb end to end, but its reader turns every row into
a Python dict (pipelines/readers.py, for JSON and Parquet alike), which at millions of rows costs as much as
dedup itself. This runner reads the Parquet file with Polars one shard at a time, calls the same
`MinHashDedup.index` the engine calls on each shard, drops the text, and runs `decide` once on the
concatenated index: the staged design with only the index in memory. It prints, per phase, wall and CPU
seconds (this process; Polars' threads included), CPU seconds per 100k rows, the peak RSS, the index's
bytes per row and the rows removed.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from operators.dedup import MinHashDedup


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--rows", type=int, help="only the first N rows")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    args = parser.parse_args()
    total = pq.ParquetFile(args.data).metadata.num_rows
    rows = min(args.rows or total, total)
    op = MinHashDedup()
    op.layout  # the band optimiser (datasketch import) is not part of the per-row cost

    wall, cpu = time.perf_counter(), cpu_seconds()
    parts, read_wall = [], 0.0
    for start in range(0, rows, args.shard_rows):
        t = time.perf_counter()
        shard = pl.scan_parquet(args.data).slice(start, min(args.shard_rows, rows - start)).collect()
        read_wall += time.perf_counter() - t
        parts.append(op.index(shard))
        del shard
    index = pl.concat(parts)
    del parts
    index_wall, index_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    index_bytes = index.estimated_size()

    wall, cpu = time.perf_counter(), cpu_seconds()
    decision = op.decide(index)
    decide_wall, decide_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    removed = len(decision.drops)

    per_100k = 100_000 / rows
    print(f"| {rows:,} | {index_wall:.0f} (read {read_wall:.0f}) | {index_cpu:.0f} | {decide_wall:.0f} | "
          f"{decide_cpu:.0f} | {(index_cpu + decide_cpu) * per_100k:.1f} | {peak_rss_gib():.2f} | "
          f"{index_bytes / rows:.0f} | {removed:,} |", flush=True)


if __name__ == "__main__":
    print("| rows | index wall s (of it reading) | index CPU s | decide wall s | decide CPU s | CPU s per 100k rows "
          "| peak RSS GiB | index bytes/row | removed |")
    print("|---|---|---|---|---|---|---|---|---|")
    main()
