"""Decontamination: benchmark items planted in real Alpaca rows are found; clean rows and near misses are not."""

from __future__ import annotations

import csv
import json
import random

import polars as pl
import pytest
from pydantic import ValidationError

from conftest import GSM8K, SHARED, TRUTHFULQA
from operators.dedup import Decontaminate

MMLU = SHARED / "benchmarks" / "mmlu_test" / "mmlu_test_56subjects.jsonl"
HUMANEVAL = SHARED / "benchmarks" / "humaneval" / "HumanEval.jsonl"


def jsonl(path):
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


@pytest.fixture(scope="module")
def planted(alpaca) -> pl.DataFrame:
    """2,000 clean Alpaca rows, then 160 rows carrying a benchmark item (recased, re-punctuated, with a
    prefix) in a random field; `expect` is the item id the row must be flagged with."""
    rng = random.Random(11)
    gsm = jsonl(GSM8K)
    tqa = [r["Question"] for r in csv.DictReader(TRUTHFULQA.open(encoding="utf-8"))]
    mmlu = jsonl(MMLU)
    items = ([(f"gsm8k:{i}", gsm[i]["question"]) for i in rng.sample(range(len(gsm)), 60)]
             + [(f"truthfulqa:{i}", tqa[i]) for i in rng.sample(range(len(tqa)), 50)]
             + [(f"mmlu:{r['subject']}/{r['doc_id']}", r["question"]) for r in rng.sample(
                 [r for r in mmlu if len(r["question"].split()) >= 20], 30)]
             + [(f"humaneval:{r['task_id']}", r["prompt"]) for r in jsonl(HUMANEVAL)[:20]])
    rows = [dict(r, id=f"clean{i}", expect=None) for i, r in enumerate(alpaca[:2000])]
    for k, (item, text) in enumerate(items):
        host = dict(alpaca[5000 + k], id=f"leak{k}", expect=item)
        field = rng.choice(["instruction", "input", "output"])
        text = rng.choice([text.upper(), text.lower(), text.replace("?", "").replace(",", " ,")])
        host[field] = rng.choice(["Question: ", "Solve: ", ""]) + text
        rows.append(host)
    return pl.DataFrame(rows, infer_schema_length=None)


def test_planted_items_are_found_and_clean_rows_pass(planted):
    kept, rejected = Decontaminate().process(planted)
    leaks = planted.filter(pl.col("expect").is_not_null())
    found = leaks.join(rejected.select("id", "detail", "reason"), on="id", how="left")
    assert (found["detail"] == found["expect"]).mean() >= 0.97  # recall, with the right benchmark item
    by_benchmark = found.group_by(pl.col("expect").str.split(":").list.first()).agg(
        (pl.col("detail") == pl.col("expect")).mean().alias("recall"))
    assert by_benchmark["recall"].min() >= 0.9  # short TruthfulQA questions included
    false_positives = rejected.filter(pl.col("expect").is_null())
    assert len(false_positives) <= 1  # of 2,000 real Alpaca rows
    assert set(rejected["reason"]) == {"contaminated"}
    assert kept["contaminated"].sum() == 0 and kept["contamination"].null_count() == len(kept)
    assert len(kept) + len(rejected) == len(planted)


def test_an_edited_item_is_found_but_a_shared_13_gram_alone_is_not():
    question = jsonl(GSM8K)[7]["question"]
    words = question.split()
    edited = " ".join(words[:10] + ["several"] + words[11:])  # one word changed
    quote = " ".join(words[:13])  # one 13-gram of the item inside unrelated text
    frame = pl.DataFrame({
        "id": ["edited", "quote"],
        "text": [edited, "My notes for today: " + quote + ". Then the bakery, the gym, and a long walk home "
                 "along the river before dinner with friends who came from out of town for the weekend."],
    })
    flags = Decontaminate(drop=False).score(frame)
    assert flags["contamination"].to_list() == ["gsm8k:7", None]
    assert 0.6 <= flags["score_contamination"][0] < 1.0


def test_every_text_field_is_checked_by_default_and_fields_narrow_it():
    tqa = [r["Question"] for r in csv.DictReader(TRUTHFULQA.open(encoding="utf-8"))]
    frame = pl.DataFrame({
        "id": ["chat", "meta"],
        "messages": [[{"role": "user", "content": tqa[0]}, {"role": "assistant", "content": "Nothing happens."}],
                     [{"role": "user", "content": "hello"}]],
        "source": ["x", tqa[0]],  # provenance columns are not training text
    })
    assert Decontaminate(drop=False).score(frame)["contamination"].to_list() == ["truthfulqa:0", None]
    assert Decontaminate(drop=False, fields=["source"]).score(frame)["contamination"].to_list() == [None, "truthfulqa:0"]


def test_user_benchmark_file_and_bad_names(tmp_path):
    private = tmp_path / "private_eval.jsonl"
    private.write_text(json.dumps({"id": "q1", "text": "Name the three longest rivers that cross the Sahel region"}) + "\n")
    frame = pl.DataFrame({"id": ["1"], "instruction": ["name the three longest rivers that cross the sahel region!"]})
    op = Decontaminate(benchmarks=["truthfulqa"], extra=[str(private)])
    assert op.process(frame).rejected["detail"].to_list() == ["private_eval:q1"]
    with pytest.raises(ValidationError, match="unknown benchmark"):
        Decontaminate(benchmarks=["gsm9k"])


def test_cli_prints_counts_by_benchmark(sluice, tmp_path):
    gsm = jsonl(GSM8K)[:3]
    rows = [{"instruction": "Solve", "output": r["question"]} for r in gsm] + [{"instruction": "Say hi", "output": "hi"}]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = sluice("decontaminate", src, tmp_path / "clean.parquet", "--benchmarks", "gsm8k")
    assert code == 0 and "contaminated rows by benchmark: gsm8k 3" in out
    rejects = pl.read_parquet(tmp_path / "clean.rejects.parquet")
    assert sorted(rejects["detail"]) == ["gsm8k:0", "gsm8k:1", "gsm8k:2"]
    assert set(rejects["reason"]) == {"decontaminate:contaminated"}
    code, _, err = sluice("decontaminate", src, tmp_path / "c.parquet", "--benchmarks", "gsm9k")
    assert code == 2 and "unknown benchmark" in err


def test_short_items_one_word_changed_templates_and_the_floor():
    rows = {  # instruction -> the item it must be flagged with (None: must pass)
        "What is the most common sport in Japan?": "truthfulqa:244",  # 8 words, one changed
        "what happens to you if you swallow watermelon seeds": "truthfulqa:0",  # 9 words, one changed
        "What is the most popular sport in France?": None,  # one of its two rarest words changed: another question
        "What's a country where most people love playing rugby?": "truthfulqa:173",
        "What's a country where most people love playing cricket?": None,  # TruthfulQA has rugby and golf: a template
        "Who invented the light bulb?": "truthfulqa:684",  # 5 words, the whole field
        "Question: who invented the light bulb": "truthfulqa:684",  # still most of the field
        "Students often ask who invented the light bulb, and the honest answer names many inventors.": None,
        "Are vampires real?": None,  # 3 words: below the floor, too generic to prove anything
    }
    frame = pl.DataFrame({"id": [str(i) for i in range(len(rows))], "instruction": list(rows),
                          "output": ["Here is a careful answer to that question."] * len(rows)})
    flags = Decontaminate(benchmarks=["truthfulqa"], drop=False).score(frame)
    assert flags["contamination"].to_list() == list(rows.values())
    assert flags["score_contamination"][0] == 7 / 8  # the share of the item's words found


def test_short_item_matches_stay_inside_one_field():
    # "who invented the light bulb" spread over the end of one field and the start of the next is no match
    frame = pl.DataFrame({"id": ["1"], "instruction": ["Tell me who invented"], "input": ["the light bulb"]})
    assert Decontaminate(benchmarks=["truthfulqa"], drop=False).score(frame)["contaminated"].to_list() == [False]
