"""A whole web pipeline, Sluice vs datatrove, side by side on the same documents and cores.

    .venv/bin/python bench/orchestration/web_pipeline.py --docs 20000 --datatrove /tmp/bench-quality/bin/python

Input: the web samples in ../shared/data/web (the documents bench/quality reads), repeated to `--docs` rows,
each copy with its own id (copies are exact duplicates: MinHash removes them on both sides).
Pipeline: read JSONL -> Gopher repetition -> Gopher quality -> C4 -> FineWeb -> MinHash dedup -> write.
- Sluice: `sluice run CONFIG` (the default Prefect runner, threads) in a fresh process.
- datatrove 0.10.1 (its own venv, bench/quality/requirements.txt + xxhash): the same filters with default
  parameters, then its four MinHash stages (5-grams, 9 buckets x 13 hashes, 64-bit), LocalPipelineExecutor
  with 2 workers (bench/orchestration/datatrove_web.py).
Each side runs under /usr/bin/time -v: wall seconds, CPU seconds (user + system, children included) and peak
RSS (datatrove's is its main process only). Kept counts are compared (goal: within 5%).
Results: bench/out/orchestration/web_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
SLUICE = Path(sys.executable).parent / "sluice"
STAGES = [{"op": "gopher_repetition"}, {"op": "gopher_quality"}, {"op": "c4"}, {"op": "fineweb"},
          {"op": "minhash_dedup"}]


def make_input(folder: Path, docs: int) -> Path:
    files = sorted((SHARED / "web").glob("*/*.jsonl")) + sorted((SHARED / "web" / "dolma_cc_samples").rglob("*.jsonl"))
    web = pl.concat([pl.read_ndjson(f).select(pl.col("text").cast(pl.String)) for f in files]).drop_nulls()
    frame = pl.concat([web] * (docs // len(web) + 1)).head(docs)
    frame = frame.select((pl.lit("doc-") + pl.int_range(pl.len()).cast(pl.String)).alias("id"), "text")
    path = folder / "web.jsonl"
    frame.write_ndjson(path)
    return path


def timed(cmd: list[str], cwd: Path | None = None) -> dict:
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    stats = dict(re.findall(r"^\s*(.+?): (.+)$", done.stderr, re.M))
    cpu = float(stats["User time (seconds)"]) + float(stats["System time (seconds)"])
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mib": int(stats["Maximum resident set size (kbytes)"]) // 1024,
            "stdout": done.stdout}


def sluice_side(folder: Path, data: Path, shard_rows: int) -> dict:
    cfg = folder / "web.yaml"
    cfg.write_text(json.dumps({"dataset": "web", "inputs": [{"path": str(data), "fields": {"text": "text"}}],
                               "shard_rows": shard_rows, "stages": STAGES,
                               "release": {"dir": str(folder / "releases")}}))
    result = timed([SLUICE, "run", cfg])
    manifest = json.loads(next((folder / "releases" / "web").glob("v*/manifest.json")).read_text())
    result.pop("stdout")
    return result | {"kept": manifest["rows"], "stages": {s["stage"]: s["rows_out"] for s in manifest["stages"]}}


def datatrove_side(python: str, folder: Path, data: Path) -> dict:
    work = folder / "datatrove"
    result = timed([python, ROOT / "bench" / "orchestration" / "datatrove_web.py", data, work, "--workers", "2"])
    counts = json.loads(result.pop("stdout").strip().splitlines()[-1])
    return result | counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--shard-rows", type=int, default=2_500)
    parser.add_argument("--datatrove", help="python of a venv with datatrove (bench/quality/requirements.txt)")
    args = parser.parse_args()
    out = ROOT / "bench" / "out" / "orchestration"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        folder = Path(tmp)
        data = make_input(folder, args.docs)
        load = open("/proc/loadavg").read().split()[:3]
        results = {"docs": args.docs, "load_before": load}
        if args.datatrove:
            results["datatrove"] = datatrove_side(args.datatrove, folder, data)
            print("datatrove", results["datatrove"], flush=True)
        results["sluice"] = sluice_side(folder, data, args.shard_rows)
        print("sluice", results["sluice"], flush=True)
        results["load_after"] = open("/proc/loadavg").read().split()[:3]
    if "datatrove" in results:
        s, d = results["sluice"], results["datatrove"]
        results["ratio_wall"] = round(d["wall_s"] / s["wall_s"], 2)
        results["ratio_cpu"] = round(d["cpu_s"] / s["cpu_s"], 2)
        results["kept_diff"] = round(abs(s["kept"] - d["kept"]) / max(d["kept"], 1), 4)
    (out / "web_pipeline.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k not in ("sluice", "datatrove")}))


if __name__ == "__main__":
    main()
