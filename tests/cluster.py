"""A Dask cluster as on separate machines, for tests and benchmarks: `dask scheduler` and `dask worker` as
separate processes, each in a working directory of its own (its cwd, TMPDIR, HOME and Dask's local directory),
so nothing but the network (and an object store, when the run's folders are URLs) connects them.

    with Cluster(workers=2, env={"AWS_ENDPOINT_URL_S3": ...}) as cluster:
        run_pipeline(pipeline, runner="dask", dask_address=cluster.address)
        cluster.kill(0)        # SIGKILL worker 0 and its nanny, as if its machine went away

Every process starts in a session of its own and is ended by its process group id (never by name), and the
working directories go with the cluster, so a test leaves nothing running or behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipelines.executors import ONE_THREAD, quiet_env  # noqa: E402  (what README asks of a cluster's workers)
DASK = Path(sys.executable).with_name("dask")


class Cluster:
    def __init__(self, workers: int = 2, env: dict[str, str] | None = None,
                 worker_env: dict[int, dict[str, str]] | None = None, timeout: float = 120,
                 preload: bool = True) -> None:
        self.n_workers, self.timeout = workers, timeout
        self.preload = ["--preload", "pipelines.preload"] if preload else []  # as README starts them
        self.env = env or {}
        self.worker_env = worker_env or {}
        self.home = Path(tempfile.mkdtemp(prefix="sluice-cluster-"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.address = ""

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _machine(self, name: str, extra: dict[str, str] | None = None) -> tuple[Path, dict[str, str]]:
        """A working directory and an environment of one 'machine': the code on its path, nothing shared."""
        folder = self.home / name
        (folder / "tmp").mkdir(parents=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(folder),
               "TMPDIR": str(folder / "tmp"), "SLUICE_PROGRESS": "off", "DASK_DISTRIBUTED__WORKER__DAEMON": "false",
               "PREFECT_HOME": str(folder / ".prefect")}
        return folder, env | self.env | (extra or {})

    def _spawn(self, name: str, args: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        folder, env = self._machine(name, extra)
        log = open(folder / "log.txt", "wb")
        process = subprocess.Popen([str(DASK), *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        self.processes[name] = process
        return process

    def start(self) -> None:
        info = self.home / "scheduler" / "scheduler.json"
        self._spawn("scheduler", ["scheduler", *self.preload, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(info)], quiet_env())
        self._wait(lambda: info.is_file() and info.stat().st_size > 0, "the scheduler to start", "scheduler")
        self.address = json.loads(info.read_text())["address"]
        for i in range(self.n_workers):
            self._spawn(f"worker-{i}", ["worker", self.address, *self.preload, "--nthreads", "1", "--nworkers", "1",
                                        "--memory-limit", "0", "--no-dashboard", "--name", f"worker-{i}",
                                        "--local-directory", str(self.home / f"worker-{i}" / "dask")],
                        ONE_THREAD | quiet_env() | self.worker_env.get(i, {}))  # one core per worker
        self.wait_for_workers(self.n_workers)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=self.timeout) as client:
            client.wait_for_workers(n, timeout=self.timeout)

    def _wait(self, ready, what: str, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        path = self.home / name / "log.txt"
        return path.read_text(errors="replace") if path.is_file() else ""

    def pids(self) -> list[int]:
        """Every live process of the cluster (schedulers, nannies, workers and their children)."""
        groups = {p.pid for p in self.processes.values()}
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) in groups:
                        found.append(int(entry.name))
                except ProcessLookupError:
                    pass
        return found

    def kill(self, worker: int) -> None:
        """SIGKILL worker `worker` with its nanny (its whole process group): a machine lost mid-run."""
        process = self.processes[f"worker-{worker}"]
        _kill_group(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                _kill_group(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            _kill_group(process.pid, signal.SIGKILL)  # children left in the group (a worker's nanny child)
        shutil.rmtree(self.home, ignore_errors=True)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
