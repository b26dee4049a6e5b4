"""Benchmark decontamination: flag (and drop) rows that contain a benchmark test item.

Benchmark items are split into segments (a question, an answer, a prompt) and indexed once per process:
- long segments (>= ngram words) by their word n-grams (13 by default); an n-gram that occurs in more than
  MAX_SHARED segments is boilerplate ("which of the following is ...") and is not used as evidence;
- short segments (min_short_words .. ngram-1 words, e.g. a 9-word TruthfulQA question) by the segment
  as a whole, unless it also occurs inside another segment (then it is too generic to prove anything).
Identical segments are indexed once, under the first item that has them.
A row is a candidate for a segment when it shares one of its n-grams; the candidate is confirmed when the
row contains at least `min_overlap` of the segment's word trigrams (robust to a changed word, while one
shared 13-gram of a famous quote is not enough). A short segment found whole is confirmed at once.
Text is compared after the shared normalisation (case, punctuation, whitespace, Unicode).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from operators.base import DETAIL, REASON, Filter, Params, Split
from operators.dedup.shingles import MAX_N, key_text, ngram_hashes, token_hashes, tokens
from operators.errors import ConfigError
from operators.registry import register

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
BENCHMARKS = ("gsm8k", "mmlu", "hellaswag", "humaneval", "truthfulqa")
CONFIRM_N = 3  # the similarity check compares word trigrams
MAX_SHARED = 20  # an n-gram in more segments than this is boilerplate, not evidence
NOT_TEXT = {"id", "source", "parent_id", "gen_model", "gen_template", "gen_params", "gen_seed_id", REASON, DETAIL}


def benchmark_items(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """benchmark, item, text for the bundled `names` and for user files (a `text` column, an optional `id`)."""
    frames = []
    for name in names:
        path = BUNDLED / name / "items.parquet"
        if not path.exists():
            raise ConfigError(f"unknown benchmark {name!r}; bundled: {', '.join(BENCHMARKS)} (or 'all')")
        frames.append(pl.read_parquet(path).select(pl.lit(name).alias("benchmark"), "item", "text"))
    for file in extra:
        frames.append(_user_items(Path(file)))
    return pl.concat(frames)


def _user_items(path: Path) -> pl.DataFrame:
    readers = {".parquet": pl.read_parquet, ".jsonl": pl.read_ndjson, ".csv": pl.read_csv}
    if path.suffix not in readers or not path.exists():
        raise ConfigError(f"{path}: a benchmark file must exist and be .jsonl, .parquet or .csv with a `text` column")
    frame = readers[path.suffix](path)
    if "text" not in frame.columns:
        raise ConfigError(f"{path}: no `text` column (columns: {frame.columns})")
    item = pl.col("id").cast(pl.String) if "id" in frame.columns else pl.int_range(pl.len()).cast(pl.String)
    return frame.select(pl.lit(path.stem).alias("benchmark"), item.alias("item"), pl.col("text").cast(pl.String))


class BenchmarkIndex:
    """The n-gram evidence and trigram sets of every benchmark segment (built once, see `load_index`)."""

    def __init__(self, items: pl.DataFrame, ngram: int, min_short_words: int) -> None:
        segments = items.with_columns(key_text(items, ["text"]).alias("key")).filter(pl.col("key") != "")
        segments = segments.unique("key", keep="first", maintain_order=True).with_row_index("segment")
        self.segments = segments.select("segment", "benchmark", "item")
        self.ngram = ngram
        tokens = Tokens.of(segments["key"])
        words = tokens.lengths
        self.long = _distinctive(tokens.grams(ngram, "segment"), MAX_SHARED)  # hash -> segment(s)
        short = np.flatnonzero((words >= min_short_words) & (words < ngram))
        self.short: dict[int, pl.DataFrame] = {}  # length -> (hash -> segment)
        for length in np.unique(words[short]).tolist():
            grams = tokens.grams(length, "segment")
            whole = grams.filter(pl.col("segment").is_in(short[words[short] == length].tolist()))
            inside = grams.filter(pl.col("hash").is_in(whole["hash"].implode()))  # where else it occurs
            self.short[length] = whole.join(_distinctive(inside, 1), on=["segment", "hash"], how="semi")
        self.trigrams = tokens.grams(CONFIRM_N, "segment").unique()
        self.trigram_counts = self.trigrams.group_by("segment").agg(pl.len().alias("total"))

    def matches(self, texts: pl.Series, min_overlap: float) -> pl.DataFrame:
        """row, segment, overlap (share of the segment's trigrams found in the row) for confirmed matches."""
        tokens = Tokens.of(texts)
        found = [tokens.grams(self.ngram, "row").join(self.long, on="hash").select("row", "segment").unique()
                 .with_columns(pl.lit(None, dtype=pl.Float64).alias("overlap"))]
        for length, table in self.short.items():
            hits = tokens.grams(length, "row").join(table, on="hash").select("row", "segment").unique()
            found.append(hits.with_columns(pl.lit(1.0).alias("overlap")))
        candidates = pl.concat(found).sort("row", "segment", "overlap", nulls_last=True).unique(
            ["row", "segment"], keep="first")
        return self._confirmed(tokens, candidates, min_overlap)

    def _confirmed(self, tokens: Tokens, candidates: pl.DataFrame, min_overlap: float) -> pl.DataFrame:
        """Score n-gram candidates by trigram overlap; keep those reaching `min_overlap`."""
        unconfirmed = candidates.filter(pl.col("overlap").is_null()).select("row", "segment")
        if len(unconfirmed):
            rows = unconfirmed["row"].unique()
            row_grams = tokens.grams(CONFIRM_N, "row").filter(pl.col("row").is_in(rows.implode())).unique()
            shared = (unconfirmed.join(self.trigrams, on="segment").join(row_grams, on=["row", "hash"], how="semi")
                      .group_by("row", "segment").agg(pl.len().alias("shared")))
            scored = (unconfirmed.join(shared, on=["row", "segment"], how="left").join(self.trigram_counts, on="segment")
                      .select("row", "segment", (pl.col("shared").fill_null(0) / pl.col("total")).alias("overlap")))
            candidates = pl.concat([candidates.filter(pl.col("overlap").is_not_null()), scored])
        return candidates.filter(pl.col("overlap") >= min_overlap)


class Tokens:
    """Token hashes of normalised texts, computed once and cut into n-grams of any size."""

    def __init__(self, hashes: np.ndarray, lengths: np.ndarray) -> None:
        self.hashes, self.lengths = hashes, lengths

    @classmethod
    def of(cls, texts: pl.Series) -> Tokens:
        return cls(*token_hashes(texts.to_frame("t").select(tokens(pl.col("t"), "word"))["t"]))

    def grams(self, n: int, column: str) -> pl.DataFrame:
        """(text position, n-gram hash) for every n-gram; texts shorter than n have none."""
        sh = ngram_hashes(self.hashes, self.lengths, n, short="none")
        owner = np.repeat(np.arange(len(self.lengths), dtype=np.uint32), sh.counts())
        return pl.DataFrame({column: owner, "hash": sh.hashes})


def _is_text(dtype: pl.DataType) -> bool:
    """A string column, a list of strings, or a conversation (a list of {role, content})."""
    inner = dtype.inner if isinstance(dtype, pl.List) else dtype
    return inner == pl.String or (isinstance(dtype, pl.List) and isinstance(inner, pl.Struct))


def _distinctive(grams: pl.DataFrame, max_segments: int) -> pl.DataFrame:
    """The n-grams found in at most `max_segments` segments: evidence that points at a few items."""
    grams = grams.unique()
    return grams.filter(pl.len().over("hash") <= max_segments)


@lru_cache(maxsize=8)
def load_index(benchmarks: tuple[str, ...], extra: tuple[str, ...], ngram: int, min_short_words: int) -> BenchmarkIndex:
    """The index for these settings, built once per process."""
    return BenchmarkIndex(benchmark_items(benchmarks, extra), ngram, min_short_words)


@register
class Decontaminate(Filter):
    """Flag and drop rows containing a benchmark test item (13-gram evidence confirmed by trigram overlap;
    short items matched whole)."""

    name = "decontaminate"

    class Params(Params):
        benchmarks: list[str] = Field(default=["all"], min_length=1, description=f"bundled sets ({', '.join(BENCHMARKS)}) or all")
        extra: list[str] = Field(default=[], description="user benchmark files (.jsonl/.parquet/.csv with a text column)")
        fields: list[str] | None = Field(default=None, description="columns to check (default: every text column, "
                                         "including a messages conversation)")
        ngram: int = Field(default=13, ge=3, le=MAX_N, description="word n-gram that counts as evidence")
        min_short_words: int = Field(default=6, ge=2, description="shorter items than ngram are matched whole "
                                     "from this many words up")
        min_overlap: float = Field(default=0.6, gt=0, le=1, description="share of an item's word trigrams a row "
                                   "must contain to confirm a match")
        drop: bool = Field(default=True, description="drop flagged rows (false: only add the columns)")

        @field_validator("benchmarks")
        @classmethod
        def _known(cls, names: list[str]) -> list[str]:
            unknown = [n for n in names if n not in (*BENCHMARKS, "all")]
            if unknown:
                raise ValueError(f"unknown benchmark(s) {unknown}; bundled: {', '.join(BENCHMARKS)} or all")
            return names

    @property
    def benchmark_names(self) -> tuple[str, ...]:
        names = self.params.benchmarks
        return BENCHMARKS if "all" in names else tuple(dict.fromkeys(names))

    def text_fields(self, batch: pl.DataFrame) -> list[str]:
        if self.params.fields is not None:
            return self.params.fields
        return [c for c, t in batch.schema.items()
                if c not in NOT_TEXT and not c.startswith("score_") and _is_text(t)]

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        index = load_index(self.benchmark_names, tuple(p.extra), p.ngram, p.min_short_words)
        fields = self.text_fields(batch)
        texts = key_text(batch, fields) if fields else pl.Series("key", [""] * len(batch))
        best = (index.matches(texts, p.min_overlap).join(index.segments, on="segment")
                .sort("row", "overlap", "segment", descending=[False, True, False])
                .unique("row", keep="first")
                .select("row", (pl.col("benchmark") + ":" + pl.col("item")).alias("contamination"), "overlap"))
        flags = pl.DataFrame({"row": np.arange(len(batch), dtype=np.uint32)}).join(best, on="row", how="left")
        return batch.with_columns(
            flags["contamination"].is_not_null().alias("contaminated"),
            flags["contamination"],
            flags["overlap"].fill_null(0.0).alias("score_contamination"),
        )

    def rules(self) -> dict[str, pl.Expr]:
        return {"contaminated": pl.col("contaminated")} if self.params.drop else {}

    def process(self, batch: pl.DataFrame) -> Split:
        kept, rejected = super().process(batch)
        return Split(kept, rejected.with_columns(pl.col("contamination").alias(DETAIL)))
