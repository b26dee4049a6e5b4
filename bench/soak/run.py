"""Soak: a 1M-row release pipeline killed at random failpoints and resumed until it finishes.

    .venv/bin/python bench/soak/run.py --reference-only &     # the uninterrupted run, beside:
    .venv/bin/python bench/soak/run.py [--rows 1000000] [--work /tmp/sluice-soak] [--faults 7] [--seed 0]

Input: the 52,002 Alpaca records (instruction, input and output joined as `text`) repeated and perturbed to
--rows rows: copy 0 is the record; copy c of record i is, by (i + c) % 4, an exact copy, a re-cased and
re-punctuated copy (exact_dedup's normalised key catches it), a copy with 1-3 words appended (a near-duplicate
for minhash_dedup) or its words shuffled (a new document). Pipeline: normalize -> length_filter ->
exact_dedup -> minhash_dedup, shards of 50k rows, as `sluice run --no-prefect` subprocesses.

1. An uninterrupted reference run.
2. The soak: one attempt per fault of `fault_schedule` (SIGKILL at every kind of failpoint with a random hit
   count, and ENOSPC while publishing), then a clean attempt. After every failed attempt no version may be
   visible (but for a kill after the rename, which leaves a complete one), and at the end: completion, faults
   survived, rows lost (input rows not accounted for as released or rejected, and any per-stage difference to
   the reference), shard sha256 equality with the reference, `release verify`, peak RSS per attempt.
Results: <work>/results.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from pipelines import release  # noqa: E402

ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
SHARD_ROWS = 50_000
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"}, {"op": "minhash_dedup"}]


def make_input(path: Path, rows: int) -> None:
    records = json.loads(ALPACA.read_text())
    base = ["\n".join(t for t in (r["instruction"], r["input"], r["output"]) if t.strip()) for r in records]
    words = " ".join(base[:2000]).split()
    rng = random.Random(7)
    ids, texts = [], []
    for n in range(rows):
        copy, i = divmod(n, len(base))
        text = base[i]
        kind = (i + copy) % 4 if copy else None
        if kind == 1:
            text = re.sub(r"[.,!?]", "", text.upper())
        elif kind == 2:
            text = text + " " + " ".join(rng.choices(words, k=rng.randint(1, 3)))
        elif kind == 3:
            shuffled = text.split()
            rng.shuffle(shuffled)
            text = " ".join(shuffled)
        ids.append(f"{copy}-{i}")
        texts.append(text)
    pl.DataFrame({"id": ids, "text": texts}).write_parquet(path)


def write_config(work: Path, data: Path) -> Path:
    config = {"dataset": "soak", "inputs": [{"path": str(data), "fields": {"text": "text"}}], "shard_rows": SHARD_ROWS,
              "stages": STAGES, "release": {"rows_per_file": 250_000}}
    path = work / "soak.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(config: Path, releases: Path, log: Path, fault: str | None = None) -> dict:
    """One `sluice run` attempt: exit code, wall and CPU seconds and peak RSS of the process (wait4)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_KILL_AT", "SLUICE_FAIL_AT")}
    if fault:
        mode, _, target = fault.partition(" ")
        env["SLUICE_KILL_AT" if mode == "kill" else "SLUICE_FAIL_AT"] = target
    start = time.monotonic()
    with open(log, "w") as out:
        # this checkout's code (run the script from a pinned clone while others keep committing)
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config), "--no-prefect",
                                 "--releases", str(releases)], env=env | {"PYTHONPATH": str(ROOT)}, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"fault": fault, "rc": rc, "wall_s": round(time.monotonic() - start, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": usage.ru_maxrss // 1024,
            "last_line": (log.read_text().strip().splitlines() or [""])[-1][:200]}


def fault_schedule(rng: random.Random, shards: int) -> list[str]:
    """One fault at every kind of point, in the order a run meets them, each at a random hit count: a shard
    being read, a shard result being cached (hits count computed shards only, so a later draw lands in a later
    stage), a stage finishing, a full disk while publishing, the sealed temp folder, the rename. The cache a
    killed attempt leaves makes the next attempt go further."""
    return [f"kill read.shard:{rng.randint(1, shards)}",
            f"kill cache.put:{rng.randint(1, shards)}",
            f"kill stage.done:{rng.randint(1, len(STAGES))}",
            f"kill cache.put:{rng.randint(1, 2 * shards)}",
            "fail publish.write:1:ENOSPC",
            "kill publish.seal:1",
            "kill publish.rename:1"]


def books(folder: Path) -> dict:
    m = release.read_manifest(folder)
    return {"shards": [s["sha256"] for s in m["shards"]], "rejects": [s["sha256"] for s in m["rejects"]],
            "stages": m["stages"], "rows": m["rows"], "rejected_rows": m["rejected_rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sluice-soak"))
    parser.add_argument("--faults", type=int, default=7, help="faulty attempts (of the 7 kinds) before a clean one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-only", action="store_true", help="only the uninterrupted run (start it beside "
                        "a soak run with the same --work: the soak waits for it at the end)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"input_{args.rows}.parquet"
    if not data.exists():
        make_input(data, args.rows)
    config = write_config(args.work, data)
    shards = -(-args.rows // SHARD_ROWS)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    results = {"rows": args.rows, "shard_rows": SHARD_ROWS, "stages": [s["op"] for s in STAGES], "seed": args.seed,
               "commit": commit}

    reference_root, reference_json = args.work / "reference", args.work / "reference.json"
    if args.reference_only:
        attempt = run(config, reference_root, args.work / "reference.log")
        assert attempt["rc"] == 0, attempt
        reference_json.write_text(json.dumps(attempt))
        print("reference", attempt, flush=True)
        return
    soak_root = args.work / f"soak-{args.seed}"
    dataset = soak_root / "soak"
    schedule = fault_schedule(random.Random(args.seed), shards)[:args.faults]
    attempts = []
    for n, fault in enumerate([*schedule, None]):
        attempt = run(config, soak_root, args.work / f"attempt-{n}.log", fault)
        attempt["visible_versions"] = release.versions(dataset)
        attempts.append(attempt)
        print(f"attempt {n}", attempt, flush=True)
        if attempt["rc"] == 0:
            break
        # killed after the rename, the version is complete and visible; before it, nothing may be
        expected = ["v0001"] if fault == "kill publish.rename:1" else []
        assert attempt["visible_versions"] == expected, f"attempt {n} left {attempt['visible_versions']}"
    while not reference_json.exists():  # the --reference-only run beside this one
        time.sleep(10)
    results["reference"] = json.loads(reference_json.read_text())
    reference = books(reference_root / "soak" / release.versions(reference_root / "soak")[-1])
    versions = release.versions(dataset)
    final = dataset / versions[-1]
    got = books(final)
    lost = args.rows - got["rows"] - got["rejected_rows"]
    results |= {
        "attempts": attempts,
        "completed": attempts[-1]["rc"] == 0,
        "kills_survived": sum(a["rc"] == -signal.SIGKILL for a in attempts),
        "errors_survived": sum(a["rc"] == 1 for a in attempts),
        "rows_released": got["rows"], "rows_rejected": got["rejected_rows"],
        "rows_lost": lost,
        "books_equal_reference": got["stages"] == reference["stages"],
        "shards_equal_reference": got["shards"] == reference["shards"] and got["rejects"] == reference["rejects"],
        "versions": versions,
        "all_versions_equal": all(books(dataset / v)["shards"] == got["shards"] for v in versions),
        "verify_problems": [p for v in versions for p in release.verify(dataset / v)],
        "leftover_temp": [str(p) for p in dataset.glob(".tmp-*")],
        "peak_rss_mib": max(a["peak_rss_mib"] for a in attempts),
        "soak_wall_s": round(sum(a["wall_s"] for a in attempts), 1),
        "soak_cpu_s": round(sum(a["cpu_s"] for a in attempts), 1),
    }
    (args.work / f"results-{args.seed}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "attempts"}, indent=2))


if __name__ == "__main__":
    main()
