"""Where a run's wall time goes outside its stages: bench/cluster/speed.py's runs with the driver timed per phase.

    flock /work/bench.lock .venv/bin/python bench/cluster/timeline.py --rows 200000 --runs dask-s3,local [--spy DIR]

Same input, pipeline and cluster as speed.py; the driver is bench/cluster/timed_sluice.py (a line per phase:
seconds since launch, driver CPU, thread, phase). `--spy DIR`: also record the driver with py-spy (a py-spy of
your own, e.g. in a venv under /tmp: PY_SPY=/tmp/x/bin/py-spy), raw stacks in DIR.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "tests"), str(HERE.parents[1] / "bench" / "orchestration")]
import speed  # noqa: E402
from cluster import Cluster  # noqa: E402
from run import make_input  # noqa: E402


def timed_run(config: Path, extra: list[str], env: dict[str, str], out: Path, spy: str | None) -> None:
    cmd = [sys.executable, str(HERE / "timed_sluice.py"), "run", str(config), "--force", *extra]
    if spy:
        cmd = [os.environ.get("PY_SPY", "py-spy"), "record", "--nonblocking", "-r", "50", "-f", "raw",
               "-o", f"{spy}/{out.stem}.txt", "--", *cmd]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=os.environ | env | {"SLUICE_PROGRESS": "off", "PYTHONPATH": str(speed.ROOT),
                                                  "TIMELINE": str(out), "T0": str(start)})
    print(f"== {out.stem}: wall {time.time() - start:.1f} s, exit {done.returncode}, load {os.getloadavg()[0]:.1f}")
    print(done.stdout[-1200:] if done.returncode == 0 else done.stderr[-3000:])
    print(out.read_text(), flush=True)
    print(dispatch(out.read_text()), flush=True)


def dispatch(timeline: str) -> str:
    """Per map: its wall, when its first task body started in the driver and its first task on a worker (Dask's
    task stream; none for local runs), and the workers' busy seconds."""
    maps, bodies, computes = {}, {}, {}
    for line in timeline.splitlines():
        if m := re.match(r"\s*([\d.]+)\s+\S+\s+\S+\s+([<>]) map (\S+)", line):
            maps.setdefault(m.group(3), []).append(float(m.group(1)))
        elif m := re.match(r"\s*([\d.]+)\s+\S+\s+\S+\s+task body (\S+?)\[.*\] starts", line):
            bodies.setdefault(m.group(2), []).append(float(m.group(1)))
        elif m := re.match(r"\s*worker \S+ (\S+?)\[.*: compute ([\d.]+)-([\d.]+)", line):
            computes.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3))))
    rows = ["map                          wall s  first body +s  first on a worker +s  workers busy s"]
    for label, (start, end, *_) in maps.items():
        spans = computes.get(label, [])
        first = f"{min(a for a, _ in spans) - start:.2f}" if spans else "-"
        rows.append(f"{label:28} {end - start:6.2f} {min(bodies.get(label, [start])) - start:14.2f} {first:>21} "
                    f"{sum(b - a for a, b in spans):15.2f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", default="dask-s3,local")
    parser.add_argument("--spy", help="a folder for py-spy's raw stacks of the driver")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_input(folder, args.rows)
        for i, run in enumerate(args.runs.split(",")):
            out = folder / f"{run}-{i}.txt"
            if run == "local":
                config = speed.write_config(folder / f"{run}-{i}.yaml", str(data), str(folder / f"rel-{i}"), speed.STAGES)
                timed_run(config, [], {}, out, args.spy)
                continue
            with speed.S3Process(0) as s3:
                url = f"s3://sluice/{run}-{i}"
                speed.upload(s3.env, data, f"{url}/input.parquet")
                config = speed.write_config(folder / f"{run}-{i}.yaml", f"{url}/input.parquet", f"{url}/releases",
                                            speed.STAGES)
                with Cluster(workers=2, env=s3.env) as cluster:
                    timed_run(config, ["--runner", "dask", "--dask-address", cluster.address], s3.env, out, args.spy)


if __name__ == "__main__":
    main()
