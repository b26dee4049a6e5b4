"""Ctrl-C and SIGTERM on a large `sluice run`: seconds from the signal to the exit, exit code, bytes on stderr.

    PYTHONPATH=$PWD .venv/bin/python bench/interrupts/run.py [--rows 1000000] [--cases prefect:SIGINT:stage ...]

Builds ROWS rows of JSON lines in --work from Alpaca (read in place from ../shared/data, suffixed to be unique),
runs normalize -> length_filter -> exact_dedup, and signals the run either while it reads (`read`: once the
first read shard is spilled) or inside the first stage (`stage`: once 3 shard results are cached). SIGINT goes
to the whole process group (what a terminal's Ctrl-C does), SIGTERM to the process alone (what `kill` does).
Goal: exit <= 5 s, code 130/143, one line on stderr, in both modes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
WAIT = {"read": ".cache/.spill-*/*.parquet", "stage": ".cache/[0-9a-f]*"}


def build(rows: int, path: Path) -> None:
    alpaca = json.loads(ALPACA.read_text())
    with open(path, "w") as fh:
        for i in range(rows):
            r = alpaca[i % len(alpaca)]
            fh.write(json.dumps({"id": f"r{i}", "instruction": f"{r['instruction']} ({i})", "input": r["input"],
                                 "output": r["output"] or "-"}) + "\n")


def one(config: Path, dataset: Path, prefect: bool, signum: int, when: str) -> dict:
    shutil.rmtree(dataset, ignore_errors=True)
    args = [Path(sys.executable).parent / "sluice", "run", config] + ([] if prefect else ["--no-prefect"])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    start = time.monotonic()
    pattern = str(dataset / WAIT[when])
    while len(glob.glob(pattern)) < 3 and proc.poll() is None:
        time.sleep(0.1)
    signalled = time.monotonic()
    os.killpg(proc.pid, signum) if signum == signal.SIGINT else os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=600)
    return {"mode": "prefect" if prefect else "no-prefect", "signal": signal.Signals(signum).name, "when": when,
            "signalled_after_s": round(signalled - start, 1), "exit_s": round(time.monotonic() - signalled, 2),
            "code": proc.returncode, "stderr_bytes": len(err), "stderr": err.decode()[:200]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-interrupts"))
    parser.add_argument("--cases", nargs="+", default=["no-prefect:SIGINT:stage", "prefect:SIGINT:stage",
                                                        "prefect:SIGTERM:stage", "prefect:SIGINT:read"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"rows-{args.rows}.jsonl"
    if not data.exists():
        build(args.rows, data)
    config = args.work / "config.yaml"
    config.write_text(json.dumps({
        "dataset": "big", "inputs": [{"path": str(data), "fields": {"instruction": "instruction", "input": "input",
                                                                   "output": "output"}, "optional": ["input"]}],
        "shard_rows": 10_000,
        "stages": [{"op": "normalize", "fields": ["instruction", "output"]},
                   {"op": "length_filter", "field": "output", "min_words": 1},
                   {"op": "exact_dedup", "fields": ["instruction"]}],
        "release": {"dir": str(args.work / "releases")}}))
    print(f"load: {os.getloadavg()}")
    for case in args.cases:
        mode, name, when = case.split(":")
        print(json.dumps(one(config, args.work / "releases" / "big", mode == "prefect", getattr(signal, name), when)),
              flush=True)


if __name__ == "__main__":
    main()
