"""Mixing: combine sources (the `source` column the readers set per input) by target ratios."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from operators.base import DETAIL, REASON, Decision, GlobalOperator, Params, tasks_for
from operators.diversity import features as ft
from operators.diversity.features import joined_text
from operators.errors import ConfigError
from operators.quality.text import plain_word_count
from operators.registry import register
from operators.tokens import DEFAULT_TOKENIZER, count_tokens, describe, field_text


PARTS = 8  # decide tasks at most: each takes the rows of every PARTS-th source (by name)
PART_ROWS = 1_000_000  # index rows per decide task (each reads the whole index for the sources' sizes)


@register
class Mix(GlobalOperator):
    """Mix sources by target shares of rows or tokens, down- or up-sampling each at random (seeded).

    Tokens are counted with a real tokenizer (`tokenizer`, default the embedded model's vocabulary; name
    the tokenizer.json of the model you train for its exact budget); `unit: words` keeps the word proxy.

    A source too small for its share repeats its rows, each at most `max_repeat` times (default 1: never).
    Sources not named in `ratios` are dropped as `not_in_mix`, surplus rows as `not_selected`; a repeated
    row's extra copies get the ids `<id>#2`, `<id>#3`, ... The manifest records the realised mixture."""

    name = "mix"

    class Params(Params):
        ratios: dict[str, float] = Field(min_length=1, description="source -> share (normalised to sum 1)")
        unit: Literal["rows", "tokens", "words"] = Field(default="rows", description="what the shares measure")
        tokenizer: str = Field(default=DEFAULT_TOKENIZER, description="counts tokens: 'smollm2', a tokenizer.json or a .gguf")
        total: int | None = Field(default=None, ge=1, description="rows or tokens in the mixture; default: the "
                                  "largest the sources allow with at most max_repeat copies of a row")
        max_repeat: int = Field(default=1, ge=1, description="most copies of one row (1: never up-sample)")
        fields: list[str] = Field(default=["text"], min_length=1, description="text columns counted as tokens")
        seed: int = 0

        @field_validator("ratios")
        @classmethod
        def _positive(cls, ratios: dict[str, float]) -> dict[str, float]:
            bad = [s for s, r in ratios.items() if not r > 0]
            if bad:
                raise ValueError(f"ratio of source {bad[0]!r} must be > 0 (leave a source out to drop it)")
            return ratios

    @property
    def shares(self) -> dict[str, float]:
        return {s: r / sum(self.params.ratios.values()) for s, r in self.params.ratios.items()}

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        if p.unit == "tokens":
            size = count_tokens(field_text(batch, p.fields), p.tokenizer)
        elif p.unit == "words":
            size = word_counts(joined_text(batch, p.fields))
        else:
            size = pl.Series("size", np.ones(len(batch), np.int64))
        return pl.DataFrame([batch["id"], batch["source"].cast(pl.String), size.alias("size")])

    def partitions(self, rows: int) -> int:
        return tasks_for(rows, PART_ROWS, PARTS)

    def targets(self, index: pl.LazyFrame) -> pl.DataFrame:
        """Every source present: `source`, `available` (its rows' sizes summed) and `target` (its share of
        the total, null for a source not in the mix); a ConfigError when the mixture cannot be made."""
        p, shares = self.params, self.shares
        available = dict(index.group_by("source").agg(pl.col("size").sum()).collect().iter_rows())
        missing = [s for s in shares if not available.get(s)]
        if missing:
            raise ConfigError(f"mix: source {missing[0]!r} has no rows; sources present: {sorted(available)}")
        most = min(available[s] * p.max_repeat / share for s, share in shares.items())
        total = p.total or most
        if total > most * (1 + 1e-9):
            short = min(shares, key=lambda s: available[s] / shares[s])
            need = shares[short] * total
            raise ConfigError(f"mix: total {total:,} {p.unit} needs {need:,.0f} from source {short!r}, which has "
                              f"{available[short]:,}; the most this mixture allows is {int(most):,} with "
                              f"max_repeat={p.max_repeat}" + (f" (max_repeat: {math.ceil(need / available[short])} "
                                                              f"would up-sample it)" if p.max_repeat == 1 else ""))
        return pl.DataFrame({"source": sorted(available), "target": [shares[s] * total if s in shares else None
                                                                      for s in sorted(available)]},
                            schema={"source": pl.String, "target": pl.Float64})

    def decide_part(self, index: pl.LazyFrame, part: int, rows: int) -> pl.DataFrame:
        """The choice inside this part's sources (every n-th one by name, of n tasks): `id`, and `reason` +
        `detail` for a row left out or `copies` for a row taken more than once. Nothing when the mix cannot
        be made (`combine` says why)."""
        try:
            targets = self.targets(index)[part::self.partitions(rows)]
        except ConfigError:
            return pl.DataFrame()
        rows = index.filter(pl.col("source").is_in(targets["source"].implode())).collect()
        return self.take(rows, targets) if len(rows) else pl.DataFrame()

    def take(self, rows: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
        """The rows of each source in a seeded random order, pass after pass, until its target: a row is
        taken once per pass whose running total up to it stays within the target."""
        p = self.params
        ranked = (rows.with_columns(pl.Series("u", ft.uniform(rows["id"], p.seed)))
                  .join(targets, on="source", how="left", maintain_order="left")
                  .sort("source", "u", "id")
                  .with_columns(pl.col("size").cum_sum().over("source").alias("running"),
                                pl.col("size").sum().over("source").alias("source_size")))
        slack = pl.col("target") * 1e-9 + 1e-9
        passes = ((pl.col("target") + slack - pl.col("running")) // pl.col("source_size") + 1).clip(0, p.max_repeat)
        ranked = ranked.with_columns(passes.cast(pl.Int64).alias("copies"))
        outside = ranked.filter(pl.col("target").is_null())
        surplus = ranked.filter(pl.col("copies") == 0)
        detail = pl.format("source={} target={} {}", "source", pl.col("target").round(0).cast(pl.Int64), pl.lit(p.unit))
        return pl.concat([self.drops(outside, "not_in_mix", pl.format("source={}", "source")),
                          self.drops(surplus, "not_selected", detail),
                          ranked.filter(pl.col("copies") > 1).select("id", "copies")], how="diagonal")

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> Decision:
        self.targets(index)  # the ConfigError the parts left to the driver
        table = pl.concat([part for part in parts if part.height], how="diagonal_relaxed") \
            if any(part.height for part in parts) else pl.DataFrame(schema={"id": pl.String})
        drops = table.filter(pl.col(REASON).is_not_null()).select("id", REASON, DETAIL) if REASON in table.columns \
            else self.drops(table.clear(), "not_selected")
        copies = table.filter(pl.col("copies").is_not_null()).select("id", "copies") if "copies" in table.columns \
            else pl.DataFrame(schema={"id": pl.String, "copies": pl.Int64})
        return Decision(drops, copies=copies)

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """The realised mixture next to the target: per source the rows available, the rows and tokens
        in the mixture with their shares, and how many of those rows are repeated copies."""
        columns = kept.collect_schema()
        kept = kept.select([c for c in dict.fromkeys(("id", "source", *self.params.fields)) if c in columns]).collect()
        rejected = rejected.select([c for c in ("source",) if c in rejected.collect_schema()]).collect()
        has_text = all(f in kept.columns for f in self.params.fields)
        realised = mixture(kept, self.params.fields if has_text else None, tokenizer=self.params.tokenizer)
        is_copy = pl.col("id").str.contains(r"#\d+$") & pl.col("id").str.replace(r"#\d+$", "").is_in(kept["id"].implode())
        copies = dict(kept.filter(is_copy).group_by(pl.col("source").cast(pl.String)).len().iter_rows())
        originals = kept.filter(~is_copy)
        offered = pl.concat([f.select(pl.col("source").cast(pl.String)) for f in (originals, rejected)
                             if "source" in f.columns])
        available = dict(offered.group_by("source").len().iter_rows())
        sources = {}
        for source in sorted(set(available) | set(self.shares)):
            entry = {"target_share": round(self.shares.get(source, 0.0), 4), "available_rows": available.get(source, 0)}
            sources[source] = entry | realised.get(source, {"rows": 0, "share_rows": 0.0}) | {"copies": copies.get(source, 0)}
        return {"unit": self.params.unit, "max_repeat": self.params.max_repeat, "rows": kept.height,
                "tokens_counted": has_text, "mixture": sources} | (describe(self.params.tokenizer) if has_text else {})


def word_counts(texts: pl.Series) -> pl.Series:
    """Words as the length filter counts them (`unit: words`; each Chinese/Japanese/Thai character counts as one)."""
    return pl.select(plain_word_count(pl.lit(texts))).to_series().alias("tokens")


def mixture(frame: pl.DataFrame, fields: list[str] | None = None, by: str = "source",
            tokenizer: str = DEFAULT_TOKENIZER) -> dict[str, dict]:
    """The realised mixture of a table: rows (and tokens, when `fields` are given) per source, with shares.
    For the manifest and the report: {source: {rows, share_rows[, tokens, share_tokens]}}."""
    sizes = frame.select(pl.col(by).cast(pl.String).alias("source"),
                         (count_tokens(field_text(frame, fields), tokenizer) if fields else pl.lit(0)).alias("tokens"))
    per = sizes.group_by("source").agg(pl.len().alias("rows"), pl.col("tokens").sum()).sort("source")
    rows, tokens = max(int(per["rows"].sum()), 1), max(int(per["tokens"].sum()), 1)
    result = {}
    for source, n, t in per.iter_rows():
        entry = {"rows": n, "share_rows": round(n / rows, 4)}
        if fields:
            entry |= {"tokens": t, "share_tokens": round(t / tokens, 4)}
        result[source] = entry
    return result
