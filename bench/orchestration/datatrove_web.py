"""datatrove's side of bench/orchestration/web_pipeline.py (run in a venv with datatrove 0.10.1):

    python bench/orchestration/datatrove_web.py IN.jsonl WORK_DIR [--workers 2]

read JSONL -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> write,
then MinHash (signatures, buckets, clusters, filter; 5-grams, 9 buckets x 13 hashes, 64-bit) -> write.
Default filter parameters (the ones Sluice's defaults follow). Prints the counts as JSON on its last line.
"""

import argparse
import glob
import json
import sys
from pathlib import Path

from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dedup"))
from run_datatrove import minhash_stages, run, split  # noqa: E402  (the dedup bench's datatrove side)


def lines(folder: str) -> int:
    return sum(sum(1 for _ in open(f)) for f in glob.glob(f"{folder}/*.jsonl"))


def main() -> None:
    """Worker processes re-import this module: everything runs under the main guard."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("work")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    w, n = args.work, args.workers
    config = MinhashConfig(n_grams=5, num_buckets=9, hashes_per_bucket=13,
                           hash_config=HashConfig(precision=64, hash_fc="sha1"))
    source = split(args.input, f"{w}/input", n)
    filtered = lambda: JsonlReader(f"{w}/filtered", id_key="id", text_key="text")  # noqa: E731
    filters = [JsonlReader(source, id_key="id", text_key="text"), GopherRepetitionFilter(), GopherQualityFilter(),
               C4QualityFilter(), FineWebQualityFilter(), JsonlWriter(f"{w}/filtered", compression=None)]
    run([(filters, n)] + minhash_stages(filtered, w, n, config, removed=False), w, n)
    print(json.dumps({"after_filters": lines(f"{w}/filtered"), "kept": lines(f"{w}/kept")}))


if __name__ == "__main__":
    main()
