"""Wall and CPU of a small `sluice run`, side by side for several code trees (Prefect's fixed cost per run).

    flock /work/bench.lock .venv/bin/python bench/orchestration/startup.py --trees before=/tmp/before,after=. [--repeats 3]

Each tree runs `sluice run` (Prefect, the default) on the same small config in a fresh process, every run into an
empty release folder, the trees taking turns, after one untimed run each; `--no-prefect` on the first tree is the
floor. Prefect's database is the benchmark's own (PREFECT_HOME in a temporary folder): the user's
~/.prefect/prefect.db is shared with every other Prefect process of the user, whose writes make a run wait. CPU is the run's
own plus its waited-for children (Prefect's temporary server, stopped at exit). Prints one line per run and
the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"}]


def write_config(folder: Path, rows: int) -> Path:
    data = folder / "rows.jsonl"
    records = json.loads(ALPACA.read_text())[:rows]
    data.write_text("".join(json.dumps({"id": str(i), "text": r["output"]}) + "\n" for i, r in enumerate(records)))
    config = {"dataset": "startup", "shard_rows": 5000, "stages": STAGES,
              "inputs": [{"path": str(data), "fields": {"text": "text", "id": "id"}, "on_error": "skip"}]}
    path = folder / "startup.yaml"
    path.write_text(json.dumps(config))
    return path


def timed_run(tree: Path, config: Path, releases: Path, home: Path, *flags: str) -> tuple[float, float]:
    """(wall s, CPU s) of one `sluice run` from `tree` in a fresh process."""
    shutil.rmtree(releases, ignore_errors=True)
    env = os.environ | {"PYTHONPATH": str(tree), "PREFECT_HOME": str(home)}
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config), "--releases", str(releases),
                                 *flags], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            errors.seek(0)
            raise SystemExit(f"{tree}: sluice run failed ({code}): {errors.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", required=True, help="name=path,name=path: code trees to compare")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.trees.split(","))}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees} | {"no-prefect": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), args.rows)
        releases, home = Path(tmp) / "releases", Path(tmp) / "prefect"
        for tree in trees.values():  # Prefect's database created, imports in the page cache
            timed_run(tree, config, releases, home)
        print(f"load: {os.getloadavg()}", flush=True)
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                results[name].append(timed_run(tree, config, releases, home))
                print(f"{repeat} {name:<12} wall {results[name][-1][0]:6.1f} s  CPU {results[name][-1][1]:6.1f} s",
                      flush=True)
            floor = timed_run(next(iter(trees.values())), config, releases, home, "--no-prefect")
            results["no-prefect"].append(floor)
            print(f"{repeat} {'no-prefect':<12} wall {floor[0]:6.1f} s  CPU {floor[1]:6.1f} s", flush=True)
        print(f"load: {os.getloadavg()}")
    for name, runs in results.items():
        print(f"median {name:<12} wall {statistics.median(w for w, _ in runs):6.1f} s  "
              f"CPU {statistics.median(c for _, c in runs):6.1f} s  ({len(runs)} runs)")


if __name__ == "__main__":
    main()
