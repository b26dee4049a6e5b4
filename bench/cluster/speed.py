"""The Dask runner on a cluster of separate processes with input and release on S3, against the local runners.

    flock /work/bench.lock .venv/bin/python bench/cluster/speed.py --rows 1000000 [--runs local,plain,dask-s3,dask-s3-faults]

Runs (each a fresh `sluice run` process under /usr/bin/time, every one from an empty cache):
- local:  `sluice run` (Prefect tasks on threads), input and release on local disk;
- plain:  `sluice run --no-prefect` (one shard after another in this process), local disk;
- dask-local: `--runner dask --dask-address`, the same two workers but input and release on local disk;
- dask-s3: `--runner dask --dask-address` on tests/cluster.py's cluster (a scheduler and 2 single-threaded
  workers, separate processes with their own working directories), input uploaded to and release written to a
  moto S3 server on loopback (its own process, tests/s3server.py);
- dask-s3-faults: the same through tests/s3server.py's fault proxy (every `--every`-th request a 500, 503
  SlowDown, throttle, dropped connection, lost answer or cut body); the release must hold the same rows.
- dask-s3-traffic: dask-s3 through the proxy with no fault, which counts the requests and their bytes by kind
  (`traffic`: "METHOD what" -> [requests, MB], what: cache, cache _done, input, release).
CPU seconds count the driver and its children (time -v) plus, for Dask, the scheduler's and workers' own
(from /proc before they stop) and the S3 server's. Input: bench/orchestration's (Alpaca outputs with a per-copy
suffix); pipeline normalize -> length_filter -> exact_dedup (the issue's 1.5x measurement), or with
`--minhash` also minhash_dedup; 50k-row shards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench" / "orchestration")]
from cluster import Cluster  # noqa: E402
from run import make_input  # noqa: E402

STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"}]
SERVE_S3 = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from s3server import S3Server
with S3Server() as s3:
    every = int(sys.argv[2])
    if every:
        with s3.faults(every=every) as proxy:
            print(s3.env["AWS_ENDPOINT_URL_S3"], flush=True)
            sys.stdin.read()
            traffic = {}  # "METHOD what" -> [requests, MB sent and answered]
            for method, path, sent, answered in proxy.exchanges:
                name = path.split("?")[0]
                what = ("cache _done" if name.endswith("/_done") else "cache" if "/.cache/" in name else
                        "input" if name.endswith("/input.parquet") else "release")
                counts = traffic.setdefault(f"{method} {what}", [0, 0.0])
                counts[0], counts[1] = counts[0] + 1, round(counts[1] + (sent + answered) / 1e6, 1)
            print("traffic", json.dumps(traffic, sort_keys=True), file=sys.stderr, flush=True)
            print(dict(proxy.injected), proxy.requests, file=sys.stderr, flush=True)
    else:
        print(s3.endpoint, flush=True)
        sys.stdin.read()
"""


class S3Process:
    """tests/s3server.py's moto server (and fault proxy, `every` > 0) in a process of its own."""

    def __init__(self, every: int = 0) -> None:
        self.every = every

    def __enter__(self) -> S3Process:
        self.process = subprocess.Popen([sys.executable, "-c", SERVE_S3, str(ROOT / "tests"), str(self.every)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        endpoint = self.process.stdout.readline().strip()
        from s3server import FAKE_KEYS

        self.env = FAKE_KEYS | {"AWS_ENDPOINT_URL_S3": endpoint}
        return self

    def cpu(self) -> float:
        return _cpu([self.process.pid])

    def __exit__(self, *exc: object) -> None:
        self.faults, self.hung_up, self.traffic = "", 0, {}
        try:
            self.process.stdin.close()
            lines = self.process.stderr.read().strip().splitlines()
            self.faults = lines[-1] if lines else ""  # the proxy's counts (before them: tracebacks of clients
            self.hung_up = sum("Exception occurred" in line for line in lines)  # that hung up mid-answer)
            self.traffic = next((json.loads(line[8:]) for line in lines if line.startswith("traffic ")), {})
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _cpu(pids: list[int]) -> float:
    """User + system seconds of live processes (and their reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def upload(env: dict[str, str], local: Path, url: str) -> None:
    code = ("import sys; from pipelines import storage; storage.upload(__import__('pathlib').Path(sys.argv[1]), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(local), url], check=True, env=os.environ | env | {"PYTHONPATH": str(ROOT)})


def sluice(config: Path, extra: list[str], env: dict[str, str]) -> dict:
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).with_name("sluice")), "run", str(config), "--force", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=os.environ | env | {"SLUICE_PROGRESS": "off", "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", done.stderr).group(1)) for k in ("User", "System"))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 2**20
    released = int(re.search(r"released ([\d,]+) rows", done.stdout).group(1).replace(",", ""))
    return {"wall_s": round(wall, 1), "driver_cpu_s": round(cpu, 1), "driver_peak_gib": round(peak, 2),
            "released": released, "stage_wall_s": _stage_walls(done.stdout)}


def _stage_walls(books: str) -> dict[str, float]:
    """Wall seconds per stage from the books `sluice run` prints (stages fused into one task show none)."""
    walls = {}
    for line in books.splitlines():
        cells = line.split()
        if len(cells) >= 7 and cells[0] != "stage" and re.fullmatch(r"[\d,.]+", cells[5]):
            walls[cells[0]] = float(cells[5].replace(",", ""))
    return walls


def write_config(path: Path, data: str, releases: str, stages: list[dict]) -> Path:
    path.write_text(json.dumps({"dataset": path.stem, "inputs": [{"path": data, "fields": {"text": "text"}}],
                                "shard_rows": 50_000, "stages": stages,
                                "release": {"dir": releases, "rows_per_file": 250_000}}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", default="local,plain,dask-local,dask-s3,dask-s3-faults")
    parser.add_argument("--every", type=int, default=25, help="dask-s3-faults: every N-th S3 request fails")
    parser.add_argument("--minhash", action="store_true")
    args = parser.parse_args()
    stages = STAGES + ([{"op": "minhash_dedup"}] if args.minhash else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_input(folder, args.rows)
        for i, run in enumerate(args.runs.split(",")):  # a run named twice runs twice, each from an empty cache
            load = os.getloadavg()[0]
            result: dict = {"run": run, "rows": args.rows, "load": round(load, 1)}
            if run in ("local", "plain"):
                config = write_config(folder / f"{run}-{i}.yaml", str(data), str(folder / f"releases-{i}"), stages)
                result |= sluice(config, ["--no-prefect"] if run == "plain" else [], {})
            elif run == "dask-local":
                config = write_config(folder / f"{run}-{i}.yaml", str(data), str(folder / f"releases-{i}"), stages)
                with Cluster(workers=2) as cluster:
                    result |= sluice(config, ["--runner", "dask", "--dask-address", cluster.address], {})
                    result["cluster_cpu_s"] = round(_cpu(cluster.pids()), 1)
            else:
                every = args.every if run.endswith("faults") else 10**9 if run.endswith("traffic") else 0
                with S3Process(every) as s3:
                    url = f"s3://sluice/{run}"
                    upload(s3.env, data, f"{url}/input.parquet")
                    config = write_config(folder / f"{run}-{i}.yaml", f"{url}/input.parquet", f"{url}/releases", stages)
                    with Cluster(workers=2, env=s3.env) as cluster:
                        result |= sluice(config, ["--runner", "dask", "--dask-address", cluster.address], s3.env)
                        result["cluster_cpu_s"] = round(_cpu(cluster.pids()), 1)
                    result["s3_cpu_s"] = round(s3.cpu(), 1)
                result["faults"] = s3.faults
                result["answers_cut_by_clients"] = s3.hung_up
                if s3.traffic:
                    result["traffic"] = s3.traffic
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
