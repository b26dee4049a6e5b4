"""`line_dedup` at scale: what the driver holds for N documents (the index, the decision), time per phase.

    flock /work/bench.lock .venv/bin/python bench/dedup/lines_scale.py [--docs 1000000] [--shard-rows 100000]

Documents are made shard by shard from real sentences (the DCLM pages' lines cut into sentences, ~60k distinct):
each has 8-16 content sentences drawn at random (each made its own by a number) plus the header and footer lines of one of 2,000 "sites", so
about one unit in six is boilerplate. As in the engine, the driver keeps only each shard's index (`id` +
one 64-bit hash per unit), concatenates them and decides; each shard is then made again and the decision
applied to it. Prints the index's bytes per unit, the decision's size, the process's peak RSS after each phase
and the seconds of index / decide / apply. `--decide-only`: a synthetic index of the same shape, made
directly, and decide alone (its memory without the text-making).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from operators.dedup.lines import UNITS_REMOVED, LineDedup, split_units  # noqa: E402

DCLM = ROOT.parent / "shared" / "data" / "web" / "dclm_quality_annotations" / "majority_data.jsonl"


def sentence_pool() -> np.ndarray:
    texts = pl.read_ndjson(DCLM).select(split_units(pl.col("text"), "sentence").alias("s")).explode("s")
    return texts.filter(pl.col("s").str.len_chars() > 25)["s"].str.strip_chars().unique(maintain_order=True).to_numpy()


def make_shard(k: int, rows: int, pool: np.ndarray) -> pl.DataFrame:
    rng = np.random.default_rng(k)
    sites = rng.integers(0, 2000, rows)
    sizes = rng.integers(8, 17, rows)
    picks = rng.integers(0, len(pool), int(sizes.sum()))
    bodies, start = [], 0
    for i, size in enumerate(sizes):  # a number makes each content sentence the document's own
        bodies.append(" ".join(f"({i}.{j}) {s}" for j, s in enumerate(pool[picks[start:start + size]])))
        start += size
    texts = [f"Home | Articles | Site {s} news and reviews\n{b}\nCopyright © Site {s} Media Group, all rights reserved."
             for s, b in zip(sites, bodies)]
    return pl.DataFrame({"id": [f"doc-{k:03d}-{i:07d}" for i in range(rows)], "text": texts})


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def synthetic_index(docs: int, seed: int = 0) -> pl.DataFrame:
    """An index like the documents' (12 unique hashes a row, a header and a footer shared by one of 2,000
    sites), made directly: decide's memory without the text."""
    rng = np.random.default_rng(seed)
    sites = rng.integers(0, 2000, docs).astype(np.uint64)
    content = rng.integers(2**20, 2**63, (docs, 12), dtype=np.uint64)
    hashes = np.column_stack([sites + 2, content, sites + 4000])  # header, 12 sentences, footer
    return pl.DataFrame({"id": [f"doc-{i:08d}" for i in range(docs)],
                         "hashes": pl.Series(hashes).cast(pl.List(pl.UInt64))})


def decide_only(docs: int) -> None:
    index = synthetic_index(docs)
    before = peak_mb()
    t0 = time.perf_counter()
    decision = LineDedup().decide(index)
    print(json.dumps({"docs": docs, "units": docs * 14, "index_mb": round(index.estimated_size() / 2**20, 1),
                      "edits_mb": round(decision.edits.estimated_size() / 2**20, 1),
                      "peak_rss_mb_before_decide": before, "peak_rss_mb_after_decide": peak_mb(),
                      "decide_seconds": round(time.perf_counter() - t0, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--unit", default="sentence")
    parser.add_argument("--decide-only", action="store_true", help="a synthetic index of --docs rows: decide's memory")
    args = parser.parse_args()
    if args.decide_only:
        return decide_only(args.docs)
    random.seed(0)
    pool = sentence_pool()
    op = LineDedup(unit=args.unit)
    shards = [(k, min(args.shard_rows, args.docs - k * args.shard_rows)) for k in range(-(-args.docs // args.shard_rows))]
    t0 = time.perf_counter()
    index = pl.concat([op.index(make_shard(k, n, pool)) for k, n in shards])
    t1 = time.perf_counter()
    indexed_peak = peak_mb()
    decision = op.decide(index)
    t2 = time.perf_counter()
    decided_peak = peak_mb()
    units = int(index["hashes"].list.len().sum())
    kept = rejected = removed = 0
    for k, n in shards:
        split = op.apply(make_shard(k, n, pool), decision)
        kept, rejected = kept + len(split.kept), rejected + len(split.rejected)
        removed += int(split.kept[UNITS_REMOVED].sum())
    t3 = time.perf_counter()
    print(json.dumps({
        "docs": args.docs, "unit": args.unit, "units": units, "index_mb": round(index.estimated_size() / 2**20, 1),
        "index_bytes_per_unit": round(index.estimated_size() / units, 1),
        "edits_mb": round(decision.edits.estimated_size() / 2**20, 1), "rows_modified": len(decision.edits),
        "units_removed": removed, "kept": kept, "rejected": rejected,
        "peak_rss_mb": {"after index": indexed_peak, "after decide": decided_peak, "end": peak_mb()},
        "seconds": {"make+index": round(t1 - t0, 1), "decide": round(t2 - t1, 1), "make+apply": round(t3 - t2, 1)}}))


if __name__ == "__main__":
    main()
