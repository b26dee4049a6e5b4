"""A generate-and-release flow of N seed rows against a loopback OpenAI-compatible server: memory and time,
then the same config again (every answer cached: no calls) and a run killed half-way and resumed.

    .venv/bin/python bench/orchestration/generate_flow.py --seeds 10000 [--runner prefect|plain]

Seeds: Alpaca instructions (../shared/data, read in place). Pipeline: responses (one answer per seed) ->
judge (1-5 score) -> judge_filter -> normalize -> length_filter -> exact_dedup -> minhash_dedup -> release.
The server (tests/fault_server.py with a scripted responder: an answer, or a JSON score for a rubric) runs in
this process; `sluice run` runs in a fresh process under /usr/bin/time -v (wall, CPU, peak RSS).
Results: bench/out/orchestration/generate_flow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from fault_server import FaultServer  # noqa: E402

ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
SLUICE = Path(sys.executable).parent / "sluice"


def responder(messages: list[dict], body: dict) -> str:
    text = messages[-1]["content"]
    if "rate the" in text and "scale of 1 to 5" in text:
        return json.dumps({"score": 3 + len(text) % 3, "explanation": "Clear and correct."})
    return "Here is a careful answer to the task: " + text[:400]


def write_inputs(folder: Path, seeds: int, url: str) -> Path:
    rows = json.loads(ALPACA.read_text())[:seeds]
    data = folder / "seeds.jsonl"
    data.write_text("".join(json.dumps({"instruction": r["instruction"], "input": r["input"]}) + "\n" for r in rows))
    cfg = folder / "gen.yaml"
    cfg.write_text(json.dumps({
        "dataset": "gen", "shard_rows": 1000,
        "endpoint": {"base_url": url, "model": "loopback", "max_concurrency": 32,
                     "prices": {"loopback": {"prompt": 0.15, "completion": 0.6}}},
        "inputs": [{"path": str(data), "fields": {"instruction": "instruction", "input": "input"}, "optional": ["input"]}],
        "stages": [{"op": "responses", "max_tokens": 256}, {"op": "judge", "max_tokens": 60},
                   {"op": "judge_filter", "min_score": 4}, {"op": "normalize", "fields": ["instruction", "output"]},
                   {"op": "length_filter", "field": "output", "min_words": 3},
                   {"op": "exact_dedup", "fields": ["instruction", "output"]},
                   {"op": "minhash_dedup", "fields": ["instruction", "output"]}],
        "release": {"dir": str(folder / "releases")}}))
    return cfg


def timed(cmd: list, kill_after: float | None = None) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if kill_after is not None:
        time.sleep(kill_after)
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    stats = dict(re.findall(r"^\s*(.+?): (.+)$", err, re.M))
    result = {"exit": proc.returncode, "wall_s": round(time.perf_counter() - start, 1)}
    if "User time (seconds)" in stats:
        result |= {"cpu_s": round(float(stats["User time (seconds)"]) + float(stats["System time (seconds)"]), 1),
                   "peak_rss_mib": int(stats["Maximum resident set size (kbytes)"]) // 1024}
    if proc.returncode not in (0, -9) and kill_after is None:
        raise SystemExit(f"sluice run failed:\n{out[-2000:]}\n{err[-3000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--runner", choices=["prefect", "plain"], default="prefect")
    parser.add_argument("--kill-after", type=float, default=None, help="also: a run killed after S seconds, resumed")
    args = parser.parse_args()
    extra = [] if args.runner == "prefect" else ["--no-prefect"]
    results: dict = {"seeds": args.seeds, "runner": args.runner, "load_before": open("/proc/loadavg").read().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp, FaultServer(responder) as server:
        folder = Path(tmp)
        cfg = write_inputs(folder, args.seeds, server.url)
        results["first"] = timed([SLUICE, "run", cfg, *extra]) | {"calls": server.calls}
        calls = server.calls
        results["again"] = timed([SLUICE, "run", cfg, "--force", *extra]) | {"calls": server.calls - calls}
        manifest = json.loads(sorted((folder / "releases" / "gen").glob("v*/manifest.json"))[-1].read_text())
        results["released_rows"] = manifest["rows"]
        results["generation"] = {k: v for k, v in manifest["generation"].items() if k != "endpoint"}
        if args.kill_after:
            fresh = folder / "fresh"
            fresh.mkdir()
            cfg2 = write_inputs(fresh, args.seeds, server.url)
            calls = server.calls
            results["killed"] = timed([SLUICE, "run", cfg2, *extra], kill_after=args.kill_after) | {"calls": server.calls - calls}
            calls = server.calls
            results["resumed"] = timed([SLUICE, "run", cfg2, *extra]) | {"calls": server.calls - calls}
    results["load_after"] = open("/proc/loadavg").read().split()[:3]
    out = ROOT / "bench" / "out" / "orchestration"
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate_flow.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
