"""Text statistics shared by the heuristic quality filters, as Polars expressions.

Words are the tokens of spaCy's English tokenizer (the one datatrove's Gopher, FineWeb and repetition
filters use), imitated in operators/quality/tokenize.py: words, URLs, abbreviations and contractions,
and punctuation marks as tokens of their own ("...", "!", "#"). In scripts written without spaces
(Chinese, Japanese, Thai, ...) every character is a word, for the tokens and for `plain_word_count` alike.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from pydantic import Field

from operators.base import Params
from operators.quality import tokenize


class TextParams(Params):
    field: str = Field(default="text", description="string column to score")


def text_of(field: str) -> pl.Expr:
    return pl.col(field).cast(pl.String).fill_null("")


def plain_word_count(text: pl.Expr) -> pl.Expr:
    """Words for length limits in any language: runs of non-space characters, except that every character of
    Chinese, Japanese kana, Thai, Lao, Khmer or Myanmar (with its combining marks) counts as one, as in the
    tokens (a Chinese sentence is not one word; for Thai this over-counts, ~3 letters a word, which keeps
    length limits lenient rather than strict)."""
    return text.str.count_matches(tokenize.CHUNK).cast(pl.Int64)


def join_unspaced(text: pl.Expr) -> pl.Expr:
    """The text without the spaces and tabs next to a character of a script written without spaces, so that
    "我 是 学生" and "我是学生" measure the same (line lengths, character shares). Other text is unchanged."""
    blank = r"[^\S\n]+"
    joined = (text.str.replace_all(rf"([{tokenize.UNSPACED}]\p{{M}}*){blank}", "$1")
              .str.replace_all(rf"{blank}([{tokenize.UNSPACED}])", "$1"))
    return pl.when(text.str.contains(f"[{tokenize.UNSPACED}]")).then(joined).otherwise(text)


def rule_text(batch: pl.DataFrame, field: str) -> pl.Expr:
    """The text the heuristic rules measure: `field` as a string, `join_unspaced` in the rows that have a
    character of a script written without spaces (only those rows pay for it)."""
    return pl.lit(only_unspaced(batch.select(text_of(field)).to_series(), join_unspaced))


def only_unspaced(texts: pl.Series, change: Callable[[pl.Expr], pl.Expr]) -> pl.Series:
    """`texts` with `change` applied to the rows that have a character of a script written without spaces."""
    rows = texts.str.contains(f"[{tokenize.UNSPACED}]").arg_true()
    if not len(rows):
        return texts
    return texts.scatter(rows, pl.select(change(pl.lit(texts.gather(rows)))).to_series())


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
