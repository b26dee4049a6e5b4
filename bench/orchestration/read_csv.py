"""CSV reading: Polars' fast path against the row-by-row reader, on TruthfulQA's CSV repeated (each copy's
question suffixed), with and without an id column (without one, ids are content hashes computed in Python).

    .venv/bin/python bench/orchestration/read_csv.py --copies 60

One process, CPU seconds of `read_shards` (5k-row shards), the best of --repeat runs each; both readers give the
same rows (checked).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from pipelines import readers  # noqa: E402
from pipelines.readers import Source, read_shards  # noqa: E402

TRUTHFULQA = ROOT.parent / "shared" / "data" / "benchmarks" / "truthfulqa" / "TruthfulQA.csv"


def seconds(src: Source, fast: bool, repeat: int) -> tuple[float, pl.DataFrame]:
    original = readers._csv_batches
    readers._csv_batches = original if fast else (lambda *args: None)
    try:
        best, rows = float("inf"), None
        for _ in range(repeat):
            start = time.process_time()
            rows = pl.concat([s.rows for s in read_shards(src, 5_000, None)])
            best = min(best, time.process_time() - start)
        return best, rows
    finally:
        readers._csv_batches = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with open(TRUTHFULQA, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    with tempfile.TemporaryDirectory() as tmp:
        for with_ids in (False, True):
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow((["id"] if with_ids else []) + header)
            n = 0
            for k in range(args.copies):
                for r in rows:
                    writer.writerow(([str(n)] if with_ids else []) + [*r[:2], f"{r[2]} ({k})", *r[3:]])
                    n += 1
            path = Path(tmp) / f"truthfulqa-{args.copies}.csv"
            path.write_text(out.getvalue(), encoding="utf-8")
            src = Source(path, "csv", {"text": "Question"})
            (fast, a), (slow, b) = seconds(src, True, args.repeat), seconds(src, False, args.repeat)
            assert a.equals(b)
            print(f"{n:,} rows, {path.stat().st_size / 1e6:.1f} MB, {'given ids' if with_ids else 'content ids'}: "
                  f"Polars {fast:.2f} CPU s, row by row {slow:.2f} CPU s ({slow / fast:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
