"""Exact deduplication on a hash of the (normalised) dedup-key fields."""

from __future__ import annotations

import hashlib

import polars as pl
from pydantic import Field

from operators.base import GlobalOperator, Params
from operators.clean.normalize import for_matching
from operators.registry import register

_SEP = "\x1f"  # joins key fields so ("ab", "c") and ("a", "bc") differ


def content_hash(texts: pl.Series) -> pl.Series:
    """128-bit BLAKE2b hex digest of each string: stable across runs, versions and machines
    (Polars' own hash is not)."""
    return pl.Series(
        texts.name,
        [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in texts.to_list()],
        dtype=pl.String,
    )


@register
class ExactDedup(GlobalOperator):
    """Drop rows whose key fields equal an earlier row's, after normalisation (case, punctuation, whitespace)."""

    name = "exact_dedup"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1, description="columns that form the dedup key")
        normalize: bool = Field(default=True, description="compare lower-cased text without punctuation")

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        parts = [pl.col(f).cast(pl.String).fill_null("") for f in self.params.fields]
        if self.params.normalize:
            parts = [for_matching(p) for p in parts]
        keys = batch.select(pl.concat_str(parts, separator=_SEP).alias("key"))["key"]
        return pl.DataFrame({"id": batch["id"], "key": content_hash(keys)})

    def decide(self, index: pl.DataFrame) -> pl.DataFrame:
        """The first row of each key (in input order) survives; the others name it in `detail`."""
        survivor = pl.col("id").first().over("key")
        dupes = index.with_columns(survivor.alias("survivor")).filter(pl.col("id") != pl.col("survivor"))
        return self.drops(dupes, "duplicate", pl.col("survivor"))
