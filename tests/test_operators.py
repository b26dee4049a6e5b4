"""The operator contract and the first operators, on real text."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest
from pydantic import ValidationError

from operators import all_operators, get
from operators.base import Filter, GlobalOperator, Mapper
from operators.clean import Normalize
from operators.dedup import ExactDedup
from operators.quality import LengthFilter


def alpaca_frame(alpaca: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(alpaca)
    return frame.with_columns(pl.int_range(pl.len()).cast(pl.String).alias("id"))


def test_registry_has_the_first_operators_with_their_kinds():
    ops = all_operators()
    assert issubclass(ops["normalize"], Mapper)
    assert issubclass(ops["length_filter"], Filter)
    assert issubclass(ops["exact_dedup"], GlobalOperator)
    assert get("normalize") is Normalize


def test_params_are_typed_and_validated():
    with pytest.raises(ValidationError):
        LengthFilter(min_words=-1)
    with pytest.raises(ValidationError):
        Normalize(form="NFX")
    with pytest.raises(ValidationError):
        ExactDedup(fieldz=["text"])


def test_fingerprint_follows_params_not_identity():
    assert LengthFilter(min_words=5).fingerprint == LengthFilter(min_words=5).fingerprint
    assert LengthFilter(min_words=5).fingerprint != LengthFilter(min_words=6).fingerprint
    assert LengthFilter().fingerprint != Normalize().fingerprint


def test_normalize_composes_unicode_and_tidies_whitespace():
    decomposed = unicodedata.normalize("NFD", "Café au lait, naïve")
    batch = pl.DataFrame({"id": ["a", "b"], "text": [
        f"  {decomposed}\u00a0\t here\r\n\r\n\r\n\r\nnext   line \x00\n",
        "one\u2003two\nthree \n four",
    ]})
    out = Normalize().map(batch)
    assert out["text"].to_list() == ["Café au lait, naïve here\n\nnext line", "one two\nthree\nfour"]
    assert out["text"][0] == unicodedata.normalize("NFC", out["text"][0])


def test_normalize_is_idempotent_on_real_text(alpaca):
    batch = alpaca_frame(alpaca[:5000]).rename({"output": "text"})
    once = Normalize().map(batch)
    assert once.equals(Normalize().map(once))
    changed = (once["text"] != batch["text"]).sum()
    assert 0 < changed < len(batch)  # real data has stray spaces; most rows are already tidy


def _plain_words(text: str) -> int:
    """Runs of non-space characters, each Chinese/Japanese/Thai/... character a word of its own."""
    count, in_word = 0, False
    for ch in text:
        unspaced = unicodedata.name(ch, "").split(" ")[0] in {"CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER",
                                                               "MYANMAR"}
        count += unspaced or (not ch.isspace() and not in_word)
        in_word = not ch.isspace() and not unspaced
    return count


def test_length_filter_scores_then_rejects_with_reasons(alpaca):
    batch = alpaca_frame(alpaca).rename({"output": "text"})
    kept, rejected = LengthFilter(min_words=3, max_words=300).process(batch)
    words = [_plain_words(r["output"]) for r in alpaca]
    assert sum(w != len(r["output"].split()) for w, r in zip(words, alpaca)) >= 7  # Alpaca's CJK outputs
    assert len(kept) == sum(3 <= w <= 300 for w in words)
    assert len(kept) + len(rejected) == len(batch)
    reasons = dict(rejected.group_by("reason").len().iter_rows())
    assert reasons == {"too_few_words": sum(w < 3 for w in words), "too_many_words": sum(w > 300 for w in words)}
    assert kept["score_words_text"].to_list() == [w for w in words if 3 <= w <= 300]


def test_exact_dedup_matches_a_plain_python_count(alpaca):
    batch = alpaca_frame(alpaca)
    op = ExactDedup(fields=["output"], normalize=False)
    drops = op.decide(op.index(batch))
    seen, expected = {}, {}
    for i, r in enumerate(alpaca):
        key = r["output"]
        if key in seen:
            expected[str(i)] = seen[key]
        else:
            seen[key] = str(i)
    assert dict(zip(drops["id"], drops["detail"])) == expected
    assert len(expected) == 1159 and set(drops["reason"]) == {"duplicate"}  # Alpaca repeats some answers
    assert drops["id"].to_list() == sorted(expected, key=int)  # in input order
    index = op.index(batch).lazy()
    assert op.partitions(3_000_000) == 3  # as the engine splits a bigger index: each part its keys, same drops
    parts = [op.decide_part(index, k, 3_000_000) for k in range(3)]
    assert all(len(p) for p in parts) and dict(zip(*pl.concat(parts).select("id", "detail"))) == expected


def test_exact_dedup_normalisation_catches_more_and_only_true_matches(alpaca):
    batch = alpaca_frame(alpaca)
    raw = ExactDedup(fields=["output"], normalize=False)
    norm = ExactDedup(fields=["output"])
    raw_drops, norm_drops = raw.decide(raw.index(batch)), norm.decide(norm.index(batch))
    assert set(raw_drops["id"]) < set(norm_drops["id"])

    def key(i: str) -> str:
        r = alpaca[int(i)]
        strip = lambda s: " ".join("".join(c if unicodedata.category(c)[0] not in "PS" else " " for c in unicodedata.normalize("NFKC", s).lower()).split())
        return strip(r["output"])

    for dropped, survivor in zip(norm_drops["id"], norm_drops["detail"]):
        assert key(dropped) == key(survivor) and int(survivor) < int(dropped)


def test_exact_dedup_key_fields_do_not_run_together():
    batch = pl.DataFrame({"id": ["1", "2"], "a": ["ab", "a"], "b": ["c", "bc"]})
    op = ExactDedup(fields=["a", "b"], normalize=False)
    assert len(op.decide(op.index(batch))) == 0
