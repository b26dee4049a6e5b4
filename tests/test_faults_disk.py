"""A full disk, a permission error or a file-size limit while a release is written: exit 1 with one line
naming the version, no traceback, nothing half-written visible, no temp folder left, earlier versions intact
(`sluice release verify` passes), and the next run publishes normally."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GSM8K
from pipelines import release

SLUICE = Path(sys.executable).parent / "sluice"
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 30}, {"op": "exact_dedup"}]


@pytest.fixture
def published(tmp_path, sluice) -> tuple[Path, Path]:
    """A config and its dataset folder holding v0001."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"dataset": "gsm8k", "inputs": [{"path": str(GSM8K), "fields": {"text": "question"}}],
                                  "stages": STAGES, "shard_rows": 100, "release": {"dir": str(tmp_path / "releases"),
                                                                                  "rows_per_file": 5000}}))
    code, _, stderr = sluice("run", config, "--no-prefect")
    assert code == 0, stderr
    return config, tmp_path / "releases" / "gsm8k"


def assert_nothing_published(dataset: Path, stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    message = stderr.strip()
    assert message.startswith(f"sluice: error: {dataset / 'v0002'}: cannot write the release") and "\n" not in message
    assert "v0001 and earlier versions are untouched" in message
    for fragment in fragments:
        assert fragment in message, message
    assert release.versions(dataset) == ["v0001"]
    assert not list(dataset.glob(".tmp-*"))


def assert_intact_and_recovers(config: Path, dataset: Path, sluice) -> None:
    code, stdout, _ = sluice("release", "verify", dataset / "v0001")
    assert code == 0, stdout
    code, _, stderr = sluice("run", config, "--no-prefect", "--force")  # the disk has room again
    assert code == 0, stderr
    shards = [json.loads((dataset / v / "manifest.json").read_text())["shards"] for v in ("v0001", "v0002")]
    assert [s["sha256"] for s in shards[0]] == [s["sha256"] for s in shards[1]]


@pytest.mark.parametrize("error, text", [("ENOSPC", "No space left on device"), ("EACCES", "Permission denied")])
def test_an_injected_write_error_publishes_nothing_and_keeps_earlier_versions(published, sluice, monkeypatch, error, text):
    config, dataset = published
    monkeypatch.setenv("SLUICE_FAIL_AT", f"publish.write:1:{error}")
    code, _, stderr = sluice("run", config, "--no-prefect", "--force")
    assert code == 1
    assert_nothing_published(dataset, stderr, text)
    monkeypatch.delenv("SLUICE_FAIL_AT")
    assert_intact_and_recovers(config, dataset, sluice)


def run_with_file_size_limit(config: Path, limit: int) -> subprocess.CompletedProcess:
    """`sluice run` where the kernel refuses to grow any file past `limit` bytes (EFBIG): a real write error
    inside the Parquet writer, and one that root cannot bypass as it does file permissions."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([SLUICE, "run", config, "--no-prefect", "--force"], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_file_size)


def test_a_real_write_error_in_the_release_files_publishes_nothing(published, sluice):
    config, dataset = published
    run = run_with_file_size_limit(config, 100_000)  # the shard files (< 40 kB) fit, the 250 kB release part not
    assert run.returncode == 1, run.stderr
    assert_nothing_published(dataset, run.stderr, "File too large")
    assert_intact_and_recovers(config, dataset, sluice)


def test_a_real_write_error_in_the_shard_cache_is_a_clear_error(published, sluice):
    config, dataset = published
    shutil.rmtree(dataset / ".cache")  # else the re-run reuses every cached read and shard and writes none
    run = run_with_file_size_limit(config, 10_000)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    message = run.stderr.strip()
    assert message.startswith(f"sluice: error: {dataset / '.cache'}") and "cannot write the shard cache" in message
    assert "File too large" in message and "\n" not in message
    assert release.versions(dataset) == ["v0001"] and not list(dataset.glob(".tmp-*"))
    assert_intact_and_recovers(config, dataset, sluice)


def test_a_release_root_that_is_a_file_is_a_clear_error(published, tmp_path, sluice):
    config, _ = published
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code, _, stderr = sluice("run", config, "--no-prefect", "--releases", blocker)
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().startswith(f"sluice: error: {blocker}") and "Not a directory" in stderr, stderr
