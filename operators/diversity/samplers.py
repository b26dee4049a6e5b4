"""Samplers: keep `budget` rows chosen for diversity (or at random); the rest are `not_selected` rejects.

Each is a GlobalOperator: `index` turns a shard into features (hashed n-gram counts, or sentence
embeddings when asked), a key hashed from the id and the score column when one is used. The decision runs
in two levels so the driver never holds the features: tasks (`decide_part`, one per 1M rows) each take
the rows whose key falls to them (or a slice of the rows, where the deal makes no difference), fit the
same feature space and centroids on the same keyed sample of every row, and return one small row per
row (its cluster, draw, weight...; for the greedy k-center and Deita, the vectors of their best
candidates too); the driver (`combine`) chooses from those. Rows are
ordered by id throughout, so the choice depends on the seed and never on the shard order or the workers.
Random and cluster choose exactly as over every row at once with any number of tasks; DSIR, k-center and
Deita do with one task and approximate it with more (DSIR takes each task's rows as the raw distribution,
the greedy ones choose among candidates; bench/README.md, "Diversity sampling"). The TF-IDF weights come
from the keyed sample of 50k rows, as the SVD basis did (before, from every row). The rows not chosen get a detail
saying why (cluster, nearest selected row, score...). `stats` records the budget and the diversity of the
rows before and after the stage in the manifest.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from operators.base import DETAIL, REASON, Decision, GlobalOperator, Params, tasks_for
from operators.diversity import features as ft
from operators.diversity.features import joined_text
from operators.diversity.metrics import STATS_ROWS, before_after
from operators.errors import InputError
from operators.registry import register

NOT_SELECTED = "not_selected"


class SamplerParams(Params):
    budget: int = Field(ge=1, description="rows to keep")
    fields: list[str] = Field(default=["text"], min_length=1, description="text columns the features read (joined)")
    seed: int = Field(default=0, description="every random choice derives from it")


class EmbeddingParams(SamplerParams):
    features: Literal["tfidf", "embedding"] = Field(
        default="tfidf", description="tfidf: hashed word 1-2-gram TF-IDF reduced by SVD (no download); embedding: "
        "all-MiniLM-L6-v2 sentence embeddings (optional: pip install 'sluice[embeddings]')")
    n_features: int = Field(default=1 << 18, ge=16, description="tfidf: hash buckets of the word 1-2-grams")
    dims: int = Field(default=128, ge=2, le=1024, description="tfidf: SVD dimensions the TF-IDF is reduced to")

    @field_validator("features")
    @classmethod
    def _installed(cls, features: str) -> str:
        return ft.installed(features)


class Selection(NamedTuple):
    """A sampler's choice over the rows its decide tasks returned (sorted by id): which rows it keeps, why
    each other one was not (`detail`: an expression over `columns` (default: those rows), evaluated for the
    dropped rows only), and optional columns for the kept rows (`labels`, one row per row)."""

    keep: np.ndarray
    detail: pl.Expr
    columns: pl.DataFrame | None = None
    labels: pl.DataFrame | None = None


MINE = "__mine"  # a task's read: is the row its own (else only in the sample)
_FITTING = threading.Lock()
# the feature spaces tasks of this process are using, by a digest of their sample (see `Sampler.space`); weak,
# so a space (~134 MB at the defaults) goes with the last task using it, not with a long-lived worker process
_fitted: weakref.WeakValueDictionary[str, ft.TextSpace] = weakref.WeakValueDictionary()
MAX_PARTS = 64  # decide tasks at most; beyond MAX_PARTS * part_rows rows each task gets more rows
OVERSAMPLE = 2  # greedy samplers: each task offers OVERSAMPLE * budget / tasks candidates to the driver


class Sampler(GlobalOperator):
    """Shared machinery: features per shard, the decision in tasks, the budget, the rejects and the stats.

    Two levels, so the driver never holds the features: the rows are dealt to `partitions(rows)` tasks by
    their key (a hash of the id, so the deal does not depend on the shards or the workers); each task
    (`choose_part`) reads its own rows and returns one small row per row (e.g. its cluster and draw), plus
    the feature vectors of a few candidates for the greedy samplers; the driver (`choose`) picks from those.
    Every task fits the same feature space and centroids on the same keyed sample (`sample`)."""

    Params: ClassVar[type[SamplerParams]] = SamplerParams
    ngrams: ClassVar[int] = 2
    labels_all: ClassVar[bool] = False  # label the kept rows even when the budget keeps them all (stable schema)
    part_rows: int = 1_000_000  # rows one decide task selects from (a smaller value makes more tasks)
    any_deal: ClassVar[bool] = False  # the choice is the same whichever task gets which row (tasks read slices)
    fits: ClassVar[bool] = True  # fits a feature space on the keyed sample (`in_sample`), which its tasks read

    @property
    def score_col(self) -> str | None:
        return getattr(self.params, "score_col", None)

    @property
    def n_features(self) -> int | None:
        """Hash buckets of the n-gram counts `index` computes (None: the sampler needs no text)."""
        return getattr(self.params, "n_features", None)

    @property
    def sentence_features(self) -> bool:
        return getattr(self.params, "features", "tfidf") == "embedding"

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        columns = [batch["id"], pl.Series("key", self.keys(batch["id"]))]
        if self.sentence_features:
            columns.append(pl.Series("embedding", ft.sentence_embeddings(joined_text(batch, self.params.fields))))
        elif self.n_features:
            counts = ft.ngram_counts(joined_text(batch, self.params.fields), self.n_features, self.ngrams)
            columns += ft.to_lists(counts)
        if self.score_col:
            columns.append(numeric_scores(batch, self.score_col))
        return pl.DataFrame(columns)

    def partitions(self, rows: int) -> int:
        """One task per `part_rows` rows, at most `MAX_PARTS`."""
        return tasks_for(rows, self.part_rows, MAX_PARTS)

    def decide_part(self, index: pl.LazyFrame, part: int, rows: int) -> pl.DataFrame:
        """One row per row of this part, as `choose_part` makes it (nothing, and nothing read, when the
        budget keeps every row)."""
        if rows <= self.params.budget and not self.labels_all:
            return pl.DataFrame()
        parts = self.partitions(rows)
        mine, sample = self.read_part(index, part, parts, rows)
        return self.choose_part(sample, mine, parts) if len(mine) else pl.DataFrame()

    def read_part(self, index: pl.LazyFrame, part: int, parts: int, rows: int) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """This part's rows and, for a sampler that `fits` a feature space, the keyed sample, each by id, from
        one read of the index (decoding every row's features is most of a task's reading). The part's rows
        are those whose key is `part` modulo `parts` (the same rows in any shard order), or, when the choice
        does not depend on the deal and nothing is fitted (random), a slice of the scan (read alone)."""
        if self.any_deal and not self.fits:
            start = rows * part // parts
            return index.slice(start, rows * (part + 1) // parts - start).collect().sort("id"), None
        mine = pl.col("key") % parts == part
        if not self.fits:
            return index.filter(mine).collect().sort("id"), None
        fit = self.in_sample(index, rows)
        table = index.filter(mine | fit).with_columns(mine.alias(MINE)).collect() \
            .sort(MINE, "id", descending=[True, False])  # this part's rows first: a slice, not a copy
        sample = table.filter(fit).drop(MINE).sort("id")
        return table.slice(0, int(table[MINE].sum())).drop(MINE), sample

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> Decision:
        """The choice over every part's rows (in id order): the rows not kept as `not_selected` drops."""
        parts = [p for p in parts if p.height]
        if not parts:  # no rows, or no more rows than the budget: everything is kept
            labels = pl.DataFrame(schema={"id": pl.String} | dict.fromkeys(self.columns(), pl.Int32)) \
                if self.labels_all else None
            return Decision(self.drops(pl.DataFrame(schema={"id": pl.String}), NOT_SELECTED), labels=labels)
        rows = pl.concat(parts, how="diagonal_relaxed")
        parts.clear()  # the sorted copy replaces them (the engine passes a list of its own)
        rows = rows.sort("id")
        keep, detail, columns, labels = self.choose(rows)
        keep = pl.Series(keep)
        table = rows if columns is None else pl.concat([rows.select("id"), columns], how="horizontal")
        ids, rows, columns = rows["id"], None, None
        drops = table.lazy().filter(~keep).select("id", pl.lit(NOT_SELECTED).alias(REASON),
                                                  detail.cast(pl.String).alias(DETAIL)).collect()
        if labels is not None:
            labels = labels.with_columns(ids).select("id", *labels.columns).filter(keep)
        return Decision(drops, labels=labels)

    def choose_part(self, sample: pl.DataFrame | None, rows: pl.DataFrame, parts: int) -> pl.DataFrame:
        """Task: what the driver needs to choose among `rows` (this part's index rows, by id), one of `parts`
        tasks; `sample`: the index rows every task fits the feature space on (None if it `fits` none)."""
        raise NotImplementedError

    def choose(self, rows: pl.DataFrame) -> Selection:
        """Driver: the choice over every part's `choose_part` rows, sorted by id; min(budget, rows) kept."""
        raise NotImplementedError

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Budget, rows in and selected, and the diversity before (every row in) and after (the kept rows),
        each measured on a seeded sample of at most STATS_ROWS rows: only those rows' text is read."""
        kept_ids = kept.select("id").collect()["id"]
        pool_ids = pl.concat([kept_ids, rejected.select("id").collect()["id"]])
        result = {"budget": self.params.budget, "rows_in": len(pool_ids), "selected": len(kept_ids)}
        if len(kept_ids):
            before, after = self._measured(pool_ids), self._measured(kept_ids)
            wanted = lambda frame: [c for c in dict.fromkeys(("id", *self.params.fields, "instruction"))  # noqa: E731
                                    if c in frame.collect_schema()]
            rows = pl.concat([kept.select(wanted(kept)), rejected.select(wanted(rejected))], how="diagonal_relaxed") \
                .filter(pl.col("id").is_in(pl.concat([before, after]).implode())).collect()
            result["diversity"] = before_after(rows.filter(pl.col("id").is_in(before.implode())),
                                               rows.filter(pl.col("id").is_in(after.implode())),
                                               self.params.fields, self.params.seed)
            result["diversity"]["before"]["rows"] = len(pool_ids)
            result["diversity"]["after"]["rows"] = len(kept_ids)
        return result

    def _measured(self, ids: pl.Series) -> pl.Series:
        """The ids `before_after` measures of a set: its STATS_ROWS lowest seeded draws."""
        return ids.filter(pl.Series(ft.uniform(ids, self.params.seed)).rank("ordinal") <= STATS_ROWS)

    def counts(self, index: pl.DataFrame):
        return ft.from_lists(index["feat_idx"], index["feat_val"], self.n_features)

    @property
    def fit_rows(self) -> int:
        return ft.FIT_ROWS

    def in_sample(self, index: pl.LazyFrame, total: int) -> pl.Expr:
        """Is a row one of those every task fits the feature space and the centroids on: the `fit_rows` rows
        with the smallest keys (all rows when there are no more; finding them reads the key column only)."""
        if total <= self.fit_rows:
            return pl.lit(True)
        keys = index.select("key").collect()["key"].to_numpy()
        return pl.col("key") <= np.partition(keys, self.fit_rows - 1)[self.fit_rows - 1]

    def sample(self, index: pl.LazyFrame, total: int) -> pl.DataFrame:
        """The rows `in_sample`, by id."""
        return index.filter(self.in_sample(index, total)).collect().sort("id")

    def space(self, sample: pl.DataFrame) -> ft.TextSpace | None:
        """The TF-IDF weights and SVD basis of the sample (None with sentence embeddings: nothing to fit).
        Fitted once per process for a given sample: tasks run in one process (the local runner) share it."""
        if self.sentence_features:
            return None
        counts = self.counts(sample)
        digest = hashlib.sha256(f"{self.params.dims} {self.params.seed} {counts.shape}".encode())
        for array in (sample["key"].to_numpy(), counts.indptr, counts.indices, counts.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        with _FITTING:  # tasks on threads of one process: one fits, the others wait and reuse it
            if (space := _fitted.get(digest.hexdigest())) is None:
                space = _fitted[digest.hexdigest()] = ft.TextSpace(
                    counts, self.params.dims, self.params.seed, sample["key"].to_numpy())
            return space

    def embedding(self, rows: pl.DataFrame, space: ft.TextSpace | None, chunk: int = 65_536) -> np.ndarray:
        """Unit vectors of the rows: the sentence embeddings `index` computed, else TF-IDF projected on the
        space (a chunk of rows at a time, so only one chunk's sparse features are held)."""
        if space is None:
            return ft.normalize_rows(rows["embedding"].to_numpy().astype(np.float32))
        return np.concatenate([space.project(self.counts(rows.slice(i, chunk))) for i in range(0, len(rows), chunk)]
                              or [np.zeros((0, space.basis.shape[1]), np.float32)])

    def random_order(self, ids: pl.Series) -> np.ndarray:
        return ft.uniform(ids, self.params.seed)

    def keys(self, ids: pl.Series) -> np.ndarray:
        """Per-row keys for the deal to tasks, the feature space and the clustering: a draw of their own (not
        `random_order`, which ranks rows inside a cluster), fixed by the id, so the choice is stable under
        small edits."""
        return ft.row_keys(ids, self.params.seed + 1)

    def candidates(self, part_rows: int, parts: int) -> int:
        """How many candidates a greedy sampler's task offers: its share of the budget, `OVERSAMPLE` times
        over (all of the budget with one task, so one task chooses as the one-pass greedy does)."""
        return min(part_rows, self.params.budget, -(-OVERSAMPLE * self.params.budget // parts))


def numeric_scores(batch: pl.DataFrame, column: str) -> pl.Series:
    scores = batch[column]
    if not scores.dtype.is_numeric():
        raise InputError(f"score column {column!r} holds {scores.dtype}, not numbers (first row id "
                         f"{batch['id'][0]!r}); pass a numeric score column")
    return scores.cast(pl.Float64).alias("score")


def top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k largest keys; ties go to the earlier row (rows are in id order)."""
    order = np.argsort(-keys, kind="stable")
    keep = np.zeros(len(keys), dtype=bool)
    keep[order[:k]] = True
    return keep


def _scores_desc(rows: pl.DataFrame) -> np.ndarray:
    """Scores for ranking, high first; a missing score ranks below every real one."""
    return rows["score"].fill_nan(None).fill_null(-np.inf).to_numpy()


def best_first(rows: pl.DataFrame) -> np.ndarray:
    """Positions of `rows` (with `score` and the random draw `u`) best score first, ties by the draw."""
    return np.lexsort((-rows["u"].to_numpy(), _scores_desc(rows)))[::-1]


def with_vectors(rows: pl.DataFrame, z: np.ndarray, chosen: np.ndarray) -> pl.DataFrame:
    """`rows` with the feature vectors of the `chosen` ones as column `vector` (null for the others)."""
    vectors = pl.Series("vector", z[chosen], dtype=pl.Array(pl.Float32, z.shape[1]))
    picked = rows[chosen].with_columns(vectors)
    return pl.concat([picked, rows.filter(~pl.Series(np.isin(np.arange(len(rows)), chosen)))], how="diagonal_relaxed")


@register
class RandomSample(Sampler):
    """Uniform random sample of `budget` rows (the baseline every diversity sampler must beat)."""

    name = "random_sample"
    any_deal = True
    fits = False

    def choose_part(self, sample, rows, parts):
        return rows.select("id", u=self.random_order(rows["id"]))

    def choose(self, rows):
        return Selection(top_k(rows["u"].to_numpy(), self.params.budget), pl.lit("random"))


@register
class ClusterSample(Sampler):
    """k-means over word n-gram TF-IDF (SVD-reduced); the budget spread evenly or proportionally over clusters.

    Inside a cluster rows are taken best-score-first when a score column is given, else at random. Kept
    rows carry their cluster id (column `cluster_col`): a number named after the cluster's seed row, so it
    survives small edits of the input; the manifest gets the cluster sizes. Every random choice (features,
    seeds, order inside a cluster) is drawn from the rows' ids, so a few edited rows change a few choices."""

    name = "cluster_sample"
    labels_all = True
    any_deal = True

    class Params(EmbeddingParams):
        clusters: int | None = Field(default=None, ge=1, description="k of k-means; default budget/5 in [2, 2000]")
        allocation: Literal["balanced", "proportional"] = Field(
            default="balanced", description="balanced: equal share per cluster (small clusters kept whole); "
                                            "proportional: share by cluster size")
        score_col: str | None = Field(default=None, description="numeric column; best first inside a cluster")
        cluster_col: str | None = Field(default="cluster", min_length=1,
                                        description="column that gets each kept row's cluster id (null: none)")
        # 0 measured best on Alpaca 52k (bench/stability): 169 rows reported by `release diff` after 5 edited
        # input rows (1,273 with 20 iterations) and coverage 0.952 (0.945 with 20; random 0.944)
        iterations: int = Field(default=0, ge=0, le=100, description=(
            "Lloyd iterations after seeding (0: every row joins its nearest seed); more fit the clusters to "
            "the data but let a few edited input rows move more rows"))

    def columns(self) -> dict[str, str]:
        col = self.params.cluster_col
        return {col: f"k-means cluster of the row ({self.name}); the manifest has every cluster's size"} if col else {}

    @property
    def k(self) -> int:
        p = self.params
        return p.clusters or min(max(p.budget // 5, 2), 2000)  # many small clusters: better coverage (bench/diversity)

    @property
    def fit_rows(self) -> int:
        return max(ft.FIT_ROWS, self.k)

    def choose_part(self, sample, rows, parts):
        """Each row's cluster (the label of its nearest centroid; every task fits the same centroids on the
        same sample), its random draw and its score."""
        space = self.space(sample)
        centroids, _ = ft.keyed_centroids(self.embedding(sample, space), self.k, sample["key"].to_numpy(),
                                          iters=self.params.iterations)
        labels = ft.assign(self.embedding(rows, space), centroids)
        return rows.select("id", *(["score"] if self.score_col else []), u=self.random_order(rows["id"]),
                           label=pl.Series(labels, dtype=pl.Int32))

    def choose(self, rows):
        p = self.params
        names = self.names(rows)
        labels = rows["label"].to_numpy()
        sizes = np.bincount(labels, minlength=len(names))
        quota = (balanced_quota if p.allocation == "balanced" else proportional_quota)(sizes, p.budget)
        rank = rank_within(labels, self._priority(rows))
        columns = pl.DataFrame({"cluster": names[labels], "rank": rank, "size": sizes[labels], "quota": quota[labels]},
                               schema=dict.fromkeys(("cluster", "rank", "size", "quota"), pl.Int32))
        detail = pl.format("cluster={} rank={} size={} quota={}", "cluster", "rank", "size", "quota")
        kept_labels = pl.DataFrame({p.cluster_col: names[labels].astype(np.int32)}) if p.cluster_col else None
        return Selection(rank < quota[labels], detail, columns, kept_labels)

    def names(self, rows: pl.DataFrame) -> np.ndarray:
        """The clusters' names by label: from the keys of their seed rows (the rows with the smallest keys)."""
        keys = self.keys(rows["id"])
        return ft.seed_names(keys[ft.keyed_seeds(keys, self.k)])

    def stats(self, kept, rejected):
        """The sampler stats plus the size of every cluster and the rows kept from it (in the order of
        `cluster_ids`, the clusters' names)."""
        result = super().stats(kept, rejected)
        col = self.params.cluster_col
        if col and col in kept.collect_schema():
            dropped = rejected.select(pl.col(DETAIL).str.extract(r"^cluster=(\d+)", 1).cast(pl.Int64)) \
                .collect(engine="streaming")[DETAIL].drop_nulls().to_numpy()  # not every detail string at once
            chosen = kept.select(col).collect()[col].drop_nulls().cast(pl.Int64).to_numpy()
            ids = np.unique(np.concatenate([chosen, dropped]))
            kept_per = np.bincount(np.searchsorted(ids, chosen), minlength=len(ids))
            sizes = kept_per + np.bincount(np.searchsorted(ids, dropped), minlength=len(ids))
            result |= {"clusters": len(ids), "cluster_ids": ids.tolist(), "cluster_sizes": sizes.tolist(),
                       "cluster_kept": kept_per.tolist()}
        return result

    def _priority(self, rows: pl.DataFrame) -> np.ndarray:
        """Higher first: the score if given (random among equals), else the seeded random draw."""
        rnd = rows["u"].to_numpy()
        if not self.score_col:
            return rnd
        score = _scores_desc(rows)
        order = np.lexsort((-rnd, score))  # ascending by score, then random
        priority = np.empty(len(score))
        priority[order] = np.arange(len(score))
        return priority


def rank_within(labels: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """0 for the highest-priority row of each label, 1 for the next, ..."""
    order = np.lexsort((-priority, labels))
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts
    return rank


def balanced_quota(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Water-filling: every cluster gets the same share t, small ones whole; the last few rows go one
    each to the largest clusters still having rows."""
    budget = min(budget, int(sizes.sum()))
    lo, hi = 0, int(sizes.max())
    while lo < hi:  # largest t with sum(min(size, t)) <= budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(sizes, mid).sum() <= budget else (lo, mid - 1)
    quota = np.minimum(sizes, lo)
    left = budget - int(quota.sum())
    room = np.flatnonzero(sizes > quota)
    quota[room[np.argsort(-sizes[room], kind="stable")][:left]] += 1
    return quota


def proportional_quota(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Shares by size, rounded by largest remainder."""
    budget = min(budget, int(sizes.sum()))
    exact = sizes * budget / sizes.sum()
    quota = np.floor(exact).astype(np.int64)
    left = budget - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:left]] += 1
    return quota


@register
class KCenterSample(Sampler):
    """k-center greedy: repeatedly add the row farthest (cosine) from everything chosen so far."""

    name = "kcenter_sample"

    class Params(EmbeddingParams):
        pass

    def choose_part(self, sample, rows, parts):
        """k-center greedy over this part's rows, stopped at its share of candidates (`candidates`), which
        carry their vectors; every other row carries its nearest candidate and the distance."""
        z = self.embedding(rows, self.space(sample))
        u = self.random_order(rows["id"])
        keep, nearest, dist = k_center(z, int(np.argmax(u)), self.candidates(len(rows), parts))
        table = rows.select("id", u=u, nearest=rows["id"].gather(nearest), distance=np.round(dist, 4))
        return with_vectors(table, z, np.flatnonzero(keep))

    def choose(self, rows):
        """k-center greedy over the candidates, from the row with the highest draw (the same first row as
        over every row). A dropped candidate names its nearest kept one; another row names the kept row its
        task's nearest candidate has (itself, or the one the driver kept instead: then `distance<=` gives a
        bound through that candidate, as its own vector stayed in the task)."""
        pos = np.flatnonzero(rows["vector"].is_not_null().to_numpy())
        z = rows["vector"].gather(pos).to_numpy()
        picked, nearest, dist = k_center(z, int(np.argmax(rows["u"].to_numpy()[pos])), self.params.budget)
        keep = np.zeros(len(rows), dtype=bool)
        keep[pos[picked]] = True
        candidates = rows["id"].gather(pos)
        relay = pl.DataFrame({"nearest": candidates, "kept": candidates.gather(nearest), "hop": dist, "bound": ~picked})
        columns = rows.select("nearest", "distance").join(relay, on="nearest", how="left", maintain_order="left")
        bound, own = columns["bound"].to_numpy(), columns["distance"].to_numpy()
        distance = np.where(bound, through(own, columns["hop"].to_numpy()), own)
        columns = columns.select(nearest=columns["kept"].scatter(pos, candidates.gather(nearest)),
                                 distance=pl.Series(np.round(distance, 4)).scatter(pos, np.round(dist, 4)),
                                 bound=columns["bound"].scatter(pos, False))
        short = min(self.params.budget, len(rows)) - int(keep.sum())
        if short > 0:  # the tasks offered too few candidates: the rows farthest from their nearest candidate
            far = np.argsort(-columns["distance"].to_numpy(), kind="stable")
            keep[far[~keep[far]][:short]] = True
        detail = pl.format("nearest={} distance{}{}", "nearest", pl.when("bound").then(pl.lit("<=")).otherwise(
            pl.lit("=")), "distance")
        return Selection(keep, detail, columns)


def through(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A bound on the cosine distance from a to c given a-b (`first`) and b-c (`second`): the angles add up."""
    angle = np.arccos(np.clip(1 - first, -1, 1)) + np.arccos(np.clip(1 - second, -1, 1))
    return 1 - np.cos(np.minimum(angle, np.pi))


def k_center(z: np.ndarray, first: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-center greedy (cosine) from row `first`, k rows: (kept mask, each row's nearest kept row, its distance)."""
    dist = 1 - z @ z[first]
    nearest = np.full(len(z), first)
    keep = np.zeros(len(z), dtype=bool)
    keep[first] = True
    for _ in range(min(k, len(z)) - 1):  # inherently sequential: one matrix-vector product per pick
        pick = int(np.argmax(np.where(keep, -np.inf, dist)))
        keep[pick] = True
        new = 1 - z @ z[pick]
        closer = new < dist
        dist[closer], nearest[closer] = new[closer], pick
    return keep, nearest, dist


@register
class DeitaSample(Sampler):
    """Deita: best score first, skipping rows whose cosine similarity to a kept row exceeds the threshold.

    Candidates are compared in blocks (one matrix product against the kept rows), then in order inside
    the block, so the result equals the one-by-one greedy of the paper."""

    name = "deita_sample"

    class Params(EmbeddingParams):
        score_col: str | None = Field(default=None, description="numeric column, higher is better; default: "
                                      "length in words of the text (longest-first is a strong baseline)")
        # The paper's 0.9 is for LLaMA embeddings; in this TF-IDF/SVD space it skips only 33 of the first
        # 5k Alpaca candidates, while 0.6 lifts cluster coverage from 0.75 to 0.96 (bench/diversity).
        threshold: float = Field(default=0.6, gt=0, le=1, description="max cosine similarity to a selected row")
        block: int = Field(default=1024, ge=1, description="candidates compared per matrix product")

    def index(self, batch):
        index = super().index(batch)
        if self.score_col:
            return index
        words = joined_text(batch, self.params.fields).str.count_matches(r"\S+").cast(pl.Float64)
        return index.with_columns(words.alias("score"))

    def choose_part(self, sample, rows, parts):
        """The greedy over this part's rows, stopped at its share of candidates (`candidates`), which carry
        their vectors; every other row carries the candidate it is too similar to, if any, and its score."""
        z = self.embedding(rows, self.space(sample))
        table = rows.select("id", "score", u=self.random_order(rows["id"]))
        chosen, blocker, best_sim = self.greedy(z, best_first(table), self.candidates(len(rows), parts))
        table = table.with_columns(blocker=rows["id"].gather(np.maximum(blocker, 0)).set(pl.Series(blocker < 0), None),
                                   cosine=np.round(best_sim, 3))
        return with_vectors(table, z, chosen)

    def choose(self, rows):
        """The greedy over the candidates, best first; when the threshold leaves too few, the budget is
        filled with the best of the other rows (as over every row). A skipped row names the kept row it is
        too similar to (a candidate: the one the driver found; another row: the one its task found); when the
        driver did not keep that one, the row is `not_a_candidate` instead (a bound through the row the driver
        kept in its place is too weak to pass the threshold: two hops of cosine 0.6 bound it at -0.28)."""
        pos = np.flatnonzero(rows["vector"].is_not_null().to_numpy())
        candidates = rows[pos]
        chosen, blocker, best_sim = self.greedy(candidates["vector"].to_numpy(), best_first(candidates),
                                                self.params.budget)
        keep = np.zeros(len(rows), dtype=bool)
        keep[pos[chosen]] = True
        short = min(self.params.budget, len(rows)) - int(keep.sum())
        if short > 0:  # the threshold left too few rows: fill the budget with the best of the skipped ones
            order = best_first(rows)
            keep[order[~keep[order]][:short]] = True
        hit = blocker >= 0
        dropped = candidates["id"].filter(~pl.Series(keep[pos])).implode()
        lost = rows["blocker"].is_in(dropped).fill_null(False)  # skipped in its task for a row the driver did not keep
        columns = pl.DataFrame({"blocker": rows["blocker"].set(lost, None)
                                .scatter(pos[hit], candidates["id"].gather(blocker[hit])),
                                "cosine": rows["cosine"].scatter(pos[hit], np.round(best_sim[hit], 3)),
                                "lost": lost, "score": rows["score"]})
        detail = (pl.when(pl.col("blocker").is_not_null())
                  .then(pl.format("similar_to={} cosine={}", "blocker", "cosine"))
                  .when("lost").then(pl.format("not_a_candidate score={}", "score"))
                  .otherwise(pl.format("budget_reached score={}", "score")))
        return Selection(keep, detail, columns)

    def greedy(self, z: np.ndarray, order: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows taken in `order` unless too similar to a taken one, until `limit`: (taken positions, each
        row's blocker position or -1, its cosine to the blocker)."""
        chosen: list[int] = []
        blocker = np.full(len(z), -1)
        best_sim = np.zeros(len(z), dtype=np.float32)
        for start in range(0, len(order), self.params.block):
            if len(chosen) >= limit:
                break
            chosen += self._take(z, order[start: start + self.params.block], chosen, blocker, best_sim, limit)
        return np.asarray(chosen[:limit], dtype=np.int64), blocker, best_sim

    def _take(self, z, block, chosen, blocker, best_sim, limit) -> list[int]:
        """The rows of `block` (best first) that pass the similarity test against `chosen` and each other."""
        t = self.params.threshold
        if chosen:
            sims = z[block] @ z[chosen].T
            hit = sims.max(axis=1) > t
            blocker[block[hit]] = np.asarray(chosen)[sims[hit].argmax(axis=1)]
            best_sim[block[hit]] = sims[hit].max(axis=1)
            block = block[~hit]
        inner = z[block] @ z[block].T
        taken = np.zeros(len(block), dtype=bool)
        room = limit - len(chosen)
        for i, row in enumerate(block):  # sequential by nature; each step is one vector comparison
            if room == 0:
                break
            sims = np.where(taken, inner[i], -np.inf)
            j = int(sims.argmax())
            if sims[j] > t:
                blocker[row], best_sim[row] = block[j], sims[j]
            else:
                taken[i], room = True, room - 1
        return list(block[taken])
