"""Diversity metrics of a set of texts, as plain functions returning JSON-ready dicts.

Used to compare a sample with its pool (bench/diversity) and by the release report. Lexical measures
depend on the set size (a larger set repeats more n-grams), so compare sets of equal size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from operators.diversity import features as ft

Texts = Sequence[str | None] | pl.Series


def _series(texts: Texts) -> pl.Series:
    return texts.cast(pl.String) if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)


def distinct_n(texts: Texts, n: Sequence[int] = (1, 2), max_words: int | None = None,
               seed: int = 0) -> dict[str, float]:
    """distinct-k (Li et al. 2016): unique word k-grams / all word k-grams, over the whole set.

    Longer texts repeat more n-grams, so sets of different text lengths compare fairly only at an equal
    number of words: with `max_words`, whole texts are taken in a seeded random order up to that many words."""
    texts = _series(texts)
    if max_words is not None:
        order = np.random.default_rng(seed).permutation(len(texts))
        words = texts.gather(order).str.count_matches(r"\S+").fill_null(0).to_numpy()
        texts = texts.gather(order[: max(int(np.searchsorted(np.cumsum(words), max_words, side="right")), 1)])
    grams = ft.ngram_hashes(texts, max(n))
    return {f"distinct_{k}": round(len(np.unique(grams[k - 1][1])) / len(grams[k - 1][1]), 4)
            if len(grams[k - 1][1]) else 0.0 for k in n}


class ReferenceClusters:
    """k-means clusters of a reference set (TF-IDF/SVD space): fit once, then measure many sets against it."""

    def __init__(self, reference: Texts, clusters: int = 100, seed: int = 0, dims: int = 64) -> None:
        counts = ft.ngram_counts(_series(reference), 1 << 18)
        self.space = ft.TextSpace(counts, dims, seed)
        _, self.centroids = ft.kmeans(self.space.project(counts), clusters, seed)

    def labels(self, texts: Texts) -> np.ndarray:
        return ft.assign(self.space.project(ft.ngram_counts(_series(texts), 1 << 18)), self.centroids)


def cluster_diversity(texts: Texts, reference: Texts | ReferenceClusters | None = None, clusters: int = 100,
                      seed: int = 0) -> dict[str, float | int]:
    """How the texts spread over the k-means clusters of `reference` (texts, or clusters fitted once;
    default: the texts themselves, `clusters` of them).

    coverage: share of clusters with at least one text; entropy: Shannon entropy (bits) of the texts'
    cluster distribution, and entropy_normalized = entropy / log2(clusters) (1 = perfectly even)."""
    if not isinstance(reference, ReferenceClusters):
        reference = ReferenceClusters(texts if reference is None else reference, clusters, seed)
    k = len(reference.centroids)
    share = np.bincount(reference.labels(texts), minlength=k) / max(len(texts), 1)
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum()) + 0.0  # + 0.0: one cluster gives 0.0, not -0.0
    return {"clusters": k, "clusters_hit": int((share > 0).sum()), "coverage": round(float((share > 0).mean()), 4),
            "entropy": round(entropy, 4), "entropy_normalized": round(entropy / float(np.log2(k)), 4) if k > 1 else 0.0}


# A light verb-object "parser" for instructions (the Self-Instruct analysis, Wang et al. 2023, parses with
# the Berkeley parser and counts the root verb and its first noun object). Instructions are overwhelmingly
# imperative clauses ("Write a poem about..."), so the root verb is almost always the first word of the
# main clause and the object the first content word after it. Closed-class word lists (which are short and
# complete, unlike verb or noun lexicons) tell when that guess does not apply: a question ("What is...") or a
# statement ("The following...") has no imperative root and is counted as not parsed. No model, no download,
# vectorised; on Alpaca its top pairs match the paper's figure (write/give/generate/create + list/story/...).
_LEAD = {"given", "based", "using", "use", "after", "from", "for", "in", "with", "according", "considering",
         "if", "as", "by", "on", "without", "imagine", "suppose", "assume"}
_POLITE = {"please", "now", "then", "also", "kindly", "next", "finally", "first", "again"}
_CLOSED = {
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "all", "both", "either",
    "no", "another", "such", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "whether",
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "has", "have", "had", "can",
    "could", "will", "would", "shall", "should", "may", "might", "must", "i", "you", "he", "she", "it", "we",
    "they", "me", "him", "her", "us", "them", "my", "your", "his", "its", "our", "their", "mine", "yours",
    "there", "here", "not", "and", "or", "but", "nor", "so", "yet", "of", "to", "at", "into", "about", "over",
    "under", "between", "through", "than", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "few", "more", "most", "many", "much", "following", "below", "above", "let", "s", "up",
    "out", "down", "off", "yes", "true", "false", "hello", "hi", "thank", "thanks", "dear", "today", "tomorrow",
    "yesterday", "name", "number",
} | _LEAD | _POLITE
_MODIFIERS = {"short", "brief", "new", "simple", "creative", "good", "detailed", "unique", "different",
              "possible", "appropriate", "given", "catchy", "original", "random", "funny", "interesting",
              "list", "few", "several", "single", "complete", "valid", "suitable", "concise", "correct",
              "best", "main", "other", "similar", "specific", "own", "sample", "example", "type", "kind"}


def verb_object_coverage(instructions: Texts, top: int = 20) -> dict:
    """Root verbs and verb-object pairs of instructions (see the parser note above): how many parse, how
    many distinct verbs and pairs, the verb entropy (bits), and the most common verbs and pairs."""
    texts = _series(instructions).fill_null("")
    clause = texts.str.to_lowercase().str.strip_chars()
    after_comma = clause.str.extract(r"^[^,.?!:;\n]*,\s*(.*)$", 1)
    starts_with_lead = clause.str.extract(r"^([a-z]+)", 1).is_in(list(_LEAD))
    clause = pl.select(pl.when(starts_with_lead & after_comma.is_not_null()).then(after_comma)
                       .otherwise(clause)).to_series()
    clause = clause.str.extract(r"^([^.?!:;\n]*)", 1)
    words = (pl.DataFrame({"words": clause.str.extract_all(r"[a-z]+(?:'[a-z]+)?")})
             .with_row_index("row").explode("words").drop_nulls("words")
             .filter(~pl.col("words").is_in(list(_POLITE)) | (pl.col("words").cum_count().over("row") > 1)))
    words = words.with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
    verbs = words.filter((pl.col("pos") == 0) & ~pl.col("words").is_in(list(_CLOSED))).select("row", verb="words")
    objects = (words.filter(pl.col("pos").is_between(1, 5) & ~pl.col("words").is_in(list(_CLOSED | _MODIFIERS)))
               .group_by("row").agg(pl.col("words").sort_by("pos").first().alias("object")))
    pairs = verbs.join(objects, on="row", how="left")
    n = len(texts)
    verb_counts = pairs.group_by("verb").len().sort(["len", "verb"], descending=[True, False])
    pair_counts = (pairs.drop_nulls("object").group_by("verb", "object").len()
                   .sort(["len", "verb", "object"], descending=[True, False, False]))
    share = verb_counts["len"].to_numpy() / max(len(pairs), 1)
    return {
        "instructions": n,
        "with_verb": round(len(pairs) / n, 4) if n else 0.0,
        "with_verb_object": round(len(pairs.drop_nulls("object")) / n, 4) if n else 0.0,
        "unique_verbs": len(verb_counts),
        "unique_verb_objects": len(pair_counts),
        "verb_entropy": round(float(-(share * np.log2(share)).sum()), 4),
        "top_verbs": [list(r) for r in verb_counts.head(top).iter_rows()],
        "top_verb_objects": [list(r) for r in pair_counts.head(top).iter_rows()],
    }


def pairwise_similarity(texts: Texts, pairs: int = 2000, seed: int = 0, bins: int = 10,
                        max_words: int = 256) -> dict:
    """ROUGE-L F1 and word-set Jaccard over `pairs` random pairs of distinct texts: mean, median, p90, the
    share above 0.7 (Self-Instruct's novelty threshold for ROUGE-L) and a histogram over [0, 1].
    Texts are compared on their first `max_words` words."""
    texts = _series(texts)
    if len(texts) < 2:
        return {"pairs": 0}
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(texts), pairs)
    b = (a + rng.integers(1, len(texts), pairs)) % len(texts)  # never the same row twice
    used = np.unique(np.concatenate([a, b]))
    words = ft.tokens(texts.gather(used)).with_columns(pl.col("token").rank("dense").alias("tid"))
    seqs = words.group_by("row").agg(pl.col("tid").head(max_words))
    lookup = dict(zip(used[seqs["row"].to_numpy()].tolist(), seqs["tid"].to_list()))
    rouge, jaccard = np.zeros(pairs), np.zeros(pairs)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):  # per pair by nature; ~20 us each (bit-parallel)
        sx, sy = lookup.get(x, []), lookup.get(y, [])
        rouge[i] = _rouge_l(sx, sy)
        union = len(set(sx) | set(sy))
        jaccard[i] = len(set(sx) & set(sy)) / union if union else 0.0
    return {"pairs": pairs, "rouge_l": _summary(rouge, bins), "jaccard": _summary(jaccard, bins)}


def _rouge_l(x: list[int], y: list[int]) -> float:
    """ROUGE-L F1 from the LCS length, computed bit-parallel (Hyyrö 2004): one big-int step per word of y."""
    if not x or not y:
        return 0.0
    masks: dict[int, int] = {}
    for i, token in enumerate(x):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(x)) - 1
    v = full
    for token in y:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    lcs = len(x) - bin(v).count("1")
    return 2 * lcs / (len(x) + len(y))


def _summary(values: np.ndarray, bins: int) -> dict:
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4),
            "p90": round(float(np.quantile(values, 0.9)), 4), "above_0.7": round(float((values > 0.7).mean()), 4),
            "histogram": counts.tolist(), "bin_edges": [round(float(e), 3) for e in edges]}


def diversity_metrics(texts: Texts, reference: Texts | ReferenceClusters | None = None, instructions: Texts | None = None,
                      seed: int = 0, clusters: int = 100, pairs: int = 2000) -> dict:
    """Every metric above for one set: distinct-1/2, cluster coverage/entropy against `reference` (default:
    the set itself), pairwise ROUGE-L/Jaccard, and verb-object coverage of `instructions` when given."""
    result = {"rows": len(texts), **distinct_n(texts),
              "cluster": cluster_diversity(texts, reference, clusters, seed),
              "pairwise": pairwise_similarity(texts, pairs, seed)}
    if instructions is not None:
        result["verb_object"] = verb_object_coverage(instructions)
    return result



STATS_ROWS = 20_000  # stage stats measure a seeded sample of at most this many rows: a few seconds per stage


def before_after(pool: pl.DataFrame, kept: pl.DataFrame, fields: list[str], seed: int = 0,
                 max_rows: int = STATS_ROWS) -> dict:
    """Diversity of a sampler's input (`pool`) and of the rows it kept, both against one clustering of the
    pool (100 clusters): {"before": ..., "after": ...}, each what `diversity_metrics` returns (with the
    verb-object coverage when the rows have an `instruction` column). A set larger than `max_rows` is
    measured on a seeded sample of that many rows; `rows` stays the full count, `measured_rows` says so."""
    result = {}
    reference = None
    for name, frame in (("before", pool), ("after", kept)):
        sample = frame if frame.height <= max_rows else frame.filter(
            pl.Series(ft.uniform(frame["id"], seed)).rank("ordinal") <= max_rows)
        texts = ft.joined_text(sample, fields)
        reference = reference or ReferenceClusters(texts, seed=seed)
        instructions = sample["instruction"] if "instruction" in sample.columns else None
        metrics = diversity_metrics(texts, reference, instructions, seed)
        result[name] = metrics | {"rows": frame.height, "measured_rows": sample.height}
    return result


HEADLINE = [("rows", ("rows",)), ("distinct-1", ("distinct_1",)), ("distinct-2", ("distinct_2",)),
            ("cluster coverage", ("cluster", "coverage")), ("cluster entropy (norm.)", ("cluster", "entropy_normalized")),
            ("pairwise ROUGE-L mean", ("pairwise", "rouge_l", "mean")),
            ("pairwise Jaccard mean", ("pairwise", "jaccard", "mean")),
            ("root verbs", ("verb_object", "unique_verbs")), ("verb-object pairs", ("verb_object", "unique_verb_objects"))]


def headline(metrics: dict) -> dict[str, float | int]:
    """The metrics worth a table line, by label, from a `diversity_metrics` result (absent ones skipped)."""
    result = {}
    for label, path in HEADLINE:
        value = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            result[label] = value
    return result
