"""semantic_dedup's decide at scale, without embedding millions of rows first: the index of N rows whose
vectors are the real embeddings of bench/semdedup's sets (index.parquet from run.py --embed), each drawn at
random and moved by a little noise (so the clusters look like real text's, and no two rows are equal).

    flock /work/bench.lock /usr/bin/time -v env PYTHONPATH=. /tmp/venv-emb/bin/python bench/semdedup/scale.py /tmp/sd13 200000

Prints the index size, decide's seconds and drops, and the peak RSS after building the index and after
decide (the index is built a chunk at a time, so the second peak is decide's). Embedding time is
measured apart (run.py --embed prints rows/s), since it grows with rows alone.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from operators.dedup import SemanticDedup  # noqa: E402
from operators.dedup.semantic import quantize  # noqa: E402


def synthetic_index(sets: Path, rows: int, seed: int = 0, chunk: int = 50_000) -> pl.DataFrame:
    real = np.concatenate([pl.read_parquet(f, columns=["embedding"])["embedding"].to_numpy().astype(np.float32)
                           for f in sorted(sets.glob("*/index.parquet"))])
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, rows, chunk):  # a chunk at a time: building the index costs little more than it
        n = min(chunk, rows - start)
        z = real[rng.integers(len(real), size=n)] + rng.normal(0, 0.03, size=(n, real.shape[1])).astype(np.float32)
        parts.append(quantize(z / np.linalg.norm(z, axis=1, keepdims=True)))
    z = np.concatenate(parts)
    return pl.DataFrame({"id": [f"r{i:08d}" for i in range(rows)], "lang": ["en"] * rows, "judged": [True] * rows,
                         "embedding": pl.Series(z, dtype=pl.Array(pl.Int8, z.shape[1]))})


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    sets, rows = Path(sys.argv[1]), int(sys.argv[2])
    index = synthetic_index(sets, rows)
    print(f"index: {rows:,} rows, {index.estimated_size() / 2**20:.0f} MiB ({index.estimated_size() / rows:.0f} B a row); "
          f"peak RSS after building it {peak_gib():.2f} GiB")
    start, cpu = time.time(), time.process_time()
    drops = SemanticDedup().decide(index).drops
    print(f"decide: {time.time() - start:.1f} s wall, {time.process_time() - cpu:.1f} CPU s, {len(drops):,} dropped; "
          f"peak RSS {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
