"""Sluice's Gopher / C4 / FineWeb filters against datatrove's, on the same real documents.

    .venv/bin/python bench/quality/run.py [--alpaca N] [--scale N] [--skip-datatrove]

Sets: `web` (every ../shared/data/web sample: DCLM annotations, Data-Juicer, Dolma CC), `alpaca` (N Alpaca
outputs, default 2,000) and `scale` (web documents repeated to N rows, default 20,000; Sluice only:
datatrove's speed is measured on `web`, whose documents are the same). The datatrove side runs in its own
venv (DATATROVE_PYTHON, default /tmp/bench-quality/bin/python; bench/quality/requirements.txt).
Prints, per filter, decision agreement (keep/drop and first failing rule) and throughput (wall and CPU
seconds; Sluice's Polars uses both cores, datatrove one), and writes
the disagreements to /tmp/bench-quality-disagreements.jsonl for reading.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data").resolve()

from operators.quality import C4Filter, FineWebFilter, GopherQuality, GopherRepetition  # noqa: E402

FILTERS = {"gopher_quality": GopherQuality, "gopher_repetition": GopherRepetition, "c4": C4Filter,
           "fineweb": FineWebFilter}
WORK = Path("/tmp/bench-quality-run")
# datatrove's reason names where Sluice's differ (same rules, same order)
DATATROVE_REASONS = {
    "gopher_short_doc": "too_few_words", "gopher_long_doc": "too_many_words",
    "gopher_below_avg_threshold": "short_mean_word_length", "gopher_above_avg_threshold": "long_mean_word_length",
    "gopher_too_many_hashes": "too_many_hashes", "gopher_too_many_ellipsis": "too_many_ellipses",
    "gopher_too_many_bullets": "too_many_bullet_lines", "gopher_too_many_end_ellipsis": "too_many_ellipsis_lines",
    "gopher_below_alpha_threshold": "too_few_alpha_words", "gopher_enough_stop_words": "too_few_stop_words",
}


def web_docs() -> pl.DataFrame:
    files = sorted((SHARED / "web").glob("*/*.jsonl")) + sorted((SHARED / "web" / "dolma_cc_samples").rglob("*.jsonl"))
    frames = [pl.read_ndjson(f).select(pl.col("text").cast(pl.String)).with_columns(pl.lit(f.stem).alias("file"))
              for f in files]
    docs = pl.concat(frames).filter(pl.col("text").is_not_null())
    return docs.select((pl.lit("web-") + pl.int_range(pl.len()).cast(pl.String)).alias("id"), "text",
                       pl.lit("web").alias("set"))


def alpaca_docs(n: int) -> pl.DataFrame:
    rows = json.loads((SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json").read_text())
    texts = pl.DataFrame({"text": [r["output"] for r in rows]}).sample(n=min(n, len(rows)), seed=0)
    return texts.select((pl.lit("alpaca-") + pl.int_range(pl.len()).cast(pl.String)).alias("id"), "text",
                        pl.lit("alpaca").alias("set"))


def sluice_side(docs: pl.DataFrame, scale: pl.DataFrame) -> tuple[pl.DataFrame, list[dict]]:
    rows, timings = [], []
    for name, cls in FILTERS.items():
        op = cls()
        op.process(docs.head(10))  # warm up (regex compilation)
        for subset, frame in [*docs.group_by("set", maintain_order=True), (("scale",), scale)]:
            start, cpu = time.perf_counter(), time.process_time()
            kept, rejected = op.process(frame.select("id", "text"))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            timings.append({"filter": name, "set": subset[0], "docs": len(frame), "seconds": seconds, "cpu": cpu})
            print(f"sluice    {name:18s} {subset[0]:10s} {len(frame):6d} docs {seconds:8.2f} s", flush=True)
            if subset[0] != "scale":
                rows.append(pl.concat([kept.select("id", pl.lit("").alias("reason")),
                                       rejected.select("id", "reason")]).with_columns(pl.lit(name).alias("filter")))
    return pl.concat(rows), timings


def compare(docs: pl.DataFrame, ours: pl.DataFrame, theirs: pl.DataFrame) -> pl.DataFrame:
    both = ours.join(theirs, on=["id", "filter"], suffix="_dt").join(docs.select("id", "set", "text"), on="id")
    both.filter(pl.col("reason") != pl.col("reason_dt")).select("filter", "id", "reason", "reason_dt", "text") \
        .write_ndjson("/tmp/bench-quality-disagreements.jsonl")
    keep, keep_dt = pl.col("reason") == "", pl.col("reason_dt") == ""
    return both.group_by("filter", "set", maintain_order=True).agg(
        pl.len().alias("docs"),
        (keep_dt.sum() / pl.len()).alias("kept_dt"),
        ((keep == keep_dt).mean() * 100).round(2).alias("decision_agree_%"),
        ((pl.col("reason") == pl.col("reason_dt")).mean() * 100).round(2).alias("reason_agree_%"),
    )


def per_rule(ours: pl.DataFrame, theirs: pl.DataFrame) -> pl.DataFrame:
    """For each rule: docs either side rejects with it (as first failing rule), and agreement on that."""
    both = ours.join(theirs, on=["id", "filter"], suffix="_dt")
    rules = both.select("filter", pl.col("reason_dt").alias("rule")).filter(pl.col("rule") != "").unique()
    out = []
    for flt, rule in rules.sort("filter", "rule").iter_rows():
        sub = both.filter(pl.col("filter") == flt)
        a, b = sub["reason"] == rule, sub["reason_dt"] == rule
        out.append({"filter": flt, "rule": rule, "datatrove": int(b.sum()), "sluice": int(a.sum()),
                    "both": int((a & b).sum()), "agree_%": round(float((a == b).mean()) * 100, 2)})
    return pl.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpaca", type=int, default=2000)
    parser.add_argument("--scale", type=int, default=20_000)
    parser.add_argument("--skip-datatrove", action="store_true", help="reuse the last datatrove run")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    docs = pl.concat([web_docs(), alpaca_docs(args.alpaca)])
    web = docs.filter(pl.col("set") == "web")
    scale = pl.concat([web] * (args.scale // len(web) + 1)).head(args.scale).with_columns(
        (pl.lit("scale-") + pl.int_range(pl.len()).cast(pl.String)).alias("id"))
    docs.write_parquet(WORK / "docs.parquet")
    if not args.skip_datatrove:
        python = os.environ.get("DATATROVE_PYTHON", "/tmp/bench-quality/bin/python")
        subprocess.run([python, str(Path(__file__).with_name("datatrove_side.py")), str(WORK / "docs.parquet"),
                        str(WORK / "datatrove.parquet")], check=True)
    ours, timings = sluice_side(docs, scale)
    theirs = pl.read_parquet(WORK / "datatrove.parquet").with_columns(pl.col("reason").replace(DATATROVE_REASONS))
    dt_timings = json.loads((WORK / "datatrove.parquet.timings.json").read_text())
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(200)
    print(compare(docs, ours, theirs))
    print(per_rule(ours, theirs))
    ours_t = pl.DataFrame(timings).select("filter", "set", "docs", (pl.col("docs") / pl.col("seconds")).alias("sluice_docs_s"),
                                          (pl.col("docs") / pl.col("cpu")).alias("sluice_docs_cpu_s"))
    theirs_t = pl.DataFrame(dt_timings).select("filter", "set", (pl.col("docs") / pl.col("seconds")).alias("dt_docs_s"),
                                               (pl.col("docs") / pl.col("cpu")).alias("dt_docs_cpu_s"))
    # the scale set repeats the web documents: datatrove's web speed stands for it
    theirs_t = pl.concat([theirs_t, theirs_t.filter(pl.col("set") == "web").with_columns(pl.lit("scale").alias("set"))])
    speed = ours_t.join(theirs_t, on=["filter", "set"], how="left").with_columns(
        (pl.col("sluice_docs_s") / pl.col("dt_docs_s")).round(1).alias("ratio_wall"),
        (pl.col("sluice_docs_cpu_s") / pl.col("dt_docs_cpu_s")).round(1).alias("ratio_cpu"),
    ).with_columns(pl.selectors.float().exclude("ratio_wall", "ratio_cpu").round(0))
    print(speed)


if __name__ == "__main__":
    main()
