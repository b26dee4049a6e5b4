"""Near-duplicate dedup: MinHash signatures, LSH band buckets, verified candidates, union-find clusters.

Stages (the engine runs `index` per shard, `decide_part` as `decide_tasks` tasks, `combine` in the driver):
  index:       key fields -> normalised text -> n-gram hashes -> MinHash signature (rensa) -> one hash per
               band, and the row's sketch (its smallest distinct shingle hashes) for verification
  decide_part: over a lazy scan of every shard's index, band by band (one band in memory at a time): rows
               sharing a band hash are candidates (each linked to the bucket's first row, then to the row
               before it, in id order); a candidate pair whose rows are not yet in one cluster is verified (Jaccard of the
               sketches >= threshold, or containment >= containment) and, if it passes, joins their clusters.
               Then rows still in small clusters are compared with every row of their buckets (a copy that
               matches only its original, which is neither its bucket's first row nor the row before it).
               Returns row -> cluster root for the rows in clusters (at most one row per input row).
  combine:     the parts' clusters joined (connected components), one survivor per cluster; every other
               member is dropped naming it. The driver holds a label per row and the ids of clustered rows,
               never the index.
Skipping pairs that are already joined changes no cluster (a cluster is a connected component of the
verified pairs either way), so the clusters are the same with 1 or N decide tasks, and they do not depend on
shard order (ids order the buckets, and the survivor is the first row in input order, or the highest
`score_column` with ties going to the smallest id).

Incremental: the decision (`combine`) publishes the index of the surviving rows as the side table `index` (a release's
tables/<stage>.index.parquet). A later run given it as `against` (the file, or the release folder) puts
those rows into its clusters as survivors that are never dropped, so a new row near-duplicating one is
dropped naming it, and the old rows are not re-read or re-hashed. The band columns are named after the
settings that made them (shingles, permutations, seed, layout, key fields), so a mismatch is an error.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import rensa
from pydantic import Field, field_validator, model_validator
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from operators.base import Decision, GlobalOperator, Params
from operators.dedup.exact import cluster_stats
from operators.dedup.shingles import MAX_N, Shingles, Unit, key_text, mix64, shingle
from operators.errors import ConfigError
from operators.registry import register

SIGNATURE = "minhash"  # index column: the full signature (verification, incremental dedup)
SKETCH = "sketch"  # index column: the row's smallest distinct 32-bit shingle hashes, at most `sketch` of them
SHINGLES = "shingles"  # index column: distinct shingles; 0 means the key was empty (never a duplicate)
SCORE = "keep_score"
REFERENCE = "reference"  # index column set on rows of an earlier release (see `clusters`)
BAND = "band"  # band columns are named band<b>:<settings>
LONE_BUCKET = 64  # rows of small clusters after the first pass are compared with every row of buckets up to this size
SMALL_CLUSTER = 4
_INDEX_CHUNK = 8_192  # rows indexed at a time
_SIGNATURE_CHUNK = 4_096  # rows hashed at a time (their signatures pass through Python lists: ~5 MB a chunk)
_VERIFY_CHUNK = 16_384  # candidate pairs compared at a time (~16 arrays of chunk x sketch entries, 8 B each)
_BAND_MULTIPLIERS = np.array(
    [int.from_bytes(hashlib.blake2b(f"sluice-band-{k}".encode(), digest_size=8).digest(), "little") | 1
     for k in range(1024)], dtype=np.uint64)


def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the equally weighted false-positive and false-negative areas of the
    LSH S-curve around `threshold` (datasketch's optimiser, the same one text-dedup uses)."""
    from datasketch.lsh import _optimal_param  # imported here: datasketch pulls in scipy.integrate (~1 s)

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def signatures(shingles: Shingles, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint32) of rows with at least one shingle; others are all zero."""
    counts = shingles.counts()
    keyed = np.flatnonzero(counts > 0)
    out = np.zeros((len(counts), num_perm), dtype=np.uint32)
    for start in range(0, len(keyed), _SIGNATURE_CHUNK):  # rensa hands rows back as Python lists: a few at a time
        rows = keyed[start: start + _SIGNATURE_CHUNK]
        first, last = shingles.offsets[rows[0]], shingles.offsets[rows[-1] + 1]
        offsets = np.concatenate([[0], np.cumsum(counts[rows])]).astype(np.uint64)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            np.ascontiguousarray(shingles.hashes[first:last]), offsets, num_perm, seed)
        out[rows] = np.array(matrix.to_rows(), dtype=np.uint32).reshape(-1, num_perm)
    return out


def sketches(shingles: Shingles, size: int) -> tuple[pl.Series, np.ndarray]:
    """Each row's `size` smallest distinct shingle hashes, cut to 32 bits and sorted (all of them for a row
    with fewer: then the sketch is the row's whole shingle set), and its number of distinct shingles."""
    counts = shingles.counts()
    rows = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
    keys, _ = sorted_unique((rows << np.uint64(32)) | (shingles.hashes >> np.uint64(32)))
    row = (keys >> np.uint64(32)).astype(np.int64)
    distinct = np.bincount(row, minlength=len(counts)).astype(np.int64)
    starts = np.cumsum(distinct) - distinct
    keep = np.arange(len(keys)) - starts[row] < size
    lengths = np.minimum(distinct, size)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), type=pa.int64())
    values = pa.array((keys[keep] & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    return pl.Series(SKETCH, pa.LargeListArray.from_arrays(offsets, values)).cast(pl.List(pl.UInt32)), distinct


def sorted_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `keys`, sorted, and how often each occurs (a sort: np.unique's hashing is ~20x
    slower on these arrays)."""
    keys = np.sort(keys)
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
    return keys[first], np.diff(np.append(first, len(keys)))


def overlap(values: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, size: int, src: np.ndarray,
            dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaccard similarity and containment (shared shingles over the smaller row's) of the pairs (src, dst),
    from the rows' sorted sketches (`values[offsets[i]:offsets[i + 1]]`) and distinct-shingle counts (`sizes`).

    Exact when both rows have at most `size` distinct shingles; otherwise the bottom-k estimate: the share of
    the `size` smallest hashes of the two sketches' union that both rows have (a hash among the union's
    `size` smallest is in a row's set exactly when it is in the row's sketch). Each dst hash is looked up
    among the src hashes of its pair by binary search (the keys are sorted by pair, then hash: no sort)."""
    n, offsets = len(src), offsets.astype(np.int64)
    (a, a_len), (b, b_len) = (_pair_keys(values, offsets, side) for side in (src, dst))
    found = np.searchsorted(a, b)
    hit = a[np.minimum(found, len(a) - 1)] == b if len(a) else np.zeros(len(b), dtype=bool)
    owner = np.repeat(np.arange(n), b_len)
    b_start, a_start = np.cumsum(b_len) - b_len, np.cumsum(a_len) - a_len
    hits_before = np.cumsum(hit) - hit
    hits_before -= np.repeat(hits_before[b_start[b_len > 0]], b_len[b_len > 0]) if len(b) else 0
    # a shared hash's rank in the pair's union: the src hashes below it, the dst hashes below it, less the
    # shared ones below it (counted twice)
    rank = (found - a_start[owner]) + (np.arange(len(b)) - b_start[owner]) - hits_before
    shared_all = np.bincount(owner[hit], minlength=n)
    union = a_len + b_len - shared_all
    complete = (sizes[src] <= size) & (sizes[dst] <= size)
    considered = np.where(complete, union, np.minimum(union, size))
    shared = np.bincount(owner[hit & (rank < considered[owner])], minlength=n)
    jaccard = shared / np.maximum(considered, 1)
    common = jaccard * (sizes[src] + sizes[dst]) / (1 + jaccard)
    return jaccard, common / np.maximum(np.minimum(sizes[src], sizes[dst]), 1)


def _pair_keys(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair << 32) | hash for every sketch hash of each pair's row (sorted: pairs in order, sketches
    sorted), and each pair's sketch length."""
    length = offsets[rows + 1] - offsets[rows]
    start = np.repeat(offsets[rows] - (np.cumsum(length) - length), length)
    hashes = values[start + np.arange(length.sum())].astype(np.uint64)
    return (np.repeat(np.arange(len(rows), dtype=np.uint64), length) << np.uint64(32)) | hashes, length


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 per (row, band): a hash of the band's `rows` signature values."""
    blocks = sig[:, : bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    with np.errstate(over="ignore"):
        return mix64((blocks * _BAND_MULTIPLIERS[:rows]).sum(axis=2, dtype=np.uint64))


@register
class MinHashDedup(GlobalOperator):
    """Drop near-duplicates (estimated Jaccard >= threshold on n-grams of the normalised key fields)."""

    name = "minhash_dedup"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1, description="columns that form the dedup key "
                                  "(e.g. [instruction] or [instruction, input]; a messages column counts its contents)")
        threshold: float = Field(default=0.6, gt=0, lt=1, description="Jaccard similarity that makes a duplicate")
        ngram: int = Field(default=2, ge=1, le=MAX_N, description="shingle size in units")
        unit: Unit = Field(default="auto", description="shingle unit: auto (words, and single characters of "
                           "Chinese, Japanese, Thai and other scripts written without spaces), word or char")
        num_perm: int = Field(default=128, ge=8, le=1024, description="MinHash permutations")
        bands: int | None = Field(default=None, ge=1, description="LSH bands (default: optimised for lsh_threshold)")
        rows: int | None = Field(default=None, ge=1, description="signature values per band (with bands)")
        lsh_threshold: float | None = Field(default=None, gt=0, lt=1, description="Jaccard similarity the LSH "
                                            "bands are tuned for (default: threshold - 0.1 with jaccard "
                                            "verification, which drops the extra candidates; threshold without)")
        jaccard: bool = Field(default=True, description="keep only candidates whose shingle sets have a Jaccard "
                              "similarity >= threshold (or a containment >= containment); exact for rows of up to "
                              "`sketch` distinct shingles, a bottom-k estimate beyond; the index carries the sketches")
        containment: float | None = Field(default=0.9, gt=0, le=1, description="with jaccard, a candidate is also "
                                          "a duplicate when the shingles it shares are >= this share of the smaller "
                                          "row's (truncated copies, copies behind a prefix)")
        sketch: int = Field(default=128, ge=16, le=4096, description="distinct shingle hashes kept per row for "
                            "jaccard verification (4 bytes each; rows with more are compared by bottom-k estimate)")
        verify: bool = Field(default=False, description="drop candidates whose full signatures agree on fewer than "
                             "threshold of positions (fewer false positives, lower recall; stores the signatures)")
        decide_tasks: int = Field(default=1, ge=1, le=256, description="tasks the clustering runs in, each over "
                                  "some of the bands (a cluster runs them in parallel; each verifies the candidates "
                                  "of its own bands, so on heavily duplicated data the CPU grows with the tasks)")
        keep: Literal["first", "score"] = Field(default="first", description="survivor: first in input order, "
                                                "or highest score_column (ties: smallest id)")
        score_column: str | None = Field(default=None, description="numeric column used by keep=score")
        seed: int = Field(default=1, ge=0, description="MinHash seed (stored signatures need the same seed)")
        against: list[str] = Field(default=[], description="earlier releases to dedup against: a release folder "
                                   "or its tables/<stage>.index.parquet (same settings); their rows always survive")

        @field_validator("against", mode="before")
        @classmethod
        def _one_or_many(cls, value):
            return [value] if isinstance(value, (str, Path)) else value

        @model_validator(mode="after")
        def _consistent(self):
            if (self.bands is None) != (self.rows is None):
                raise ValueError("give both bands and rows, or neither (then they are optimised for threshold)")
            if self.bands is not None and self.bands * self.rows > self.num_perm:
                raise ValueError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm ({self.num_perm})")
            if (self.keep == "score") != (self.score_column is not None):
                raise ValueError("keep=score needs score_column, and score_column needs keep=score")
            return self

        @model_validator(mode="after")
        def _usable_against(self):
            """A missing `against` index, or one built with other settings, fails when the config loads,
            not after every shard was indexed."""
            for path in self.against:
                try:
                    MinHashDedup(self)._index_files(Path(path))
                except ConfigError as err:
                    raise ValueError(f"against: {err}") from None
            return self

    @cached_property
    def layout(self) -> tuple[int, int]:
        p = self.params
        if p.bands is not None:
            return p.bands, p.rows
        lsh = p.lsh_threshold or (max(p.threshold - 0.1, 0.05) if p.jaccard else p.threshold)
        return band_layout(lsh, p.num_perm)

    def data_files(self) -> list[Path]:
        """The `against` index files: one rewritten under the same name is another decision."""
        return [f for path in self.params.against for f in self._index_files(Path(path))]

    @property
    def settings(self) -> str:
        """What makes two indexes comparable, e.g. `word5 perm256 seed1 17x15 key=instruction+input`."""
        p, (bands, rows) = self.params, self.layout
        return f"{p.unit}{p.ngram} perm{p.num_perm} seed{p.seed} {bands}x{rows} key={'+'.join(p.fields)}"

    @property
    def evidence(self) -> dict[str, pl.DataType]:
        """The verification columns the index carries besides the band hashes."""
        p = self.params
        return ({SIGNATURE: pl.Array(pl.UInt32, p.num_perm)} if p.verify else {}) | (
            {SKETCH: pl.List(pl.UInt32)} if p.jaccard else {})

    @property
    def band_columns(self) -> list[str]:
        return [f"{BAND}{b}:{self.settings}" for b in range(self.layout[0])]  # the settings guard reuse

    # --- per shard -------------------------------------------------------------------------------------

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        """id, shingle count, one hash per band, the sketch (if jaccard), the signature (if verify) and the
        keep score (if any); a few thousand rows at a time (the token and n-gram arrays are ~8 B a token each)."""
        if len(batch) > _INDEX_CHUNK:
            return pl.concat([self._index(batch.slice(start, _INDEX_CHUNK))
                              for start in range(0, len(batch), _INDEX_CHUNK)])
        return self._index(batch)

    def _index(self, batch: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        shingles = shingle(key_text(batch, p.fields), p.ngram, p.unit)
        sig = signatures(shingles, p.num_perm, p.seed)
        keyed = pl.Series(shingles.counts() > 0)
        bands = band_hashes(sig, *self.layout)
        sketch, distinct = sketches(shingles, p.sketch)
        columns = {"id": batch["id"], SHINGLES: pl.Series(distinct, dtype=pl.Int32)}
        for b, name in enumerate(self.band_columns):
            columns[name] = pl.Series(bands[:, b]).zip_with(keyed, pl.Series([None], dtype=pl.UInt64))
        if p.verify:
            columns[SIGNATURE] = pl.Series(sig, dtype=pl.Array(pl.UInt32, p.num_perm))
        if p.jaccard:
            columns[SKETCH] = sketch
        if p.score_column:
            columns[SCORE] = batch[p.score_column].cast(pl.Float64)
        return pl.DataFrame(columns)

    # --- decide: in partitions (tasks), then combined -----------------------------------------------------

    @property
    def tasks(self) -> int:
        """`decide_tasks` tasks (the bands are dealt out round-robin), at most one per band."""
        return min(self.params.decide_tasks, self.layout[0])

    def partitions(self, rows: int) -> int:
        return self.tasks  # every task reads every row (its bands): as many tasks for any number of rows

    def decide_part(self, index: pl.LazyFrame, part: int, rows: int) -> pl.DataFrame:
        """The clusters the candidates of this part's bands form once verified: `row` (a position in the
        table of reference rows, then the index) and `root` (its cluster's first row), for every row that
        is not its own root."""
        return _forest(self._linked(self._table(index, self.reference()), self.band_columns[part::self.tasks]))

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> Decision:
        """Every row that is not its cluster's survivor, with the survivor's id as detail; the survivors'
        index as the side table `index` (a lazy scan: the driver never holds it)."""
        return self.decision(index, self.grouped(index, parts))

    def grouped(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> pl.DataFrame:
        """id, cluster (the survivor's id), cluster_size, kept for the rows of `index` in clusters of 2 or
        more, from the parts' tables."""
        return self._clusters(self._table(index, self.reference()), parts)

    def decision(self, index: pl.LazyFrame, clusters: pl.DataFrame) -> Decision:
        drops = self.duplicates(clusters)
        # a filter by the dropped ids streams the index; an anti-join held all of it (the release's largest
        # memory: +0.44 GiB per million rows, bench/README's cost model)
        kept = index.filter(~pl.col("id").is_in(drops["id"].implode())) \
            .select("id", SHINGLES, *self.band_columns, *self.evidence)
        return Decision(drops, tables={"index": kept})

    def duplicates(self, clusters: pl.DataFrame) -> pl.DataFrame:
        """The decision table for a `clusters` table: every non-survivor, naming its survivor."""
        return self.drops(clusters.filter(~pl.col("kept")), "near_duplicate", pl.col("cluster"))

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        return cluster_stats(kept, rejected, "near_duplicate")

    def clusters(self, index: pl.DataFrame | pl.LazyFrame, reference: pl.DataFrame | None = None) -> pl.DataFrame:
        """id -> cluster (the survivor's id), cluster_size and kept (is it the survivor), for every row of
        `index`, in input order (all partitions run here, one after another).

        `reference` is the index of an earlier release (same parameters): its rows join the clusters and
        always survive, so a new row matching one is a duplicate of it (even under the same id); reference
        rows are not returned."""
        table = self._table(index.lazy(), reference.lazy() if reference is not None else None)
        parts = [_forest(self._linked(table, self.band_columns[k::self.tasks])) for k in range(self.tasks)]
        return self.every_row(index.lazy(), self._clusters(table, parts))

    @staticmethod
    def every_row(index: pl.LazyFrame, clusters: pl.DataFrame) -> pl.DataFrame:
        """`clusters` (rows in clusters of 2 or more) completed with every other row of `index` as its own
        one-row cluster, in input order."""
        return index.select("id").join(clusters.lazy(), on="id", how="left", maintain_order="left").select(
            "id", pl.col("cluster").fill_null(pl.col("id")), pl.col("cluster_size").fill_null(1),
            pl.col("kept").fill_null(True)).collect()

    def _clusters(self, table: pl.LazyFrame, parts: list[pl.DataFrame]) -> pl.DataFrame:
        """id, cluster (the survivor's id), cluster_size, kept for the rows of `table` (reference rows, then
        the index) that are in a cluster of 2 or more, from the parts' forests; reference rows left out."""
        rows = table.select(pl.len()).collect().item()
        label = np.arange(rows, dtype=np.int64)
        for forest in parts:
            label = _merged(label, forest["row"].to_numpy(), forest["root"].to_numpy())
        size = np.bincount(label, minlength=rows)
        member = np.flatnonzero(size[label] > 1)
        grouped = pl.DataFrame({"position": member, "component": label[member]}, schema={"position": pl.UInt32,
                                                                                           "component": pl.Int64})
        ranked = table.with_row_index("position").select("position", "id", REFERENCE, *(
            [SCORE] if self.params.keep == "score" else [])).join(grouped.lazy(), on="position").sort("position")
        order = self._survivor_order()
        return ranked.with_columns(
            pl.col("id").sort_by(order).first().over("component").alias("cluster"),
            pl.len().over("component").cast(pl.Int64).alias("cluster_size"),
            (pl.col("position") == pl.col("position").sort_by(order).first().over("component")).alias("kept"),
        ).filter(~pl.col(REFERENCE)).select("id", "cluster", "cluster_size", "kept").collect()

    def _linked(self, table: pl.LazyFrame, bands: list[str]) -> np.ndarray:
        """A cluster label per row of `table`: band by band (each read alone, so memory holds the rows'
        verification evidence and one band), candidate pairs (`bucket_pairs`) not yet in one cluster are
        verified, and the verified ones join their clusters (union-find: a pair whose rows are already joined
        through verified pairs is not compared again; the clusters are the same either way)."""
        similar = self._similarity(table)
        rank = table.select(pl.col("id").rank("ordinal")).collect().to_series().to_numpy()
        label = np.arange(len(rank), dtype=np.int64)
        by_id = np.argsort(rank, kind="stable")  # buckets are ordered by id: shard order changes nothing
        for band in bands:
            for src, dst in bucket_pairs(table.select(band).collect().to_series(), by_id):
                label = self._joined(label, src, dst, similar)
        alone = np.bincount(label, minlength=len(label))[label] <= SMALL_CLUSTER
        for band in bands if alone.any() else []:  # rows still alone: compared with every row of their buckets
            src, dst = lone_pairs(table.select(band).collect().to_series(), by_id, alone)
            label = self._joined(label, src, dst, similar)
        return label

    @staticmethod
    def _joined(label: np.ndarray, src: np.ndarray, dst: np.ndarray, similar) -> np.ndarray:
        """`label` after joining the clusters of the pairs that are in different clusters and pass `similar`."""
        apart = label[src] != label[dst]
        src, dst = src[apart], dst[apart]
        if similar is not None and len(src):
            keep = similar(src, dst)
            src, dst = src[keep], dst[keep]
        return _merged(label, src, dst) if len(src) else label

    def _similarity(self, table: pl.LazyFrame):
        """A function (src, dst) -> which pairs pass the verifications that are on (None: every pair)."""
        p = self.params
        checks = []
        if p.verify:
            sig = table.select(SIGNATURE).collect().to_series().to_numpy()
            checks.append(lambda s, d: (sig[s] == sig[d]).mean(axis=1) >= p.threshold)
        if p.jaccard:
            values, offsets, sizes = sketch_arrays(table)

            def sketched(s: np.ndarray, d: np.ndarray) -> np.ndarray:
                jaccard, contained = overlap(values, offsets, sizes, p.sketch, s, d)
                return (jaccard >= p.threshold) | (contained >= (p.containment or 2.0))
            checks.append(sketched)
        if not checks:
            return None

        def similar(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
            keep = np.ones(len(src), dtype=bool)
            for start in range(0, len(src), _VERIFY_CHUNK):
                part = slice(start, start + _VERIFY_CHUNK)
                for check in checks:
                    keep[part] &= check(src[part], dst[part])
            return keep
        return similar

    def _survivor_order(self) -> list[pl.Expr]:
        first = [pl.col(REFERENCE).not_()]  # an earlier release's row always survives
        if self.params.keep == "score":
            return first + [pl.col(SCORE).fill_nan(None).fill_null(float("-inf")).neg(), pl.col("id")]
        return first + [pl.col("position")]

    def reference(self) -> pl.LazyFrame | None:
        """The index of the `against` releases, as a lazy scan (None without any)."""
        if not (files := self.data_files()):
            return None
        columns = ["id", SHINGLES, *self.band_columns, *self.evidence]
        return pl.concat([pl.scan_parquet(f).select(columns) for f in files])

    def _table(self, index: pl.LazyFrame, reference: pl.LazyFrame | None) -> pl.LazyFrame:
        """The rows decisions are over: the reference rows (flagged), then the index."""
        self._check_index(index.collect_schema(), "the index")
        index = index.with_columns(pl.lit(False).alias(REFERENCE))
        if reference is None:
            return index
        self._check_index(reference.collect_schema(), "the reference index")
        reference = reference.select("id", SHINGLES, *self.band_columns, *self.evidence)
        return pl.concat([reference.with_columns(pl.lit(True).alias(REFERENCE)), index], how="diagonal_relaxed")

    def _index_files(self, path: Path) -> list[Path]:
        """The index files of `path` (a file, or a release folder's tables/*.index.parquet) built with this
        operator's settings; an error naming what was found otherwise."""
        if path.is_dir():
            found = sorted((path / "tables").glob("*.index.parquet"))
            if not found:
                raise ConfigError(f"{path}: no MinHash index in this folder; give a release version folder whose "
                                  "pipeline had a minhash_dedup stage, or its tables/<stage>.index.parquet")
        elif path.exists():
            found = [path]
        else:
            raise ConfigError(f"{path}: no such index file or release folder")
        usable = [f for f in found if not self._index_problem(_schema(f))]
        if not usable:
            raise ConfigError("; ".join(f"{f}: {self._index_problem(_schema(f))}" for f in found))
        return usable


    def _check_index(self, schema: pl.Schema, what: str) -> None:
        if problem := self._index_problem(schema):
            raise ConfigError(f"{what}: {problem}")

    def _index_problem(self, schema: pl.Schema) -> str | None:
        """Why an index with this schema cannot be used with these settings (None: it can)."""
        expected = {"id": pl.String, SHINGLES: pl.Int32, **{b: pl.UInt64 for b in self.band_columns}}
        expected |= self.evidence
        if all(schema.get(c) == t for c, t in expected.items()):
            return None
        built = {c.split(":", 1)[1] for c in schema if c.startswith(BAND) and ":" in c}
        if built and self.settings not in built:
            return (f"the index was built with {', '.join(sorted(built))}, this run uses {self.settings}; "
                    "use the same settings or rebuild the index")
        missing = [f"{c} ({t})" for c, t in expected.items() if schema.get(c) != t]
        return (f"not a MinHash index for {self.settings}{' with ' + ', '.join(self.evidence) if self.evidence else ''} "
                f"(missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); rebuild it with these settings")



def bucket_pairs(hashes: pl.Series, order: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Candidate pairs (src, dst) of one band, as row positions: in each bucket (the rows sharing a band hash,
    taken in `order`, e.g. by id), every row paired with the bucket's first row, and (second) with the row
    before it, so a verified chain can still join a row whose first row is too far from it."""
    position = order[hashes.is_not_null().to_numpy()[order]]
    values = hashes.fill_null(0).to_numpy()[position]
    ranked = np.argsort(values, kind="stable")  # stable: each bucket keeps `order`
    values, position = values[ranked], position[ranked]
    first = np.concatenate([[True], values[1:] != values[:-1]]) if len(values) else np.zeros(0, dtype=bool)
    anchor = position[first][np.cumsum(first) - 1]
    later = np.flatnonzero(~first)
    third_on = later[~first[later - 1]]  # rows whose previous row is not the bucket's first
    return (position[later], anchor[later]), (position[third_on], position[third_on - 1])


def lone_pairs(hashes: pl.Series, order: np.ndarray, alone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each `alone` row paired with every other row of its bucket in this band (buckets of up to
    `LONE_BUCKET` rows; a bigger one is left to `bucket_pairs`)."""
    position = order[hashes.is_not_null().to_numpy()[order]]
    values = hashes.fill_null(0).to_numpy()[position]
    ranked = np.argsort(values, kind="stable")
    values, position = values[ranked], position[ranked]
    first = np.concatenate([[True], values[1:] != values[:-1]]) if len(values) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    size = np.diff(np.append(starts, len(values)))
    run = np.cumsum(first) - 1
    lone = np.flatnonzero(alone[position] & (size[run] > 1) & (size[run] <= LONE_BUCKET))
    count = size[run[lone]]
    member = np.repeat(starts[run[lone]], count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    src = np.repeat(position[lone], count)
    dst = position[member]
    return src[src != dst], dst[src != dst]


def sketch_arrays(table: pl.LazyFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row's sketch as one flat array with row offsets, and its distinct-shingle count; filled batch by
    batch (memory: the arrays and one batch, not a second copy of the column)."""
    counts = table.select(pl.col(SKETCH).list.len().fill_null(0), SHINGLES).collect()
    offsets = np.concatenate([[0], np.cumsum(counts[SKETCH].to_numpy(), dtype=np.int64)])
    values, at = np.empty(offsets[-1], dtype=np.uint32), 0
    for batch in table.select(SKETCH).collect_batches():
        flat = batch[SKETCH].rechunk().to_arrow().flatten().to_numpy(zero_copy_only=False)
        values[at: at + len(flat)] = flat
        at += len(flat)
    return values, offsets, counts[SHINGLES].to_numpy().astype(np.int64)


def _merged(label: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Cluster labels after joining the clusters of each pair (src[i], dst[i])."""
    n = len(label)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (label[src], label[dst])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return component[label]


def _forest(label: np.ndarray) -> pl.DataFrame:
    """row -> root (the smallest row with its label) for every row that is not its own root."""
    root_of = np.full(len(label), len(label), dtype=np.int64)
    np.minimum.at(root_of, label, np.arange(len(label)))
    root = root_of[label]
    rows = np.flatnonzero(root != np.arange(len(label)))
    return pl.DataFrame({"row": rows, "root": root[rows]}, schema={"row": pl.UInt32, "root": pl.UInt32})

def _schema(path: Path) -> pl.Schema:
    try:
        return pl.read_parquet_schema(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"{path}: not a Parquet index ({err})") from None
