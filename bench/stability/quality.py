"""Does cluster_sample's keyed k-means (seeds = the rows with the smallest id keys, for stability) keep the
diversity bench/diversity measured? Random and cluster_sample (Lloyd iterations 0 and 20), 5,000 of the 52k
Alpaca rows, the same yardstick (1,000 reference clusters of the whole pool, seed 12345) and metrics.

    PYTHONPATH=$PWD .venv/bin/python bench/stability/quality.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diversity"))
import run as diversity  # noqa: E402  (bench/diversity/run.py)


def main() -> None:
    from operators.diversity import ClusterSample, RandomSample
    from operators.diversity.metrics import ReferenceClusters

    frame = diversity.pool(52_002)
    text = frame.select(pl.concat_str(diversity.FIELDS, separator="\n"))[:, 0]
    reference = ReferenceClusters(text, clusters=1000, seed=12345)
    common = {"budget": diversity.BUDGET, "fields": diversity.FIELDS}
    for name, op in (("random", RandomSample(**common)), ("cluster, 20 iterations", ClusterSample(**common)),
                     ("cluster, 0 iterations", ClusterSample(**common, iterations=0))):
        start = time.perf_counter()
        drops = op.decide(op.index(frame)).drops
        kept = frame.filter(~pl.col("id").is_in(drops["id"].implode()))
        print(json.dumps({"method": name, "s": round(time.perf_counter() - start, 1)} | diversity.measure(kept, reference)),
              flush=True)


if __name__ == "__main__":
    main()
