"""Line/paragraph/sentence-span dedup on web pages with planted boilerplate: Sluice's `line_dedup` beside
datatrove's SentenceDedup, in one run (see bench/README.md, "Line dedup").

    flock /work/bench.lock .venv/bin/python bench/dedup/lines_run.py [--sets /tmp/lines13] [--grid] [--no-peer]

Builds the sets (bench/dedup/lines_sets.py) if missing. For each set and tool: precision and recall of the
removed boilerplate (a planted piece counts as removed when it no longer appears in the output text; content
pieces that no longer appear intact are the false positives; a dropped document removes all its pieces), the
rows dropped, wall seconds and peak RSS of a process that runs only that tool. Recall's denominator is every
planted occurrence but one per distinct piece (digits ignored): the first copy may stay. Content pieces that
occur in more than one document of the set (case, punctuation and spacing ignored: the same Q&A in two
samples, a dialect's identical lines) are natural repeats: removing them is no error, and they are counted apart.
`--grid`: also every unit x min_unit_chars on the tuning set (the defaults were chosen there; the held-out set
is reported with the defaults only, plus the other units for comparison).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEER_PYTHON = "/tmp/bench-dedup/bin/python"


def run_sluice(rows_path: Path, out_path: Path, params: dict, shard_rows: int = 200) -> dict:
    """`line_dedup` the way the engine runs it: index per shard, decide once, apply per shard."""
    import polars as pl

    from operators.dedup.lines import LineDedup

    start = time.perf_counter()
    rows = pl.read_ndjson(rows_path)
    op = LineDedup(**params)
    shards = [rows.slice(i, shard_rows) for i in range(0, len(rows), shard_rows)]
    decision = op.decide(pl.concat([op.index(s) for s in shards]))
    splits = [op.apply(s, decision) for s in shards]
    kept = pl.concat([k for k, _ in splits])
    rejected = pl.concat([r for _, r in splits])
    kept.select("id", "text").write_ndjson(out_path)
    seconds = time.perf_counter() - start
    stats = op.stats(kept.lazy(), rejected.lazy())
    return {"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "stats": stats, "reasons": dict(rejected.group_by("reason").len().iter_rows()) if len(rejected) else {}}


def in_subprocess(rows_path: Path, out_path: Path, params: dict) -> dict:
    """Run `run_sluice` in a fresh process, so its peak RSS is its own."""
    code = (f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(HERE)!r}]; from lines_run import run_sluice; "
            f"print(json.dumps(run_sluice(__import__('pathlib').Path({str(rows_path)!r}), "
            f"__import__('pathlib').Path({str(out_path)!r}), {params!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_peer(rows_path: Path, work: Path, options: list[str]) -> tuple[dict, Path]:
    subprocess.run(["rm", "-rf", str(work)], check=True)
    args = [PEER_PYTHON, str(HERE / "lines_datatrove.py"), str(rows_path), str(work), *options]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    out = work / "kept.jsonl"
    with open(out, "w") as fh:
        for part in sorted((work / "kept").glob("*.jsonl")):
            fh.write(part.read_text())
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def score(truth_path: Path, out_path: Path) -> dict:
    """Precision and recall of the removed pieces (see the module doc)."""
    outputs = {}
    with open(out_path) as fh:
        for line in fh:
            row = json.loads(line)
            outputs[row["id"]] = row["text"]
    removed_planted = planted = content_lost = content = dropped = natural = 0
    distinct = set()
    truth = [json.loads(line) for line in open(truth_path)]
    docs_with = {}
    for row in truth:
        for piece in {_plain(p) for p in row["content"]}:
            docs_with[piece] = docs_with.get(piece, 0) + 1
    for row in truth:
        text = outputs.get(row["id"])
        dropped += text is None
        for piece in row["planted"]:
            planted += 1
            distinct.add(re.sub(r"\d", "0", piece.strip().lower()))
            removed_planted += text is None or piece.strip() not in text
        for piece in row["content"]:
            if docs_with[_plain(piece)] > 1:
                natural += text is None or piece.strip() not in text
                continue
            content += 1
            content_lost += text is None or piece.strip() not in text
    expected = planted - len(distinct)
    precision = removed_planted / (removed_planted + content_lost) if removed_planted + content_lost else 1.0
    recall = min(removed_planted, expected) / expected if expected else 1.0
    return {"precision": round(precision, 3), "recall": round(recall, 3),
            "f1": round(2 * precision * recall / (precision + recall), 3) if precision + recall else 0.0,
            "planted_removed": removed_planted, "planted": planted, "content_lost": content_lost,
            "content": content, "rows_dropped": dropped, "natural_repeats_removed": natural}


def _plain(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def report(name: str, tool: str, result: dict, scores: dict) -> None:
    print(f"| {name} | {tool} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} | "
          f"{scores['planted_removed']}/{scores['planted']} | {scores['content_lost']}/{scores['content']} | "
          f"{scores['natural_repeats_removed']} | {scores['rows_dropped']} | {result['seconds']:.2f} | "
          f"{result['max_rss_mb']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", type=Path, default=Path("/tmp/lines13"))
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--only", metavar="SUBSTRING", help="run only the tools whose name contains it")
    args = parser.parse_args()
    if not (args.sets / "heldout" / "truth.jsonl").exists():
        subprocess.run([sys.executable, str(HERE / "lines_sets.py"), str(args.sets)], check=True)
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]}")
    print("| set | tool | precision | recall | F1 | planted removed | content lost | natural repeats removed | "
          "rows dropped | s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    variants = {"sluice line_dedup (defaults: sentence, span 1)": {}, "sluice unit=line": {"unit": "line"},
                "sluice unit=paragraph": {"unit": "paragraph"}, "sluice span=3 (C4's spans)": {"span": 3}}
    if args.grid:
        variants |= {f"sluice unit={u}, min_unit_chars={m}": {"unit": u, "min_unit_chars": m}
                     for u in ("sentence", "line") for m in (0, 10, 30, 40)}
    for name in ("web", "udhr", "heldout"):
        rows, truth = args.sets / name / "rows.jsonl", args.sets / name / "truth.jsonl"
        chosen = variants if name != "heldout" else {k: v for k, v in variants.items() if "min_unit_chars" not in k}
        chosen = {k: v for k, v in chosen.items() if not args.only or args.only in k}
        for tool, params in chosen.items():
            out = args.sets / name / "sluice.out.jsonl"
            result = in_subprocess(rows, out, params)
            report(name, tool, result, score(truth, out))
            if "(defaults" in tool:
                print(f"<!-- {name} stats: {json.dumps(result['stats'])} dropped: {json.dumps(result['reasons'])} -->")
        if not args.no_peer:
            for options, tool in (([], "datatrove SentenceDedup (defaults: 3 sentences)"),
                                  (["--lines"], "datatrove SentenceDedup (lines, span 1)"),
                                  (["--lines", "--keep-docs"], "datatrove SentenceDedup (lines, span 1, no doc filter)")):
                if args.only and args.only not in tool:
                    continue
                result, out = run_peer(rows, args.sets / name / "dt", options)
                report(name, tool, result, score(truth, out))


if __name__ == "__main__":
    main()
