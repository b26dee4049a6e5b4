"""Rebuild the bundled benchmark items from the upstream files (../shared/data/benchmarks by default).

    .venv/bin/python data/benchmarks/build.py [SOURCE_DIR]

Each benchmark becomes `<name>/items.parquet` with one row per text segment that decontamination
matches against: `item` (the benchmark's own id), `part` (which field) and `text`. The LICENSE and
SOURCE.txt of each upstream set are copied beside it. Only MIT/Apache-2.0 sets are bundled.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data" / "benchmarks"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def gsm8k(src: Path) -> list[dict]:
    rows = []
    for i, r in enumerate(_jsonl(src / "gsm8k" / "test.jsonl")):
        answer = re.sub(r"<<[^>]*>>", "", r["answer"])  # calculator annotations are not part of the text
        rows += [{"item": str(i), "part": "question", "text": r["question"]},
                 {"item": str(i), "part": "answer", "text": answer}]
    return rows


def mmlu(src: Path) -> list[dict]:
    return [{"item": f"{r['subject']}/{r['doc_id']}", "part": "question", "text": r["question"]}
            for r in _jsonl(src / "mmlu_test" / "mmlu_test_56subjects.jsonl")]


def hellaswag(src: Path) -> list[dict]:
    return [{"item": str(r["row"]), "part": "ctx+ending", "text": f"{r['ctx']} {r['endings'][int(r['label'])]}"}
            for r in _jsonl(src / "hellaswag_val" / "hellaswag_val.jsonl")]


def humaneval(src: Path) -> list[dict]:
    # the prompt (signature + docstring) only: canonical solutions are short generic loops that ordinary
    # code shares (a prime sieve matched HumanEval/96's solution on 93% of its trigrams)
    return [{"item": r["task_id"], "part": "prompt", "text": r["prompt"]}
            for r in _jsonl(src / "humaneval" / "HumanEval.jsonl")]


def truthfulqa(src: Path) -> list[dict]:
    with open(src / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as fh:
        return [{"item": str(i), "part": "question", "text": r["Question"]} for i, r in enumerate(csv.DictReader(fh))]


BUILDERS = {"gsm8k": (gsm8k, "gsm8k"), "mmlu": (mmlu, "mmlu_test"), "hellaswag": (hellaswag, "hellaswag_val"),
            "humaneval": (humaneval, "humaneval"), "truthfulqa": (truthfulqa, "truthfulqa")}


def main(source: Path) -> None:
    for name, (build, folder) in BUILDERS.items():
        out = HERE / name
        out.mkdir(exist_ok=True)
        frame = pl.DataFrame(build(source), schema={"item": pl.String, "part": pl.String, "text": pl.String})
        frame.write_parquet(out / "items.parquet", compression="zstd", compression_level=19)
        for extra in ("LICENSE", "SOURCE.txt"):
            shutil.copyfile(source / folder / extra, out / extra)
        print(f"{name}: {frame['item'].n_unique():,} items, {len(frame):,} segments -> {out / 'items.parquet'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
