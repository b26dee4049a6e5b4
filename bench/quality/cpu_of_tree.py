"""CPU seconds of the four heuristic filters on 20,000 web documents, for the code tree at ROOT: run it for two
trees alternately in one window to compare them (`git archive COMMIT | tar -x -C /tmp/old` makes an old tree).

    .venv/bin/python bench/quality/cpu_of_tree.py ROOT    # after bench/quality/run.py wrote its docs.parquet
"""

import json
import sys
import time

root = sys.argv[1]
sys.path.insert(0, root)

import polars as pl  # noqa: E402

from operators.quality import C4Filter, FineWebFilter, GopherQuality, GopherRepetition  # noqa: E402

docs = pl.read_parquet("/tmp/bench-quality-run/docs.parquet")
web = docs.filter(pl.col("set") == "web").select("id", "text")
scale = pl.concat([web.with_columns(pl.col("id") + f"-{k}") for k in range(22)]).head(20_000)
seconds = {}
for cls in (GopherQuality, GopherRepetition, C4Filter, FineWebFilter):
    op = cls()
    op.process(web.head(20))  # regex compilation
    start = time.process_time()
    op.process(scale)
    seconds[cls.name] = round(time.process_time() - start, 2)
print(root, json.dumps(seconds))
