"""What the loopback S3 server (moto, as the tests and speed.py run it) and Sluice's S3 client cost in CPU, per
request and per MB: the S3 server shares the machine's 2 cores with the run it serves.

    flock /work/bench.lock .venv/bin/python bench/cluster/s3_costs.py

The server runs in a process of its own (tests/s3server.py); the client is this process, through
storage.write_many / read_many (s3fs, as a worker uses it). Prints the server's CPU per request for small PUTs,
per MB for big ones, for GETs that find nothing (a cache look-up's miss), and the client's CPU for the big PUTs
and GETs.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from s3server import FAKE_KEYS  # noqa: E402

PORT = 9112


def main() -> None:
    os.environ.update(FAKE_KEYS | {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{PORT}"})
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "s3server.py"), str(PORT)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    server.stdout.readline()
    time.sleep(2)

    def server_cpu() -> float:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    from pipelines import storage

    storage.warm("s3")
    try:
        for run in range(2):
            small = {f"s3://sluice/small{run}/{i}": os.urandom(1000) for i in range(200)}
            before = server_cpu()
            storage.write_many(small)
            print(f"200 PUTs of 1 kB: server {1000 * (server_cpu() - before) / 200:.1f} ms/request")
            big = {f"s3://sluice/big{run}/{i}": os.urandom(9 << 20) for i in range(20)}
            before, client = server_cpu(), time.process_time()
            storage.write_many(big)
            mb = 20 * 9 * 1.048576
            print(f"20 PUTs of 9 MiB: server {1000 * (server_cpu() - before) / mb:.1f} ms/MB, "
                  f"client {1000 * (time.process_time() - client) / mb:.1f} ms/MB")
            before, client = server_cpu(), time.process_time()
            storage.read_many(list(big))
            print(f"20 GETs of 9 MiB: server {1000 * (server_cpu() - before) / mb:.1f} ms/MB, "
                  f"client {1000 * (time.process_time() - client) / mb:.1f} ms/MB")
            before = server_cpu()
            storage.read_many([f"s3://sluice/none{run}/{i}/_done" for i in range(100)])
            print(f"100 GETs of nothing: server {1000 * (server_cpu() - before) / 100:.1f} ms/request")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
