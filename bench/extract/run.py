"""WARC -> text: Sluice's reader + html_extract against datatrove's WarcReader + Trafilatura, same records.

The two bundled Common Crawl WARC files are repeated (record ids made unique per copy) to a few thousand
HTML pages. Each side runs in one process on one core, in turn, `--runs` times; the best run counts.
datatrove's Trafilatura step runs with its defaults (favour_precision) except `timeout=10` (its default of
1 s per page drops most pages on a loaded 2-core machine) and `deduplicate=False` (with it, Trafilatura's
paragraph cache empties every repeated copy of a page, which would flatter datatrove's time and leave few texts). Texts are kept
to compare: token F1 of each Sluice text against datatrove's Trafilatura text of the same record.

    python3 -m venv /tmp/bench-extract && /tmp/bench-extract/bin/pip install -r bench/extract/requirements.txt
    .venv/bin/python bench/extract/run.py --copies 30 --runs 1 --peer /tmp/bench-extract/bin/python
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
WARCS = sorted((ROOT / "data" / "web" / "warc").glob("*.warc.gz"))

PEER = r'''
import json, sys, time
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.extractors import Trafilatura
folder, out = sys.argv[1], sys.argv[2]
start = time.perf_counter()
docs = Trafilatura(timeout=10, deduplicate=False).run(WarcReader(folder, glob_pattern="*.warc.gz").run())
with open(out, "w") as fh:
    for doc in docs:
        fh.write(json.dumps({"id": doc.id, "text": doc.text}) + "\n")
print(time.perf_counter() - start)
'''


def make_data(folder: Path, copies: int) -> int:
    """`copies` x each sample file, one gzip member per record as in Common Crawl, ids suffixed per copy."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "pages.warc.gz"
    pages = 0
    with open(out, "wb") as fh:
        for copy in range(copies):
            for path in WARCS:
                data = gzip.decompress(path.read_bytes())
                records = re.split(rb"(?=WARC/1\.[01]\r\n)", data)
                for record in filter(None, records):
                    record = re.sub(rb"(WARC-Record-ID: <urn:uuid:[0-9A-Fa-f-]+)>", rb"\1-%d>" % copy, record)
                    pages += b"WARC-Type: response" in record and b"text/html" in record
                    fh.write(gzip.compress(record))
    return pages


def run_sluice(path: Path, extractor: str) -> tuple[float, dict[str, str]]:
    import polars as pl

    from operators.clean.html_extract import HtmlExtract
    from pipelines.sources import raw_records

    start = time.perf_counter()
    op = HtmlExtract(extractor=extractor)
    texts, batch = {}, []

    def flush() -> None:
        kept, _ = op.process(pl.DataFrame(batch))
        texts.update(zip(kept["id"], kept["text"]))
        batch.clear()

    for _, record in raw_records(path, "warc"):
        if isinstance(record, dict):
            batch.append(record)
            if len(batch) == 500:
                flush()
    if batch:
        flush()
    return time.perf_counter() - start, texts


def run_peer(python: str, folder: Path) -> tuple[float, dict[str, str]]:
    out = folder / "datatrove.jsonl"
    result = subprocess.run([python, "-c", PEER, str(folder), str(out)], capture_output=True, text=True, check=True)
    seconds = float(result.stdout.strip().splitlines()[-1])
    texts = {}
    for line in out.open():
        row = json.loads(line)
        texts[row["id"].strip("<>")] = row["text"]
    return seconds, texts


def f1(a: str, b: str) -> float:
    ca, cb = collections.Counter(re.findall(r"\w+", a.lower())), collections.Counter(re.findall(r"\w+", b.lower()))
    common = sum((ca & cb).values())
    if not common:
        return float(not ca and not cb)
    p, r = common / sum(ca.values()), common / sum(cb.values())
    return 2 * p * r / (p + r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--peer", required=True, help="python of the venv with datatrove")
    ap.add_argument("--folder", type=Path, default=Path("/tmp/bench-extract-data"))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--sides", default="sluice-resiliparse,datatrove-trafilatura,sluice-trafilatura")
    args = ap.parse_args()
    pages = make_data(args.folder, args.copies)
    path = args.folder / "pages.warc.gz"
    times, outputs = collections.defaultdict(list), {}
    for _ in range(args.runs):
        for name in args.sides.split(","):
            if name == "datatrove-trafilatura":
                seconds, outputs[name] = run_peer(args.peer, args.folder)
            else:
                seconds, outputs[name] = run_sluice(path, name.split("-")[1])
            times[name].append(seconds)
    peer = outputs["datatrove-trafilatura"]
    report = {"pages": pages, "copies": args.copies}
    for name, seconds in times.items():
        texts = outputs[name]
        best = min(seconds)
        report[name] = {"seconds": round(best, 2), "pages_per_s": round(pages / best, 1), "texts": len(texts),
                        "speedup_vs_datatrove": round(min(times["datatrove-trafilatura"]) / best, 2)}
        if name != "datatrove-trafilatura":
            scores = [f1(texts[i], peer[i]) for i in peer if i in texts]
            report[name]["f1_vs_datatrove_median"] = round(statistics.median(scores), 3)
            report[name]["f1_vs_datatrove_mean"] = round(statistics.mean(scores), 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
