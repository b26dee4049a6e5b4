"""What reading a shard while the cache is asked is worth on S3 (session 9, 9-mend): per task, a cache look-up
that finds nothing (a GET of a missing `_done`) and a shard's read (a GET and a decode), side by side (as
call_cached did before acb2dd6 for every task) or one after the other, and each alone; moto in its own process.

    flock /work/bench.lock .venv/bin/python bench/cluster/overlap.py [ROWS=50000] [REPS=30]

The shard: ROWS rows of 50 random words each (from the web samples in ../shared/data), LZ4 Parquet as the
cache writes it (50,000 rows: ~10 MB, a 1M-row run's shard).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from speed import S3Process  # noqa: E402


def main(rows: int, reps: int) -> None:
    with S3Process() as s3:  # moto in its own process, up once it names its endpoint
        os.environ.update(s3.env)
        from pipelines import storage
        from pipelines.cache import PARQUET, ShardCache
        from pipelines.engine import Part

        web = sorted((ROOT.parent / "shared" / "data" / "web").rglob("*.jsonl"))[:3]
        text = pl.concat([pl.read_ndjson(p).select(pl.col("text").cast(pl.String)) for p in web])
        words = np.array(" ".join(text["text"].head(3000).to_list()).split())
        rng = np.random.default_rng(7)
        frame = pl.DataFrame({"id": [str(i) for i in range(rows)],
                              "text": [" ".join(rng.choice(words, 50)) for _ in range(rows)]})
        url = "s3://sluice/bench/shard.parquet"
        storage.write_parquet(frame, url, **PARQUET)
        print(f"shard: {rows} rows, {storage.size(url):,} bytes")
        part, cache = Part(rows, path=url), ShardCache("s3://sluice/cache")

        def side_by_side(i: int) -> None:
            pool = ThreadPoolExecutor(1)
            read = pool.submit(part.load)
            try:
                assert cache.files(f"missing-{i}") is None
                read.result()
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

        def one_after_the_other(i: int) -> None:
            assert cache.files(f"missing-{i}") is None
            part.load()

        def look_up_alone(i: int) -> None:
            cache.files(f"missing-{i}")

        def read_alone(i: int) -> None:
            part.load()

        ways = (side_by_side, one_after_the_other, look_up_alone, read_alone)
        times: dict[str, list[tuple[float, float]]] = {way.__name__: [] for way in ways}
        for rep in range(reps):
            for n, way in enumerate(ways):
                wall, cpu = time.perf_counter(), time.process_time()
                way(rep * len(ways) + n)
                times[way.__name__].append((time.perf_counter() - wall, time.process_time() - cpu))
        for name, pairs in times.items():
            print(f"{name:20s} wall median {statistics.median(w for w, _ in pairs) * 1000:6.1f} ms  "
                  f"client CPU median {statistics.median(c for _, c in pairs) * 1000:6.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
