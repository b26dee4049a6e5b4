"""Diversity metrics on hand-checkable inputs and real instructions, and the `sluice sample` verb."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from conftest import ALPACA, GSM8K
from operators.diversity.metrics import (ReferenceClusters, _rouge_l, cluster_diversity, distinct_n,
                                         diversity_metrics, pairwise_similarity, verb_object_coverage)


@pytest.fixture(scope="module")
def instructions(alpaca) -> list[str]:
    return [r["instruction"] for r in alpaca[:4000]]


def test_distinct_n_by_hand():
    assert distinct_n(["a b a b", None, ""]) == {"distinct_1": 0.5, "distinct_2": round(2 / 3, 4)}
    assert distinct_n(["The cat.", "the CAT!"], n=(1, 2, 3)) == {"distinct_1": 0.5, "distinct_2": 0.5, "distinct_3": 0.0}


def test_distinct_n_at_equal_words_removes_the_length_bias(instructions):
    short, long_ = instructions[:1000], [t + " " + t for t in instructions[:1000]]
    assert distinct_n(long_)["distinct_1"] < distinct_n(short)["distinct_1"]  # raw: length penalised
    capped = distinct_n(short, max_words=5000)
    assert capped["distinct_1"] > distinct_n(short)["distinct_1"]  # fewer words, fewer repeats
    assert distinct_n(["a b a", "a b a b a b"], max_words=2) == {"distinct_1": round(2 / 3, 4), "distinct_2": 1.0}


def _lcs(x, y):
    table = np.zeros((len(x) + 1, len(y) + 1), dtype=int)
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            table[i + 1, j + 1] = table[i, j] + 1 if a == b else max(table[i, j + 1], table[i + 1, j])
    return table[-1, -1]


def test_bit_parallel_rouge_l_matches_dynamic_programming(instructions):
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = (instructions[i].lower().split() for i in rng.integers(0, len(instructions), 2))
        vocab = {w: i for i, w in enumerate(sorted(set(x) | set(y)))}
        xi, yi = [vocab[w] for w in x], [vocab[w] for w in y]
        assert _rouge_l(xi, yi) == pytest.approx(2 * _lcs(xi, yi) / (len(xi) + len(yi)))


def test_pairwise_similarity_separates_copies_from_distinct_texts(instructions):
    copies = pairwise_similarity([instructions[0]] * 50, pairs=100)
    assert copies["rouge_l"]["mean"] == 1.0 and copies["jaccard"]["above_0.7"] == 1.0
    real = pairwise_similarity(instructions, pairs=500)
    assert real["rouge_l"]["mean"] < 0.2 and sum(real["rouge_l"]["histogram"]) == 500
    assert len(real["jaccard"]["bin_edges"]) == 11 and pairwise_similarity(["one"]) == {"pairs": 0}


def test_verb_object_parser_on_typical_instructions():
    result = verb_object_coverage([
        "Write a poem about cats.",
        "Given the following sentence, rewrite the sentence in passive voice.",
        "Please generate a list of five fruits.",
        "What is the capital of France?",
        "Classify the following animals: dog, eagle.",
    ])
    pairs = {(v, o) for v, o, _ in result["top_verb_objects"]}
    assert pairs == {("write", "poem"), ("rewrite", "sentence"), ("generate", "fruits"), ("classify", "animals")}
    assert result["with_verb"] == 0.8 and result["unique_verbs"] == 4


def test_verb_object_coverage_on_alpaca_matches_the_self_instruct_picture(instructions):
    result = verb_object_coverage(instructions)
    top = [v for v, _ in result["top_verbs"][:8]]
    assert {"generate", "create", "write", "describe"} <= set(top)
    assert 0.7 < result["with_verb_object"] < 0.95 and result["unique_verb_objects"] > 1000


def test_cluster_diversity_sees_a_narrow_subset(instructions):
    reference = ReferenceClusters(instructions, clusters=50, seed=0)
    narrow = [t for t in instructions if t.lower().startswith("rewrite")][:100]
    broad = instructions[:100]
    n, b = cluster_diversity(narrow, reference), cluster_diversity(broad, reference)
    assert n["coverage"] < b["coverage"] / 2 and n["entropy"] < b["entropy"]
    assert b["clusters"] == 50 and 0 < b["entropy_normalized"] <= 1


def test_diversity_metrics_bundle(instructions):
    result = diversity_metrics(instructions[:500], instructions=instructions[:500], clusters=20, pairs=200)
    assert set(result) == {"rows", "distinct_1", "distinct_2", "cluster", "pairwise", "verb_object"}
    json.dumps(result)  # JSON-ready for the release report


def test_sample_cli_writes_budget_rows_and_rejects(tmp_path, alpaca, sluice):
    src = tmp_path / "alpaca.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in alpaca[:1500]) + "\n")
    out = tmp_path / "picked.parquet"
    code, stdout, _ = sluice("sample", src, out, "--text-field", "instruction,input", "--budget", 100, "--report")
    assert code == 0
    kept, rejects = pl.read_parquet(out), pl.read_parquet(tmp_path / "picked.rejects.parquet")
    assert len(kept) == 100 and len(rejects) == 1400 and {"instruction", "input", "output", "source"} <= set(kept.columns)
    assert rejects["reason"].unique().to_list() == ["cluster_sample:not_selected"]
    assert "cluster_sample:not_selected 1,400" in stdout and "distinct-2" in stdout and "cluster coverage" in stdout

    dsir = tmp_path / "math.parquet"
    code, stdout, _ = sluice("sample", src, dsir, "--text-field", "instruction,input", "--budget", 50,
                             "--method", "dsir", "--target", GSM8K, "--target-field", "question")
    assert code == 0 and len(pl.read_parquet(dsir)) == 50


def test_sample_cli_usage_errors_exit_2(tmp_path, sluice):
    out = tmp_path / "o.parquet"
    code, _, err = sluice("sample", ALPACA, out, "--method", "dsir", "--budget", 5)
    assert code == 2 and "--method dsir needs --target FILE" in err
    code, _, err = sluice("sample", ALPACA, out, "--method", "random", "--budget", 5, "--score-col", "x")
    assert code == 2 and "--score-col applies to --method cluster or deita" in err
    code, _, err = sluice("sample", ALPACA, out, "--method", "cluster", "--budget", 0)
    assert code == 2 and "budget" in err
