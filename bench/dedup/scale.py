"""MinHash dedup at scale, the operator's own cost: index shard by shard, decide in tasks, no reader, no writer.

    .venv/bin/python bench/dedup/make_data.py copies /tmp/dd13-scale
    .venv/bin/python bench/dedup/scale.py index /tmp/dd13-scale/copies_1000000.parquet /tmp/dd13-scale/index [--threads 2]
    .venv/bin/python bench/dedup/scale.py decide /tmp/dd13-scale/index [--tasks N] [--copies K] [--truth FILE]

`sluice dedup IN OUT` (bench/dedup/run.py) measures the verb end to end, reader and writer included. `index`
reads the Parquet file with Polars one shard at a time, calls the same `MinHashDedup.index` the engine calls
on each shard and writes each shard's index to its own file in the folder (as the engine's shard cache does).
`decide` runs the engine's global step over those files: each `decide_part` (a task in the engine) scans
them in a child process of its own (as on a worker), then `combine` joins the parts' clusters in this process
(the driver); it prints the tasks' and the driver's wall and CPU seconds and peak RSS apart. `--copies K` decides over K re-keyed copies of the index (new ids, band hashes XOR-ed with a
per-copy constant: K times the rows with the same bucket structure), which measures the global step at K times
the rows without recomputing K times the signatures (the copies are written beside the folder). `--truth`
(a Parquet file with id and `base`, e.g. the copies set itself) prints rows kept against distinct bases;
`kept OUT --truth SET` does the same for the output of `sluice dedup SET OUT`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
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


def index(data: Path, out: Path, rows: int | None, shard_rows: int, threads: int = 1) -> None:
    """Index every shard (on `threads` threads, as `sluice dedup --workers`); CPU/wall above 1 means the
    threads ran at the same time (Polars, NumPy and rensa outside the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    total = pq.ParquetFile(data).metadata.num_rows
    rows = min(rows or total, total)
    op = MinHashDedup()
    op.layout  # the band optimiser (datasketch import) is not part of the per-row cost
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall, cpu = time.perf_counter(), cpu_seconds()

    def one(k: int) -> int:
        start = k * shard_rows
        shard = pl.scan_parquet(data).slice(start, min(shard_rows, rows - start)).collect()
        part = op.index(shard)
        part.write_parquet(out / f"{k:05d}.parquet", compression="lz4", statistics=False)  # as the shard cache
        print(f"  shard {k}: {time.perf_counter() - wall:.0f} s wall, {cpu_seconds() - cpu:.0f} s CPU", flush=True)
        return part.estimated_size()

    with ThreadPoolExecutor(threads) as pool:
        size = sum(pool.map(one, range(-(-rows // shard_rows))))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    disk = sum(f.stat().st_size for f in out.glob("*.parquet"))
    print(f"index | {rows:,} rows | {threads} thread(s) | {wall:.0f} s wall | {cpu:.0f} s CPU | CPU/wall {cpu / wall:.2f} | "
          f"{cpu / rows * 1e5:.1f} CPU s per 100k rows | peak RSS {peak_rss_gib():.2f} GiB | {size / rows:.0f} bytes/row "
          f"in memory | {disk / rows:.0f} on disk")


def copied(folder: Path, copies: int) -> Path:
    """A folder with `copies` re-keyed copies of every index file in `folder`."""
    out = folder.with_name(f"{folder.name}-x{copies}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    salts = np.random.default_rng(0).integers(1, 2**63, size=copies, dtype=np.uint64)
    for k in range(copies):
        for f in sorted(folder.glob("*.parquet")):
            table = pl.read_parquet(f)
            bands = [c for c in table.columns if c.startswith(BAND)]
            table.with_columns(pl.format("{}~{}", "id", pl.lit(k)).alias("id"),
                               *[pl.col(b) ^ pl.lit(salts[k], dtype=pl.UInt64) for b in bands]) \
                .write_parquet(out / f"{k:03d}-{f.name}", compression="lz4", statistics=False)
    return out


def run_part(files: list[Path], tasks: int, k: int, out: Path) -> None:
    """One decide task, as a worker runs it: scan the index files, write the part's table."""
    op = MinHashDedup(decide_tasks=tasks)
    wall, cpu = time.perf_counter(), cpu_seconds()
    part = op.decide_part(pl.concat([pl.scan_parquet(f) for f in files]), k, 0)  # rows: MinHash needs none
    part.write_parquet(out)
    print(f"  decide part {k} (its own process): {time.perf_counter() - wall:.0f} s wall, {cpu_seconds() - cpu:.0f} "
          f"s CPU, {len(part):,} rows in its clusters' table, peak RSS {peak_rss_gib():.2f} GiB", flush=True)


def decide(folder: Path, tasks: int, copies: int, truth: Path | None) -> None:
    """The decide parts in child processes (as tasks on workers), then `combine` here (the driver)."""
    if copies > 1:
        folder = copied(folder, copies)
    files = sorted(folder.glob("*.parquet"))
    scan = pl.concat([pl.scan_parquet(f) for f in files])
    rows = scan.select(pl.len()).collect().item()
    op = MinHashDedup(decide_tasks=tasks)
    op.layout
    total_wall, parts = time.perf_counter(), []
    for k in range(op.tasks):
        out = folder.with_name(f"{folder.name}.part{k}.parquet")
        spawn = multiprocessing.get_context("spawn")  # not fork: a forked child of a process with Polars threads can hang
        child = spawn.Process(target=run_part, args=(files, tasks, k, out))
        child.start()
        child.join()
        parts.append(pl.read_parquet(out))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), cpu_seconds()
    decision = op.combine(scan, parts)
    combine_wall, combine_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"decide | {rows:,} rows | {op.tasks} task(s) | {time.perf_counter() - total_wall:.0f} s wall | "
          f"tasks {children.ru_utime + children.ru_stime:.0f} s CPU, peak RSS {children.ru_maxrss / 2**20:.2f} GiB | "
          f"driver (combine) {combine_wall:.0f} s wall, {combine_cpu:.0f} s CPU, peak RSS {peak_rss_gib():.2f} GiB | "
          f"removed {len(decision.drops):,}")
    if truth is not None:
        bases = pl.scan_parquet(truth).select("id", "base")
        kept = scan.select("id").join(decision.drops.lazy(), on="id", how="anti")
        print(f"kept {kept.select(pl.len()).collect().item():,} rows for "
              f"{bases.select(pl.col('base').n_unique()).collect().item():,} distinct bases")


def kept(output: Path, truth: Path) -> None:
    """Rows an end-to-end run kept against the distinct documents of a copies set (its `base` column)."""
    bases = pl.scan_parquet(truth).select("id", "base")
    kept_ids = (pl.scan_parquet(output) if output.is_file() else  # a folder: datatrove's kept/*.jsonl
                pl.concat([pl.scan_ndjson(f) for f in sorted(output.glob("*.jsonl"))])).select(pl.col("id").cast(pl.String))
    rows = kept_ids.join(bases, on="id").collect()
    distinct = bases.select(pl.col("base").n_unique()).collect().item()
    covered = rows["base"].n_unique()
    print(f"kept {len(rows):,} | distinct {distinct:,} | {100 * (len(rows) / distinct - 1):+.1f}% | "
          f"originals with no kept row (merged into another): {distinct - covered:,} | extra rows {len(rows) - covered:,}")
    words = pl.scan_parquet(truth).group_by("base").agg(pl.col("text").str.split(" ").list.len().median().alias("w"))
    per = rows.group_by("base").len("n").join(words.collect(), on="base", how="right").with_columns(
        pl.col("n").fill_null(0), pl.when(pl.col("w") < 15).then(pl.lit("< 15")).otherwise(pl.lit(">= 15")).alias("words"))
    totals = per.group_by("words").agg(pl.len().alias("records"), pl.col("n").sum().alias("kept"),
                                       (pl.col("n") - 1).clip(0).sum().alias("extra")).sort("words")
    for group, records, kept_rows, extra in totals.iter_rows():
        print(f"  records of {group} words: {records:,} | kept {kept_rows:,} | extra rows {extra:,}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("index")
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path, help="a folder: one index file per shard")
    p.add_argument("--rows", type=int, help="only the first N rows")
    p.add_argument("--shard-rows", type=int, default=50_000)
    p.add_argument("--threads", type=int, default=1, help="shards indexed at once, on threads")
    p = sub.add_parser("decide")
    p.add_argument("folder", type=Path)
    p.add_argument("--tasks", type=int, default=MinHashDedup.Params().decide_tasks)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--truth", type=Path)
    p = sub.add_parser("kept")
    p.add_argument("output", type=Path, help="the kept rows of `sluice dedup` (Parquet) or datatrove's kept/ folder")
    p.add_argument("--truth", type=Path, required=True, help="the copies set (id, base)")
    args = parser.parse_args()
    if args.step == "kept":
        kept(args.output, args.truth)
    elif args.step == "index":
        index(args.data, args.out, args.rows, args.shard_rows, args.threads)
    else:
        decide(args.folder, args.tasks, args.copies, args.truth)


if __name__ == "__main__":
    main()
