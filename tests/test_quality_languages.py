"""Quality rules in every language: one notion of words and sentences per script, per-language calibration,
rows no rule may judge counted as not_calibrated, `languages:` on a stage, rows and drops per language."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.errors import ConfigError, SluiceError
from operators.quality import C4Filter, FineWebFilter, GopherQuality, GopherRepetition
from operators.quality import text as tx
from operators.quality import tokenize
from pipelines import config
from pipelines.engine import execute

LINGUA = SHARED / "langid" / "lingua" / "sentences"
FILTERS = [GopherQuality(), GopherRepetition(), C4Filter(), FineWebFilter()]


def documents(lang: str, n: int = 10, per_doc: int = 12) -> list[str]:
    """n documents of `per_doc` real sentences, 4 to a line (joined without spaces in Chinese and Japanese)."""
    lines = [s.strip() for s in (LINGUA / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    joiner = "" if lang in ("zh", "ja") else " "
    docs = [lines[i:i + per_doc] for i in range(0, n * per_doc, per_doc)]
    return ["\n".join(joiner.join(d[k:k + 4]) for k in range(0, per_doc, 4)) for d in docs]


def batch(texts: list[str], lang: str | list[str]) -> pl.DataFrame:
    langs = [lang] * len(texts) if isinstance(lang, str) else lang
    return pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "lang": langs})


def spaced(text: str) -> str:
    """The text with a space after every Chinese or Japanese character (as a word-segmented text has some)."""
    return pl.select(pl.lit(text).str.replace_all(f"([{tokenize.UNSPACED}])", "$1 ")).item()


def kept_by_all(frame: pl.DataFrame) -> set[str]:
    ids = set(frame["id"])
    for op in FILTERS:
        ids &= set(op.process(frame)[0]["id"])
    return ids


def test_chinese_and_japanese_words_are_characters_with_or_without_spaces():
    zh = documents("zh", 1)[0]
    words = tokenize.words(pl.Series([zh, spaced(zh)])).to_list()
    assert words[0] == words[1] and len(words[0]) > 100
    counts = pl.select(tx.plain_word_count(pl.Series([zh, spaced(zh)]))).to_series().to_list()
    assert counts[0] == counts[1] >= sum(1 for w in words[0] if w not in "，。、；：！？（）「」")  # marks attach
    assert tokenize.sentence_counts(pl.Series(["我是学生。你呢？很好！", "これはペンです。あれは本です。"])).to_list() == [3, 2]


def test_english_words_do_not_change():
    english = "Mr. Smith didn't pay $5.00 for the U.S. e-mail service; it's free (see https://example.com)."
    assert tokenize.words(pl.Series([english]))[0].to_list() == [
        "Mr.", "Smith", "did", "n't", "pay", "$", "5.00", "for", "the", "U.S.", "e", "-", "mail", "service", ";",
        "it", "'s", "free", "(", "see", "https://example.com", ")", "."]
    assert tokenize.words(pl.Series(["L'homme qu'il a vu dell'anno."]))[0].to_list() == [
        "L'", "homme", "qu'", "il", "a", "vu", "dell'", "anno", "."]


def test_real_documents_are_kept_in_their_language_and_garbage_is_dropped():
    for lang in ("de", "zh", "ru"):
        clean = documents(lang)
        assert len(kept_by_all(batch(clean, lang))) >= 9, lang
        lines = clean[0].split("\n")
        garbage = ["\n".join(lines * 6), "\n".join(" ".join(["$$ %% ## @@"] * 5) for _ in range(10))]
        assert kept_by_all(batch(garbage, lang)) == set(), lang


def test_chinese_and_japanese_decisions_do_not_depend_on_spaces():
    for lang in ("zh", "ja"):
        docs = documents(lang, 8)
        docs += ["\n".join(docs[0].split("\n") * 5)]  # and a repetitive one
        for op in FILTERS:
            plain, with_spaces = (op.process(batch(d, lang)) for d in (docs, [spaced(t) for t in docs]))
            assert plain.kept["id"].to_list() == with_spaces.kept["id"].to_list(), (lang, op.name)
            assert plain.rejected["reason"].to_list() == with_spaces.rejected["reason"].to_list(), (lang, op.name)


def test_a_language_without_calibration_is_kept_and_counted_not_judged_by_english_numbers():
    swahili = documents("sw", 4)
    stuffed = batch(swahili + swahili[:2], ["sw"] * 4 + ["xx", None])
    op = GopherQuality()
    kept, rejected = op.process(stuffed)
    assert len(kept) == 6  # English stop words would reject every Swahili text
    english = GopherQuality().process(stuffed.drop("lang"))
    assert english.rejected["reason"].to_list() == ["too_few_stop_words"] * 6  # what the English numbers say
    stats = op.stats(kept.lazy(), rejected.lazy())
    assert stats["not_calibrated"]["too_few_stop_words"] == {"null": 1, "sw": 4, "xx": 1}
    assert "too_many_hashes" not in stats["not_calibrated"]  # a language-independent rule judges every row
    assert "English parameters" in op.stats(english.kept.lazy(), english.rejected.lazy())["languages"]


def test_german_uses_its_published_stop_words():
    german = documents("de", 5)
    op = GopherQuality()
    assert len(op.process(batch(german, "de")).kept) == 5
    assert op.process(batch(german, "en")).rejected["reason"].to_list().count("too_few_stop_words") >= 4


def test_per_language_off_judges_every_row_with_the_parameters():
    german = batch(documents("de", 3), "de")
    assert len(GopherQuality(per_language=False).process(german).rejected) == 3


MULTILINGUAL = st.text(alphabet=st.sampled_from(list(
    "ab cdeé fg.,!?'-#…•\n\n  中文字。，！？日本語のテキストです、ภาษาไทยั่ Привет мир العربية हिन्दी।ー・「」()[]{}12$%")),
    max_size=300)


@settings(max_examples=40, deadline=None)
@given(st.lists(MULTILINGUAL, min_size=1, max_size=4))
def test_no_share_exceeds_one_on_random_multilingual_text(texts):
    frame = batch(texts, (["zh", "en", "ja", "th"] * 4)[: len(texts)])
    shares = {
        GopherQuality: ["alpha_ratio", "bullet_lines_ratio", "ellipsis_lines_ratio"],
        GopherRepetition: ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"]
        + [f"top_{n}gram_frac" for n in (2, 3, 4)] + [f"dup_{n}gram_frac" for n in range(5, 11)],
        C4Filter: ["kept_lines_ratio"],
        FineWebFilter: ["line_punct_ratio", "short_line_ratio", "char_dup_ratio"],
    }
    prefix = {GopherQuality: "gopher", GopherRepetition: "gopher", C4Filter: "c4", FineWebFilter: "fineweb"}
    for cls, names in shares.items():
        scored = cls().score(frame)
        for name in names:
            values = scored[f"score_{prefix[cls]}_{name}"].drop_nulls()
            assert values.is_between(0.0, 1.0).all(), (name, values.to_list(), texts)


def test_a_stage_limited_to_languages_leaves_other_rows_untouched_and_counts_them(write_config, tmp_path):
    rows = [{"text": t, "lang": "de"} for t in documents("de", 3)] + [{"text": t, "lang": "zh"} for t in documents("zh", 3)]
    rows += [{"text": "kurz", "lang": "de"}, {"text": "短", "lang": "zh"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    inputs = [{"path": str(path), "fields": {"text": "text", "lang": "lang"}}]
    cfg = write_config(inputs, [{"op": "length_filter", "min_words": 5, "languages": ["de"]},
                                {"op": "length_filter", "name": "all_rows", "min_words": 5}])
    pipeline = config.load(cfg)
    assert pipeline.stages[0].languages == ("de",) and pipeline.resolved["stages"][0]["languages"] == ["de"]
    outcome = execute(pipeline)
    limited, everyone = outcome.ledger.stages[1:]
    assert (limited.rows_in, limited.rows_out, dict(limited.dropped)) == (8, 7, {"length_filter:too_few_words": 1})
    assert limited.stats["not_in_languages"] == {"zh": 4}
    assert limited.languages == {"de": {"out": 3, "dropped": 1}, "zh": {"out": 4, "dropped": 0}}
    assert everyone.languages["zh"] == {"out": 3, "dropped": 1}
    out = pl.concat(outcome.shards, how="diagonal_relaxed")
    assert out["text"].to_list()[:3] == [r["text"] for r in rows[:3]]  # rows keep their order


def test_languages_without_a_lang_column_is_a_clear_error(write_config, tmp_path):
    from conftest import ALPACA
    inputs = [{"path": str(ALPACA), "format": "json", "fields": {"text": "instruction"}}]
    pipeline = config.load(write_config(inputs, [{"op": "length_filter", "languages": ["en"]}]))
    with pytest.raises(SluiceError, match="languages: \\['en'\\].*`lang` column.*langid"):
        execute(pipeline)
    with pytest.raises(ConfigError, match="languages: only a row-local stage"):
        config.load(write_config(inputs, [{"op": "exact_dedup", "languages": ["en"]}]))
    with pytest.raises(ConfigError, match="expected a list of language codes"):
        config.load(write_config(inputs, [{"op": "length_filter", "languages": "en"}]))


def test_card_and_report_show_rows_and_drops_per_language():
    from pipelines.card import dataset_card, language_table

    stages = [{"stage": "read", "op": "read", "rows_in": 10, "rows_out": 10, "dropped": {}},
              {"stage": "langid", "op": "langid", "rows_in": 10, "rows_out": 9, "dropped": {"langid:wrong_language": 1},
               "languages": {"de": {"out": 5, "dropped": 0}, "zh": {"out": 4, "dropped": 0}, "fr": {"out": 0, "dropped": 1}}},
              {"stage": "gopher_quality", "op": "gopher_quality", "rows_in": 9, "rows_out": 7,
               "dropped": {"gopher_quality:too_few_words": 2},
               "languages": {"de": {"out": 4, "dropped": 1}, "zh": {"out": 3, "dropped": 1}}}]
    manifest = {"stages": stages}
    header, rows = language_table(manifest)
    assert header == ("language", "rows in", "langid dropped", "gopher_quality dropped", "released", "kept")
    assert rows == [("de", "5", "0", "1", "4", "80.0%"), ("zh", "4", "0", "1", "3", "75.0%"),
                    ("fr", "1", "1", "0", "0", "0.0%")]
    manifest |= {"dataset": "d", "version": "v1", "rows": 7, "rejected_rows": 3, "shards": [], "schema": {"text": "String"},
                 "inputs": [], "config": {}}
    assert "| zh | 4 | 0 | 1 | 3 | 75.0% |" in dataset_card(manifest)


def test_not_calibrated_is_counted_when_nothing_was_rejected():
    swahili = batch(documents("sw", 3), "sw")
    op = GopherRepetition()
    kept, _ = op.process(swahili)
    nothing = pl.LazyFrame(schema={"id": pl.String, "reason": pl.String, "detail": pl.String})
    assert op.stats(kept.lazy(), nothing)["not_calibrated"]["top_2_gram"] == {"sw": 3}


def test_the_english_quality_model_does_not_judge_other_languages():
    from operators.quality import QualityClassifier

    texts = documents("zh", 3) + documents("de", 3)
    frame = batch(texts, ["zh"] * 3 + ["de"] * 3)
    op = QualityClassifier(min_score=0.99)
    kept, rejected = op.process(frame)
    assert len(kept) == 6 and len(rejected) == 0  # English numbers would drop them
    assert len(op.process(frame.drop("lang")).rejected) == 6
    assert op.stats(kept.lazy(), rejected.lazy())["not_calibrated"]["low_quality_score"] == {"de": 3, "zh": 3}
