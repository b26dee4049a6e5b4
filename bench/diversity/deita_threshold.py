"""Deita's cosine threshold in Sluice's TF-IDF/SVD space: rows skipped as too similar, coverage of the
README's 1,000-cluster yardstick and distinct-n at 50k words, for 5k of the 52k Alpaca rows.

    .venv/bin/python bench/diversity/deita_threshold.py [THRESHOLD ...]     # default: 0.6
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polars as pl  # noqa: E402
import run  # noqa: E402
from operators.diversity import DeitaSample  # noqa: E402
from operators.diversity.metrics import ReferenceClusters, cluster_diversity, distinct_n  # noqa: E402

frame = run.pool(52002)
text = frame.select(pl.concat_str(run.FIELDS, separator="\n"))[:, 0]
ref = ReferenceClusters(text, clusters=1000, seed=12345)
for t in [float(a) for a in sys.argv[1:]] or [0.6]:
    op = DeitaSample(budget=5000, fields=run.FIELDS, threshold=t)
    idx = pl.concat([op.index(frame[i:i+50000]) for i in range(0, len(frame), 50000)])
    d = op.decide(idx).drops
    kept = frame.filter(~pl.col("id").is_in(d["id"].implode()))
    kt = kept.select(pl.concat_str(run.FIELDS, separator="\n"))[:, 0]
    print(t, "skipped as similar:", d["detail"].str.starts_with("similar_to").sum(), cluster_diversity(kt, ref),
          distinct_n(kt, max_words=50000), "words/row:", round(kt.str.count_matches(r"\S+").mean(), 1))
