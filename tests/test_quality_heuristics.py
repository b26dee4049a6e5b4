"""Gopher, C4 and FineWeb heuristics on real web text: scores as columns, each rule its own reason,
the vectorised n-gram statistics equal to a plain-Python reference, and defined scores on bad input."""

from __future__ import annotations

import json
import math
from collections import Counter

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators import get
from operators.quality import C4Filter, C4Lines, FineWebFilter, GopherQuality, GopherRepetition, InstructionFilter, LanguageId
from operators.quality import text as tx
from operators.quality import tokenize
from operators.quality.gopher import ngram_repetition

WEB_FILTERS = [GopherQuality, GopherRepetition, C4Filter, FineWebFilter]
PROSE = ("The history of the town goes back to the twelfth century, when a small group of farmers settled "
         "on the banks of the river. They built a mill and a church, and the village grew slowly over the "
         "next two hundred years. Trade with the neighbouring towns brought wealth to the families that "
         "owned the land. By the sixteenth century the town had a market, a school and a bridge of stone. "
         "Today it is known for its old houses and for the festival that is held there every summer. "
         "Visitors come from all over the country to see the parade and to taste the local food.")


def frame(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": list(texts)})


@pytest.fixture(scope="module")
def dclm() -> pl.DataFrame:
    rows = [json.loads(line) for line in DCLM.read_text().splitlines()]
    return pl.DataFrame({"id": [f"d{i}" for i in range(len(rows))], "text": [r["text"] for r in rows],
                         "label": [r["label"] for r in rows]})


def reasons(op, *texts: str) -> list[str | None]:
    kept, rejected = op.process(frame(*texts))
    by_id = dict(zip(rejected["id"], rejected["reason"]))
    return [by_id.get(f"r{i}") for i in range(len(texts))]


def test_filters_are_registered_with_short_names():
    for name, cls in [("gopher_quality", GopherQuality), ("gopher_repetition", GopherRepetition), ("c4", C4Filter),
                      ("fineweb", FineWebFilter), ("c4_lines", C4Lines)]:
        assert get(name) is cls


def test_prose_passes_every_web_filter():
    for cls in WEB_FILTERS:
        assert reasons(cls(), PROSE) == [None], cls.name


def test_gopher_quality_rules_each_report_their_reason():
    op = GopherQuality()
    no_stop_words = " ".join(["Green apples ripe oranges sweet bananas"] * 15) + "."
    assert reasons(op, "Too short to be a document.", no_stop_words) == [
        "too_few_words", "too_few_stop_words"]
    hashes = PROSE + " #tag" * 20
    ellipses = PROSE + " Wait..." * 30
    ellipsis_lines = "\n".join(f"{s.strip()} ..." for s in PROSE.split(".") if s.strip())
    bullets = "\n".join(f"- {s.strip()}." for s in PROSE.split(".") if s.strip())
    numbers = PROSE + " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25"
    assert reasons(op, hashes, ellipses, bullets, ellipsis_lines, numbers) == [
        "too_many_hashes", "too_many_ellipses", "too_many_bullet_lines", "too_many_ellipsis_lines",
        "too_few_alpha_words"]
    assert reasons(GopherQuality(max_bullet_lines_ratio=None, min_alpha_words_ratio=None), bullets) == [None]


def test_gopher_scores_are_columns_and_thresholds_can_be_retuned(dclm):
    scored = GopherQuality().score(dclm)
    assert {"score_gopher_words", "score_gopher_alpha_ratio", "score_gopher_stop_words"} <= set(scored.columns)
    strict, loose = GopherQuality(min_words=400), GopherQuality(min_words=10)
    assert len(strict.process(dclm).kept) < len(GopherQuality().process(dclm).kept) < len(loose.process(dclm).kept)


def test_human_rated_bad_pages_fail_more_often(dclm):
    """On DCLM's human labels the rules are far from perfect, but they must lean the right way."""
    for cls in WEB_FILTERS:
        kept = cls().process(dclm).kept
        good_kept = kept.filter(pl.col("label") == 1).height / dclm.filter(pl.col("label") == 1).height
        bad_kept = kept.filter(pl.col("label") == 0).height / dclm.filter(pl.col("label") == 0).height
        assert good_kept > bad_kept, cls.name


def test_repetition_rules_catch_repeats():
    op = GopherRepetition()
    lines = "\n".join([PROSE[:80]] * 3 + [PROSE[80:160], PROSE[160:240]])
    paragraphs = "\n\n".join([PROSE[:200]] * 3 + [PROSE])
    spam = PROSE + " buy cheap pills now" * 30
    assert reasons(op, PROSE, lines, paragraphs, spam) == [None, "dup_line_frac", "dup_para_frac", "top_2_gram"]
    # one-word rows have no 2-grams: nothing repeats (and nothing leaks in from the next row)
    assert reasons(op, "B", PROSE, "Odd", PROSE) == [None, None, None, None]


def reference_ngrams(text: str, words: list[str], top: list[int], dup: list[int]) -> list[float]:
    """Plain-Python definitions: most frequent n-gram's characters x count (joined with spaces, ties to
    the first); characters of words covered by an n-gram seen before in the text."""
    out = []
    for n in top:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if grams:
            gram, count = Counter(grams).most_common(1)[0]
            out.append(len(gram) * count / len(text))
        else:
            out.append(0.0)
    for n in dup:
        seen, covered = set(), [False] * len(words)
        for i in range(len(words) - n + 1):
            gram = tuple(words[i:i + n])
            if gram in seen:
                covered[i:i + n] = [True] * n
            seen.add(gram)
        out.append(sum(len(w) for w, c in zip(words, covered) if c) / len(text) if text else 0.0)
    return out


def test_vectorised_ngram_statistics_equal_the_reference(dclm):
    sample = dclm.head(120)
    got = ngram_repetition(sample.select("text"), [2, 3, 4], [5, 7, 10]).rows()
    for text, words, row in zip(sample["text"], tokenize.words(sample["text"]), got):
        assert row == pytest.approx(reference_ngrams(text, words.to_list(), [2, 3, 4], [5, 7, 10]), abs=1e-12)


def test_c4_rules_and_line_cleaning():
    sentences = "This is the first sentence. Here is another one. And a third one. A fourth line follows. The end."
    op = C4Filter()
    assert reasons(op, sentences, sentences + "\nLorem ipsum dolor sit amet.", sentences + "\nfunction f() { return 1; }.",
                   "Only one sentence here.") == [None, "lorem_ipsum", "curly_bracket", "too_few_sentences"]
    # a curly bracket on a line C4 drops anyway (no terminal punctuation) does not condemn the page
    assert reasons(op, sentences + "\nvar x = {a: 1}") == [None]
    page = f"Menu\n{sentences}\nPlease enable JavaScript to view this page.\nRead our privacy policy here."
    cleaned = C4Lines().map(frame(page))["text"][0]
    assert cleaned == sentences


def test_fineweb_rules_each_report_their_reason():
    op = FineWebFilter()
    listy = "\n".join(f"item number {i}" for i in range(40))
    no_punct = "\n".join(f"{PROSE[:120]} {i} and more words" for i in range(3))
    duplicated = PROSE + "\n" + "\n".join(["A line that repeats on this page."] * 3)
    assert reasons(op, PROSE, no_punct, listy, duplicated, " \n \n") == [
        None, "line_punct_ratio", "line_punct_ratio", "char_dup_ratio", "empty"]
    short = "\n".join(["Short line."] * 1 + [f"Line {i} is short." for i in range(10)] + [PROSE])
    assert reasons(op, short) == ["short_line_ratio"]


BAD_INPUT = {
    "empty": "",
    "whitespace": " \n\t\n  ",
    "single_line": "one line without an ending",
    "binary": "\x00\x01\x02\ufffd\ufffd" * 50 + "PK\x03\x04" * 100,
    "chinese": "北京是中华人民共和国的首都，也是全国的政治和文化中心。" * 20,
    "japanese": "東京は日本の首都であり、世界最大級の都市の一つです。" * 20,
    "thai": "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่มีประชากรมากที่สุด" * 20,
    "enormous": PROSE * 2500,  # ~1.5 MB, ~250k words
    "newlines_only": "\n\n\n\n",
}


@pytest.mark.parametrize("cls", WEB_FILTERS, ids=lambda c: c.name)
def test_bad_input_gets_defined_scores_and_counted_decisions(cls):
    batch = pl.DataFrame({"id": list(BAD_INPUT), "text": list(BAD_INPUT.values())})
    batch = pl.concat([batch, pl.DataFrame({"id": ["null"], "text": [None]}, schema=batch.schema)])
    op = cls()
    scored = op.score(batch)
    scores = scored.select(pl.col(pl.Float64))
    assert scores.width > 0 and scores.null_count().sum_horizontal().item() == 0
    assert all(math.isfinite(v) for col in scores.iter_columns() for v in col)
    kept, rejected = op.process(batch)
    assert len(kept) + len(rejected) == len(batch)
    assert rejected["reason"].null_count() == 0
    assert {"empty", "whitespace", "null", "binary"} <= set(rejected["id"])


def bad_batch() -> pl.DataFrame:
    batch = pl.DataFrame({"id": list(BAD_INPUT), "text": list(BAD_INPUT.values())})
    return pl.concat([batch, pl.DataFrame({"id": ["null"], "text": [None]}, schema=batch.schema)])


def test_c4_line_cleaning_keeps_every_row_of_bad_input():
    batch = bad_batch()
    cleaned = C4Lines().map(batch)
    assert cleaned["id"].to_list() == batch["id"].to_list() and cleaned["text"].null_count() == 0
    lengths = dict(zip(cleaned["id"], cleaned["text"].str.len_chars()))
    assert lengths["empty"] == lengths["null"] == lengths["binary"] == 0  # no "." ending a line
    assert lengths["chinese"] == len(BAD_INPUT["chinese"])  # its line ends in 。
    assert lengths["enormous"] > 1_000_000


def test_language_id_on_bad_input_gives_defined_scores_and_counted_rejects():
    batch = bad_batch()
    scored = LanguageId().score(batch)
    assert scored["lang"].null_count() == 0 and scored["lang_score"].is_between(0, 1).all()
    langs = dict(zip(scored["id"], scored["lang"]))
    assert (langs["chinese"], langs["japanese"], langs["thai"], langs["enormous"]) == ("zh", "ja", "th", "en")
    kept, rejected = LanguageId().process(batch)
    assert kept["id"].to_list() == ["single_line", "enormous"] and len(kept) + len(rejected) == len(batch)
    assert dict(zip(rejected["id"], rejected["reason"]))["empty"] == "low_language_score"


def test_instruction_rules_on_bad_input_give_defined_scores_and_counted_rejects():
    bad = bad_batch()
    outputs = bad.select("id", pl.lit("Summarise the text below.").alias("instruction"), pl.lit("").alias("input"),
                         pl.col("text").alias("output"))
    instructions = bad.select((pl.col("id") + "_as_instruction").alias("id"), pl.col("text").alias("instruction"),
                              pl.lit(None, dtype=pl.String).alias("input"), pl.lit("A plain answer.").alias("output"))
    batch = pl.concat([outputs, instructions])
    scores = InstructionFilter().score(batch).select(pl.selectors.starts_with("score_"))
    assert scores.width >= 6 and scores.null_count().sum_horizontal().item() == 0
    kept, rejected = InstructionFilter().process(batch)
    reasons = dict(zip(rejected["id"], rejected["reason"]))
    assert len(kept) + len(rejected) == len(batch) and rejected["reason"].null_count() == 0
    assert {reasons[i] for i in ("empty", "whitespace", "newlines_only", "null")} == {"empty_output"}
    assert reasons["enormous"] == "too_long_output" and reasons["null_as_instruction"] == "too_short_instruction"


def test_tokens_and_sentences_are_spacys():
    """Expected values are what datatrove's spaCy tokenizer and sentencizer give (spaCy 3.8, blank "en")."""
    texts = ["Mr. Smith moved to the U.S. in Jan. 2020, e.g. to work at 10am.",
             "I can't believe it's (almost) over... Don't you?",
             "Visit https://example.com/a?b=1. It's well-known: 3-0 for them!",
             "She said \"hello\"; we cannot go -- or can we? :)",
             "See (Fig. 3):  A.B. Jones & Co. paid $5.50 for 10km of cable.",
             "end.The next sentence starts here, without spaces.Really"]
    assert tokenize.words(pl.Series(texts)).to_list() == [
        ["Mr.", "Smith", "moved", "to", "the", "U.S.", "in", "Jan.", "2020", ",", "e.g.", "to", "work", "at", "10",
         "am", "."],
        ["I", "ca", "n't", "believe", "it", "'s", "(", "almost", ")", "over", "...", "Do", "n't", "you", "?"],
        ["Visit", "https://example.com/a?b=1", ".", "It", "'s", "well", "-", "known", ":", "3", "-", "0", "for",
         "them", "!"],
        ["She", "said", '"', "hello", '"', ";", "we", "can", "not", "go", "--", "or", "can", "we", "?", ":)"],
        ["See", "(", "Fig", ".", "3", "):", "A.B.", "Jones", "&", "Co.", "paid", "$", "5.50", "for", "10", "km", "of",
         "cable", "."],
        ["end", ".", "The", "next", "sentence", "starts", "here", ",", "without", "spaces", ".", "Really"]]
    assert tokenize.sentence_counts(pl.Series(texts)).to_list() == [1, 1, 2, 1, 2, 3]
    assert tokenize.token_counts(pl.Series(texts + ["", None])).to_list() == [17, 15, 15, 16, 19, 12, 0, 0]


def test_long_punctuation_runs_and_empty_batches_tokenise():
    assert tokenize.words(pl.Series(["Wow" + "!" * 300, "(" * 50 + "a" + ")" * 50])).list.len().to_list() == [301, 101]
    assert tokenize.words(pl.Series([], dtype=pl.String)).to_list() == []
    assert tokenize.sentence_counts(pl.Series(["", "One. Two."])).to_list() == [0, 2]


def test_scripts_without_spaces_are_tokenised_without_error():
    texts = frame(BAD_INPUT["chinese"], BAD_INPUT["thai"]).select(tx.words(pl.col("text")))["text"]
    assert all(len(t) > 0 for t in texts)


def test_web_samples_from_every_source_run_through_all_filters():
    files = sorted((SHARED / "web" / "datajuicer_samples").glob("*.jsonl"))
    batch = pl.concat([pl.read_ndjson(f).select(pl.col("text").cast(pl.String)) for f in files])
    batch = batch.with_columns(pl.int_range(pl.len()).cast(pl.String).alias("id"))
    for cls in WEB_FILTERS:
        kept, rejected = cls().process(batch)
        assert len(kept) + len(rejected) == len(batch)
