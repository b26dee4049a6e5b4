"""Shared fixtures: real data from ../shared/data, configs written to tmp folders, the CLI in-process."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """../shared/data beside this checkout or, for a clone made elsewhere (`git clone . /tmp/check`), beside the
    checkout it was cloned from."""
    here = (ROOT / ".." / "shared" / "data").resolve()
    if here.is_dir():
        return here
    origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True,
                            text=True).stdout.strip()
    return (Path(origin) / ".." / "shared" / "data").resolve() if origin and Path(origin).is_dir() else here


SHARED = _shared_data()
ALPACA = SHARED / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
GSM8K = SHARED / "benchmarks" / "gsm8k" / "test.jsonl"
TRUTHFULQA = SHARED / "benchmarks" / "truthfulqa" / "TruthfulQA.csv"
DCLM = SHARED / "web" / "dclm_quality_annotations" / "majority_data.jsonl"


def threads_left(prefix: str, timeout: float = 10) -> list[str]:
    """Wait up to `timeout` s for the threads whose names start with `prefix` to end; the names of those left."""
    deadline = time.monotonic() + timeout
    while (left := [t.name for t in threading.enumerate() if t.name.startswith(prefix)]) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture(scope="session")
def alpaca() -> list[dict]:
    return json.loads(ALPACA.read_text())


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a pipeline config (a dict) as YAML in tmp_path; releases go to tmp_path/releases."""

    def write(inputs: list[dict], stages: list[dict] | None = None, name: str = "config.yaml", **extra) -> Path:
        config = {"dataset": "test", "inputs": inputs, "stages": stages or [],
                  "release": {"dir": str(tmp_path / "releases")}} | extra
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
def sluice(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback for the whole session (tests/s3server.py)."""
    from s3server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server with a bucket of this test's own (`s3.bucket`, `s3.url(...)`), and os.environ pointing
    boto/s3fs/Polars at it with fake keys for the duration of the test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    s3_server.bucket = s3_server.fresh_bucket()
    return s3_server
