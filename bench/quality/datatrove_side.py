"""The datatrove side of bench/quality: run datatrove's filters over the same documents and record each
document's decision (kept, or the reason of the first rule it fails) and the time taken.

Runs in its own venv (see requirements.txt): python datatrove_side.py DOCS.parquet OUT.parquet
DOCS has columns id, text, set; OUT gets id, filter, reason ("" when kept) and a timing table beside it
(wall seconds, and CPU seconds of this process: the machines are shared and noisy)."""

from __future__ import annotations

import json
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

FILTERS = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
           "c4": C4QualityFilter, "fineweb": FineWebQualityFilter}


def decide(flt, doc_id: str, text: str) -> str:
    try:
        result = flt.filter(Document(text=text, id=doc_id))
    except ZeroDivisionError:
        return "error:ZeroDivisionError"
    if result is True:
        return ""
    return result[1] if isinstance(result, tuple) else "rejected"


def main(docs_path: str, out_path: str) -> None:
    docs = pq.read_table(docs_path).to_pydict()
    rows, timings = {"id": [], "filter": [], "reason": []}, []
    for name, cls in FILTERS.items():
        flt = cls()
        decide(flt, "warmup", "Warm up the tokenizer. It loads once.")
        for subset in sorted(set(docs["set"])):
            picked = [(i, t) for i, t, s in zip(docs["id"], docs["text"], docs["set"]) if s == subset]
            start, cpu = time.perf_counter(), time.process_time()
            reasons = [decide(flt, i, t) for i, t in picked]
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            timings.append({"filter": name, "set": subset, "docs": len(picked), "seconds": seconds, "cpu": cpu})
            rows["id"] += [i for i, _ in picked]
            rows["filter"] += [name] * len(picked)
            rows["reason"] += reasons
            print(f"datatrove {name:18s} {subset:10s} {len(picked):6d} docs {seconds:8.2f} s", flush=True)
    pq.write_table(pa.table(rows), out_path)
    with open(out_path + ".timings.json", "w") as fh:
        json.dump(timings, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
