"""Mixing: combine sources (the `source` column the readers set per input) by target ratios."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from operators.base import GlobalOperator, Params
from operators.diversity import features as ft
from operators.diversity.samplers import joined_text
from operators.errors import ConfigError
from operators.registry import register


@register
class Mix(GlobalOperator):
    """Mix sources by target shares of rows or tokens, down-sampling each at random (seeded).

    Sources not named in `ratios` are dropped as `not_in_mix`, surplus rows as `not_selected`."""

    name = "mix"

    class Params(Params):
        ratios: dict[str, float] = Field(min_length=1, description="source -> share (normalised to sum 1)")
        unit: Literal["rows", "tokens"] = Field(default="rows", description="what the shares measure")
        total: int | None = Field(default=None, ge=1, description="rows or tokens in the mixture; default: "
                                  "the largest the sources allow without upsampling")
        fields: list[str] = Field(default=["text"], min_length=1, description="text columns counted as tokens")
        seed: int = 0

        @field_validator("ratios")
        @classmethod
        def _positive(cls, ratios: dict[str, float]) -> dict[str, float]:
            bad = [s for s, r in ratios.items() if not r > 0]
            if bad:
                raise ValueError(f"ratio of source {bad[0]!r} must be > 0 (leave a source out to drop it)")
            return ratios

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        size = (token_counts(joined_text(batch, self.params.fields)) if self.params.unit == "tokens"
                else pl.Series("size", np.ones(len(batch), np.int64)))
        return pl.DataFrame([batch["id"], batch["source"].cast(pl.String), size.alias("size")])

    def decide(self, index: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        index = index.sort("id").with_columns(pl.Series("u", ft.uniform(index.sort("id")["id"], p.seed)))
        shares = {s: r / sum(p.ratios.values()) for s, r in p.ratios.items()}
        available = dict(index.group_by("source").agg(pl.col("size").sum()).iter_rows())
        missing = [s for s in shares if not available.get(s)]
        if missing:
            raise ConfigError(f"mix: source {missing[0]!r} has no rows; sources present: {sorted(available)}")
        most = min(available[s] / share for s, share in shares.items())
        total = p.total or most
        if total > most * (1 + 1e-9):
            short = min(shares, key=lambda s: available[s] / shares[s])
            raise ConfigError(f"mix: total {total:,} {p.unit} needs {shares[short] * total:,.0f} from source "
                              f"{short!r}, which has {available[short]:,}; the most this mixture allows is "
                              f"{int(most):,} (upsampling is not supported: a stage can only drop rows)")
        targets = pl.DataFrame({"source": list(shares), "target": [shares[s] * total for s in shares]})
        ranked = (index.join(targets, on="source", how="left", maintain_order="left")
                  .sort("source", "u", "id")
                  .with_columns(pl.col("size").cum_sum().over("source").alias("running")))
        outside = ranked.filter(pl.col("target").is_null())
        surplus = ranked.filter(pl.col("target").is_not_null() & (pl.col("running") > pl.col("target") + 1e-9))
        detail = pl.format("source={} target={} {}", "source", pl.col("target").round(0).cast(pl.Int64), pl.lit(p.unit))
        return pl.concat([self.drops(outside, "not_in_mix", pl.format("source={}", "source")),
                          self.drops(surplus, "not_selected", detail)])


def token_counts(texts: pl.Series) -> pl.Series:
    """Whitespace-separated words: the token proxy (no tokenizer download; ~0.75 of a BPE token count)."""
    return texts.str.count_matches(r"\S+").cast(pl.Int64).alias("tokens")


def mixture(frame: pl.DataFrame, fields: list[str] | None = None, by: str = "source") -> dict[str, dict]:
    """The realised mixture of a table: rows (and words, when `fields` are given) per source, with shares.
    For the manifest and the report: {source: {rows, share_rows[, tokens, share_tokens]}}."""
    sizes = frame.select(pl.col(by).cast(pl.String).alias("source"),
                         (token_counts(joined_text(frame, fields)) if fields else pl.lit(0)).alias("tokens"))
    per = sizes.group_by("source").agg(pl.len().alias("rows"), pl.col("tokens").sum()).sort("source")
    rows, tokens = max(int(per["rows"].sum()), 1), max(int(per["tokens"].sum()), 1)
    result = {}
    for source, n, t in per.iter_rows():
        entry = {"rows": n, "share_rows": round(n / rows, 4)}
        if fields:
            entry |= {"tokens": t, "share_tokens": round(t / tokens, 4)}
        result[source] = entry
    return result
