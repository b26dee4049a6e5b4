"""What deciding in tasks costs in quality: each sampler with one decide task (the one-pass choice) and with
N tasks (`part_rows` lowered so the rows are dealt to N tasks, as at 10M rows), on English, Chinese and
multilingual sets, measured with the diversity metrics against one yardstick clustering of each pool.

    .venv/bin/python bench/diversity/two_level.py [--tasks 10] [--out bench/diversity/two_level.json]

Sets: Alpaca 52k (instruction + input; 5,000 kept), the Lingua Chinese sentences (729; 100 kept) and the
Lingua sentences of all 75 languages (~70k; 3,000 kept). Budgets are about a tenth of each pool (Chinese
a seventh). The yardstick is a k-means of the whole pool (seed 7, budget/5 clusters, at least 50; not the cluster
sampler's own clusters). `overlap` is the share of the one-task selection the N-task one also keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data").resolve()
ALPACA = SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
LINGUA = SHARED / "langid" / "lingua" / "sentences"
TARGET = SHARED / "instructions" / "self_instruct" / "user_oriented_instructions.jsonl"
METHODS = ["random", "cluster", "kcenter", "deita", "dsir"]


def datasets() -> dict[str, tuple[pl.DataFrame, int]]:
    alpaca = pl.read_json(ALPACA).select(pl.concat_str(["instruction", "input"], separator="\n").alias("text"))
    lingua = pl.concat([pl.DataFrame({"text": f.read_text(encoding="utf-8").splitlines(), "lang": f.stem})
                        for f in sorted(LINGUA.glob("*.txt"))])
    sets = {"alpaca (en)": (alpaca, 5000), "lingua zh": (lingua.filter(pl.col("lang") == "zh"), 100),
            "lingua 75 languages": (lingua, 3000)}
    return {name: (frame.with_row_index("n").select(pl.format("r{}", "n").alias("id"), "text"), budget)
            for name, (frame, budget) in sets.items()}


def sampler(method: str, budget: int):
    from operators.diversity import ClusterSample, DeitaSample, DsirSample, KCenterSample, RandomSample

    if method == "dsir":
        return DsirSample(budget=budget, target=str(TARGET), target_fields=["instruction"])
    return {"random": RandomSample, "cluster": ClusterSample, "kcenter": KCenterSample,
            "deita": DeitaSample}[method](budget=budget)


def kept_ids(op, frame: pl.DataFrame, shard_rows: int = 10_000) -> set[str]:
    index = pl.concat([op.index(shard) for shard in frame.iter_slices(shard_rows)])
    return set(frame["id"]) - set(op.decide(index).drops["id"])


OLD = """
import json, sys, polars as pl
sys.path.insert(0, {bench!r})
from two_level import kept_ids, sampler
sys.path.insert(0, {tree!r})  # its operators, not this checkout's (which two_level put on the path)
frame = pl.read_parquet(sys.argv[1])
print(json.dumps(sorted(kept_ids(sampler(sys.argv[2], int(sys.argv[3])), frame))))
"""


def kept_by(tree: Path, method: str, budget: int, frame: pl.DataFrame) -> set[str]:
    """The selection of an older checkout (its operators on the path), in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        frame.write_parquet(Path(tmp) / "rows.parquet")
        out = subprocess.run([sys.executable, "-c", OLD.format(bench=str(Path(__file__).parent), tree=str(tree)),
                              str(Path(tmp) / "rows.parquet"), method, str(budget)],
                             cwd=tree, env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True,
                             check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def table(results: list[dict]) -> str:
    """The README table: distinct-1 / distinct-2 / coverage / entropy per variant, and the overlaps."""
    tasks = next(k for k in results[0] if k.endswith("task(s)") and not k.startswith("1 "))
    cells = ("distinct-1", "distinct-2", "cluster coverage", "cluster entropy (norm.)")
    lines = [f"| set (rows -> kept) | method | one pass, before | 1 task | {tasks} | kept by 1 and N tasks | "
             f"1 task vs before |", "|---|---|---|---|---|---:|---:|"]
    for r in results:
        variant = [" / ".join(str(r[v][c]) for c in cells) if v in r else "-"
                   for v in ("one-pass (old)", "1 task(s)", tasks)]
        lines.append(f"| {r['set']} ({r['rows']:,} -> {r['budget']:,}) | {r['method']} | {' | '.join(variant)} | "
                     f"{r['overlap']:.0%} | {r.get('overlap_old', float('nan')):.0%} |")
    return "\n".join(lines)


def main() -> None:
    from operators.diversity.metrics import ReferenceClusters, headline, diversity_metrics

    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--one-pass", type=Path, help="also an older checkout's one-pass selection (e.g. before "
                        "the samplers decided in tasks)")
    parser.add_argument("--table", action="store_true", help="print the README table from --out")
    parser.add_argument("--sets", nargs="*", help="only these sets (names as printed)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("two_level.json"))
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    results = []
    for name, (frame, budget) in datasets().items():
        if args.sets and name not in args.sets:
            continue
        reference = ReferenceClusters(frame["text"], clusters=max(budget // 5, 50), seed=7)
        for method in args.methods:
            row = {"set": name, "rows": len(frame), "budget": budget, "method": method}
            kept = {}
            for tasks in (1, args.tasks):
                op = sampler(method, budget)
                op.part_rows = -(-len(frame) // tasks)
                start = time.process_time()
                kept[tasks] = kept_ids(op, frame)
                texts = frame.filter(pl.col("id").is_in(list(kept[tasks])))["text"]
                row[f"{tasks} task(s)"] = headline(diversity_metrics(texts, reference)) | {
                    "cpu_s": round(time.process_time() - start, 1)}
            if args.one_pass:
                old = kept_by(args.one_pass, method, budget, frame)
                texts = frame.filter(pl.col("id").is_in(list(old)))["text"]
                row["one-pass (old)"] = headline(diversity_metrics(texts, reference))
                row["overlap_old"] = round(len(kept[1] & old) / max(len(old), 1), 3)
            row["overlap"] = round(len(kept[1] & kept[args.tasks]) / max(len(kept[1]), 1), 3)
            print(json.dumps(row), flush=True)
            results.append(row)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
