"""datatrove's side of bench/orchestration/web_pipeline.py (run in a venv with datatrove 0.10.1):

    python bench/orchestration/datatrove_web.py IN.jsonl WORK_DIR [--workers 2]

read JSONL -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> write,
then MinHash (signatures, buckets, clusters, filter; 5-grams, 9 buckets x 13 hashes, 64-bit) -> write.
Default filter parameters (the ones Sluice's defaults follow). Prints the counts as JSON on its last line.
"""

import argparse
import glob
import json
import os

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig


def split(path: str, folder: str, parts: int) -> str:
    """The input as `parts` JSONL files (datatrove parallelises over files: one per worker)."""
    os.makedirs(folder, exist_ok=True)
    outs = [open(f"{folder}/part-{k}.jsonl", "w") for k in range(parts)]
    with open(path) as fh:
        for i, line in enumerate(fh):
            outs[i % parts].write(line)
    for out in outs:
        out.close()
    return folder


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
    stages = [
        [JsonlReader(source, id_key="id", text_key="text"), GopherRepetitionFilter(), GopherQualityFilter(),
         C4QualityFilter(), FineWebQualityFilter(), JsonlWriter(f"{w}/filtered", compression=None)],
        [filtered(), MinhashDedupSignature(output_folder=f"{w}/signatures", config=config)],
        [MinhashDedupBuckets(input_folder=f"{w}/signatures", output_folder=f"{w}/buckets", config=config)],
        [MinhashDedupCluster(input_folder=f"{w}/buckets", output_folder=f"{w}/remove_ids", config=config)],
        [filtered(), MinhashDedupFilter(input_folder=f"{w}/remove_ids"), JsonlWriter(f"{w}/kept", compression=None)],
    ]
    tasks = [n, n, config.num_buckets, 1, n]
    for i, (pipeline, t) in enumerate(zip(stages, tasks)):
        LocalPipelineExecutor(pipeline=pipeline, tasks=t, workers=min(n, t), logging_dir=f"{w}/logs/{i}").run()
    print(json.dumps({"after_filters": lines(f"{w}/filtered"), "kept": lines(f"{w}/kept")}))


if __name__ == "__main__":
    main()
