"""A release of N rows through a loopback S3 server (moto) vs local disk: `sluice run`, `release verify`, read back.

    flock /work/bench.lock .venv/bin/python bench/storage/release_s3.py --rows 1000000

Input: Alpaca outputs repeated with a per-copy suffix (bench/orchestration/run.py make_input), one Parquet file.
Pipeline: normalize -> length_filter -> exact_dedup, 250k-row shards, 250k rows per release file, no Prefect.
Two setups, each a fresh `sluice run` process under /usr/bin/time -v with an empty cache:
  local  input, shard cache and release on local disk (/tmp)
  s3     input uploaded to the bucket, shard cache and release on it (release.dir: s3://bench/releases)
moto runs as its own process (tests/s3server.py), so its CPU is not the client's; its CPU is on the same 2 cores.
Then, per setup: `sluice release verify` (re-hash every file) and reading every shard into Polars.
Bytes: the release's files (manifest) and everything the run left in the bucket (input + cache + release).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "orchestration"))
sys.path.insert(0, str(ROOT))
from run import make_input  # noqa: E402

STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sluice(env: dict[str, str], *args: str) -> tuple[float, float, float, str]:
    """Wall s, CPU s (user+sys), peak RSS GiB and stdout of one `sluice` process."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "pipelines.cli", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 2**20
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", done.stderr).group(1)) for k in ("User", "System"))
    return wall, cpu, peak, done.stdout


def read_back(env: dict[str, str], folder: str) -> float:
    code = ("import sys, time; from pipelines import release, storage; f = sys.argv[1]; t = time.perf_counter(); "
            "m = release.read_manifest(f); n = sum(len(storage.read_parquet(storage.join(f, s['path']))) "
            "for s in m['shards']); assert n == m['rows'], n; print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    data = make_input(work, args.rows)
    base = {"PATH": "/usr/bin:/bin", "SLUICE_PROGRESS": "off", "PYTHONPATH": str(ROOT), "HOME": str(work),
            "TMPDIR": str(work)}
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "s3server.py"), str(port)],
                              stdout=subprocess.PIPE, text=True, env=base)
    exports = {}
    for line in iter(server.stdout.readline, ""):  # `export KEY=VALUE` lines, then a comment once it serves
        if not line.startswith("export "):
            break
        key, value = line.removeprefix("export ").strip().split("=", 1)
        exports[key] = value
    s3env = base | exports
    os.environ.update(exports)
    from pipelines import storage

    results = {"rows": args.rows, "uptime": os.getloadavg()}
    try:
        bucket_input = "s3://sluice/inputs/" + data.name
        start = time.perf_counter()
        storage.upload(data, bucket_input)
        results["upload_input_s"] = time.perf_counter() - start
        results["input_bytes"] = data.stat().st_size
        for setup, env, inp, releases in (("local", base, str(data), str(work / "releases")),
                                          ("s3", s3env, bucket_input, "s3://sluice/releases")):
            config = work / f"{setup}.yaml"
            config.write_text(json.dumps({"dataset": "bench", "inputs": [{"path": inp, "fields": {"text": "text"}}],
                                          "shard_rows": 250_000, "stages": STAGES,
                                          "release": {"dir": releases, "rows_per_file": 250_000}}))
            wall, cpu, peak, out = sluice(env, "run", str(config), "--no-prefect")
            folder = re.search(r"released .* -> (\S+)", out).group(1)
            v_wall, v_cpu, v_peak, _ = sluice(env, "release", "verify", folder)
            manifest = json.loads(storage.read_text(storage.join(storage.location(folder), "manifest.json")))
            row = {"run_s": wall, "run_cpu_s": cpu, "run_peak_gib": peak, "verify_s": v_wall, "verify_cpu_s": v_cpu,
                   "read_back_s": read_back(env, folder), "rows": manifest["rows"],
                   "release_bytes": sum(f["bytes"] for f in manifest["shards"] + manifest["rejects"])}
            if setup == "s3":
                fs, _ = storage.filesystem("s3://sluice")
                row["bucket_bytes"] = sum(fs.du("sluice", total=False).values())
            results[setup] = row
            print(setup, json.dumps(row), flush=True)
        results["ratio_run"] = results["s3"]["run_s"] / results["local"]["run_s"]
        results["ratio_verify"] = results["s3"]["verify_s"] / results["local"]["verify_s"]
        results["ratio_read_back"] = results["s3"]["read_back_s"] / results["local"]["read_back_s"]
        results["uptime_end"] = os.getloadavg()
        print(json.dumps(results, indent=2))
        (ROOT / "bench" / "storage" / f"results-{args.rows}.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)  # the input, the local releases and caches (~0.8 GB at 1M rows)


if __name__ == "__main__":
    main()
