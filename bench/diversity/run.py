"""Diversity samplers on the 52k Alpaca set: metrics per method at a 5k budget, wall time, peak RSS, and
time growth to 1M rows (Alpaca repeated with a perturbation so no two rows are identical).

    .venv/bin/python bench/diversity/run.py                 # quality table at 52k + scaling, ~30 min
    .venv/bin/python bench/diversity/run.py --skip-scaling  # quality table only

Each timed run is a child process (its own peak RSS). Results: bench/diversity/results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data").resolve()
ALPACA = SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
TARGET = SHARED / "instructions" / "self_instruct" / "user_oriented_instructions.jsonl"  # 252 human-written
FIELDS = ["instruction", "input"]
BUDGET = 5000
METHODS = ["random", "cluster", "kcenter", "deita", "dsir"]
OUT = Path(__file__).with_name("results.json")
EQUAL_WORDS = 50_000  # distinct-n at an equal number of words (the shortest 5k selection has ~56k)


def pool(rows: int) -> pl.DataFrame:
    """Alpaca, repeated to `rows` rows; copy c of a row gets c random vocabulary words appended, so copies
    are near-duplicates (as in a real scraped pool), never exact ones."""
    base = pl.read_json(ALPACA).select(FIELDS)
    copies = -(-rows // len(base))
    frame = pl.concat([base] * copies).head(rows).with_row_index("n")
    vocab = pl.Series(" ".join(base["instruction"].to_list()).split())
    words = np.random.default_rng(0).integers(0, len(vocab), (rows, copies))
    picks = pl.DataFrame({f"w{j}": vocab.gather(words[:, j]) for j in range(copies)})
    copy = pl.col("n") // len(base)
    suffix = pl.concat_list(picks.columns).list.head(copy).list.join(" ")
    return (pl.concat([frame, picks], how="horizontal")
            .with_columns(pl.format("row-{}", "n").alias("id"), (pl.col("instruction") + " " + suffix).str.strip_chars())
            .select("id", *FIELDS))


def sampler(method: str):
    from operators.diversity import ClusterSample, DeitaSample, DsirSample, KCenterSample, RandomSample

    common = {"budget": BUDGET, "fields": FIELDS}
    return {"random": lambda: RandomSample(**common), "cluster": lambda: ClusterSample(**common),
            "kcenter": lambda: KCenterSample(**common),
            "deita": lambda: DeitaSample(**common, threshold=0.9),  # the paper's value (default 0.6: README)
            "dsir": lambda: DsirSample(**common, target=str(TARGET), target_fields=["instruction"])}[method]()


def one(method: str, rows: int, shard_rows: int = 50_000) -> None:
    """Child process: build the pool, index shard by shard, decide; print timings and the kept ids."""
    frame = pool(rows)
    op = sampler(method)
    start, cpu = time.perf_counter(), time.process_time()
    index = pl.concat([op.index(frame[i: i + shard_rows]) for i in range(0, len(frame), shard_rows)])
    indexed = time.perf_counter()
    drops = op.decide(index).drops
    done = time.perf_counter()
    kept = frame.filter(~pl.col("id").is_in(drops["id"].implode()))["id"].to_list()
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"method": method, "rows": rows, "index_s": round(indexed - start, 1),
                      "decide_s": round(done - indexed, 1), "total_s": round(done - start, 1),
                      "cpu_s": round(time.process_time() - cpu, 1),
                      "peak_rss_mb": peak_kb // 1024, "kept": kept}))


def timed(method: str, rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", method, "--rows", str(rows)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def quality(peer: Path | None = None) -> list[dict]:
    from operators.diversity.metrics import ReferenceClusters

    frame = pool(52_002)
    text = frame.select(pl.concat_str(FIELDS, separator="\n"))[:, 0]
    # the yardstick: 1,000 k-means clusters of the whole pool, with a seed and size no sampler uses
    reference = ReferenceClusters(text, clusters=1000, seed=12345)
    results = []
    for method in ["pool"] + METHODS + (["peer"] if peer else []):
        if method == "pool":
            run = {"method": "pool (52k)", "rows": len(frame), "kept": frame["id"].to_list()}
        else:
            run = json.loads(peer.read_text()) if method == "peer" else timed(method, len(frame))
        run |= measure(frame.filter(pl.col("id").is_in(run.pop("kept"))), reference)
        print(json.dumps(run), flush=True)
        results.append(run)
    return results


def measure(picked: pl.DataFrame, reference) -> dict:
    """The README's metrics of a selection, against the yardstick clustering `reference`."""
    from operators.diversity.metrics import cluster_diversity, distinct_n, pairwise_similarity, verb_object_coverage

    t = picked.select(pl.concat_str(FIELDS, separator="\n"))[:, 0]
    vo = verb_object_coverage(picked["instruction"])
    at_equal_words = {f"{k}_at_50k_words": v for k, v in distinct_n(t, max_words=EQUAL_WORDS).items()}
    clusters = cluster_diversity(t, reference)
    return distinct_n(t) | at_equal_words | {
        "coverage": clusters["coverage"], "entropy_norm": clusters["entropy_normalized"],
        "verbs": vo["unique_verbs"], "verb_objects": vo["unique_verb_objects"], "verb_entropy": vo["verb_entropy"],
        "rouge_l_mean": pairwise_similarity(t, pairs=3000)["rouge_l"]["mean"],
        "words_mean": round(float(t.str.count_matches(r"\S+").mean()), 1),
    }


def scaling(sizes: list[int], methods: list[str]) -> list[dict]:
    results = []
    for rows in sizes:
        for method in methods:
            if method == "kcenter" and rows > 250_000:
                continue  # budget x rows matrix-vector products: see the README note
            run = timed(method, rows)
            run.pop("kept")
            print(json.dumps(run), flush=True)
            results.append(run)
    return results


def tables(results: dict) -> str:
    """The README tables, from results.json."""
    q = results.get("quality", [])
    lines = ["| method | time s (CPU s) | peak RSS MB | distinct-1 | distinct-2 | distinct-1 / -2 at 50k words | coverage "
             "(1,000 clusters) | entropy (norm.) | verbs | verb-objects | ROUGE-L mean | words/row |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in q:
        cpu = f" ({r['cpu_s']})" if "cpu_s" in r else ""
        lines.append(f"| {r['method']} | {r.get('total_s', '-')}{cpu} | {r.get('peak_rss_mb', '-')} | {r['distinct_1']} | "
                     f"{r['distinct_2']} | {r['distinct_1_at_50k_words']} / {r['distinct_2_at_50k_words']} | "
                     f"{r['coverage']} | {r['entropy_norm']} | {r['verbs']} | {r['verb_objects']} | "
                     f"{r['rouge_l_mean']} | {r['words_mean']} |")
    s = results.get("scaling", [])
    if s:
        times = {(r["method"], r["rows"]): r for r in q + s if "total_s" in r}
        sizes = sorted({rows for _, rows in times})
        lines += ["", "| method | " + " | ".join(f"{n:,} rows: s (peak MB)" for n in sizes) + " | 52k -> 1M time |",
                  "|---|" + "---|" * (len(sizes) + 1)]
        for m in METHODS:
            cells = [f"{times[m, n]['total_s']} ({times[m, n]['peak_rss_mb']})" if (m, n) in times else "-" for n in sizes]
            growth = (f"x{times[m, sizes[-1]]['total_s'] / max(times[m, sizes[0]]['total_s'], 0.1):.0f}"
                      if (m, sizes[0]) in times and (m, sizes[-1]) in times else "-")
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {growth} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", choices=METHODS)
    parser.add_argument("--rows", type=int, default=52_002)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the README tables from results.json")
    parser.add_argument("--peer", type=Path, help="a peer's selection (peer_dsir.py output) to measure too")
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.rows)
    if args.table:
        return print(tables(json.loads(OUT.read_text())))
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if not args.skip_quality:
        results["quality"] = quality(args.peer)
        OUT.write_text(json.dumps(results, indent=1))
    if not args.skip_scaling:
        results["scaling"] = scaling([250_000, 1_000_000], METHODS)
        OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
