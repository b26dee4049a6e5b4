"""Decontamination recall on planted benchmark items and false positives on the clean Alpaca rows.

    .venv/bin/python bench/dedup/decontam.py [--per-benchmark 200]

Every clean Alpaca record (52,002) plus, per benchmark, N records whose instruction, input or output was
replaced by a test item (from ../shared/data/benchmarks, the upstream files) in one of four forms:
verbatim, recased/re-punctuated, behind a prefix, or with one word changed. Recall is per benchmark and
form; the false-positive rate counts flagged clean rows (each is printed so it can be judged by eye).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import polars as pl

from operators.clean.normalize import for_matching
from operators.dedup import Decontaminate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
BENCH = SHARED / "benchmarks"
FORMS = ["verbatim", "recased", "prefixed", "one_word_changed"]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def items() -> dict[str, list[tuple[str, str]]]:
    tqa = list(csv.DictReader((BENCH / "truthfulqa" / "TruthfulQA.csv").open(encoding="utf-8")))
    return {
        "gsm8k": [(str(i), r["question"]) for i, r in enumerate(jsonl(BENCH / "gsm8k" / "test.jsonl"))],
        "mmlu": [(f"{r['subject']}/{r['doc_id']}", r["question"])
                 for r in jsonl(BENCH / "mmlu_test" / "mmlu_test_56subjects.jsonl")],
        "hellaswag": [(str(r["row"]), f"{r['ctx']} {r['endings'][int(r['label'])]}")
                      for r in jsonl(BENCH / "hellaswag_val" / "hellaswag_val.jsonl")],
        "humaneval": [(r["task_id"], r["prompt"]) for r in jsonl(BENCH / "humaneval" / "HumanEval.jsonl")],
        "truthfulqa": [(str(i), r["Question"]) for i, r in enumerate(tqa)],
    }


def variant(text: str, form: str, rng: random.Random) -> str:
    if form == "recased":
        return rng.choice([text.upper(), text.lower()]).replace("?", "").replace(",", " ,")
    if form == "prefixed":
        return rng.choice(["Question: ", "Please solve the following. ", "Q: "]) + text
    if form == "one_word_changed":
        words = text.split(" ")
        words[rng.randrange(len(words))] = "something"
        return " ".join(words)
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-benchmark", type=int, default=200)
    parser.add_argument("--show-misses", action="store_true", help="print every missed planted row")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=INT",
                        help="an integer parameter of decontaminate, e.g. typo_words=9 (default: the defaults)")
    args = parser.parse_args()
    params = {k: int(v) for k, v in (a.split("=") for a in args.set)}
    rng = random.Random(5)
    alpaca = json.loads((SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json").read_text())
    rows = [dict(r, id=f"clean{i}", expect=None, form=None, item=None) for i, r in enumerate(alpaca)]
    for name, pool in items().items():
        for k, (item, text) in enumerate(rng.sample(pool, min(args.per_benchmark, len(pool)))):
            host = dict(rng.choice(alpaca), id=f"{name}-{k}", expect=f"{name}:{item}", form=FORMS[k % 4], item=text)
            host[rng.choice(["instruction", "input", "output"])] = variant(text, host["form"], rng)
            rows.append(host)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    start = time.perf_counter()
    flags = Decontaminate(drop=False, **params).score(frame.drop("expect", "form", "item"))
    seconds = time.perf_counter() - start
    result = frame.select("id", "expect", "form", "item").join(flags.select("id", "contamination"), on="id")
    planted = result.filter(pl.col("expect").is_not_null()).with_columns(
        (pl.col("contamination") == pl.col("expect")).fill_null(False).alias("hit"),
        pl.col("expect").str.split(":").list.first().alias("benchmark"),
        pl.col("contamination").str.split(":").list.first().alias("flagged_as"))
    table = planted.group_by("benchmark").agg(
        pl.len().alias("planted"), *[pl.col("hit").filter(pl.col("form") == f).mean().alias(f) for f in FORMS],
        pl.col("hit").mean().alias("all"), (pl.col("flagged_as") == pl.col("benchmark")).fill_null(False).mean()
        .alias("any_item")).sort("benchmark")
    clean = result.filter(pl.col("expect").is_null())
    flagged = clean.filter(pl.col("contamination").is_not_null())
    print(f"{len(frame):,} rows ({len(clean):,} clean Alpaca, {len(planted):,} planted) in {seconds:.1f} s "
          f"(index built once, included) = {len(frame) / seconds:,.0f} rows/s\n")
    print("recall: flagged with the planted item's id, by form; any_item: flagged with any item of that benchmark "
          "(benchmarks repeat some items under other ids)\n")
    print("| benchmark | planted | " + " | ".join(FORMS) + " | all | any_item |")
    print("|---|---|" + "---|" * (len(FORMS) + 2))
    for r in table.iter_rows(named=True):
        print(f"| {r['benchmark']} | {r['planted']} | " + " | ".join(f"{r[f]:.2f}" for f in FORMS)
              + f" | {r['all']:.3f} | {r['any_item']:.3f} |")
    print(f"\nfalse positives on clean Alpaca rows: {len(flagged)} / {len(clean):,} = {len(flagged) / len(clean):.5%}")
    for r in flagged.join(frame.select("id", "instruction", "input"), on="id").iter_rows(named=True):
        print(f"  {r['id']} -> {r['contamination']}: {(r['instruction'] + ' ' + r['input'])[:140]!r}")
    print_misses(planted)
    if args.show_misses:
        for r in planted.filter(~pl.col("hit")).sort("expect").iter_rows(named=True):
            print(f"  {r['form']:>16} {r['expect']} -> {r['contamination']}: {r['item'][:90]!r}")


def print_misses(planted: pl.DataFrame) -> None:
    """Misses by the planted item's length in normalised words (the rules differ by length)."""
    words = for_matching(pl.col("item")).str.split(" ").list.len()
    length = (pl.when(words < 4).then(pl.lit("1-3")).when(words < 6).then(pl.lit("4-5"))
              .when(words < 7).then(pl.lit("6")).when(words < 13).then(pl.lit("7-12")).otherwise(pl.lit("13+")))
    table = (planted.with_columns(length.alias("words"))
             .group_by("words", "form").agg(pl.len().alias("planted"), (~pl.col("hit")).sum().alias("missed"))
             .sort("words", "form"))
    print("\nmisses by item length (normalised words) and form:\n")
    print("| item words | form | planted | missed |\n|---|---|---|---|")
    for r in table.filter(pl.col("missed") > 0).iter_rows(named=True):
        print(f"| {r['words']} | {r['form']} | {r['planted']} | {r['missed']} |")


if __name__ == "__main__":
    main()
