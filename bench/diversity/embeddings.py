"""Sentence embeddings (all-MiniLM-L6-v2 from the optional `embeddings` extra) against the default TF-IDF/SVD
features, same pool, same budget: cluster, k-center and Deita with each, plus random; wall and CPU seconds,
and run.py's metrics, with coverage measured twice: against budget/2 k-means clusters of the pool in the
TF-IDF space (as run.py) and in the sentence-embedding space (each space favours its own samplers).

    make embeddings                                          # or: .venv/bin/pip install -e '.[embeddings]'
    .venv/bin/python bench/diversity/embeddings.py           # 52k -> 5k (README numbers: --rows 10000 --budget 1000)

The pool is the first ROWS of a seeded shuffle of Alpaca. Embedded shards are kept in /tmp/minilm_shards/ so
an interrupted run resumes; delete that folder to time the embedding again (the timing covers the shards
embedded in this run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polars as pl  # noqa: E402
import run  # noqa: E402

from operators.diversity import ClusterSample, DeitaSample, KCenterSample, RandomSample  # noqa: E402
from operators.diversity import features as ft  # noqa: E402
from operators.diversity.metrics import ReferenceClusters  # noqa: E402

SHARDS = Path("/tmp/minilm_shards")
OUT = Path(__file__).with_name("embeddings.json")
SHARD = 1_000


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()  # process_time counts every thread (PyTorch's too)


def since(start: tuple[float, float]) -> dict:
    wall, cpu = clock()
    return {"wall_s": round(wall - start[0], 1), "cpu_s": round(cpu - start[1], 1)}


def embedded(frame: pl.DataFrame, budget: int, timing: dict) -> pl.DataFrame:
    """The pool's index with sentence embeddings, shard by shard (each saved as soon as it is done)."""
    SHARDS.mkdir(exist_ok=True)
    start = clock()
    ft.sentence_model()
    timing["load_model"] = since(start)
    op = ClusterSample(budget=budget, fields=run.FIELDS, features="embedding")
    start, rows = clock(), 0
    parts = []
    for i in range(0, len(frame), SHARD):
        shard = frame[i: i + SHARD]
        path = SHARDS / f"{shard['id'][0]}-{len(shard)}.parquet"
        if not path.exists():
            op.index(shard).write_parquet(path)
            rows += len(shard)
        parts.append(pl.read_parquet(path))
    if rows:
        timing["embed"] = since(start) | {"rows": rows}
        timing["embed"]["rows_per_cpu_s"] = round(rows / max(timing["embed"]["cpu_s"], 0.1), 1)
    return pl.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=52_002)
    parser.add_argument("--budget", type=int, default=run.BUDGET)
    args = parser.parse_args()
    frame = run.pool(52_002).sample(fraction=1.0, shuffle=True, seed=0).head(args.rows)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    results = {"rows": args.rows, "budget": args.budget, "timing": {}}
    index = embedded(frame, args.budget, results["timing"])
    if "embed" not in results["timing"] and old.get("rows") == args.rows:
        results["timing"] = old.get("timing", {}) | {"load_model": results["timing"]["load_model"]}
    print(json.dumps(results), flush=True)
    text = frame.select(pl.concat_str(run.FIELDS, separator="\n"))[:, 0]
    yardstick = args.budget // 2
    reference = ReferenceClusters(text, clusters=yardstick, seed=12345)  # run.py's kind of yardstick (TF-IDF)
    z = ft.normalize_rows(index["embedding"].to_numpy())
    _, centroids = ft.kmeans(z, yardstick, seed=12345)  # the same in the embedding space
    emb_labels = dict(zip(index["id"].to_list(), ft.assign(z, centroids).tolist()))
    words = text.str.count_matches(r"\S+").cast(pl.Float64).alias("score")  # Deita's default score
    results["methods"] = []
    for features in ("tfidf", "embedding"):
        common = {"budget": args.budget, "fields": run.FIELDS, "features": features}
        samplers = {"cluster": ClusterSample(**common), "kcenter": KCenterSample(**common),
                    "deita 0.6": DeitaSample(**common), "deita 0.9": DeitaSample(**common, threshold=0.9)}
        if features == "tfidf":
            samplers = {"random": RandomSample(budget=args.budget, fields=run.FIELDS)} | samplers
        for name, op in samplers.items():
            start = clock()
            idx = (index if features == "embedding" else op.index(frame))
            if name.startswith("deita") and features == "embedding":
                idx = idx.with_columns(words)
            drops = op.decide(idx).drops
            row = {"method": name, "features": features if name != "random" else "-"} | since(start)
            kept = frame.filter(~pl.col("id").is_in(drops["id"].implode()))
            row |= run.measure(kept, reference)
            row["coverage_embedding"] = round(len({emb_labels[i] for i in kept["id"]}) / yardstick, 4)
            print(json.dumps(row), flush=True)
            results["methods"].append(row)
            OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
