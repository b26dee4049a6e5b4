"""Text statistics shared by the heuristic quality filters, as Polars expressions.

Words are tokens in the style of spaCy's English tokenizer (the one datatrove's Gopher, FineWeb and
repetition filters use), made by one regular expression: words, URLs and contractions, and punctuation
marks as tokens of their own ("...", "!", "#", "-"). Scripts written without spaces (Chinese, Japanese,
Thai) come out as one long token per run: their ratios stay defined, and word-count rules reject them
as they should for an English rule set.
"""

from __future__ import annotations

import polars as pl

# spaCy splits text on whitespace, then peels punctuation off both ends of each chunk, and splits
# contractions ("do|n't") and hyphens between letters ("well|-|known"). Here: two rewrites put a space
# where spaCy would split inside a chunk, then a token is a URL, a contraction, a chunk that starts and
# ends with a letter or digit (inner punctuation kept: "U.S", "3.5", "foo@bar.com", LaTeX, code), or one
# punctuation mark (an ellipsis and a run of dashes count as one). Word boundaries are ASCII ones
# ((?-u:\b)): a Unicode \b keeps Rust's regex off its fast engines, 10x slower here.
_CONTRACTED = r"(?i)(\p{L})(n['’]t|['’](?:[sdm]|re|ve|ll))(?-u:\b)"
_HYPHENATED = r"([\p{L}\p{N}])(-+|–|—|~)(\p{L})"
URL = r"(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]'’”]"
CONTRACTION = r"(?i)['’](?:[sdm]|re|ve|ll)(?-u:\b)"
WORD = r"[\p{L}\p{N}\p{M}](?:\S*[\p{L}\p{N}\p{M}])?"
PUNCT = r"\.\.\.+|…|--+|[^\s\p{L}\p{N}\p{M}]"
TOKEN = f"{URL}|{CONTRACTION}|{WORD}|{PUNCT}"


def words(text: pl.Expr) -> pl.Expr:
    """The text's tokens as a list of strings."""
    return _split_inside_chunks(text).str.extract_all(TOKEN)


def word_count(text: pl.Expr) -> pl.Expr:
    """len(words(text)), without building the lists."""
    return _split_inside_chunks(text).str.count_matches(TOKEN)


def _split_inside_chunks(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(_CONTRACTED, "$1 $2").str.replace_all(_HYPHENATED, "$1 $2 $3")


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
