"""Text statistics shared by the heuristic quality filters, as Polars expressions.

Words are the tokens of spaCy's English tokenizer (the one datatrove's Gopher, FineWeb and repetition
filters use), imitated in operators/quality/tokenize.py: words, URLs, abbreviations and contractions,
and punctuation marks as tokens of their own ("...", "!", "#"). Scripts written without spaces
(Chinese, Japanese, Thai) come out as one long token per run: their ratios stay defined, and word-count
rules reject them as they should for an English rule set.
"""

from __future__ import annotations

import polars as pl

from operators.quality import tokenize


# Scripts written without spaces between words: each of their characters counts as a word in `plain_word_count`.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_PLAIN_WORD = rf"[{_UNSPACED}]|[^\s{_UNSPACED}]+"


def plain_word_count(text: pl.Expr) -> pl.Expr:
    """Words for length limits in any language: runs of non-space characters, except that every character of
    Chinese, Japanese kana, Thai, Lao, Khmer or Myanmar counts as one (a Chinese sentence is not one word;
    for Thai this over-counts, ~4 characters a word, which keeps length limits lenient rather than strict)."""
    return text.str.count_matches(_PLAIN_WORD).cast(pl.Int64)


def words(text: pl.Expr) -> pl.Expr:
    """The text's tokens as a list of strings."""
    return text.map_batches(tokenize.words, return_dtype=pl.List(pl.String))


def word_count(text: pl.Expr) -> pl.Expr:
    """len(words(text)), without building the lists."""
    return text.map_batches(tokenize.token_counts, return_dtype=pl.Int64)


def lines(text: pl.Expr) -> pl.Expr:
    """The text split on `\\n` (an empty text is one empty line, as str.split gives)."""
    return text.str.split("\n")


def ratio(numerator: pl.Expr, denominator: pl.Expr, empty: float = 0.0) -> pl.Expr:
    """numerator / denominator as a float, `empty` where the denominator is 0 (no division by zero)."""
    return pl.when(denominator > 0).then(numerator / denominator).otherwise(pl.lit(empty)).cast(pl.Float64)


def count_true(items: pl.Expr, predicate: pl.Expr) -> pl.Expr:
    """How many list elements satisfy `predicate` (written over `pl.element()`)."""
    return items.list.eval(predicate.cast(pl.UInt32)).list.sum().fill_null(0)


def duplicates(items: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(count, characters) of list elements that repeat an earlier element of the same list."""
    repeat = ~pl.element().is_first_distinct()
    count = items.list.eval(repeat.cast(pl.UInt32)).list.sum().fill_null(0)
    chars = items.list.eval(pl.element().filter(repeat).str.len_chars()).list.sum().fill_null(0)
    return count, chars
