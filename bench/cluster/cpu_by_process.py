"""CPU seconds each process on this machine used while a `sluice run` was alive: where a run's CPU goes across the
driver, Prefect's API server, the Dask scheduler and workers, and the S3 server.

    flock /work/bench.lock bash -c '.venv/bin/python bench/cluster/speed.py --rows 1000000 --runs dask-s3 & \
        .venv/bin/python bench/cluster/cpu_by_process.py; wait'

It samples /proc every 0.5 s from the moment a `sluice run` process appears until it is gone, and prints the
CPU (user + system) of every process alive at the last sample that used more than 0.1 s in that window (a
process that exits earlier, e.g. Prefect's API server of a local run, is not counted: see speed.py's
driver_cpu_s, which includes the driver's children).
"""

import argparse
import os
import time


def snapshot() -> dict[int, tuple[str, float]]:
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            command = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").split("\n")[0][:140]
        except OSError:
            continue
        found[int(pid)] = (command, (int(fields[11]) + int(fields[12])) / tick)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a run to start and end")
    args = parser.parse_args()
    first = last = None
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        now = snapshot()
        running = any("sluice run" in command for command, _ in now.values())
        if running:
            first, last = first or now, now
        elif first is not None:
            break
        time.sleep(0.5)
    if last is None:
        raise SystemExit("no `sluice run` process seen")
    total = 0.0
    for pid, (command, cpu) in sorted(last.items(), key=lambda item: -item[1][1] + first.get(item[0], ("", 0))[1]):
        used = cpu - first.get(pid, (command, 0.0))[1]
        if used > 0.1:
            total += used
            print(f"{used:7.2f}  {pid:>7}  {command}")
    print(f"{total:7.2f}  total")


if __name__ == "__main__":
    main()
