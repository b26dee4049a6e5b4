"""Diff stability: edit 5 rows of Alpaca 52k, run the same cluster-sampling pipeline on both inputs, and count
the rows `sluice release diff` reports added, removed or changed (goal: <= 100; 6,418 before issue 15, 169 now).

    PYTHONPATH=$PWD .venv/bin/python bench/stability/run.py [--budget 5000] [--work /tmp/stability]

Reads Alpaca from ../shared/data (CC BY-NC: read in place, never copied into the project).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
EDITED = (100, 10_000, 20_000, 30_000, 40_000)  # rows whose output gets one more sentence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=0, help="cluster_sample's Lloyd iterations")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stability"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows = json.loads(ALPACA.read_text())
    data = args.work / "alpaca.json"
    config = args.work / "config.yaml"
    config.write_text(json.dumps({
        "dataset": "alpaca-sample",
        "inputs": [{"path": str(data), "fields": {"instruction": "instruction", "input": "input", "output": "output"},
                    "optional": ["input"], "on_error": "skip"}],
        "shard_rows": 10_000,
        "stages": [{"op": "normalize", "fields": ["instruction", "output"]},
                   {"op": "cluster_sample", "budget": args.budget, "fields": ["instruction", "input", "output"],
                    "iterations": args.iterations}],
        "release": {"dir": str(args.work / "releases")}}))
    sluice = Path(sys.executable).parent / "sluice"
    for version, edit in (("v0001", False), ("v0002", True)):
        if edit:
            for i in EDITED:
                rows[i] = rows[i] | {"output": rows[i]["output"] + " This sentence was added."}
        data.write_text(json.dumps(rows))
        start = time.perf_counter()
        subprocess.run([sluice, "run", config, "--no-prefect"], check=True, capture_output=True)
        print(f"{version}: {time.perf_counter() - start:.0f} s")
    diff = subprocess.run([sluice, "release", "diff", "alpaca-sample/v0001", "alpaca-sample/v0002", "--releases",
                           args.work / "releases", "--json"], check=True, capture_output=True, text=True)
    d = json.loads(diff.stdout)
    r = d["rows"]
    print(json.dumps({k: r[k] for k in ("a", "b", "added", "removed", "changed")} | {
        "reported": r["added"] + r["removed"] + r["changed"], "why": d.get("why"),
        "changed_columns": d.get("changed_columns")}, indent=1))
    print(subprocess.run([sluice, "release", "diff", "alpaca-sample/v0001", "alpaca-sample/v0002", "--releases",
                          args.work / "releases"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
