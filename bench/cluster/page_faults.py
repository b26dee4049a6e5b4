"""Which code a worker's page faults come from: samples of `perf record --call-graph dwarf` on the workers of one
run, grouped by the user-space code that touched new memory.

    flock /work/bench.lock bash -c '.venv/bin/python bench/cluster/speed.py --rows 1000000 --runs dask-s3 & \
        while ! pgrep -f "sluice run" >/dev/null; do sleep 0.2; done; \
        perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -o /tmp/workers.data \
            -p $(pgrep -f spawn_main | paste -sd,) -- sleep 60; wait'
    perf script -i /tmp/workers.data -F comm,tid,ip,sym,dso > /tmp/workers.txt
    .venv/bin/python bench/cluster/page_faults.py /tmp/workers.txt

(`perf record` stops after 60 s: a 1M-row run's workers are done by then.) Prints how many samples were in a
page fault, then those by group: Polars' allocations and its allocator's, and the S3 path's Python buffers (BytesIO chunks and
copies, the HTTP parser's body chunks, file reads, joins).
"""

import sys
from collections import Counter

GROUPS = [("polars", ("polars",)), ("mimalloc (Polars' or Arrow's allocator)", ("mi_",)), ("BytesIO reads and copies", ("BytesIO", "bytesio")),
          ("HTTP body chunks", ("http_parser", "sock_recv", "__libc_recv")), ("file reads", ("FileIO",)),
          ("bytes joins", ("bytes_join",)), ("small Python objects", ("pymalloc", "PyUnicode"))]


def samples(lines):
    """Each sample's frames, leaf first, as (symbol, shared object)."""
    frames = []
    for line in lines:
        line = line.rstrip()
        if not line.startswith(("\t", " ")):  # a sample's header line (command, thread) or the blank between
            if frames:
                yield frames
            frames = []
            continue
        _, _, rest = line.strip().partition(" ")
        symbol, _, dso = rest.rpartition(" (")
        frames.append((symbol, dso))
    if frames:
        yield frames


def group(user: list[str]) -> str:
    code = " ".join(user[:12])
    return next((name for name, marks in GROUPS if any(mark in code for mark in marks)), "other: " + " < ".join(user[:3]))


def main() -> None:
    total, faults = 0, Counter()
    with open(sys.argv[1]) as fh:
        for frames in samples(fh):
            total += 1
            if any("exc_page_fault" in symbol for symbol, _ in frames):
                faults[group([symbol for symbol, dso in frames if "kernel" not in dso])] += 1
    print(f"{sum(faults.values())} of {total} samples in a page fault ({sum(faults.values()) / max(total, 1):.1%})")
    for name, n in faults.most_common(12):
        print(f"{n:6d}  {name[:160]}")


if __name__ == "__main__":
    main()
