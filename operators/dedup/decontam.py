"""Benchmark decontamination: flag (and drop) rows that contain a benchmark test item.

Benchmark items are split into segments (a question, an answer, a prompt) and indexed once per process.
Long segments (>= ngram words, 13 by default): a row is a candidate when it shares one of the segment's
n-grams that occur in at most MAX_SHARED segments (more is boilerplate: "which of the following is ..."),
and is confirmed when it holds at least `min_overlap` of the segment's word trigrams (robust to a changed
word, while one shared 13-gram of a famous quote is not enough).
Short segments (min_words .. 2 x ngram - 1 words) are matched as whole word sequences inside one field of
a row (up to 25 words because a 20-word item with a changed middle word has no intact 13-gram):
- found through an index of each segment's three rarest bigrams (one changed word breaks at most two),
  then compared word by word with the window of the row;
- from typo_words (7) words, one word may differ, unless it is one of the segment's two rarest words (the
  ones that make it this question: "what is the most popular sport in japan" is not "... in france"; from
  ngram words any word), or the benchmark has such a one-word variant itself (a template);
- below min_short_words (6) words the segment must also make up at least half of its field (the question
  asked, not a phrase used in passing);
- below min_words (4) words it is never matched: "who are you?", "are you conscious?" or an MMLU stem such
  as "the auditory tube" occur in ordinary text and prove nothing;
- a segment found exactly inside another benchmark segment is too generic to count and is not indexed.
Identical segments are indexed once, under the first item that has them. Text is compared after the shared
normalisation (case, punctuation, whitespace, Unicode).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from operators.base import DETAIL, REASON, Filter, Params, Split, Threshold
from operators.clean.normalize import for_matching
from operators.dedup.shingles import MAX_N, field_text, key_text, ngram_hashes, token_hashes, tokens
from operators.errors import ConfigError
from operators.registry import register

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
DATA_FILES = (BUNDLED,)
BENCHMARKS = ("gsm8k", "mmlu", "hellaswag", "humaneval", "truthfulqa")
CONFIRM_N = 3  # the similarity check compares word trigrams
MAX_SHARED = 20  # an n-gram in more segments than this is boilerplate, not evidence
KEYWORDS = 2  # a short item's rarest words, which a one-word typo may not touch
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
    """The evidence tables of every benchmark segment (built once per process, see `load_index`)."""

    def __init__(self, items: pl.DataFrame, ngram: int, min_words: int, min_short_words: int,
                 typo_words: int) -> None:
        segments = items.with_columns(key_text(items, ["text"]).alias("key")).filter(pl.col("key") != "")
        segments = segments.unique("key", keep="first", maintain_order=True).with_row_index("segment")
        self.segments = segments.select("segment", "benchmark", "item")
        self.ngram, self.min_short_words = ngram, min_short_words
        self.tokens = tokens = Tokens.of(segments["key"])
        words = tokens.lengths
        self.long = _distinctive(tokens.grams(ngram, "segment"), MAX_SHARED)  # hash -> segment(s)
        self.trigrams = tokens.grams(CONFIRM_N, "segment").unique()
        self.trigram_counts = self.trigrams.group_by("segment").agg(pl.len().alias("total"))
        # whole-sequence matching also covers items up to 2 x ngram - 1 words: one changed word in the
        # middle of a 20-word question leaves it no intact 13-gram to be found by
        short = np.flatnonzero((words >= min_words) & (words < 2 * ngram))
        self.anchors = _anchors(tokens, short)
        self.keywords = _keywords(tokens, short)
        # A short segment found exactly inside another segment is too generic to prove anything; one found
        # there with one word different is a template ("what is the capital of france") and must match exactly.
        self.typos = np.zeros(len(words), dtype=np.int64)
        self.typos[short[words[short] >= typo_words]] = 1
        inside = self.windows(tokens).filter(pl.col("row") != pl.col("segment"))
        generic = inside.filter(pl.col("mismatches") == 0)["segment"].unique().to_numpy()
        self.typos[inside["segment"].unique().to_numpy()] = 0
        self.anchors = self.anchors.filter(~pl.col("segment").is_in(generic.tolist()))

    def matches(self, tokens: Tokens, min_overlap: float) -> pl.DataFrame:
        """row, segment, overlap (share of the segment's trigrams, or words, found in the row) for confirmed
        matches."""
        long = (tokens.grams(self.ngram, "row").join(self.long, on="hash").select("row", "segment").unique())
        return pl.concat([self._confirmed(tokens, long, min_overlap), self._short(tokens)])

    def windows(self, tokens: Tokens) -> pl.DataFrame:
        """row, segment, words, field_words, mismatches, typos, keyword_changed: every window of `tokens`
        (inside one field) that equals a short segment but for at most one word, found through its anchors."""
        position, hashes = tokens.windows(2)
        found = pl.DataFrame({"position": position, "hash": hashes}).join(self.anchors, on="hash")
        start = found["position"].to_numpy() - found["offset"].to_numpy()
        segment = found["segment"].to_numpy()
        length = self.tokens.lengths[segment]
        anchor = found["position"].to_numpy()
        inside = (start >= tokens.field_start[anchor]) & (start + length <= tokens.field_end[anchor])
        start, segment, length, anchor = start[inside], segment[inside], length[inside], anchor[inside]
        mismatches = np.zeros(len(start), dtype=np.int64)
        keywords = self.keywords[segment]  # (windows, KEYWORDS) offsets
        keyword_changed = (tokens.hashes[start[:, None] + keywords]
                           != self.tokens.hashes[self.tokens.starts[segment][:, None] + keywords]).any(axis=1)
        for k in np.unique(length).tolist():  # compare the window with the segment, word by word
            pick = length == k
            steps = np.arange(k)
            ours = tokens.hashes[start[pick, None] + steps]
            theirs = self.tokens.hashes[self.tokens.starts[segment[pick], None] + steps]
            mismatches[pick] = (ours != theirs).sum(axis=1)
        windows = pl.DataFrame({
            "row": tokens.row[anchor].astype(np.uint32), "segment": segment.astype(np.uint32), "start": start,
            "words": length, "field_words": tokens.field_end[anchor] - tokens.field_start[anchor],
            "mismatches": mismatches, "typos": self.typos[segment], "keyword_changed": keyword_changed,
        })
        return windows.filter(pl.col("mismatches") <= 1).unique(["row", "segment", "start"]).drop("start")

    def _short(self, tokens: Tokens) -> pl.DataFrame:
        """Confirmed short-segment matches: at most `typos` words different, and a segment shorter than
        `min_short_words` must make up at least half of its field (a question asked, not a phrase used)."""
        return (self.windows(tokens)
                .filter(pl.col("mismatches") <= pl.col("typos"),
                        ~pl.col("keyword_changed") | (pl.col("words") >= self.ngram),
                        (pl.col("words") >= self.min_short_words) | (2 * pl.col("words") >= pl.col("field_words")))
                .group_by("row", "segment")
                .agg((1 - pl.col("mismatches").min() / pl.col("words").first()).alias("overlap")))

    def _confirmed(self, tokens: Tokens, candidates: pl.DataFrame, min_overlap: float) -> pl.DataFrame:
        """Score n-gram candidates by trigram overlap; keep those reaching `min_overlap`."""
        rows = candidates["row"].unique()
        row_grams = tokens.grams(CONFIRM_N, "row").filter(pl.col("row").is_in(rows.implode())).unique()
        shared = (candidates.join(self.trigrams, on="segment").join(row_grams, on=["row", "hash"], how="semi")
                  .group_by("row", "segment").agg(pl.len().alias("shared")))
        scored = (candidates.join(shared, on=["row", "segment"], how="left").join(self.trigram_counts, on="segment")
                  .select("row", "segment", (pl.col("shared").fill_null(0) / pl.col("total")).alias("overlap")))
        return scored.filter(pl.col("overlap") >= min_overlap)


def _anchors(tokens: Tokens, segments: np.ndarray) -> pl.DataFrame:
    """hash, segment, offset: the three rarest word bigrams (fewest segments) of each of `segments`.
    One changed word breaks at most two bigrams, so a window with one typo still shares an anchor."""
    position, hashes = tokens.windows(2)
    return _rarest(tokens, position, hashes, segments, 3).select("hash", "segment", "offset")


def _keywords(tokens: Tokens, segments: np.ndarray) -> np.ndarray:
    """Per segment, the offsets of its KEYWORDS words found in the fewest segments: the words that make the
    item this item ("japan" in "what is the most popular sport in japan"); a typo there is another question."""
    rarest = _rarest(tokens, np.arange(len(tokens.hashes)), tokens.hashes, segments, KEYWORDS)
    keywords = np.zeros((len(tokens.lengths), KEYWORDS), dtype=np.int64)
    rank = rarest.select(pl.int_range(pl.len()).over("segment"))
    keywords[rarest["segment"].to_numpy(), rank.to_series().to_numpy()] = rarest["offset"].to_numpy()
    return keywords


def _rarest(tokens: Tokens, position: np.ndarray, hashes: np.ndarray, segments: np.ndarray, n: int) -> pl.DataFrame:
    """hash, segment, offset of the `n` grams (at `position`, hashed `hashes`) of each of `segments` that
    occur in the fewest segments of all; ties go to the earliest. (NumPy sorts: Polars' unique over
    millions of pairs was several times slower here.)"""
    owner = tokens.row[position]
    order = np.lexsort((owner, hashes))
    h, o = hashes[order], owner[order]
    first_of_pair = np.r_[True, (h[1:] != h[:-1]) | (o[1:] != o[:-1])]
    distinct, counts = np.unique(h[first_of_pair], return_counts=True)
    mine = np.flatnonzero(np.isin(owner, segments))
    frequency = counts[np.searchsorted(distinct, hashes[mine])]
    ranked = mine[np.lexsort((position[mine], frequency, owner[mine]))]
    group_start = np.r_[0, np.flatnonzero(np.diff(owner[ranked])) + 1]
    rank = np.arange(len(ranked)) - np.repeat(group_start, np.diff(np.r_[group_start, len(ranked)]))
    pick = ranked[rank < n]
    return pl.DataFrame({"hash": hashes[pick], "segment": owner[pick].astype(np.uint32),
                         "offset": position[pick] - tokens.starts[owner[pick]]})


class Tokens:
    """Token hashes of normalised texts (each made of one or more fields), computed once, cut into n-grams
    of any size. Positions are indexes into the flat `hashes`; a field never shares a window with another."""

    def __init__(self, hashes: np.ndarray, lengths: np.ndarray, field_lengths: np.ndarray | None = None) -> None:
        self.hashes, self.lengths = hashes, lengths
        self.starts = np.cumsum(lengths) - lengths
        self.row = np.repeat(np.arange(len(lengths)), lengths)
        self.field_lengths = fields = lengths if field_lengths is None else field_lengths
        field_starts = np.cumsum(fields) - fields
        self.field_start = np.repeat(field_starts, fields)
        self.field_end = np.repeat(field_starts + fields, fields)

    @classmethod
    def of(cls, texts: pl.Series) -> Tokens:
        return cls(*token_hashes(texts.to_frame("t").select(tokens(pl.col("t"), "word"))["t"]))

    @classmethod
    def of_fields(cls, batch: pl.DataFrame, fields: list[str]) -> Tokens:
        """The fields of each row, normalised one by one and joined in order (as `key_text` joins them)."""
        if not fields:
            return cls(np.zeros(0, dtype=np.uint64), np.zeros(len(batch), dtype=np.int64))
        names = [f"f{i}" for i in range(len(fields))]
        lists = batch.select(tokens(for_matching(field_text(batch, f)), "word").alias(n) for f, n in zip(fields, names))
        field_lengths = np.column_stack([lists[n].list.len().to_numpy() for n in names]).astype(np.int64).ravel()
        hashes, lengths = token_hashes(lists.select(pl.concat_list(names).alias("t"))["t"])
        return cls(hashes, lengths, field_lengths)

    def grams(self, n: int, column: str) -> pl.DataFrame:
        """(text position, n-gram hash) for every n-gram; texts shorter than n have none."""
        sh = ngram_hashes(self.hashes, self.lengths, n, short="none")
        owner = np.repeat(np.arange(len(self.lengths), dtype=np.uint32), sh.counts())
        return pl.DataFrame({column: owner, "hash": sh.hashes})

    def windows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(first token position, hash) of every n-gram that lies inside one field."""
        sh = ngram_hashes(self.hashes, self.field_lengths, n, short="none")
        inside = np.flatnonzero(np.arange(len(self.hashes)) + n <= self.field_end)
        return inside, sh.hashes


def _is_text(dtype: pl.DataType) -> bool:
    """A string column, a list of strings, or a conversation (a list of {role, content})."""
    inner = dtype.inner if isinstance(dtype, pl.List) else dtype
    return inner == pl.String or (isinstance(dtype, pl.List) and isinstance(inner, pl.Struct))


def _distinctive(grams: pl.DataFrame, max_segments: int) -> pl.DataFrame:
    """The n-grams found in at most `max_segments` segments: evidence that points at a few items."""
    grams = grams.unique()
    return grams.filter(pl.len().over("hash") <= max_segments)


@lru_cache(maxsize=8)
def load_index(benchmarks: tuple[str, ...], extra: tuple[str, ...], *settings: int) -> BenchmarkIndex:
    """The index for these settings (ngram, min_words, min_short_words, typo_words), built once per process."""
    return BenchmarkIndex(benchmark_items(benchmarks, extra), *settings)


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
        min_words: int = Field(default=4, ge=1, description="items with fewer words are never matched (too generic)")
        min_short_words: int = Field(default=6, ge=1, description="items shorter than this (from min_words up) match "
                                     "only when they make up at least half of a field")
        typo_words: int = Field(default=7, ge=2, description="items shorter than ngram match with one word different "
                                "from this many words up (unless the benchmark itself has such a variant)")
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
        index = load_index(self.benchmark_names, tuple(p.extra), p.ngram, p.min_words, p.min_short_words,
                           p.typo_words)
        best = (index.matches(Tokens.of_fields(batch, self.text_fields(batch)), p.min_overlap).join(index.segments, on="segment")
                .sort("row", "overlap", "segment", descending=[False, True, False])
                .unique("row", keep="first")
                .select("row", (pl.col("benchmark") + ":" + pl.col("item")).alias("contamination"), "overlap"))
        flags = pl.DataFrame({"row": np.arange(len(batch), dtype=np.uint32)}).join(best, on="row", how="left")
        return batch.with_columns(
            flags["contamination"].is_not_null().alias("contaminated"),
            flags["contamination"],
            flags["overlap"].fill_null(0.0).alias("score_contamination"),
        )

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Flagged rows (dropped, or kept with drop=false) and distinct items, per benchmark checked."""
        flagged = pl.concat([rows.filter(pl.col("contaminated")).select("contamination").collect()
                             for rows in (kept, rejected) if "contaminated" in rows.collect_schema()]
                            + [pl.DataFrame(schema={"contamination": pl.String})])
        split = flagged.select(pl.col("contamination").str.split_exact(":", 1).struct.rename_fields(["benchmark", "item"])
                               ).unnest("contamination")
        counts = split.group_by("benchmark").agg(pl.len().alias("rows"), pl.col("item").n_unique().alias("items"))
        found = {b: {"rows": r, "items": i} for b, r, i in counts.iter_rows()}
        checked = [*self.benchmark_names, *(Path(f).stem for f in self.params.extra)]
        return {"flagged": len(flagged), "dropped": self.params.drop,
                "benchmarks": {b: found.get(b, {"rows": 0, "items": 0}) for b in checked}}

    def rules(self) -> dict[str, pl.Expr]:
        return {"contaminated": pl.col("contaminated")} if self.params.drop else {}

    def thresholds(self) -> list[Threshold]:
        if not self.params.drop:
            return []  # flagged, not rejected
        return [Threshold("score_contamination", "min_overlap", self.params.min_overlap, "max")]  # at or above: dropped

    def columns(self) -> dict[str, str]:
        return {"contaminated": "the row contains a benchmark test item (kept only with decontaminate's drop: false)",
                "contamination": "the benchmark item it contains, `benchmark:item` (null: none)",
                "score_contamination": "share of that item's word trigrams found in the row (0: no match)"}

    def process(self, batch: pl.DataFrame) -> Split:
        kept, rejected = super().process(batch)
        return Split(kept, rejected.with_columns(pl.col("contamination").alias(DETAIL)))
