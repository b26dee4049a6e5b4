"""Orchestration overhead of Prefect, and the Dask runner's speed-up, on a real cleaning pipeline.

    .venv/bin/python bench/orchestration/run.py [--rows 1000000]

1. Per-task and per-flow overhead: a 2,000-row input in 200 shards through one cheap stage, with and without
   Prefect (flow start-up measured separately from the tasks).
2. A 1M-row cleaning run (Alpaca outputs repeated with a per-copy suffix; normalize, length_filter, exact_dedup) with
   --no-prefect vs the Prefect flow: overhead as a share of the run.
3. The same run on a Dask LocalCluster with 1 worker and with 2 workers.
Every run starts from an empty cache, so nothing is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
sys.path.insert(0, str(ROOT))

from pipelines import config  # noqa: E402
from pipelines.flow import quiet_prefect, run_pipeline  # noqa: E402

STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"}]


def make_input(folder: Path, rows: int) -> Path:
    outputs = pl.read_json(ALPACA).select(pl.col("output").alias("text"))
    copies = -(-rows // len(outputs))
    frame = pl.concat([outputs.with_columns(pl.col("text") + f" (copy {i})") for i in range(copies)]).head(rows)
    path = folder / f"input-{rows}.parquet"
    frame.with_row_index("id").with_columns(pl.col("id").cast(pl.String)).write_parquet(path)
    return path


def write_config(folder: Path, name: str, data: Path, shard_rows: int, stages: list[dict]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"dataset": name, "inputs": [{"path": str(data), "fields": {"text": "text"}}],
                                "shard_rows": shard_rows, "stages": stages,
                                "release": {"dir": str(folder / "releases" / name), "rows_per_file": 250_000}}))
    return path


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    quiet_prefect()
    from prefect import flow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Flow start-up: the first flow run of a process starts the temporary API server.
        timed("first empty flow (temporary API start-up)", flow(lambda: None, name="warm-up"))
        timed("second empty flow", flow(lambda: None, name="warm-up"))

        small = make_input(folder, 2_000)
        tiny = [{"op": "normalize"}]
        plain = timed("200 shards x normalize, --no-prefect", lambda: run_pipeline(
            config.load(write_config(folder, "tasks-plain", small, 10, tiny)), use_prefect=False))
        tasks = timed("200 shards x normalize, Prefect tasks", lambda: run_pipeline(
            config.load(write_config(folder, "tasks-prefect", small, 10, tiny))))
        print(f"-> per-task overhead {1000 * (tasks - plain) / 200:.1f} ms", flush=True)

        big = make_input(folder, args.rows)
        plain = timed(f"{args.rows:,} rows, --no-prefect", lambda: run_pipeline(
            config.load(write_config(folder, "big-plain", big, 50_000, STAGES)), use_prefect=False))
        local = timed(f"{args.rows:,} rows, Prefect local runner", lambda: run_pipeline(
            config.load(write_config(folder, "big-prefect", big, 50_000, STAGES))))
        print(f"-> Prefect overhead {100 * (local - plain) / plain:.1f}% of the run", flush=True)

        from dask.distributed import LocalCluster

        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster:
                timed(f"{args.rows:,} rows, Dask {workers} worker(s)", lambda: run_pipeline(
                    config.load(write_config(folder, f"big-dask{workers}", big, 50_000, STAGES)),
                    runner="dask", dask_address=cluster.scheduler_address))


if __name__ == "__main__":
    os.environ.setdefault("SLUICE_PROGRESS", "off")
    main()
