"""Unicode and whitespace normalisation, as Polars expressions."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from operators.base import Mapper, Params
from operators.registry import register

# C0 controls and DEL, except tab and newline (which whitespace handling deals with); NUL included.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


def normalize_text(text: pl.Expr, form: str = "NFC", strip_control: bool = True) -> pl.Expr:
    """Unicode `form`, `\\r\\n` -> `\\n`, runs of horizontal whitespace (tabs, NBSP...) -> one space,
    no spaces around line breaks, at most one blank line in a row, no leading/trailing whitespace."""
    if strip_control:
        text = text.str.replace_all(_CONTROL, "")
    return (
        text.str.normalize(form)
        .str.replace_all(r"\r\n?", "\n")
        .str.replace_all(r"[^\S\n]+", " ")
        .str.replace_all(r" ?\n ?", "\n")
        .str.replace_all(r"\n{3,}", "\n\n")
        .str.strip_chars()
    )


def for_matching(text: pl.Expr) -> pl.Expr:
    """The form two texts are compared in by dedup and decontamination: NFKC, lower case,
    punctuation and symbols removed, whitespace collapsed."""
    return (
        text.str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"[\p{P}\p{S}]+", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


@register
class Normalize(Mapper):
    """Unicode normalisation (NFC by default), control characters removed, whitespace tidied."""

    name = "normalize"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1, description="string columns to normalise")
        form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"
        strip_control: bool = Field(default=True, description="remove C0 control characters and NUL")

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        return batch.with_columns(normalize_text(pl.col(f), p.form, p.strip_control) for f in p.fields)
