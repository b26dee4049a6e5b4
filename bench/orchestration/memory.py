"""Peak memory and wall time of `sluice run` as rows grow, for this checkout and (optionally) another one.

    .venv/bin/python bench/orchestration/memory.py --rows 250000,1000000 [--before /tmp/sluice-before]
    .venv/bin/python bench/orchestration/memory.py --rows 500000 --join 8 --no-minhash --before /tmp/sluice-before
    .venv/bin/python bench/orchestration/memory.py --rows 1000000 --gopher --runners prefect --kill-at cache.put:605,publish.write:1

Input: Alpaca outputs repeated with a per-copy suffix (Parquet); pipeline normalize -> length_filter ->
exact_dedup -> minhash_dedup, 10k-row shards (--shard-rows), empty cache. Each run is a fresh process under /usr/bin/time -v:
peak RSS is that of the largest single process (for --runner dask: the largest of the driver and its
LocalCluster workers, not their sum).
`--before DIR` runs the same configs with the code in DIR (e.g. `git worktree add /tmp/sluice-before <commit>`),
importing it ahead of this checkout's editable install.
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
sys.path.insert(0, str(ROOT / "bench" / "orchestration"))
from run import make_input  # noqa: E402

STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"},
          {"op": "minhash_dedup"}]
# Runs the CLI of the checkout in argv[1] (ahead of the editable install's import hook).
LAUNCH = ("import sys; root = sys.argv.pop(1); "
          "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]; "
          "sys.path.insert(0, root); from pipelines.cli import main; sys.exit(main(sys.argv[1:]))")


def run(code: Path, config: Path, runner: str, kill_at: str | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, children included) and peak RSS (GiB) of one `sluice run`
    (with `kill_at`, one SIGKILLed at that failpoint, e.g. stage.done:5)."""
    extra = ["--no-prefect"] if runner == "plain" else ["--runner", "dask"] if runner == "dask" else []
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", LAUNCH, str(code), "run", str(config), *extra]
    start = time.perf_counter()
    env = {"SLUICE_PROGRESS": "off", "PATH": "/usr/bin:/bin"} | ({"SLUICE_KILL_AT": kill_at} if kill_at else {})
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0 and not (kill_at and "Command terminated by signal 9" in done.stderr):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr).group(1)) for kind in ("User", "System"))
    return wall, cpu, peak_kib / 2**20


def stage_cpu(folder: Path, dataset: str) -> dict:
    """CPU seconds of the read and of each stage (group) in the run that published `dataset`'s first version,
    from its manifest (the driver's clock: start-up and the release writer are the rest of the process's CPU)."""
    manifest = json.loads((folder / "releases" / dataset / "v0001" / "manifest.json").read_text())
    seconds = {s["stage"]: s["cpu_seconds"] for s in manifest["stages"] if "cpu_seconds" in s}
    return {"stage_cpu_s": seconds, "stages_cpu_s": round(sum(seconds.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="250000,1000000")
    parser.add_argument("--runners", default="plain", help="comma list of plain, prefect, dask")
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    parser.add_argument("--join", type=int, default=1, help="Alpaca outputs per row (longer rows: more bytes per row)")
    parser.add_argument("--no-minhash", action="store_true", help="cleaning stages and exact dedup only")
    parser.add_argument("--gopher", action="store_true", help="Gopher repetition and quality after the length filter")
    parser.add_argument("--kill-at", help="also: a run SIGKILLed at each of these failpoints (comma list, e.g. "
                        "stage.done:5,publish.write:1), each into a fresh dataset, then resumed")
    parser.add_argument("--kills-only", action="store_true",
                        help="only the killed and resumed runs (compare with an uninterrupted run measured before)")
    parser.add_argument("--shard-rows", type=int, default=10_000, help="rows per shard (the config default)")
    args = parser.parse_args()
    stages = STAGES[:-1] if args.no_minhash else STAGES
    if args.gopher:
        stages = stages[:2] + [{"op": "gopher_repetition"}, {"op": "gopher_quality"}] + stages[2:]
    checkouts = {"now": ROOT} | ({"before": args.before} if args.before else {})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rows in map(int, args.rows.split(",")):
            data = make_input(folder, rows * args.join)
            if args.join > 1:  # K consecutive outputs per row
                joined = pl.read_parquet(data).with_columns((pl.int_range(pl.len()) // args.join).alias("row"))
                joined.group_by("row", maintain_order=True).agg(pl.col("text").str.join("\n\n")).select(
                    pl.col("row").cast(pl.String).alias("id"), "text").write_parquet(data)
            for runner in args.runners.split(","):
                for label, code in checkouts.items():
                    config = folder / f"{label}-{runner}-{rows}.yaml"
                    config.write_text(json.dumps({
                        "dataset": config.stem, "inputs": [{"path": str(data), "fields": {"text": "text"}}],
                        "shard_rows": args.shard_rows, "stages": stages,
                        "release": {"dir": str(folder / "releases"), "rows_per_file": 250_000}}))
                    if not args.kills_only:
                        wall, cpu, peak = run(code, config, runner)
                        results.append({"rows": rows, "join": args.join, "runner": runner, "code": label,
                                        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_gib": round(peak, 2)}
                                       | stage_cpu(folder, config.stem))
                        print(json.dumps(results[-1]), flush=True)
                    for n, kill_at in enumerate(args.kill_at.split(",") if args.kill_at else []):
                        # the same config into a fresh dataset (and cache): killed at `kill_at`, then resumed
                        name = f"killed{n}-{config.stem}"
                        killed = config.with_name(f"{name}.yaml")
                        killed.write_text(config.read_text().replace(f'"{config.stem}"', f'"{name}"'))
                        for kill in (kill_at, None):
                            wall, cpu, peak = run(code, killed, runner, kill)
                            results.append({"rows": rows, "runner": runner, "code": label, "run": "killed" if kill else "resumed",
                                            "kill_at": kill or kill_at, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                            "peak_rss_gib": round(peak, 2)} | ({} if kill else stage_cpu(folder, name)))
                            print(json.dumps(results[-1]), flush=True)
            data.unlink()


if __name__ == "__main__":
    main()
