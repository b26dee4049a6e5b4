"""Exact deduplication on a hash of the (normalised) dedup-key fields."""

from __future__ import annotations

import hashlib

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, GlobalOperator, Params, tasks_for
from operators.clean.normalize import for_matching
from operators.registry import register

_SEP = "\x1f"  # joins key fields so ("ab", "c") and ("a", "bc") differ
PARTITIONS = 8  # decide tasks at most, each over the keys whose first hex digit is its own (mod the tasks)
PART_ROWS = 1_000_000  # index rows per decide task: each task reads the whole index to pick its keys


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

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        return cluster_stats(None, rejected, "duplicate")  # a survivor is its key's first row: one of the kept

    def partitions(self, rows: int) -> int:
        return tasks_for(rows, PART_ROWS, PARTITIONS)

    def decide_part(self, index: pl.LazyFrame, part: int, rows: int) -> pl.DataFrame:
        """The duplicates among the rows whose key hash starts with this part's hex digits: the first row of
        each key (in input order) survives; the others name it in `detail`."""
        mine = index.select("id", "key")
        if (parts := self.partitions(rows)) > 1:
            mine = mine.filter(pl.col("key").str.slice(0, 1).str.to_integer(base=16) % parts == part)
        mine = mine.collect()
        first = pl.col("key").is_first_distinct()  # one hash of every key; a window over them costs twice that
        later = mine.filter(~first)
        survivors = mine.filter(first & pl.col("key").is_in(later["key"].implode())).rename({"id": "survivor"})
        dupes = later.join(survivors, on="key", how="left", maintain_order="left").filter(pl.col("id") != pl.col("survivor"))
        dupes = dupes.unique("id", keep="first", maintain_order=True)  # an id twice in the rows: dropped once
        return self.drops(dupes, "duplicate", pl.col("survivor"))

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> pl.DataFrame:
        return pl.concat(parts)


def cluster_stats(kept: pl.LazyFrame | None, rejected: pl.LazyFrame, reason: str) -> dict:
    """Duplicate clusters from a dedup stage's rejects (each names its survivor in `detail`): how many, how
    many rows they hold, the largest, a histogram of sizes (2, 3, 4-7, 8-15, ...), and how many rows were
    duplicates of a survivor from an earlier release (one not among the `kept` rows; None: every survivor is
    a kept row, so the kept rows' ids, on an object store a read of every shard's, need not be read)."""
    members = rejected.filter(pl.col(REASON) == reason).group_by(DETAIL).len().collect()
    sizes = members["len"] + 1
    low = pl.lit(2).pow(sizes.log(2).floor()).cast(pl.Int64)
    label = pl.when(sizes <= 3).then(sizes.cast(pl.String)).otherwise(pl.format("{}-{}", low, 2 * low - 1))
    histogram = (pl.DataFrame({"size": sizes}).with_columns(label.alias("bucket"))
                 .group_by("bucket").agg(pl.len(), pl.col("size").min()).sort("size"))
    earlier = members.clear() if kept is None else \
        members.filter(~pl.col(DETAIL).is_in(kept.select("id").collect()["id"].implode()))
    stats = {"clusters": len(members), "rows_in_clusters": int(sizes.sum() or 0), "largest": int(sizes.max() or 0),
             "sizes": dict(zip(histogram["bucket"], histogram["len"]))}
    if len(earlier):
        stats["duplicates_of_earlier_rows"] = int(earlier["len"].sum())
    return stats
