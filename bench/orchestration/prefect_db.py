"""Prefect's database and a run's cost: the temporary API server's start (wall to its first answer, its CPU then)
and a small `sluice run` (wall, CPU of the run and its server), for code trees each on a Prefect home of its own.

    flock /work/bench.lock .venv/bin/python bench/orchestration/prefect_db.py \
        --variants base-big=/tmp/base:/tmp/big-home,base-small=/tmp/base:/tmp/small-home,mine=.:/tmp/mine-home

A variant is name=tree:prefect_home (PREFECT_HOME: where Prefect's default database is, ~/.prefect/prefect.db; copy
a user's grown one there to measure it). The variants take turns, after one untimed run each. Prints one line per
measurement, the medians, and what each run left in its Prefect home.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import timed_run, write_config  # noqa: E402  (the same small config and timed run as startup.py)

# In a fresh process of the tree: start its ApiServer, wait for its first answer; print wall and the server's CPU.
START = """
import os, sys, time
from pathlib import Path
from pipelines import flow
flow.quiet_prefect()
begin = time.monotonic()
server = flow.ApiServer(Path(sys.argv[1]))
server.wait(300)
wall = time.monotonic() - begin
stat = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
print(wall, (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"))
server.stop()
"""


def server_start(tree: Path, home: Path, log: Path) -> tuple[float, float]:
    env = os.environ | {"PYTHONPATH": str(tree), "PREFECT_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", START, str(log)], cwd=tree, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


def size(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("prefect.db*"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", required=True, help="name=tree:prefect_home,...")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--shard-rows", type=int, default=500, help="many shards: many task runs, API calls")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = {}
    for item in args.variants.split(","):
        name, where = item.split("=", 1)
        tree, home = where.split(":", 1)
        variants[name] = (Path(tree).resolve(), Path(home).resolve())
    starts: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), args.rows)
        config.write_text(json.dumps(json.loads(config.read_text()) | {"shard_rows": args.shard_rows}))
        releases, log = Path(tmp) / "releases", Path(tmp) / "server.log"
        for tree, home in variants.values():  # imports in the page cache; a new database migrated
            timed_run(tree, config, releases, home)
        print(f"load: {os.getloadavg()}", flush=True)
        for repeat in range(args.repeats):
            for name, (tree, home) in variants.items():
                starts[name].append(server_start(tree, home, log))
                before = size(home)
                runs[name].append(timed_run(tree, config, releases, home))
                (start, start_cpu), (wall, cpu) = starts[name][-1], runs[name][-1]
                print(f"{repeat} {name:<12} server start {start:5.1f} s, its CPU {start_cpu:5.1f} s"
                      f" | run wall {wall:5.1f} s, CPU {cpu:5.1f} s"
                      f" | Prefect home's database {size(home) / 1e6:7.1f} MB (+{(size(home) - before) / 1e6:.2f})",
                      flush=True)
        print(f"load: {os.getloadavg()}")
    for name in variants:
        (start, start_cpu), (wall, cpu) = (map(statistics.median, zip(*starts[name])),
                                           map(statistics.median, zip(*runs[name])))
        print(f"median {name:<12} server start {start:5.1f} s, its CPU {start_cpu:5.1f} s | run wall {wall:5.1f} s, "
              f"CPU {cpu:5.1f} s")


if __name__ == "__main__":
    main()
