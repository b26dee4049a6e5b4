"""Shingles as flat arrays of stable 64-bit hashes: the shared front end of MinHash dedup and decontamination.

A batch of texts becomes one flat `uint64` array of n-gram hashes plus row offsets (row i owns
`hashes[offsets[i]:offsets[i+1]]`), computed without a Python loop per row or per token:
Polars normalises and tokenises, each distinct token is hashed once (BLAKE2b, stable across runs,
versions and machines, unlike Polars' own hash), and NumPy combines token hashes into n-gram hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from operators.clean.normalize import for_matching
from operators.quality.tokenize import UNSPACED  # the quality filters' notion of scripts written without spaces

Unit = Literal["auto", "word", "char"]
# `auto` tokens: a run of non-space characters, except that each character of a script written without spaces
# (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) is a token of its own, as the length filters count words.
_AUTO_TOKEN = rf"[{UNSPACED}]|[^\s{UNSPACED}]+"

# Odd 64-bit multipliers, one per n-gram position (positions matter: "a b" and "b a" differ).
MAX_N = 64
_POSITION_MULTIPLIERS = np.array(
    [int.from_bytes(hashlib.blake2b(f"sluice-ngram-{k}".encode(), digest_size=8).digest(), "little") | 1
     for k in range(MAX_N)], dtype=np.uint64)


@dataclass(frozen=True)
class Shingles:
    """n-gram hashes of a batch of texts, flat, with row offsets; `tokens[i]` counts row i's tokens."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(rows) + 1
    tokens: np.ndarray  # int64, tokens per row

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def key_text(batch: pl.DataFrame, fields: list[str]) -> pl.Series:
    """The text each row is compared by: its key fields (see `field_text`) joined by a space, normalised."""
    parts = [field_text(batch, f) for f in fields]
    return batch.select(for_matching(pl.concat_str(parts, separator=" ")).alias("key"))["key"]


def tokens(text: pl.Expr, unit: Unit) -> pl.Expr:
    """Words, characters or `auto` tokens (words, and single characters in scripts written without spaces) of
    text normalised by `key_text` (single spaces, no edge spaces), as a list per row."""
    if unit == "auto":
        parts = text.str.extract_all(_AUTO_TOKEN)
    else:
        parts = text.str.split(" ") if unit == "word" else text.str.split("")
    return pl.when(text.str.len_bytes() > 0).then(parts).otherwise(pl.lit([], dtype=pl.List(pl.String)))


def token_hashes(token_lists: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 hashes of every token, in row order, and the number of tokens per row."""
    lengths = token_lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = token_lists.explode().drop_nulls()
    vocab = flat.unique(maintain_order=True)
    digests = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in vocab.to_list()]
    codes = flat.to_frame("t").join(
        pl.DataFrame({"t": vocab, "h": pl.Series(digests, dtype=pl.UInt64)}), on="t", how="left", maintain_order="left"
    )["h"]
    return codes.to_numpy(), lengths


def ngram_hashes(hashes: np.ndarray, lengths: np.ndarray, n: int, short: Literal["whole", "none"] = "whole") -> Shingles:
    """Hash every run of `n` consecutive tokens within a row.

    A row with fewer than `n` tokens (but at least one) gets one shingle of all its tokens when
    `short="whole"` (so a one-word document still has a signature), and none with `short="none"`."""
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n-gram size must be between 1 and {MAX_N}, got {n}")
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(hashes), dtype=np.int64) - np.repeat(starts, lengths)
    row_len = np.repeat(lengths, lengths)
    valid = position + n <= row_len  # windows that stay inside their row
    combined = _window_sums(hashes, n)
    if short == "whole":
        short_rows = np.flatnonzero((lengths > 0) & (lengths < n))
        valid[starts[short_rows]] = True
        combined[starts[short_rows]] = [_window_sums(hashes[s: s + k], k)[0]
                                        for s, k in zip(starts[short_rows], lengths[short_rows])]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    per_row = np.bincount(rows[valid], minlength=len(lengths)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
    return Shingles(mix64(combined[valid]), offsets, lengths)


def _window_sums(hashes: np.ndarray, n: int) -> np.ndarray:
    """sum_k hashes[i + k] * M_k (mod 2^64) for every i; windows running past the end are partial."""
    combined = hashes * _POSITION_MULTIPLIERS[0]
    for k in range(1, min(n, len(hashes))):
        combined[: len(hashes) - k] += hashes[k:] * _POSITION_MULTIPLIERS[k]
    return combined


def shingle(texts: pl.Series, n: int, unit: Unit = "word", short: Literal["whole", "none"] = "whole") -> Shingles:
    """Normalised texts -> n-gram hashes (see `ngram_hashes`)."""
    token_lists = texts.to_frame("t").select(tokens(pl.col("t"), unit))["t"]
    hashes, lengths = token_hashes(token_lists)
    return ngram_hashes(hashes, lengths, n, short)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads a linear combination into well-distributed bits."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def field_text(batch: pl.DataFrame, field: str) -> pl.Expr:
    """A column as text: strings as they are, a conversation (`messages`: list of {role, content}) as its
    contents joined, a list of strings joined, anything else cast to a string; null as empty."""
    if field not in batch.schema:
        raise pl.exceptions.ColumnNotFoundError(f'"{field}" not found')
    dtype = batch.schema[field]
    col = pl.col(field)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        names = [f.name for f in dtype.inner.fields]
        part = "content" if "content" in names else names[0]
        col = col.list.eval(pl.element().struct.field(part).cast(pl.String)).list.join(" ")
    elif isinstance(dtype, pl.List):
        col = col.list.eval(pl.element().cast(pl.String)).list.join(" ")
    elif dtype != pl.String:
        col = col.cast(pl.String)
    return col.fill_null("")
