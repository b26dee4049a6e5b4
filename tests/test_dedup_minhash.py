"""MinHash near-duplicate dedup on real Alpaca text with planted edits: found, deterministic, accounted for."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash
from pydantic import ValidationError

from conftest import ALPACA
from operators.dedup import MinHashDedup
from operators.dedup.minhash import band_layout, signatures
from operators.dedup.shingles import key_text, shingle
from operators.errors import SluiceError
from pipelines import config
from pipelines.engine import execute


def edit(text: str, i: int, rng: random.Random) -> str:
    """A realistic near-copy: new casing, punctuation or spacing; every other copy also has 4 words replaced
    (which takes word 5-gram Jaccard well below 0.8 on these 40-120 word texts)."""
    words = text.split()
    if i % 2:
        for _ in range(4):
            words[rng.randrange(len(words))] = rng.choice(["very", "quite", "the", "some"])
    out = " ".join(words)
    return rng.choice([out.upper(), out.lower(), out.replace(",", "").replace(".", "!"), "  " + out + " \n"])


@pytest.fixture(scope="module")
def corpus(alpaca) -> pl.DataFrame:
    """3,000 real rows (text = instruction + output, 40+ words) and 300 edited copies of the first 300."""
    rows = [r for r in alpaca if 40 <= len((r["instruction"] + " " + r["output"]).split()) <= 120][:3000]
    rng = random.Random(7)
    originals = [{"id": f"a{i:05d}", "text": r["instruction"] + " " + r["output"]} for i, r in enumerate(rows)]
    copies = [{"id": f"c{i:05d}", "text": edit(o["text"], i, rng), "of": o["id"]} for i, o in enumerate(originals[:300])]
    return pl.DataFrame(originals + copies, schema={"id": pl.String, "text": pl.String, "of": pl.String})


def run(op: MinHashDedup, frame: pl.DataFrame, shards: int = 3) -> pl.DataFrame:
    """Index in `shards` pieces, decide once, as the engine does."""
    size = -(-len(frame) // shards)
    index = pl.concat([op.index(frame.slice(i, size)) for i in range(0, len(frame), size)])
    return op.decide(index).drops


def true_jaccard(corpus: pl.DataFrame, pairs: list[tuple[int, int]]) -> list[float]:
    """Exact Jaccard of the word 5-gram sets of rows a and b (positions in `corpus`)."""
    sh = shingle(key_text(corpus, ["text"]), 5)
    sets = [set(sh.hashes[a:b].tolist()) for a, b in zip(sh.offsets[:-1], sh.offsets[1:])]
    return [len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs]


def test_planted_copies_are_dropped_naming_their_original(corpus):
    drops = run(MinHashDedup(), corpus)
    planted = corpus.slice(3000).with_columns(
        pl.Series("jaccard", true_jaccard(corpus, [(3000 + i, i) for i in range(300)])))
    found = planted.join(drops, on="id", how="left")
    similar, distant = found.filter(pl.col("jaccard") >= 0.85), found.filter(pl.col("jaccard") < 0.7)
    assert len(similar) >= 140 and len(distant) >= 100  # the edits span both sides of the threshold
    assert similar["reason"].is_not_null().mean() >= 0.97  # recall above the threshold
    assert distant["reason"].is_not_null().mean() <= 0.1  # and little below it
    assert set(drops["reason"]) == {"near_duplicate"}
    hits = found.filter(pl.col("reason").is_not_null())
    assert (hits["detail"] == hits["of"]).all()  # the survivor is the original (first seen)
    assert len(drops) - len(hits) <= 10  # few drops among the 3,000 distinct originals


def test_threshold_and_char_ngrams_change_what_counts(corpus):
    verified = run(MinHashDedup(verify=True), corpus)
    assert set(verified["id"]) <= set(run(MinHashDedup(), corpus)["id"])  # verification only removes candidates
    strict = run(MinHashDedup(threshold=0.95), corpus)
    loose = run(MinHashDedup(threshold=0.6), corpus)
    small = pl.concat([corpus.head(300), corpus.slice(3000)])  # the originals of the copies, and the copies
    chars = run(MinHashDedup(unit="char", ngram=5), small)
    assert len(strict) < len(loose)
    assert chars.join(small.filter(pl.col("of").is_not_null()), on="id").height >= 140


def test_clusters_do_not_depend_on_shard_order(corpus):
    op = MinHashDedup(keep="score", score_column="score")
    scored = corpus.with_columns(pl.col("text").str.len_chars().alias("score"))
    shuffled = scored.sample(fraction=1.0, shuffle=True, seed=3)
    a = op.clusters(pl.concat([op.index(scored.slice(i, 700)) for i in range(0, len(scored), 700)]))
    b = op.clusters(pl.concat([op.index(shuffled.slice(i, 1000)) for i in range(0, len(shuffled), 1000)]))
    assert a.sort("id").equals(b.sort("id"))
    assert a.filter(pl.col("cluster_size") > 1).height >= 280


def test_keep_by_score_then_smallest_id():
    frame = pl.DataFrame({
        "id": ["b", "a", "c", "d"],
        "text": ["the quick brown fox jumps over the lazy dog again"] * 3 + ["something else entirely here now ok"],
        "quality": [0.5, 0.9, 0.9, 0.1],
    })
    op = MinHashDedup(keep="score", score_column="quality")
    clusters = op.clusters(op.index(frame))
    assert clusters["cluster"].to_list() == ["a", "a", "a", "d"]  # a and c tie on 0.9: smallest id wins
    first = MinHashDedup().clusters(MinHashDedup().index(frame))
    assert first["cluster"].to_list() == ["b", "b", "b", "d"]
    assert first["cluster_size"].to_list() == [3, 3, 3, 1]


def test_fast_signatures_estimate_jaccard_as_well_as_datasketch(corpus):
    sample = pl.concat([corpus.slice(0, 600), corpus.slice(3000)])  # originals 0-299 and their copies
    texts = key_text(sample, ["text"])
    shingles = shingle(texts, 5)
    sig = signatures(shingles, 128, seed=1)
    sets = [set(shingles.hashes[a:b].tolist()) for a, b in zip(shingles.offsets[:-1], shingles.offsets[1:])]
    reference = []
    for s in sets:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([h.to_bytes(8, "little") for h in s])
        reference.append(m)
    pairs = [(600 + i, i) for i in range(300)]  # copy, original
    pairs += [(i, i + 300) for i in range(300)]  # unrelated pairs, true Jaccard near 0
    ours, theirs = [], []
    for a, b in pairs:
        true = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
        ours.append(abs((sig[a] == sig[b]).mean() - true))
        theirs.append(abs(reference[a].jaccard(reference[b]) - true))
    assert np.mean(ours) <= np.mean(theirs) * 1.2 + 0.005
    assert np.mean(ours) < 0.04


def test_band_layout_follows_the_threshold():
    assert band_layout(0.8, 128) == (9, 13) and MinHashDedup().layout == (17, 15)  # 256 permutations
    bands, rows = band_layout(0.5, 128)
    assert rows < 13 and bands * rows <= 128
    assert MinHashDedup(bands=16, rows=8).layout == (16, 8)


def test_exact_jaccard_verification_keeps_pairs_above_the_threshold(corpus):
    exact = run(MinHashDedup(jaccard=True), corpus)
    assert set(exact["id"]) < set(run(MinHashDedup(), corpus)["id"])  # it only removes candidates, and some
    position = {i: k for k, i in enumerate(corpus["id"])}
    similarity = true_jaccard(corpus, [(position[i], position[d]) for i, d in zip(exact["id"], exact["detail"])])
    assert min(similarity) >= 0.8  # every drop is at least threshold-similar to the row it names


@pytest.mark.parametrize("params, message", [
    ({"bands": 30, "rows": 10}, "exceeds num_perm"),
    ({"bands": 4}, "give both bands and rows"),
    ({"keep": "score"}, "keep=score needs score_column"),
    ({"threshold": 1.5}, "less than 1"),
    ({"ngram": 0}, "greater than or equal to 1"),
    ({"shingle": 5}, "Extra inputs are not permitted"),
])
def test_bad_params_are_clear_errors(params, message):
    with pytest.raises(ValidationError, match=message):
        MinHashDedup(**params)


def test_awkward_rows_have_defined_outcomes():
    huge = " ".join(f"word{i}" for i in range(120_000))  # ~1 MB
    frame = pl.DataFrame({
        "id": [str(i) for i in range(10)],
        "text": ["", None, "Yes", "yes.", "!!!", huge, huge + " end", "Привет, как дела у тебя сегодня друг мой",
                 "привет как дела у тебя сегодня друг мой!", "今天天气很好我们去公园散步吧"],
    })
    op = MinHashDedup()
    index = op.index(frame)
    assert index["shingles"].to_list()[:5] == [0, 0, 1, 1, 0]  # empty, null and punctuation-only: no key
    clusters = op.clusters(index)
    assert clusters["cluster"].to_list() == ["0", "1", "2", "2", "4", "5", "5", "7", "7", "9"]
    chars = MinHashDedup(unit="char", ngram=3)
    assert chars.index(frame.slice(7))["shingles"][2] == 12  # 14 characters of Chinese -> 12 trigrams


def test_instruction_aware_keys_and_conversations():
    frame = pl.DataFrame({
        "id": ["1", "2", "3"],
        "instruction": ["Summarise the following article in three sentences please"] * 3,
        "input": ["The cat sat on the mat all day long.", "Stocks fell sharply on Monday in Tokyo.", None],
        "messages": [[{"role": "user", "content": "hi there how are you doing today my friend"}]] * 2
                    + [[{"role": "user", "content": "a completely different conversation about trains"}]],
    })
    by_instruction = MinHashDedup(fields=["instruction"])
    by_pair = MinHashDedup(fields=["instruction", "input"])
    by_chat = MinHashDedup(fields=["messages"])
    assert len(by_instruction.decide(by_instruction.index(frame)).drops) == 2
    assert len(by_pair.decide(by_pair.index(frame)).drops) == 0
    assert by_chat.decide(by_chat.index(frame)).drops["id"].to_list() == ["2"]


def test_incremental_dedup_against_an_earlier_index(corpus):
    op = MinHashDedup()
    old = corpus.slice(0, 3000)
    new = corpus.slice(3000, 300).with_columns(("n" + pl.col("id")).alias("id"))
    clusters = op.clusters(op.index(new), reference=op.index(old))
    drops = op.duplicates(clusters)
    assert len(clusters) == 300 and len(drops) >= 140
    assert (drops.join(new, on="id")["detail"] == drops.join(new, on="id")["of"]).mean() >= 0.95
    with pytest.raises(SluiceError, match="built with word5 perm256 seed1 17x15 key=text, this run uses word5 "
                                         "perm256 seed1 8x16 key=text"):
        MinHashDedup(verify=False, bands=8, rows=16).clusters(MinHashDedup(verify=False).index(new), op.index(old))


def test_yaml_pipeline_stage_balances(write_config, tmp_path):
    src = tmp_path / "rows.jsonl"
    texts = ["Write a short poem about the sea and the sky at night time"] * 3 + ["Explain how vaccines train the immune system to respond"]
    pl.DataFrame({"text": texts}).write_ndjson(src)
    path = write_config([{"path": str(src), "fields": {"text": "text"}}],
                        [{"op": "minhash_dedup", "threshold": 0.8, "ngram": 3}], shard_rows=2)
    outcome = execute(config.load(path))
    stage = outcome.ledger.stages[-1]
    assert (stage.rows_in, stage.rows_out, dict(stage.dropped)) == (4, 2, {"minhash_dedup:near_duplicate": 2})
    rejects = pl.concat(outcome.rejects)
    kept_ids = pl.concat(outcome.shards)["id"].to_list()
    assert set(rejects["detail"]) <= set(kept_ids)
