"""Gopher's quality and repetition rules (Rae et al. 2021, MassiveText, Table A1) with the published
defaults, scored in Polars and decided as thresholds. Rule names and order follow datatrove's filters."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from operators.base import Filter, Params
from operators.quality import text as tx
from operators.registry import register

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
# Python's str.splitlines() boundaries, folded into "\n" so line counts match it.
_LINE_BREAKS = r"\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_TOKENS = "__tokens"  # a scratch column: the text is tokenised once per batch
# A word is a token with a character outside datatrove's punctuation set (ASCII punctuation, control
# characters, sentence terminators and a few CJK and typographic marks): "€" and "•" are words, "--" is not.
_WORD_CHAR = (r"[^!-/:-@\[-`{-~\x00-\x1f\x7f-\x9f«´»–—’“”„…∶━►、〈〉《》「」【】％（），１：；～៖៙៚"
              r"\p{Sentence_Terminal}]")


class TextParams(Params):
    field: str = Field(default="text", description="string column to score")


def text_of(field: str) -> pl.Expr:
    return pl.col(field).cast(pl.String).fill_null("")


def threshold_rule(column: str, op: str, limit: float) -> pl.Expr:
    """True where the score fails: below ("<") or above (">") the limit."""
    return pl.col(column) < limit if op == "<" else pl.col(column) > limit


@register
class GopherQuality(Filter):
    """Gopher quality rules: word count, mean word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    name = "gopher_quality"

    class Params(TextParams):
        min_words: int | None = Field(default=50, description="fewest words (tokens that are not all punctuation)")
        max_words: int | None = 100_000
        min_mean_word_length: float | None = 3
        max_mean_word_length: float | None = 10
        max_symbol_word_ratio: float | None = Field(default=0.1, description="'#' and '...' per token, each")
        max_bullet_lines_ratio: float | None = 0.9
        max_ellipsis_lines_ratio: float | None = 0.3
        min_alpha_words_ratio: float | None = Field(default=0.8, description="share of tokens with a letter")
        min_stop_words: int | None = Field(default=2, description="distinct stop words present (case-sensitive)")
        stop_words: list[str] = Field(default=STOP_WORDS)

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        text, toks = text_of(self.params.field), pl.col(_TOKENS)
        tokens = toks.list.len()
        words = toks.list.eval(pl.element().filter(pl.element().str.contains(_WORD_CHAR)))
        alpha = tx.count_true(toks, pl.element().str.contains(r"\p{L}"))
        flat = text.str.replace_all(_LINE_BREAKS, "\n").str.replace(r"\n$", "")  # as str.splitlines() sees it
        line_count = flat.str.count_matches("\n", literal=True) + 1
        ellipses = text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True)
        stop_words = pl.sum_horizontal(toks.list.contains(w).cast(pl.Int32) for w in set(self.params.stop_words))
        return batch.with_columns(tx.words(text).alias(_TOKENS)).with_columns(
            words.list.len().cast(pl.Int64).alias("score_gopher_words"),
            tx.ratio(words.list.eval(pl.element().str.len_chars()).list.sum(), words.list.len())
            .alias("score_gopher_mean_word_length"),
            tx.ratio(text.str.count_matches("#", literal=True), tokens).alias("score_gopher_hash_ratio"),
            tx.ratio(ellipses, tokens).alias("score_gopher_ellipsis_ratio"),
            tx.ratio(flat.str.count_matches(r"(?m)^[^\S\n]*[•\-]"), line_count).alias("score_gopher_bullet_lines_ratio"),
            tx.ratio(flat.str.count_matches(r"(?m)(?:\.\.\.|…)[^\S\n]*$"), line_count)
            .alias("score_gopher_ellipsis_lines_ratio"),
            tx.ratio(alpha, tokens).alias("score_gopher_alpha_ratio"),
            stop_words.cast(pl.Int64).alias("score_gopher_stop_words"),
        ).drop(_TOKENS)

    def rules(self) -> dict[str, pl.Expr]:
        p = self.params
        checks = [  # (rule, score, threshold, fails when the score is "<" or ">" the threshold)
            ("too_few_words", "words", p.min_words, "<"), ("too_many_words", "words", p.max_words, ">"),
            ("short_mean_word_length", "mean_word_length", p.min_mean_word_length, "<"),
            ("long_mean_word_length", "mean_word_length", p.max_mean_word_length, ">"),
            ("too_many_hashes", "hash_ratio", p.max_symbol_word_ratio, ">"),
            ("too_many_ellipses", "ellipsis_ratio", p.max_symbol_word_ratio, ">"),
            ("too_many_bullet_lines", "bullet_lines_ratio", p.max_bullet_lines_ratio, ">"),
            ("too_many_ellipsis_lines", "ellipsis_lines_ratio", p.max_ellipsis_lines_ratio, ">"),
            ("too_few_alpha_words", "alpha_ratio", p.min_alpha_words_ratio, "<"),
            ("too_few_stop_words", "stop_words", p.min_stop_words, "<"),
        ]
        return {rule: threshold_rule(f"score_gopher_{score}", op, limit)
                for rule, score, limit, op in checks if limit is not None}


@register
class GopherRepetition(Filter):
    """Gopher repetition rules: duplicate lines and paragraphs, top 2-4-gram and duplicate 5-10-gram character fractions."""

    name = "gopher_repetition"

    class Params(TextParams):
        dup_line_frac: float | None = 0.3
        dup_para_frac: float | None = 0.3
        dup_line_char_frac: float | None = 0.2
        dup_para_char_frac: float | None = 0.2
        top_ngrams: dict[int, float] = Field(default={2: 0.20, 3: 0.18, 4: 0.16},
                                             description="n -> max share of characters in the most frequent n-gram")
        dup_ngrams: dict[int, float] = Field(default={5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
                                             description="n -> max share of characters inside repeated n-grams")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        text = text_of(self.params.field)
        chars = text.str.len_chars()
        paragraphs = text.str.strip_chars().str.extract_all(r"[^\n]+(?:\n[^\n]+)*")
        lines = text.str.replace_all(r"\n+", "\n").str.split("\n")
        para_dups, para_dup_chars = tx.duplicates(paragraphs)
        line_dups, line_dup_chars = tx.duplicates(lines)
        scored = batch.with_columns(
            tx.ratio(para_dups, paragraphs.list.len()).alias("score_gopher_dup_para_frac"),
            tx.ratio(para_dup_chars, chars).alias("score_gopher_dup_para_char_frac"),
            tx.ratio(line_dups, lines.list.len()).alias("score_gopher_dup_line_frac"),
            tx.ratio(line_dup_chars, chars).alias("score_gopher_dup_line_char_frac"),
        )
        ngrams = ngram_repetition(batch.select(text.alias("text")), self._top, self._dup)
        return pl.concat([scored, ngrams], how="horizontal")

    @property
    def _top(self) -> list[int]:
        return sorted(self.params.top_ngrams)

    @property
    def _dup(self) -> list[int]:
        return sorted(self.params.dup_ngrams)

    def rules(self) -> dict[str, pl.Expr]:
        p = self.params
        rules = {"empty": text_of(p.field).str.strip_chars() == ""}
        rules |= {rule: pl.col(f"score_gopher_{rule}") > limit for rule, limit in (
            ("dup_para_frac", p.dup_para_frac), ("dup_para_char_frac", p.dup_para_char_frac),
            ("dup_line_frac", p.dup_line_frac), ("dup_line_char_frac", p.dup_line_char_frac)) if limit is not None}
        rules |= {f"top_{n}_gram": pl.col(f"score_gopher_top_{n}gram_frac") > p.top_ngrams[n] for n in self._top}
        rules |= {f"duplicated_{n}_n_grams": pl.col(f"score_gopher_dup_{n}gram_frac") > p.dup_ngrams[n]
                  for n in self._dup}
        return rules


def ngram_repetition(texts: pl.DataFrame, top: list[int], dup: list[int]) -> pl.DataFrame:
    """Per row of `texts` (one column `text`): for n in `top`, the characters of the most frequent word
    n-gram times its count (n-gram joined with spaces, ties to the earliest); for n in `dup`, the
    characters (spaces excluded) of words covered by an n-gram that occurred earlier in the text. Both
    as fractions of the text's characters.

    Vectorised over one long table of (row, position, word): an n-gram is a 64-bit hash chained over n
    shifted word hashes, and with its row, "occurred earlier" is `is_first_distinct` over the whole
    batch. Duplicate coverage is the union of the repeated n-grams' spans (the Gopher paper's definition);
    datatrove walks the words greedily and skips n words after each repeat, which can count slightly less.
    """
    words = tx.words(pl.col("text"))
    long = (
        texts.select(words.alias("w"), pl.int_ranges(0, words.list.len()).alias("pos"), words.list.len().cast(pl.Int64).alias("n_words"))
        .with_row_index("row")
        .explode("w", "pos")
        .filter(pl.col("w").is_not_null())
        .with_columns(pl.col("w").str.len_chars().cast(pl.Int64).alias("len"), pl.col("w").hash(7).alias("h1"))
        .with_columns(pl.col("len").cum_sum().alias("csum"))
    )
    keys, columns, out = {1: pl.col("h1")}, [], pl.DataFrame({"row": pl.Series([], dtype=pl.UInt32)})
    for n in range(2, max(top + dup, default=1) + 1):
        keys[n] = pl.struct(keys[n - 1].alias("a"), pl.col("h1").shift(-(n - 1)).alias("b")).hash(11)
    for n in top:
        span = pl.col("csum").shift(-(n - 1)) - pl.col("csum") + pl.col("len") + (n - 1)
        grams = (long.with_columns(keys[n].alias("key"), span.alias("span"))
                 .filter(pl.col("pos") <= pl.col("n_words") - n)
                 .group_by("row", "key")
                 .agg(pl.len().alias("count"), pl.col("pos").min().alias("first"), pl.col("span").first()))
        best = (grams.filter(pl.col("count") == pl.col("count").max().over("row"))
                .filter(pl.col("first") == pl.col("first").min().over("row"))
                .select("row", (pl.col("count") * pl.col("span")).alias(f"top_{n}")))
        out = out.join(best, on="row", how="full", coalesce=True)
        columns.append((f"top_{n}", f"score_gopher_top_{n}gram_frac"))
    if dup:
        covered = (long.select("row", *[_covered_chars(keys[n], n).alias(f"dup_{n}") for n in dup])
                   .group_by("row").agg(pl.all().sum()))
        out = out.join(covered, on="row", how="full", coalesce=True)
        columns += [(f"dup_{n}", f"score_gopher_dup_{n}gram_frac") for n in dup]
    chars = texts.select(pl.col("text").str.len_chars().alias("chars")).with_row_index("row")
    joined = chars.join(out, on="row", how="left", maintain_order="left")
    return joined.select(tx.ratio(pl.col(src).fill_null(0), pl.col("chars")).alias(dst) for src, dst in columns)


def _covered_chars(key: pl.Expr, n: int) -> pl.Expr:
    """Characters of each word if an n-gram that repeats an earlier one covers it, else 0.

    The long table is in (row, position) order and an n-gram never crosses its row's end, so a
    window over the previous n start positions never reaches into another row."""
    valid = pl.col("pos") <= pl.col("n_words") - n
    key = pl.struct(pl.col("row"), key.alias("key")).hash(13)  # the same n-gram in another row is no repeat
    repeat_start = (valid & ~pl.when(valid).then(key).is_first_distinct()).cast(pl.Int8)
    covered = repeat_start.rolling_max(window_size=n, min_samples=1) > 0
    return pl.when(covered).then(pl.col("len")).otherwise(0)
