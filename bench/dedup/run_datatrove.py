"""datatrove's four-stage MinHash pipeline on a JSONL file (run in the bench venv, see requirements.txt).

    python bench/dedup/run_datatrove.py IN.jsonl WORK_DIR [--workers 2]

datatrove's default MinhashConfig (word 5-grams, 14 buckets x 8 hashes, 64-bit hashes, English word
tokenizer), except the hash function: sha1 instead of xxhash (datatrove 0.10.1 passes str to xxhash 4.1,
which raises "Strings must be encoded before hashing"); both are 64-bit hashes of the same shingles.
Removed documents' ids go to WORK_DIR/removed/.
"""

import argparse
import os

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

def split(path: str, folder: str, parts: int) -> str:
    """Copy the input into `parts` JSONL files, line i going to file i % parts."""
    os.makedirs(folder, exist_ok=True)
    outs = [open(f"{folder}/part-{k}.jsonl", "w") for k in range(parts)]
    with open(path) as fh:
        for i, line in enumerate(fh):
            outs[i % parts].write(line)
    for out in outs:
        out.close()
    return folder


def main() -> None:
    """Worker processes re-import this module: everything runs under the main guard."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("work")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    w, n = args.work, args.workers
    folder = split(args.input, f"{w}/input", n)  # datatrove parallelises over files: one per worker
    run(minhash_stages(lambda: JsonlReader(folder, id_key="id", text_key="text"), w, n, config), w, n)


def minhash_stages(reader, w: str, n: int, config: MinhashConfig, removed: bool = True) -> list[tuple[list, int]]:
    """datatrove's four MinHash steps over `reader()`'s documents in `w`, each with its task count; the kept
    documents go to `w`/kept, the removed ones (if `removed`) to `w`/removed."""
    return [
        ([reader(), MinhashDedupSignature(output_folder=f"{w}/signatures", config=config)], n),
        ([MinhashDedupBuckets(input_folder=f"{w}/signatures", output_folder=f"{w}/buckets", config=config)],
         config.num_buckets),
        ([MinhashDedupCluster(input_folder=f"{w}/buckets", output_folder=f"{w}/remove_ids", config=config)], 1),
        ([reader(), MinhashDedupFilter(input_folder=f"{w}/remove_ids",
                                       exclusion_writer=JsonlWriter(f"{w}/removed", compression=None) if removed else None),
          JsonlWriter(f"{w}/kept", compression=None)], n),
    ]


def run(stages: list[tuple[list, int]], w: str, workers: int = 2) -> None:
    """Each step in turn with its tasks, on at most `workers` processes."""
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=f"{w}/logs/{i}").run()

if __name__ == "__main__":
    main()
