"""C4's bad-words rule, per language: drop a document that contains any word of its language's list.

The lists are LDNOOBW's (CC BY 4.0, data/bad_words/, 26 languages), the ones C4 used. As in C4, a word
matches between non-word characters in languages written with spaces, and anywhere in Chinese, Japanese and
Thai (no spaces to mark words). A row's language is its `lang` column (from `langid`) when there is one, else
`language`. A language without a list is not judged: the row is kept and counted as `not_calibrated` in the stats.
Changes to C4 for Chinese, Japanese and Thai, which have no spaces to find words by: Latin entries ("sm", "xx")
match only as whole words, and entries of one character or without a letter are left out. With them, the
Chinese list's 性 (in 女性, 可能性) and 逼 (in 逼近) dropped 7% of real Chinese sentences (lingua zh);
without them about 1% (bench/README.md).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import polars as pl
from pydantic import Field

from operators.base import Filter, Params, Threshold
from operators.registry import register

LISTS = Path(__file__).resolve().parents[2] / "data" / "bad_words"
NO_SPACES = {"zh", "ja", "th"}
DATA_FILES = (LISTS,)
LANGUAGE_ALIASES = {"nb": "no", "nn": "no", "tl": "fil"}  # lid.176 codes -> list names


@functools.cache
def word_list(lang: str) -> tuple[str, ...]:
    path = LISTS / f"{LANGUAGE_ALIASES.get(lang, lang)}.txt"
    if not path.is_file():
        return ()
    words = {line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()}
    return tuple(sorted(w for w in words if w))


def list_languages() -> list[str]:
    return sorted(p.stem for p in LISTS.glob("*.txt"))


@functools.cache
def pattern(lang: str) -> str | None:
    """A Rust-regex (Polars) pattern matching any listed word of `lang` in lower-cased text."""
    words = word_list(lang)
    if not words:
        return None
    if lang not in NO_SPACES:
        return rf"(?:\W|^)({_alternation(words)})(?:\W|$)"
    # Latin entries of the Japanese list ("sm", "xx") still need word edges; letterless ones ("13.") are left out
    latin = [w for w in words if w.isascii() and re.search(r"[a-z]", w)]
    native = [w for w in words if not w.isascii() and len(w) > 1]
    parts = [f"({_alternation(native)})"] if native else []
    if latin:
        parts.append(f"(?:[^a-z0-9]|^)({_alternation(latin)})(?:[^a-z0-9]|$)")
    return "|".join(parts)


def _alternation(words: list[str] | tuple[str, ...]) -> str:
    return "|".join(re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", w) for w in sorted(words, key=len, reverse=True))


@register
class BadWords(Filter):
    """C4's rule with LDNOOBW's lists per language: reject documents containing a listed word."""

    name = "bad_words"

    class Params(Params):
        field: str = Field(default="text", description="column to check")
        language: str = Field(default="en", description="language of rows without a `lang` column")
        max_hits: int = Field(default=0, ge=0, description="most listed words a kept document may contain (C4: 0)")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        langs = (batch["lang"].fill_null("") if "lang" in batch.columns
                 else pl.Series("lang", [self.params.language] * len(batch)))
        text = pl.col(self.params.field).fill_null("").str.to_lowercase()
        hits = pl.lit(None, dtype=pl.UInt32)
        for lang in langs.unique().to_list():
            regex = pattern(lang)
            if regex is not None:
                hits = pl.when(pl.lit(langs) == lang).then(text.str.count_matches(regex).cast(pl.UInt32)).otherwise(hits)
        return batch.with_columns(hits.alias("score_bad_words"))

    def rules(self) -> dict[str, pl.Expr]:
        return {"bad_words": pl.col("score_bad_words") > self.params.max_hits}

    def thresholds(self) -> list[Threshold]:
        return [Threshold("score_bad_words", "max_hits", self.params.max_hits, "max")]

    def columns(self) -> dict[str, str]:
        return {"score_bad_words": "occurrences of listed words (LDNOOBW, the row's language); null: no list for it"}

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Rows dropped per language, and rows kept unjudged because their language has no list."""
        schema = kept.collect_schema()
        lang = pl.col("lang") if "lang" in schema else pl.lit(self.params.language)
        unjudged = kept.filter(pl.col("score_bad_words").is_null()).select(lang.alias("lang")).collect()["lang"]
        if "lang" in rejected.collect_schema() or "lang" not in schema:
            dropped = rejected.select(lang.alias("lang")).collect()["lang"]
        else:
            dropped = pl.Series("lang", [], dtype=pl.String)
        return {"not_calibrated": dict(sorted(unjudged.value_counts().iter_rows())),
                "dropped_by_language": dict(sorted(dropped.value_counts().iter_rows())),
                "languages_with_lists": list_languages()}
