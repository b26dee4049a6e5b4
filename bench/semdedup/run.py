"""Semantic dedup on the paraphrase sets (bench/semdedup/sets.py), side by side in one process per tool.

    B="env PYTHONPATH=. /tmp/venv-emb/bin/python bench/semdedup/run.py /tmp/sd13"
    flock /work/bench.lock $B alpaca,heldout,zh,de --embed      # embeddings once per set (index.parquet)
    $B alpaca --sweep embedding                                  # threshold tuning: the tuning set only
    $B alpaca,heldout,zh,de --quality                            # P/R/F1 of every tool from those embeddings
    flock /work/bench.lock $B alpaca,heldout --tools semdedup,paper,minhash   # time and memory, one process each

Tools (each `python run.py --one TOOL SET` in its own process under /usr/bin/time: wall, CPU, peak RSS):
  semdedup        Sluice's semantic_dedup at its defaults (features: embedding, languages: [en])
  semdedup-all    the same judging every language (languages: null): what MiniLM does on zh/de
  semdedup-tfidf  features: tfidf (no model)
  minhash         Sluice's minhash_dedup at its defaults
  paper           SemDeDup as the paper defines it (Abbas et al. 2023, Algorithm 1), written here from the
                  paper, independent of Sluice's code: the same MiniLM embeddings, scikit-learn k-means
                  (k-means++, 10 inits), per cluster rows sorted farthest-from-centroid first, a row dropped
                  when its maximum cosine to an earlier row is >= 1 - eps; eps = 1 - semdedup's threshold.
                  (NeMo Curator's implementation needs cudf/cuML on a GPU: not runnable on this machine.)
  allpairs        semdedup with one cluster: every pair compared (what clustering loses)
Scores: bench/dedup/run.py's (in each original+paraphrase group removing one row is right; removing a
row outside the groups, or both, is a false positive).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("dedup_run", ROOT / "bench" / "dedup" / "run.py")
dedup_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dedup_run)
run_timed, score = dedup_run.run_timed, dedup_run.score  # bench/dedup/run.py: the timer and the scorer

SHARD = 1000  # rows per shard, as the engine would index them


def rows_of(folder: Path):
    import polars as pl

    return pl.read_ndjson(folder / "rows.jsonl", schema={"id": pl.String, "text": pl.String})


def sluice_removed(op, frame) -> set[str]:
    import polars as pl

    index = pl.concat([op.index(frame.slice(i, SHARD)) for i in range(0, len(frame), SHARD)])
    return set(op.decide(index).drops["id"])


def paper(frame, threshold: float, index=None, cluster_size: int = 1000) -> set[str]:
    """SemDeDup (Algorithm 1 of the paper), from its text: k-means, then per cluster the max similarity of
    each row to the rows before it (rows sorted by descending distance to the centroid)."""
    import numpy as np
    from sklearn.cluster import KMeans

    from operators.diversity.features import sentence_embeddings

    if index is None:
        e = sentence_embeddings(frame["text"])
    else:  # the saved embeddings, in the rows' order
        e = frame.select("id").join(index, on="id", how="left", maintain_order="left")["embedding"].to_numpy()
    k = max(1, round(len(e) / cluster_size))
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(e)
    ids = frame["id"].to_numpy()
    removed = set()
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        dist = 1 - e[members] @ (km.cluster_centers_[c] / np.linalg.norm(km.cluster_centers_[c]))
        members = members[np.argsort(-dist, kind="stable")]  # "hard": farthest from the centroid first
        sims = e[members] @ e[members].T
        upper = np.triu(sims, k=1)  # upper[j, i]: row j before row i
        worst = upper.max(axis=0)
        removed |= set(ids[members[worst >= threshold]])
    return removed


def one(tool: str, folder: Path, threshold: float | None) -> None:
    """Run one tool on one set in this process; print the removed ids as JSON."""
    from operators.dedup import MinHashDedup, SemanticDedup

    frame = rows_of(folder)
    start = time.time()
    if tool == "minhash":
        removed = sluice_removed(MinHashDedup(), frame)
    elif tool == "paper":
        removed = paper(frame, threshold or SemanticDedup().threshold)
    else:
        params = {"semdedup": {}, "semdedup-all": {"languages": None}, "semdedup-tfidf": {"features": "tfidf"},
                  "allpairs": {"cluster_size": 10**9}}[tool]
        removed = sluice_removed(SemanticDedup(threshold=threshold, **params), frame)
    print(json.dumps({"removed": sorted(removed), "seconds": time.time() - start}))


def embed(folder: Path) -> None:
    """semantic_dedup's index of every row (languages: null), with the language lid.176 gives each row."""
    import polars as pl

    from operators.dedup import SemanticDedup
    from operators.quality.langid import identify

    frame = rows_of(folder)
    op = SemanticDedup(languages=None)
    start = time.time()
    index = pl.concat([op.index(frame.slice(i, SHARD)) for i in range(0, len(frame), SHARD)])
    seconds = time.time() - start
    index.with_columns(identify(frame["text"])[0].alias("lang")).write_parquet(folder / "index.parquet")
    print(f"{folder.name}: {len(frame)} rows embedded in {seconds:.1f} s ({len(frame) / seconds:.0f} rows/s)")


def cached(folder: Path, languages: list[str] | None = ["en"]):
    """The saved index, as semantic_dedup with `languages` would have built it."""
    import polars as pl

    from operators.dedup.semantic import EMBEDDING, quantize

    index = pl.read_parquet(folder / "index.parquet")
    if index.schema[EMBEDDING] != pl.Array(pl.Int8, 384):  # saved before the index held int8
        index = index.with_columns(pl.Series(EMBEDDING, quantize(index[EMBEDDING].to_numpy()),
                                             dtype=pl.Array(pl.Int8, 384)))
    return index.with_columns(pl.col("lang").is_in(languages).alias("judged")) if languages else index


def quality(folder: Path) -> None:
    """P/R/F1 of every tool; the embedding tools from the saved embeddings (float32; semantic_dedup gets
    them as its index holds them, in int8)."""
    import polars as pl

    from operators.dedup import MinHashDedup, SemanticDedup

    frame = rows_of(folder)
    found = {
        "semdedup": set(SemanticDedup().decide(cached(folder)).drops["id"]),
        "semdedup-all": set(SemanticDedup(languages=None).decide(cached(folder, None)).drops["id"]),
        "paper": paper(frame, SemanticDedup().threshold, pl.read_parquet(folder / "index.parquet")),
        "allpairs": set(SemanticDedup(languages=None, cluster_size=10**9).decide(cached(folder, None)).drops["id"]),
        "semdedup-tfidf-all": sluice_removed(SemanticDedup(features="tfidf", languages=None), frame),
        "minhash": sluice_removed(MinHashDedup(), frame),
    }
    print(f"| {folder.name} | cosine: paraphrase pairs (median) {separation(folder)} | | | | | |")
    for tool, removed in found.items():
        m = score(removed, folder / "truth.jsonl")
        print(f"| {folder.name} | {tool} | {len(frame):,} | {len(removed):,} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {m['f1']:.3f} |", flush=True)


def separation(folder: Path) -> str:
    """Median cosine of the labelled paraphrase pairs, and of 5,000 random pairs of other rows: how far
    apart the model puts meaning (on text it cannot read, unrelated rows look alike)."""
    import numpy as np

    import polars as pl

    index = pl.read_parquet(folder / "index.parquet")  # float32, as the model gave them
    z = index["embedding"].to_numpy()
    position = {i: n for n, i in enumerate(index["id"])}
    truth = [json.loads(line) for line in (folder / "truth.jsonl").read_text().splitlines()]
    groups: dict[str, list[int]] = {}
    for r in truth:
        groups.setdefault(r["group"], []).append(position[r["id"]])
    pairs = np.array([g for g in groups.values() if len(g) == 2])
    rng = np.random.default_rng(0)
    a, b = rng.integers(len(z), size=(2, 5000))
    a, b = a[a != b], b[a != b]
    same = np.einsum("ij,ij->i", z[pairs[:, 0]], z[pairs[:, 1]])
    other = np.einsum("ij,ij->i", z[a], z[b])
    return (f"{np.median(same):.2f}; random pairs (median) {np.median(other):.2f}, "
            f"99th percentile {np.percentile(other, 99):.2f}")


def sweep(folder: Path, features: str, thresholds: list[float]) -> None:
    """Decide at each threshold (tuning: run it on the tuning set only)."""
    import polars as pl

    from operators.dedup import SemanticDedup

    frame = rows_of(folder)
    if features == "embedding":
        index = cached(folder)
    else:
        op = SemanticDedup(features=features)
        index = pl.concat([op.index(frame.slice(i, SHARD)) for i in range(0, len(frame), SHARD)])
    print(f"| threshold | removed | precision | recall | F1 |  ({folder.name}, features: {features})")
    for t in thresholds:
        removed = set(SemanticDedup(features=features, threshold=t).decide(index).drops["id"])
        m = score(removed, folder / "truth.jsonl")
        print(f"| {t:.2f} | {len(removed)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sets", type=Path)
    parser.add_argument("names")
    parser.add_argument("--tools", default="semdedup,semdedup-all,paper,allpairs,semdedup-tfidf,minhash")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--sweep", choices=["embedding", "tfidf"])
    parser.add_argument("--one", metavar="TOOL")
    parser.add_argument("--embed", action="store_true")
    parser.add_argument("--quality", action="store_true")
    args = parser.parse_args()
    if args.embed or args.quality:
        if args.quality:
            print("| set | tool | rows | removed | precision | recall | F1 |\n|---|---|---|---|---|---|---|")
        for name in args.names.split(","):
            (embed if args.embed else quality)(args.sets / name)
        return None
    if args.one:
        return one(args.one, args.sets / args.names, args.threshold)
    if args.sweep:
        grid = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55] + [round(0.6 + 0.02 * i, 2) for i in range(20)]
        return sweep(args.sets / args.names, args.sweep, grid)
    print("| set | tool | rows | wall s | CPU s | peak RSS GiB | removed | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.names.split(","):
        folder = args.sets / name
        rows = sum(1 for _ in open(folder / "rows.jsonl"))
        for tool in args.tools.split(","):
            log = Path(f"/tmp/semdedup-{name}-{tool}.log")
            cmd = [sys.executable, __file__, str(args.sets), name, "--one", tool]
            cmd += ["--threshold", str(args.threshold)] if args.threshold else []
            wall, cpu, rss = run_timed(cmd, log)
            result = [line for line in log.read_text().splitlines() if line.startswith('{"removed"')][-1]
            removed = set(json.loads(result)["removed"])
            m = score(removed, folder / "truth.jsonl")
            print(f"| {name} | {tool} | {rows:,} | {wall:.1f} | {cpu:.1f} | {rss:.2f} | {len(removed):,} | "
                  f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
