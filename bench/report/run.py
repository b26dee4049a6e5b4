"""Release artefacts at scale: report.html, dataset card, `inspect --where/--sample` and `release diff`.

    .venv/bin/python bench/report/run.py                       # Sluice only
    .venv/bin/python bench/report/run.py --peer /tmp/bench-report/bin/python   # + ydata-profiling

Builds two real releases of Alpaca 52k (min_words 3 and 5 on the output; CC BY-NC data read from
../shared/data, written under --work only), a x10 copy of the first (520k rows, ids suffixed), then times each
job in a fresh process (wall seconds, peak RSS). The peer, ydata-profiling in minimal mode, is the common
"HTML report of a table" tool: it profiles the same columns of the same Parquet shards.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"


def build(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT))
    from pipelines import config
    from pipelines.flow import run_pipeline

    releases = work / "releases"
    out = {}
    for name, min_words in (("a", 3), ("b", 5)):
        folder = releases / "alpaca" / ("v0001" if name == "a" else "v0002")
        if not folder.exists():
            cfg = work / f"{name}.json"
            cfg.write_text(json.dumps({
                "dataset": "alpaca", "shard_rows": 20_000,
                "inputs": [{"path": str(ALPACA), "fields": {"instruction": "instruction", "input": "input",
                                                             "output": "output"}, "optional": ["input"],
                            "on_error": "skip"}],
                "stages": [{"op": "normalize", "fields": ["instruction", "input", "output"]},
                           {"op": "length_filter", "field": "output", "min_words": min_words},
                           {"op": "exact_dedup", "fields": ["output"]}],
                "release": {"dir": str(releases), "rows_per_file": 50_000}}))
            run_pipeline(config.load(cfg), use_prefect=False)
        out[name] = folder
    out["x10"] = _scaled(out["a"], releases / "alpaca-x10" / "v0001", 10)
    return out


def _scaled(source: Path, target: Path, copies: int) -> Path:
    """`copies` copies of a release's rows and rejects with distinct ids, and a manifest whose counts add up."""
    import polars as pl

    if target.exists():
        return target
    target.mkdir(parents=True)
    m = json.loads((source / "manifest.json").read_text())
    for kind, sub in (("shards", "data"), ("rejects", "rejects")):
        (target / sub).mkdir()
        frame = pl.read_parquet([source / f["path"] for f in m[kind]])
        entries = []
        for k in range(copies):
            rel = f"{sub}/part-{k:05d}.parquet"
            frame.with_columns(pl.col("id") + f"-{k}").write_parquet(target / rel, compression="zstd")
            entries.append({"path": rel, "rows": len(frame), "bytes": (target / rel).stat().st_size, "sha256": ""})
        m[kind] = entries
    m["rows"] *= copies
    m["rejected_rows"] *= copies
    for stage in m["stages"]:
        stage["rows_in"] *= copies
        stage["rows_out"] *= copies
        stage["dropped"] = {r: n * copies for r, n in stage["dropped"].items()}
    (target / "manifest.json").write_text(json.dumps(m))
    return target


PRELUDE = ("import json, time\nfrom pathlib import Path\nfrom pipelines.report import render_report\n"
           "from pipelines.card import dataset_card\nfrom pipelines.inspection import open_table, where, pick\n"
           "from pipelines.diff import diff_tables\n")
JOBS = {
    "report.html": "render_report(A, json.loads((A / 'manifest.json').read_text()))",
    "dataset card": "dataset_card(json.loads((A / 'manifest.json').read_text()))",
    "inspect --where (count + 10 rows)": "pick(where(open_table(str(A)), 'score_words_output > 100'), 10)",
    "inspect --sample 10": "pick(open_table(str(A)).frame, 10, 10)",
    "release diff": "diff_tables(open_table(str(A)), open_table(str(B)))",
}

PEER_SETUP = """
import sys, pandas as pd, pyarrow.parquet as pq
from pathlib import Path
from ydata_profiling import ProfileReport
"""
PEER = """
folder, out = Path(sys.argv[1]), sys.argv[2]
files = sorted((folder / "data").glob("*.parquet"))
df = pd.concat([pq.read_table(f, columns=["instruction", "input", "output", "source", "score_words_output",
                                          "score_chars_output"]).to_pandas() for f in files])
ProfileReport(df, minimal=True, progress_bar=False).to_file(out)
"""


def measure(python: str, setup: str, job: str, *args: str) -> tuple[float, float]:
    """Seconds of `job` (after `setup`, so imports are not counted) and peak RSS (MiB), in a fresh interpreter."""
    code = (f"{setup}\nimport resource, time\nstart = time.perf_counter()\n{job}\n"
            "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([python, "-c", code, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    seconds, rss = done.stdout.split()[-2:]
    return float(seconds), int(rss) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-report-work"))
    parser.add_argument("--peer", help="python of a venv with ydata-profiling (see requirements.txt)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folders = build(args.work)
    print("| job | release | rows | seconds | peak RSS MiB |\n|---|---|---:|---:|---:|")
    for job, body in JOBS.items():
        for label, a, b in (("alpaca 52k", folders["a"], folders["b"]), ("alpaca x10", folders["x10"], folders["x10"])):
            rows = json.loads((a / "manifest.json").read_text())["rows"]
            setup = f"{PRELUDE}A = Path({str(a)!r}); B = Path({str(b)!r})"
            wall, rss = measure(sys.executable, setup, body)
            print(f"| {job} | {label} | {rows:,} | {wall:.2f} | {rss:,.0f} |", flush=True)
    if args.peer:
        for label, a in (("alpaca 52k", folders["a"]), ("alpaca x10", folders["x10"])):
            rows = json.loads((a / "manifest.json").read_text())["rows"]
            wall, rss = measure(args.peer, PEER_SETUP, PEER, str(a), str(args.work / f"ydata-{label.split()[1]}.html"))
            print(f"| ydata-profiling minimal report | {label} | {rows:,} | {wall:.2f} | {rss:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
