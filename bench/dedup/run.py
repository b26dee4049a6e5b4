"""Near-duplicate dedup side by side: Sluice and datatrove (text-dedup optionally) on the same input, in one run.

    python3 -m venv /tmp/bench-dedup && /tmp/bench-dedup/bin/pip install -r bench/dedup/requirements.txt
    .venv/bin/python bench/dedup/sets.py /tmp/dd13                     # the labelled sets
    /tmp/bench-dedup/bin/python bench/dedup/run.py --sets /tmp/dd13 short,web,heldout,cjk,udhr
    /tmp/bench-dedup/bin/python bench/dedup/run.py /tmp/dd13-scale/copies_1000000.parquet --tools sluice

Each tool runs as its own process under /usr/bin/time (wall and CPU seconds, peak RSS of the largest
process /usr/bin/time sees: for datatrove that is its main process, not its forkserver workers), each
with its own defaults: `sluice` is `sluice dedup IN OUT`, `sluice-0.8` the defaults before issue #13 (word
5-grams, 256 permutations, LSH at 0.8, no verification), `datatrove` its default MinhashConfig (word
5-grams, 14 buckets x 8 hashes; bench/dedup/run_datatrove.py). With a truth file, precision/recall/F1 of
the removed set: in each duplicate group (an original and its copies) removing all but one row is right;
removing a row outside the groups, or every row of a group, is a false positive.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a worktree runs the shared venv's sluice with its own code first on the path
SLUICE = next(p for p in (ROOT / ".venv" / "bin" / "sluice", Path("/work/main/.venv/bin/sluice")) if p.exists())
BENCH_PY = Path(sys.executable)


def run_timed(cmd: list[str], log: Path) -> tuple[float, float, float]:
    """Run `cmd`; return (wall seconds, CPU seconds of it and its children, peak RSS in GiB).

    CPU seconds matter on a shared machine: wall time there depends on everyone else's load."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as fh:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", *cmd], stdout=fh, stderr=subprocess.STDOUT,
                              env=env)
    text = log.read_text()
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed; see {log}:\n{text[-2000:]}")
    wall, user, system, kb = re.findall(r"TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", text)[-1]
    return float(wall), float(user) + float(system), int(kb) / 2**20


def sluice(data: Path, work: Path, *options: str) -> tuple[tuple, set[str]]:
    import polars as pl

    run = run_timed([str(SLUICE), "dedup", str(data), str(work / "out.parquet"), *options], work / "log.txt")
    rejects = work / "out.rejects.parquet"
    return run, set(pl.read_parquet(rejects)["id"]) if rejects.exists() else set()


def datatrove(data: Path, work: Path) -> tuple[tuple, set[str]]:
    run = run_timed([str(BENCH_PY), str(ROOT / "bench" / "dedup" / "run_datatrove.py"), str(data), str(work)],
                    work.with_suffix(".log"))
    removed = set()
    for f in (work / "removed").glob("*.jsonl"):
        removed |= {json.loads(line)["id"] for line in f.read_text().splitlines() if line.strip()}
    return run, removed


def text_dedup(data: Path, work: Path) -> tuple[tuple, set[str]]:
    cmd = [str(BENCH_PY), "-m", "text_dedup.minhash", "--path", "json", "--data_files", str(data), "--split", "train",
           "--cache_dir", str(work / "cache"), "--output", str(work / "out"), "--column", "text",
           "--ngram", "5", "--num_perm", "128", "--b", "9", "--r", "13", "--threshold", "0.8",
           "--min_length", "0", "--num_proc", "2"]
    run = run_timed(cmd, work.with_suffix(".log"))
    from datasets import load_from_disk
    kept = set(load_from_disk(str(work / "out"))["id"])
    every = {json.loads(line)["id"] for line in data.read_text().splitlines() if line.strip()}
    return run, every - kept


TOOLS = {
    "sluice": sluice,  # its defaults
    "sluice-0.8": lambda data, work: sluice(data, work, "--threshold", "0.8", "--ngram", "5", "--num-perm", "256",
                                            "--word", "--no-jaccard"),  # the defaults before issue #13
    "datatrove": datatrove,
    "text-dedup": text_dedup,
}


def score(removed: set[str], truth: Path) -> dict[str, float]:
    groups: dict[str, list[str]] = {}
    for line in truth.read_text().splitlines():
        r = json.loads(line)
        groups.setdefault(r["group"], []).append(r["id"])
    in_group = {i for ids in groups.values() for i in ids}
    tp = fp = fn = 0
    for ids in groups.values():
        gone = sum(i in removed for i in ids)
        tp += min(gone, len(ids) - 1)
        fp += max(0, gone - (len(ids) - 1))
        fn += (len(ids) - 1) - min(gone, len(ids) - 1)
    fp += len(removed - in_group)
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9)}


def count_rows(data: Path) -> int:
    if data.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(data).metadata.num_rows
    return sum(1 for _ in open(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, nargs="?", help="one input file (or --sets)")
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--sets", nargs=2, metavar=("DIR", "NAMES"), help="labelled sets DIR/<name>/rows.jsonl "
                        "and truth.jsonl (bench/dedup/sets.py), names comma-separated")
    parser.add_argument("--tools", default="sluice,sluice-0.8,datatrove")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dedup-bench/work"))
    args = parser.parse_args()
    runs = ([(n, Path(args.sets[0]) / n / "rows.jsonl", Path(args.sets[0]) / n / "truth.jsonl")
             for n in args.sets[1].split(",")] if args.sets else [(args.data.stem, args.data, args.truth)])
    print("| set | tool | rows | wall s | CPU s | docs/s (wall) | peak RSS GiB | removed | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, data, truth in runs:
        rows = count_rows(data)
        for name in args.tools.split(","):
            work = args.work / f"{name}-{label}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            (wall, cpu, rss), removed = TOOLS[name](data, work)
            m = score(removed, truth) if truth else {}
            quality = " | ".join(f"{m[k]:.3f}" for k in ("precision", "recall", "f1")) if m else "- | - | -"
            print(f"| {label} | {name} | {rows:,} | {wall:.1f} | {cpu:.1f} | {rows / wall:,.0f} | {rss:.2f} | "
                  f"{len(removed):,} | {quality} |", flush=True)


if __name__ == "__main__":
    main()
