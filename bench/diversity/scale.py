"""The samplers' global step at 1M-10M rows: decide tasks in processes of their own, the driver apart.

    .venv/bin/python bench/diversity/scale.py index /tmp/div18/index --rows 1000000
    .venv/bin/python bench/diversity/scale.py decide /tmp/div18/index --method cluster --budget 50000 [--copies 10]
    .venv/bin/python bench/diversity/scale.py decide /tmp/div18/index --method cluster --budget 50000 --one-pass /work/main

`index` builds run.py's pool (Alpaca repeated, copy c of a row with c random words appended) and writes one
index file per 50k-row shard, as the engine's shard cache does, with Deita's `index` (TF-IDF n-gram counts
and the words score: the index cluster, k-center and Deita share; random reads only `id` and `key`).
`decide` runs each `decide_part` in a child process of its own (as a worker would), then `combine` in this
process (the driver), and prints the tasks' and the driver's CPU seconds and peak RSS apart. `--copies K`
decides over K re-keyed copies of the index (ids `<id>~k`, keys recomputed from them; features repeated):
K times the rows without recomputing K times the features. `--one-pass TREE` instead runs the one-pass
decide of an older checkout (e.g. /work/main before the samplers decided in tasks) on the whole index in
one process, as its driver did, for comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "diversity"))

FIELDS = ["instruction", "input"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sampler(method: str, budget: int):
    from operators.diversity import ClusterSample, DeitaSample, KCenterSample, RandomSample

    return {"random": RandomSample, "cluster": ClusterSample, "kcenter": KCenterSample,
            "deita": DeitaSample}[method](budget=budget, fields=FIELDS)


def index(out: Path, rows: int, shard_rows: int) -> None:
    from run import pool

    frame = pool(rows)
    op = sampler("deita", 1)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for k, shard in enumerate(frame.iter_slices(shard_rows)):
        op.index(shard).write_parquet(out / f"{k:05d}.parquet", compression="lz4", statistics=False)
    print(f"index | {rows:,} rows | {time.perf_counter() - wall:.0f} s wall | {cpu_seconds() - cpu:.0f} s CPU | "
          f"{sum(f.stat().st_size for f in out.glob('*.parquet')) / rows:.0f} bytes/row on disk")


def copied(folder: Path, copies: int, method: str) -> Path:
    """A folder with `copies` re-keyed copies of every index file in `folder` (random: `id`, `key` only)."""
    from operators.diversity import features as ft

    out = folder.with_name(f"{folder.name}-{method if method == 'random' else 'text'}-x{copies}")
    if out.exists():
        return out
    out.mkdir()
    for k in range(copies):
        for f in sorted(folder.glob("*.parquet")):
            table = pl.read_parquet(f, columns=["id", "key"] if method == "random" else None)
            ids = table["id"] + f"~{k}" if copies > 1 else table["id"]
            key = pl.Series("key", ft.row_keys(ids, 1))  # the samplers' keys: seed 0 + 1
            table.with_columns(ids, key).write_parquet(out / f"{k:03d}-{f.name}", compression="lz4", statistics=False)
    return out


def run_part(files: list[Path], method: str, budget: int, k: int, rows: int, out: Path) -> None:
    """One decide task, as a worker runs it: scan the index files, write the part's table."""
    op = sampler(method, budget)
    wall, cpu = time.perf_counter(), cpu_seconds()
    part = op.decide_part(pl.concat([pl.scan_parquet(f) for f in files]), k, rows)
    part.write_parquet(out)
    if part.height:
        print(f"  part {k}: {len(part):,} rows, {time.perf_counter() - wall:.0f} s wall, {cpu_seconds() - cpu:.0f} s CPU, "
              f"peak RSS {peak_rss_gib():.2f} GiB", flush=True)


def decide(folder: Path, method: str, budget: int, copies: int, jobs: int = 1) -> dict:
    """The decide parts in child processes (as tasks on workers), then `combine` here (the driver)."""
    folder = copied(folder, copies, method)
    files = sorted(folder.glob("*.parquet"))
    scan = pl.concat([pl.scan_parquet(f) for f in files])
    rows = scan.select(pl.len()).collect().item()
    op = sampler(method, budget)
    total_wall, outs = time.perf_counter(), []
    tasks = list(range(op.partitions(rows)))
    for start in range(0, len(tasks), jobs):  # `jobs` tasks at a time, as on that many workers
        children = []
        for k in tasks[start: start + jobs]:
            outs.append(folder.with_name(f"{folder.name}.part{k}.parquet"))
            children.append(multiprocessing.get_context("spawn").Process(
                target=run_part, args=(files, method, budget, k, rows, outs[-1])))
            children[-1].start()
        for child in children:
            child.join()
    parts = [pl.read_parquet(out) for out in outs]
    for out in outs:
        out.unlink()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), cpu_seconds()
    decision = op.combine(scan, parts)
    result = {"method": method, "rows": rows, "budget": budget, "tasks": op.partitions(rows), "jobs": jobs,
              "wall_s": round(time.perf_counter() - total_wall), "tasks_cpu_s": round(children.ru_utime + children.ru_stime),
              "task_peak_gib": round(children.ru_maxrss / 2**20, 2), "driver_cpu_s": round(cpu_seconds() - cpu),
              "driver_wall_s": round(time.perf_counter() - wall), "driver_peak_gib": round(peak_rss_gib(), 2),
              "dropped": len(decision.drops), "load": os.getloadavg()[0]}
    print(json.dumps(result), flush=True)
    return result


ONE_PASS = """
import json, resource, sys, time, polars as pl
from operators.diversity import {cls}
files = sys.argv[1:]
op = {cls}(budget={budget}, fields={fields!r})
cpu = time.process_time()
index = pl.concat([pl.read_parquet(f, columns=[c for c in pl.read_parquet_schema(f) if c != "key"]) for f in files])
drops = op.decide(index).drops
print(json.dumps({{"rows": len(index), "cpu_s": round(time.process_time() - cpu), "dropped": len(drops),
                  "driver_peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}}))
"""


def one_pass(folder: Path, method: str, budget: int, copies: int, tree: Path) -> None:
    """The older checkout's one-pass decide on the whole index, in one process (its driver)."""
    folder = copied(folder, copies, method)
    cls = {"random": "RandomSample", "cluster": "ClusterSample", "kcenter": "KCenterSample", "deita": "DeitaSample"}
    code = ONE_PASS.format(cls=cls[method], budget=budget, fields=FIELDS)
    wall = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, sorted(folder.glob("*.parquet")))], cwd=tree,
                         env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"method": method, "one_pass": str(tree), "budget": budget, **result,
                      "wall_s": round(time.perf_counter() - wall), "load": os.getloadavg()[0]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("index")
    p.add_argument("out", type=Path, help="a folder: one index file per shard")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shard-rows", type=int, default=50_000)
    p = sub.add_parser("decide")
    p.add_argument("folder", type=Path)
    p.add_argument("--method", default="cluster", choices=["random", "cluster", "kcenter", "deita"])
    p.add_argument("--budget", type=int, default=50_000)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="decide tasks run at a time")
    p.add_argument("--one-pass", type=Path, help="an older checkout whose one-pass decide to run instead")
    args = parser.parse_args()
    if args.step == "index":
        index(args.out, args.rows, args.shard_rows)
    elif args.one_pass:
        one_pass(args.folder, args.method, args.budget, args.copies, args.one_pass)
    else:
        decide(args.folder, args.method, args.budget, args.copies, args.jobs)


if __name__ == "__main__":
    main()
