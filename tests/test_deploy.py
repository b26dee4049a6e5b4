"""A served deployment on a real local Prefect server (`sluice server`) triggers scheduled runs that publish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, seconds: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"{what}: process exited early"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (read from /proc while they are still its children)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped; it only waits to be reaped


def test_served_deployment_triggers_scheduled_runs(write_config, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in (ROOT / "data/web/dolma").glob("*.jsonl"):
        (inputs / path.name).write_bytes(path.read_bytes())
    cfg = write_config([{"path": str(inputs / "*.jsonl"), "fields": {"text": "text"}}], [{"op": "normalize"}])
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen([BIN / "sluice", "server", "--port", str(port)], env=env, **quiet)
    try:
        _wait(lambda: _healthy(api), 180, "sluice server", server)
        served = subprocess.Popen([BIN / "sluice", "deploy", cfg, "--interval", "20"], env=env, **quiet)
        dataset = tmp_path / "releases" / "test"
        try:
            _wait(lambda: (dataset / "v0001" / "manifest.json").exists(), 240, "a scheduled run", served)
            # A scheduled run with nothing changed publishes nothing; new input rows make the next version.
            first = sorted(inputs.glob("*.jsonl"))[0]
            line = json.loads(first.read_text().splitlines()[0])
            with open(first, "a") as fh:
                fh.write(json.dumps(line | {"id": f"{line['id']}-again"}) + "\n")
            _wait(lambda: (dataset / "v0002" / "manifest.json").exists(), 240, "a second scheduled run", served)
        finally:
            _stop(served)
    finally:
        family = _descendants(server.pid)
        _stop(server)
    # SIGTERM to `sluice server` (what a service manager sends) stops the Prefect server with it.
    survivors = [pid for pid in family if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "processes outlived `sluice server`"
    assert server.returncode is not None and not _healthy(api)
    for version, rows in (("v0001", 20), ("v0002", 21)):
        manifest = json.loads((dataset / version / "manifest.json").read_text())
        assert manifest["rows"] == rows and manifest["config_path"] == str(cfg.resolve())
