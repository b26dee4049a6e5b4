"""Length bounds in words and characters."""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from operators.base import Filter, Params, Threshold, thresholds_of
from operators.quality.text import plain_word_count
from operators.registry import register


@register
class LengthFilter(Filter):
    """Keep rows whose field has between min and max words (and characters); empty text fails min_words."""

    name = "length_filter"

    class Params(Params):
        field: str = Field(default="text", description="string column to measure")
        min_words: int = Field(default=1, ge=0)
        max_words: int | None = Field(default=None, ge=1)
        min_chars: int = Field(default=0, ge=0)
        max_chars: int | None = Field(default=None, ge=1)

        @model_validator(mode="after")
        def _bounds_ordered(self):
            for low, high in (("min_words", "max_words"), ("min_chars", "max_chars")):
                hi = getattr(self, high)
                if hi is not None and hi < getattr(self, low):
                    raise ValueError(f"{high} ({hi}) is below {low} ({getattr(self, low)})")
            return self

    def columns(self) -> dict[str, str]:
        field = self.params.field
        return {self._words: f"words in `{field}` (each Chinese/Japanese/Thai... character counts as one)",
                self._chars: f"characters in `{field}`"}

    def thresholds(self) -> list[Threshold]:
        p = self.params
        return thresholds_of((self._words, "min_words", p.min_words or None, "min"),  # a minimum of 0 bounds nothing
                             (self._words, "max_words", p.max_words, "max"),
                             (self._chars, "min_chars", p.min_chars or None, "min"),
                             (self._chars, "max_chars", p.max_chars, "max"))

    @property
    def _words(self) -> str:
        return f"score_words_{self.params.field}"

    @property
    def _chars(self) -> str:
        return f"score_chars_{self.params.field}"

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        text = pl.col(self.params.field).fill_null("")
        return batch.with_columns(
            plain_word_count(text).alias(self._words),
            text.str.len_chars().cast(pl.Int64).alias(self._chars),
        )

    def rules(self) -> dict[str, pl.Expr]:
        p, words, chars = self.params, pl.col(self._words), pl.col(self._chars)
        rules = {"too_few_words": words < p.min_words, "too_few_chars": chars < p.min_chars}
        if p.max_words is not None:
            rules["too_many_words"] = words > p.max_words
        if p.max_chars is not None:
            rules["too_many_chars"] = chars > p.max_chars
        return rules
