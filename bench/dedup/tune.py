"""Choose minhash_dedup's defaults on the tuning sets (bench/dedup/sets.py): precision, recall and F1 of each
setting on each set, in process (index in 5k-row shards, decide once, as the engine does).

    .venv/bin/python bench/dedup/sets.py /tmp/dd13
    .venv/bin/python bench/dedup/tune.py /tmp/dd13 --sets short,web [--grid default]

Only the tuning sets belong here; the held-out sets (heldout, cjk, udhr) are measured once, with the chosen
defaults, by bench/dedup/run.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import score  # noqa: E402

from operators.dedup import MinHashDedup  # noqa: E402

GRIDS = {
    "default": [{}],
    "wide": [dict(ngram=n, threshold=t, containment=c, lsh_threshold=lt)
             for n, t, c, lt in itertools.product([2, 3], [0.5, 0.6, 0.7], [None, 0.8, 0.9], [0.4, 0.5])],
}


def removed(op: MinHashDedup, frame: pl.DataFrame, shard: int = 5_000) -> set[str]:
    index = pl.concat([op.index(frame.slice(i, shard)) for i in range(0, len(frame), shard)])
    return set(op.decide(index).drops["id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--sets", default="short,web")
    parser.add_argument("--grid", default="default", help=f"one of {', '.join(GRIDS)}, or a JSON list of settings")
    args = parser.parse_args()
    grid = GRIDS.get(args.grid) or json.loads(args.grid)
    frames = {name: pl.read_ndjson(args.data / name / "rows.jsonl") for name in args.sets.split(",")}
    print("| settings | " + " | ".join(f"{n} P | {n} R | {n} F1" for n in frames) + " | min F1 | s |")
    for settings in grid:
        cells, f1s, start = [], [], time.perf_counter()
        for name, frame in frames.items():
            m = score(removed(MinHashDedup(**settings), frame), args.data / name / "truth.jsonl")
            cells.append(f"{m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f}")
            f1s.append(m["f1"])
        print(f"| {json.dumps(settings)} | " + " | ".join(cells) + f" | {min(f1s):.3f} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
