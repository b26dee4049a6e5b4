"""DSIR (Xie et al. 2023): importance resampling toward a target set with hashed n-gram features."""

from __future__ import annotations

import gzip
import io
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from operators.diversity import features as ft
from operators.diversity.features import joined_text
from operators.diversity.samplers import Sampler, SamplerParams, Selection, top_k
from operators.errors import ConfigError
from operators.registry import register


@register
class DsirSample(Sampler):
    """DSIR: importance resampling toward a target file (hashed 1-2-gram bags, Gumbel top-k).

    Each row's log weight is log p_target(x) - log p_raw(x) under add-one smoothed bag-of-buckets models;
    Gumbel noise plus top-k samples `budget` rows without replacement in proportion to the weights."""

    name = "dsir_sample"
    fits = False

    class Params(SamplerParams):
        target: str = Field(description="file of target-like text: JSONL(.gz), JSON array, Parquet or CSV")
        target_fields: list[str] | None = Field(default=None, description="text columns of the target file; "
                                                "default: `fields`")
        n_features: int = Field(default=10_000, ge=16, description="hash buckets (the paper uses 10k)")

    @cached_property
    def target_counts(self) -> np.ndarray:
        """Bucket counts summed over the target file (read once; the file is a parameter, like a benchmark)."""
        fields = self.params.target_fields or self.params.fields
        texts = joined_text(read_table(Path(self.params.target), fields), fields)
        return np.asarray(ft.ngram_counts(texts, self.n_features, self.ngrams).sum(axis=0)).ravel()

    def data_files(self) -> list[Path]:
        return [Path(self.params.target)]

    def choose_part(self, sample, rows, parts):
        """Each row's log weight against this part's rows as the raw distribution (a uniform share of every
        row, dealt by id hash), and its Gumbel key."""
        counts = self.counts(rows)
        log_ratio = _log_probs(self.target_counts) - _log_probs(np.asarray(counts.sum(axis=0)).ravel())
        log_weight = np.asarray(counts @ log_ratio).ravel()
        keys = log_weight - np.log(-np.log(self.random_order(rows["id"])))  # + Gumbel: top-k samples w/o replacement
        return rows.select("id", w=np.round(log_weight, 3), k=keys)

    def choose(self, rows):
        return Selection(top_k(rows["k"].to_numpy(), self.params.budget),
                         pl.format("log_weight={} key={}", "w", pl.col("k").round(3)))


def _log_probs(counts: np.ndarray) -> np.ndarray:
    """Add-one smoothed log probabilities of a bag-of-buckets model."""
    smoothed = counts.astype(np.float64) + 1
    return np.log(smoothed / smoothed.sum())


def read_table(path: Path, fields: list[str]) -> pl.DataFrame:
    """A small reference file (JSONL(.gz), JSON array, Parquet, CSV) with `fields` present."""
    if not path.is_file():
        raise ConfigError(f"{path}: target file not found")
    name = path.name.lower().removesuffix(".gz")
    data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    readers = {".jsonl": pl.read_ndjson, ".ndjson": pl.read_ndjson, ".json": pl.read_json,
               ".parquet": pl.read_parquet, ".csv": pl.read_csv}
    reader = next((r for suffix, r in readers.items() if name.endswith(suffix)), None)
    if reader is None:
        raise ConfigError(f"{path}: cannot tell the target format; use .jsonl, .json, .parquet or .csv")
    try:
        table = reader(io.BytesIO(data))
    except Exception as err:  # polars raises several error types for malformed files
        raise ConfigError(f"{path}: cannot read the target file: {str(err).splitlines()[0]}") from None
    missing = [f for f in fields if f not in table.columns]
    if missing:
        raise ConfigError(f"{path}: target file has no column {missing[0]!r}; its columns: {table.columns}. "
                          f"Name the text column with target_fields (CLI: --target-field)")
    return table
