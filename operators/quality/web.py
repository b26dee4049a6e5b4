"""The C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024) web-text heuristics, with the published
defaults, scored in Polars and decided as thresholds. Rule names follow datatrove's filters."""

from __future__ import annotations

import re

import polars as pl
from pydantic import Field

from operators.base import Mapper, Threshold, thresholds_of
from operators.quality import languages as lg
from operators.quality import text as tx
from operators.quality.text import text_of
from operators.quality.tokenize import CHUNK, UNSPACED, sentence_counts
from operators.registry import register

POLICY_PHRASES = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
_CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
_TERMINAL = ('.', '?', '!', '"', "'")  # C4's; and the sentence ends of other scripts (no Latin-script mark added)
_TERMINAL_OTHER = ("。", "！", "？", "｡", "」", "』", "।", "॥", "؟", "۔", "።", "။", "។", "։")
_WORDS = "__words"  # a scratch column
NO_SENTENCE_MARKS = {"th"}  # languages whose writing has no sentence-ending mark
_LINE_BREAKS = r"\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"


class C4Params(lg.LanguageParams):
    min_sentences: int | None = Field(default=5, description="fewest sentences in the lines C4 keeps")
    min_words_per_line: int = Field(default=3, description="a kept line has at least this many words")
    max_word_length: int = Field(default=1000, description="a kept line has no longer word")
    lorem_ipsum: bool = Field(default=True, description="reject a page with 'lorem ipsum' in a kept line")
    curly_bracket: bool = Field(default=True, description="reject a page with '{' in a kept line")
    javascript: bool = Field(default=True, description="drop lines mentioning javascript")
    policy: bool = Field(default=True, description="drop lines with terms-of-use and cookie phrases")
    remove_citations: bool = Field(default=True, description="strip [1], [edit], [citation needed]")


def c4_lines(batch: pl.DataFrame, p: C4Params) -> pl.DataFrame:
    """One row per line of `p.field`: `row` (position in batch), `line` (stripped, citations removed),
    and `kept`, `lorem`, `curly` as C4 decides them line by line, in order (lorem ipsum and curly
    brackets only count on lines that passed the rules before them, as in C4's reference code)."""
    line = pl.col("line")
    low = line.str.to_lowercase()
    raw = pl.col("raw")
    fine = ~pl.col("long_word") if p.max_word_length >= 0 else pl.lit(True)
    ends = line.str.contains(f"[{re.escape(''.join(_TERMINAL + _TERMINAL_OTHER))}]$")
    fine = fine & (line.str.ends_with("...").not_() & ends)
    fine = fine & (pl.col("words") >= p.min_words_per_line)
    lorem = fine & low.str.contains("lorem ipsum", literal=True) if p.lorem_ipsum else pl.lit(False)
    javascript = low.str.contains("javascript", literal=True) if p.javascript else pl.lit(False)
    curly = fine & ~lorem & ~javascript & line.str.contains("{", literal=True) if p.curly_bracket else pl.lit(False)
    policy = pl.any_horizontal(low.str.contains(x, literal=True) for x in POLICY_PHRASES) if p.policy else pl.lit(False)
    cleaned = raw.str.strip_chars()
    if p.remove_citations:
        cleaned = cleaned.str.replace_all(_CITATION, "")
    lines = (batch.select(text_of(p.field).str.replace_all(_LINE_BREAKS, "\n").str.replace(r"\n$", "")
                          .str.split("\n").alias("raw"))
             .with_row_index("row").explode("raw"))
    return (
        lines.with_columns(_words_and_long_words(lines["raw"], p.max_word_length))
        .with_columns(cleaned.alias("line"))
        .with_columns(fine.alias("fine"), lorem.alias("lorem"), curly.alias("curly"))
        .with_columns((pl.col("fine") & ~pl.col("lorem") & ~javascript & ~pl.col("curly") & ~policy).alias("kept"))
    )


def _words_and_long_words(lines: pl.Series, max_length: int) -> list[pl.Series]:
    """Words per line (counted before citations are removed, as C4 does) and whether a word is longer than
    `max_length`: runs of non-spaces, except in the lines with characters of a script written without spaces,
    where each such character is a word (only those lines pay for the finer count)."""
    lines = lines.fill_null("")
    words, long_word = lines.str.count_matches(r"\S+"), lines.str.contains(fr"\S{{{max(max_length, 0) + 1}}}")
    if len(rows := lines.str.contains(f"[{UNSPACED}]").arg_true()):
        some = lines.gather(rows)
        words = words.scatter(rows, some.str.count_matches(CHUNK))
        long_word = long_word.scatter(rows, some.str.contains(fr"[^\s{UNSPACED}]{{{max(max_length, 0) + 1}}}"))
    return [words.cast(pl.Int64).alias("words"), long_word.alias("long_word")]


@register
class C4Filter(lg.CalibratedFilter):
    """C4 page rules: lorem ipsum, curly brackets, and at least 5 sentences in lines with terminal punctuation."""

    name = "c4"
    Params = C4Params
    LANGUAGE_RULES = {"too_few_sentences": "min_sentences"}

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        lines = c4_lines(batch, self.params)
        kept = lines["kept"]
        sentences = pl.Series(kept.cast(pl.Int64))  # 0 for a dropped line
        if self.params.min_sentences is not None:
            sentences = sentences.scatter(kept.arg_true(), sentence_counts(lines["line"].filter(kept)))
        per_row = lines.with_columns(sentences.alias("sentences")).group_by("row", maintain_order=True).agg(
            pl.col("lorem").any().alias("score_c4_lorem_ipsum"),
            pl.col("curly").any().alias("score_c4_curly_bracket"),
            pl.col("sentences").sum().cast(pl.Int64).alias("score_c4_sentences"),
            tx.ratio(pl.col("kept").sum(), pl.len()).alias("score_c4_kept_lines_ratio"),
        )
        return pl.concat([batch, per_row.drop("row")], how="horizontal")

    def columns(self) -> dict[str, str]:
        return {"score_c4_lorem_ipsum": "C4: the page contains \"lorem ipsum\"",
                "score_c4_curly_bracket": "C4: the page contains a curly bracket",
                "score_c4_sentences": "C4: sentences in the lines C4's line rules keep",
                "score_c4_kept_lines_ratio": "C4: share of lines its line rules keep"}

    def thresholds(self) -> list[Threshold]:
        return thresholds_of(("score_c4_sentences", "min_sentences", self.params.min_sentences, "min"))

    def calibrated(self, rule: str) -> set[str]:
        """C4's sentence count (published for English) needs sentence-ending marks: every language of the
        table but those written without them (Thai)."""
        if rule != "too_few_sentences":
            return set()
        return {lg.ENGLISH} | set(lg.table()) - NO_SENTENCE_MARKS

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        p = self.params
        rules = {"lorem_ipsum": pl.col("score_c4_lorem_ipsum"), "curly_bracket": pl.col("score_c4_curly_bracket")}
        if p.min_sentences is not None:
            few = pl.col("score_c4_sentences") < p.min_sentences
            if lang is not None:  # a language without sentence marks is not judged (null)
                few = pl.when(pl.col(lang).cast(pl.String).is_in(sorted(self.calibrated("too_few_sentences")))).then(few)
            rules["too_few_sentences"] = few
        return rules


@register
class C4Lines(Mapper):
    """C4's line cleaning: keep only the lines C4 keeps (terminal punctuation, >= 3 words, no javascript or policy)."""

    name = "c4_lines"
    Params = C4Params

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        lines = c4_lines(batch, self.params)
        text = (lines.group_by("row", maintain_order=True)
                .agg(pl.col("line").filter(pl.col("kept")).str.join("\n").alias(self.params.field)))
        return batch.with_columns(text[self.params.field])


@register
class FineWebFilter(lg.CalibratedFilter):
    """FineWeb rules: lines ending in punctuation, short lines, duplicated line characters, newlines per word."""

    name = "fineweb"
    LANGUAGE_RULES = {"line_punct_ratio": "min_line_punct_ratio", "short_line_ratio": "max_short_line_ratio",
                      "list_ratio": "max_newline_ratio"}
    ENGLISH_ONLY = {"max_short_line_ratio"}  # FineWeb-2 dropped the short-line rule for other languages

    class Params(lg.LanguageParams):
        min_line_punct_ratio: float | None = Field(default=0.12, description="share of lines ending in . ! ? etc. "
                                                   "(English; other languages: published)")
        max_short_line_ratio: float | None = Field(default=0.67, description="share of lines of <= short_line_length "
                                                   "chars (English only)")
        short_line_length: int = 30
        max_char_dup_ratio: float | None = Field(default=0.01, description="characters in repeated lines / all")
        max_newline_ratio: float | None = Field(default=0.3, description="newlines per word (lists) "
                                                "(English; other languages: published)")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        p, text = self.params, tx.rule_text(batch, self.params.field)
        lines = text.str.split("\n").list.eval(pl.element().filter(pl.element().str.contains(r"\S")))
        n = lines.list.len()
        dup_chars = tx.duplicates(lines)[1]
        batch = batch.with_columns(tx.word_count(text).alias(_WORDS))  # once: ratio() reads it twice
        return batch.with_columns(
            n.cast(pl.Int64).alias("score_fineweb_lines"),
            tx.ratio(tx.count_true(lines, pl.element().str.contains(r"\p{Sentence_Terminal}$")), n)
            .alias("score_fineweb_line_punct_ratio"),
            tx.ratio(tx.count_true(lines, pl.element().str.len_chars() <= p.short_line_length), n)
            .alias("score_fineweb_short_line_ratio"),
            tx.ratio(dup_chars, text.str.len_chars() - text.str.count_matches("\n", literal=True))
            .alias("score_fineweb_char_dup_ratio"),
            tx.ratio(text.str.count_matches("\n", literal=True), pl.col(_WORDS)).alias("score_fineweb_newline_ratio"),
        ).drop(_WORDS)

    def columns(self) -> dict[str, str]:
        return {"score_fineweb_lines": "FineWeb: non-blank lines",
                "score_fineweb_line_punct_ratio": "FineWeb: share of lines ending in punctuation",
                "score_fineweb_short_line_ratio": f"FineWeb: share of lines of at most {self.params.short_line_length} "
                                                  "characters",
                "score_fineweb_char_dup_ratio": "FineWeb: share of characters in repeated lines",
                "score_fineweb_newline_ratio": "FineWeb: newlines per word"}

    def thresholds(self) -> list[Threshold]:
        p = self.params
        return thresholds_of(("score_fineweb_line_punct_ratio", "min_line_punct_ratio", p.min_line_punct_ratio, "min"),
                             ("score_fineweb_short_line_ratio", "max_short_line_ratio", p.max_short_line_ratio, "max"),
                             ("score_fineweb_char_dup_ratio", "max_char_dup_ratio", p.max_char_dup_ratio, "max"),
                             ("score_fineweb_newline_ratio", "max_newline_ratio", p.max_newline_ratio, "max"))

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        p, s = self.params, lambda name: pl.col(f"score_fineweb_{name}")
        rules = {"empty": s("lines") == 0}
        for rule, key, limit, fails in (
            ("line_punct_ratio", "min_line_punct_ratio", p.min_line_punct_ratio, lambda x: s("line_punct_ratio") < x),
            ("short_line_ratio", "max_short_line_ratio", p.max_short_line_ratio, lambda x: s("short_line_ratio") > x),
            ("char_dup_ratio", None, p.max_char_dup_ratio, lambda x: s("char_dup_ratio") > x),
            ("list_ratio", "max_newline_ratio", p.max_newline_ratio, lambda x: s("newline_ratio") > x),
        ):
            if limit is not None:
                rules[rule] = fails(limit if key is None else self.limit(lang, key, limit))
        return rules
