"""datatrove's SentenceDedup (three steps) on a JSONL file, in the bench venv (see requirements.txt).

    /tmp/bench-dedup/bin/python bench/dedup/lines_datatrove.py IN.jsonl WORK_DIR [--lines] [--keep-docs]

Default: datatrove's SentDedupConfig (spans of 3 sentences from its English sentence tokenizer; a changed
document is kept when it still has >= 50 words and >= 3 sentences). `--lines`: its line mode
(split_sentences=False) with spans of one line, the same unit as `line_dedup`'s default. Kept documents go
to WORK_DIR/kept/*.jsonl. `--keep-docs`: min_doc_words = min_num_sentences = 0, so only an emptied document
is dropped (as `line_dedup` with min_chars_left 0); prints {"seconds", "max_rss_mb"} as JSON on the last line. One task, one process.
"""

import argparse
import json
import resource
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupFilter, SentenceDedupSignature,
                                                     SentenceFindDedups)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("work")
    parser.add_argument("--lines", action="store_true")
    parser.add_argument("--keep-docs", action="store_true")
    args = parser.parse_args()
    w = args.work
    # sha1, not the default xxhash: datatrove 0.10.1 hands str to xxhash 4.1, which refuses it (see run_datatrove.py)
    hashing = HashConfig(precision=64, hash_fc="sha1")
    config = SentDedupConfig(split_sentences=False, n_sentences=1, hash_config=hashing) if args.lines \
        else SentDedupConfig(hash_config=hashing)
    if args.keep_docs:
        config.min_doc_words = config.min_num_sentences = 0
    reader = lambda: JsonlReader(args.input, id_key="id", text_key="text")  # noqa: E731
    steps = [[reader(), SentenceDedupSignature(output_folder=f"{w}/sigs", config=config)],
             [SentenceFindDedups(data_folder=f"{w}/sigs", output_folder=f"{w}/dups", config=config)],
             [reader(), SentenceDedupFilter(data_folder=f"{w}/dups", config=config),
              JsonlWriter(f"{w}/kept", compression=None)]]
    start = time.perf_counter()
    for i, pipeline in enumerate(steps):
        LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=f"{w}/logs/{i}").run()
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": time.perf_counter() - start, "max_rss_mb": rss / 1024}))


if __name__ == "__main__":
    main()
