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
import sys
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


def main() -> None:
    from operators.diversity.metrics import ReferenceClusters, headline, diversity_metrics

    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--sets", nargs="*", help="only these sets (names as printed)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("two_level.json"))
    args = parser.parse_args()
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
            row["overlap"] = round(len(kept[1] & kept[args.tasks]) / max(len(kept[1]), 1), 3)
            print(json.dumps(row), flush=True)
            results.append(row)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
