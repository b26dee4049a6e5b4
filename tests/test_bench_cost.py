"""bench/cost/cost.py's meter on the current engine: every phase of a run is where the engine runs it, and a
partitioned decide's tasks are charged the index files they scan (bytes a cluster reads from its store)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import polars as pl
from conftest import ALPACA, ROOT

from pipelines.engine import Job, Part

COST = ROOT / "bench" / "cost" / "cost.py"


def load_cost():
    spec = importlib.util.spec_from_file_location("bench_cost", COST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ALPACA = ALPACA  # the shared data as the tests find it (also from a clone outside /work)
    return module


def test_a_decide_task_is_charged_every_index_file_it_scans(tmp_path):
    cost = load_cost()
    index = []
    for k in range(3):  # three shards' index files, as the tasks before a global stage write them
        path = tmp_path / f"index-{k}.parquet"
        pl.DataFrame({"id": [f"d{k}-{i}" for i in range(500)], "key": [f"{i * 7919 % 4096:x}" for i in range(500)]}) \
            .write_parquet(path)
        index.append(Part(500, path=path))
    jobs = [Job(Part(0, pl.DataFrame({"part": [k], "rows": [1500]})), f"key{k}", f"part{k}") for k in range(2)]
    files = sum(os.path.getsize(p.path) for p in index)
    own = sum(j.part.frame.estimated_size() for j in jobs)  # the jobs' own rows: the part number, tiny
    assert cost.task_read_bytes(jobs, index) == own + 2 * files  # each of the 2 tasks reads all 3 files
    shards = [Job(p, f"s{k}", f"s{k}") for k, p in enumerate(index)]
    assert cost.task_read_bytes(shards) == files  # a shard task: its own file


def test_a_measured_run_meters_the_phases_where_the_engine_runs_them(tmp_path):
    cost = load_cost()
    data = cost.make_input(tmp_path / "input.parquet", 3000)
    done = subprocess.run([sys.executable, str(COST), "one", str(data), str(tmp_path)], capture_output=True, text=True,
                          env=os.environ | {"SLUICE_PROGRESS": "off", "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    phases = {p["phase"]: p for p in run["phases"]}
    assert run["rows"] == 3000 and 0 < run["released"] < 3000  # the near-copies are dropped
    # the indexes are computed in the tasks before each global stage: no index phase of their own
    assert {"read", "normalize+length_filter", "exact_dedup.decide", "exact_dedup.apply", "minhash_dedup.decide",
            "minhash_dedup.apply", "release.data", "release.rejects", "release (driver)"} <= set(phases)
    assert not {"exact_dedup.index", "minhash_dedup.index"} & set(phases)
    # a decide task reads the whole index (KBs at 3,000 rows), not just its job's one-row frame (~20 bytes)
    for name in ("exact_dedup.decide", "minhash_dedup.decide"):
        assert phases[name]["read_bytes"] > 10_000, phases[name]
    assert phases["read (driver)"]["read_bytes"] == data.stat().st_size
    # the rows task writes the kept rows, rejects and exact dedup's index; the last apply (drop-only, no stage
    # after it to index for) its rejects only
    assert 0 < 10 * phases["minhash_dedup.apply"]["written_bytes"] < phases["normalize+length_filter"]["written_bytes"]
    assert all(p["cpu_s"] >= 0 and p["peak_rss"] > 0 for p in run["phases"])


def test_the_model_fits_only_the_runs_asked_for():
    cost = load_cost()
    runs = [{"target_rows": 1000, "commit": "aaa", "at": 1},
            {"target_rows": 1000, "commit": "bbb", "meter": "m", "at": 2},
            {"target_rows": 1000, "commit": "bbb", "at": 3},
            {"target_rows": 5000, "commit": "aaa", "at": 4}]
    assert {n: r["at"] for n, r in cost.select(runs).items()} == {1000: 3, 5000: 4}  # the last run per size
    assert {n: r["at"] for n, r in cost.select(runs, commit="aaa").items()} == {1000: 1, 5000: 4}
    assert {n: r["at"] for n, r in cost.select(runs, commit="bbb", meter="m").items()} == {1000: 2}


def test_the_process_peak_is_the_largest_phase_peak_when_getrusage_lost_it():
    # getrusage's maxrss reads the high-water mark the meter resets at each phase start: at 5M rows it said
    # 0.84 GiB (the release's driver part, after the last reset) while MinHash's decide task had held 1.56 GiB
    cost = load_cost()
    run = {"total": {"peak_rss": 900}, "phases": [{"peak_rss": 1600}, {"peak_rss": 850}]}
    assert cost.process_peak(run) == 1600
    assert cost.process_peak(run | {"total": {"peak_rss": 2000}}) == 2000
