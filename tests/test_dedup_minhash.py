"""MinHash near-duplicate dedup on real text with planted edits (Alpaca, web pages, Chinese/Japanese/Thai
sentences): found, verified, deterministic, accounted for."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash
from pydantic import ValidationError

import json

from conftest import ALPACA, DCLM, SHARED
from operators.dedup import MinHashDedup
from operators.dedup.minhash import band_layout, overlap, signatures, sketches
from operators.dedup.shingles import key_text, shingle
from operators.errors import SluiceError
from pipelines import config
from pipelines.cache import ShardCache
from pipelines.config import Stage
from pipelines.engine import execute, run_stages
from pipelines.readers import Source


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


def true_similarity(corpus: pl.DataFrame, pairs: list[tuple[int, int]], n: int = 2) -> list[tuple[float, float]]:
    """Exact Jaccard and containment (shared over the smaller set) of the word n-gram sets of rows a and b
    (positions in `corpus`), with Python sets."""
    sh = shingle(key_text(corpus, ["text"]), n)
    sets = [set(sh.hashes[a:b].tolist()) for a, b in zip(sh.offsets[:-1], sh.offsets[1:])]
    return [(len(sets[a] & sets[b]) / len(sets[a] | sets[b]), len(sets[a] & sets[b]) / min(len(sets[a]), len(sets[b])))
            for a, b in pairs]


def test_planted_copies_are_dropped_naming_their_original(corpus):
    drops = run(MinHashDedup(), corpus)
    found = corpus.slice(3000).join(drops, on="id", how="left")
    assert found["reason"].is_not_null().mean() >= 0.97  # 4 words replaced in 40-120 is still a near-copy
    assert set(drops["reason"]) == {"near_duplicate"}
    hits = found.filter(pl.col("reason").is_not_null())
    assert (hits["detail"] == hits["of"]).all()  # the survivor is the original (first seen)
    assert len(drops) - len(hits) <= 10  # few drops among the 3,000 distinct originals
    position = {i: k for k, i in enumerate(corpus["id"])}
    similarity = true_similarity(corpus, [(position[i], position[d]) for i, d in zip(drops["id"], drops["detail"])])
    assert all(j >= 0.6 or c >= 0.9 for j, c in similarity)  # verified: each drop is that close to its survivor


def test_threshold_and_char_ngrams_change_what_counts(corpus):
    verified = run(MinHashDedup(verify=True), corpus)
    assert set(verified["id"]) <= set(run(MinHashDedup(), corpus)["id"])  # verification only removes candidates
    strict = run(MinHashDedup(threshold=0.95), corpus)
    loose = run(MinHashDedup(threshold=0.6), corpus)
    small = pl.concat([corpus.head(300), corpus.slice(3000)])  # the originals of the copies, and the copies
    chars = run(MinHashDedup(unit="char", ngram=5), small)
    assert len(strict) < len(loose)
    assert chars.join(small.filter(pl.col("of").is_not_null()), on="id").height >= 140


def test_clusters_do_not_depend_on_shard_order_or_decide_tasks(corpus):
    op = MinHashDedup(keep="score", score_column="score")
    scored = corpus.with_columns(pl.col("text").str.len_chars().alias("score"))
    shuffled = scored.sample(fraction=1.0, shuffle=True, seed=3)
    a = op.clusters(pl.concat([op.index(scored.slice(i, 700)) for i in range(0, len(scored), 700)]))
    shuffled_index = pl.concat([op.index(shuffled.slice(i, 1000)) for i in range(0, len(shuffled), 1000)])
    b = op.clusters(shuffled_index)
    c = MinHashDedup(keep="score", score_column="score", decide_tasks=4).clusters(shuffled_index)
    assert a.sort("id").equals(b.sort("id")) and a.sort("id").equals(c.sort("id"))
    assert a.filter(pl.col("cluster_size") > 1).height >= 280


def test_the_engine_decides_in_tasks_over_the_index_files(corpus, tmp_path):
    """With a shard cache each shard's index is a file; the decide parts are cached tasks that scan those
    files and the driver combines their clusters: the same drops as deciding on the whole index at once,
    and a re-run reuses every index, part and apply result."""
    path = tmp_path / "rows.parquet"
    corpus.select("id", "text").write_parquet(path)
    source = Source(path, "parquet", {"text": "text"}, source="rows", configured=False)
    op = MinHashDedup(decide_tasks=3)
    cache = ShardCache(tmp_path / "cache")
    outcome = run_stages([source], [Stage("dedup", op)], 1_000, cache=cache)
    assert len(outcome.parts) == 4 and outcome.computed == 4 + 4 + 3 + 4  # read, index, decide parts, apply
    dropped = pl.concat(outcome.rejects)
    whole = op.decide(op.index(corpus))
    assert dropped.select("id", "detail").sort("id").equals(whole.drops.select("id", "detail").sort("id"))
    assert len(dropped) >= 290 and set(dropped["reason"]) == {"dedup:near_duplicate"}
    again = run_stages([source], [Stage("dedup", op)], 1_000, cache=cache)
    assert again.computed == 0 and pl.concat(again.rejects).equals(dropped)


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
    assert band_layout(0.8, 128) == (9, 13)
    assert MinHashDedup().layout == band_layout(0.5, 128)  # verified candidates: LSH tuned 0.1 below 0.6
    assert MinHashDedup(jaccard=False).layout == band_layout(0.6, 128)
    bands, rows = band_layout(0.5, 128)
    assert rows < 13 and bands * rows <= 128
    assert MinHashDedup(bands=16, rows=8).layout == (16, 8)


def test_jaccard_verification_keeps_pairs_above_the_threshold(corpus):
    verified = run(MinHashDedup(), corpus)
    unverified = run(MinHashDedup(jaccard=False, lsh_threshold=0.5), corpus)  # the same candidates
    assert set(verified["id"]) < set(unverified["id"])  # it only removes candidates, and some
    position = {i: k for k, i in enumerate(corpus["id"])}
    loose = true_similarity(corpus, [(position[i], position[d]) for i, d in zip(unverified["id"], unverified["detail"])])
    assert min(j for j, _ in loose) < 0.5  # unverified LSH lets distant pairs through


def test_sketches_give_exact_similarity_for_short_rows_and_close_estimates_for_long(corpus):
    web = pl.DataFrame({"text": [json.loads(line)["text"] for line in DCLM.open()][:200]})
    docs = pl.concat([corpus.select("text").head(200), web])
    words = docs["text"].str.split(" ")
    edited = docs.with_columns(pl.Series([" ".join(w[: int(len(w) * 0.8)]) for w in words.to_list()]).alias("text"))
    both = pl.concat([docs, edited])  # row i and row 400 + i: a copy with its last 20% of words cut
    sh = shingle(key_text(both, ["text"]), 2)
    sketch, sizes = sketches(sh, 64)
    values = sketch.explode().drop_nulls().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(sketch.list.len().to_numpy())])
    src, dst = np.arange(400), np.arange(400, 800)
    jaccard, contained = overlap(values, offsets, sizes, 64, src, dst)
    truth = np.array(true_similarity(both, list(zip(src.tolist(), dst.tolist()))))
    short = (sizes[src] <= 64) & (sizes[dst] <= 64)
    assert short.sum() >= 100 and (~short).sum() >= 150
    assert np.allclose(jaccard[short], truth[short, 0]) and np.allclose(contained[short], truth[short, 1])
    assert np.abs(jaccard[~short] - truth[~short, 0]).mean() < 0.04  # bottom-64 estimate
    assert (contained[~short] > 0.85).mean() > 0.9  # a truncated copy is contained in its original


def lingua_passages(lang: str, count: int = 30) -> list[str]:
    sentences = [s.strip() for s in (SHARED / "langid" / "lingua" / "sentences" / f"{lang}.txt").open() if s.strip()]
    joiner = " " if lang == "th" else ""
    return [joiner.join(sentences[3 * i: 3 * i + 3]) for i in range(count)]


@pytest.mark.parametrize("lang", ["zh", "ja", "th"])
def test_scripts_without_spaces_are_compared_by_characters(lang):
    """Real Chinese, Japanese and Thai passages (3 lingua sentences) and copies with two characters replaced:
    found by default; as whitespace words (a Chinese clause is one 'word') many are not."""
    rng = random.Random(3)
    originals = lingua_passages(lang)
    copies = []
    for text in originals:
        chars = list(text)
        for i in rng.sample(range(len(chars)), 2):
            chars[i] = "の" if lang == "ja" else "的" if lang == "zh" else "ก"
        copies.append("".join(chars))
    frame = pl.DataFrame({"id": [f"o{i}" for i in range(30)] + [f"c{i}" for i in range(30)], "text": originals + copies})
    found = run(MinHashDedup(), frame, shards=2)
    assert found.filter(pl.col("id").str.starts_with("c")).height >= 28
    assert (found["detail"] == found["id"].str.replace("c", "o")).all()  # each copy names its own original
    if lang != "th":  # Thai puts spaces between phrases; Chinese and Japanese only between clauses (punctuation)
        assert run(MinHashDedup(unit="word"), frame, shards=2).height <= 20


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
    assert op.index(frame.head(2))["shingles"].to_list() == [0, 0]  # a shard without a single shingle
    index = op.index(frame)
    assert index["shingles"].to_list()[:5] == [0, 0, 1, 1, 0]  # empty, null and punctuation-only: no key
    clusters = op.clusters(index)
    assert clusters["cluster"].to_list() == ["0", "1", "2", "2", "4", "5", "5", "7", "7", "9"]
    chars = MinHashDedup(unit="char", ngram=3)
    assert chars.index(frame.slice(7))["shingles"][2] == 12  # 14 characters of Chinese -> 12 trigrams
    assert index["shingles"][9] == 13  # by default each Chinese character is a token: 13 bigrams


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
    assert by_pair.decide(by_pair.index(frame)).drops["id"].to_list() == ["3"]  # contained in row 1's key
    assert len(MinHashDedup(fields=["instruction", "input"], containment=None).decide(by_pair.index(frame)).drops) == 0
    assert by_chat.decide(by_chat.index(frame)).drops["id"].to_list() == ["2"]


def test_incremental_dedup_against_an_earlier_index(corpus):
    op = MinHashDedup()
    old = corpus.slice(0, 3000)
    new = corpus.slice(3000, 300).with_columns(("n" + pl.col("id")).alias("id"))
    clusters = op.clusters(op.index(new), reference=op.index(old))
    drops = op.duplicates(clusters)
    assert len(clusters) == 300 and len(drops) >= 140
    assert (drops.join(new, on="id")["detail"] == drops.join(new, on="id")["of"]).mean() >= 0.95
    with pytest.raises(SluiceError, match="built with auto2 perm128 seed1 25x5 key=text, this run uses auto2 "
                                         "perm128 seed1 8x16 key=text"):
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


def test_copies_that_only_match_their_original_join_its_cluster(alpaca, monkeypatch):
    """Short rows and copies of each with one word replaced: a copy verifies against its original (bigram
    Jaccard ~0.64) but not against another copy (~0.38). Rows left in small clusters after the first pass are
    compared with every row of their buckets, so fewer copies are split off when the original is neither
    their bucket's first row nor the row before them, and no cluster mixes two originals that did not before."""
    texts = [r["instruction"].rstrip(".") for r in alpaca if len(r["instruction"].split()) == 10][:150]
    rows = []
    for k, text in enumerate(texts):
        words = text.split()
        rows.append({"id": f"z{k:03d}", "text": text})  # the original sorts after its copies
        rows += [{"id": f"c{k:03d}-{i}", "text": " ".join(words[:i] + ["zebra"] + words[i + 1:])} for i in range(1, 9)]
    frame = pl.DataFrame(rows)

    def clusters() -> pl.DataFrame:
        found = MinHashDedup().clusters(MinHashDedup().index(frame))
        return found.with_columns(pl.col("id").str.slice(1, 3).alias("origin"))

    with_pass = clusters()
    monkeypatch.setattr("operators.dedup.minhash.SMALL_CLUSTER", 0)  # without the second pass
    without = clusters()
    mixed = lambda found: found.group_by("cluster").agg(pl.col("origin").n_unique()).filter(pl.col("origin") > 1)
    assert with_pass["cluster"].n_unique() < without["cluster"].n_unique() - 5
    assert len(mixed(with_pass)) == len(mixed(without)) <= 1  # two originals alike enough to be one cluster
