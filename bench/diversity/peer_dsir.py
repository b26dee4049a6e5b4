"""The DSIR authors' package (data-selection, HashedNgramDSIR) on the same task as `dsir_sample` in run.py:
5k of the 52k Alpaca rows (instruction + input) toward Self-Instruct's 252 user-oriented instructions.

    python3 -m venv /tmp/bench-dsir && /tmp/bench-dsir/bin/pip install -r bench/diversity/requirements.txt
    /tmp/bench-dsir/bin/python bench/diversity/peer_dsir.py /tmp/peer_dsir.json
    .venv/bin/python bench/diversity/run.py --skip-scaling --peer /tmp/peer_dsir.json

Writes {method, rows, total_s, peak_rss_mb, kept: [ids]}; run.py adds its metrics to the quality table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from data_selection import HashedNgramDSIR

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
ALPACA = SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
TARGET = SHARED / "instructions" / "self_instruct" / "user_oriented_instructions.jsonl"


def main(out: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="peer-dsir-"))
    raw, target = work / "raw.jsonl", work / "target.jsonl"
    rows = json.loads(ALPACA.read_text())
    with raw.open("w") as fh:  # ids as run.py's pool gives them: row-<n>
        for n, r in enumerate(rows):
            fh.write(json.dumps({"id": f"row-{n}", "text": r["instruction"] + "\n" + r["input"]}) + "\n")
    with target.open("w") as fh:
        for line in TARGET.read_text().splitlines():
            fh.write(json.dumps({"text": json.loads(line)["instruction"]}) + "\n")
    start = time.perf_counter()
    dsir = HashedNgramDSIR([str(raw)], [str(target)], cache_dir=str(work / "cache"), num_proc=2,
                           min_example_length=0)  # keep short rows, as ours does
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    dsir.compute_importance_weights()
    dsir.resample(out_dir=str(work / "out"), num_to_sample=5000, cache_dir=str(work / "resample"))
    elapsed = time.perf_counter() - start
    kept = [json.loads(line)["id"] for f in sorted((work / "out").glob("*.jsonl")) for line in f.open()]
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    Path(out).write_text(json.dumps({"method": "dsir (data-selection 1.0.3)", "rows": len(rows),
                                     "total_s": round(elapsed, 1), "peak_rss_mb": peak_kb // 1024, "kept": kept}))
    print(f"{len(kept)} rows in {elapsed:.1f}s, peak RSS {peak_kb // 1024} MB (main process; workers not counted)")


if __name__ == "__main__":
    main(sys.argv[1])
