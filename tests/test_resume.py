"""Crash safety: a run killed with SIGKILL leaves no visible version, and the re-run resumes from finished
shard results and publishes a release byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GSM8K
from operators.errors import ReleaseError
from pipelines import config, release
from pipelines.flow import run_pipeline

SLUICE = Path(sys.executable).parent / "sluice"
STAGES = [{"op": "normalize", "fields": ["text", "answer"]},
          {"op": "length_filter", "field": "text", "min_words": 30},
          {"op": "exact_dedup", "fields": ["answer"]}]
INPUT = {"path": str(GSM8K), "fields": {"text": "question", "answer": "answer"}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run: the release every resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tmp / "c.yaml"
    cfg.write_text(json.dumps({"dataset": "gsm8k", "inputs": [INPUT], "stages": STAGES, "shard_rows": 150,
                               "release": {"dir": str(tmp / "releases"), "rows_per_file": 500}}))
    folder, _ = run_pipeline(config.load(cfg), use_prefect=False)
    return cfg, _shard_hashes(folder)


def _shard_hashes(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    return {"shards": [s["sha256"] for s in m["shards"]], "rejects": [s["sha256"] for s in m["rejects"]]}


def _sluice_run(cfg: Path, releases: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_KILL_AT"}
    if kill_at:
        env["SLUICE_KILL_AT"] = kill_at
    return subprocess.run([SLUICE, "run", cfg, "--no-prefect", "--releases", releases],
                          capture_output=True, text=True, env=env, timeout=300)


# 9 shards; normalize and length_filter run as one task per shard, so cache.put 4 falls inside them, 13
# inside exact_dedup's index phase and 22 and 27 (its last) inside its apply phase.
@pytest.mark.parametrize("kill_at", ["read.shard:6", "cache.put:4", "cache.put:13", "cache.put:22", "cache.put:27",
                                     "stage.done:2", "publish.write", "publish.seal"])
def test_killed_run_resumes_to_an_identical_release(reference, tmp_path, kill_at):
    cfg, expected = reference
    releases = tmp_path / "releases"
    killed = _sluice_run(cfg, releases, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    dataset = releases / "gsm8k"
    assert release.versions(dataset) == []  # nothing half-written is visible
    cache = dataset / ".cache"
    finished = len([e for e in cache.iterdir() if not e.name.startswith(".")]) if cache.exists() else 0  # not spills

    again = _sluice_run(cfg, releases)
    assert again.returncode == 0, again.stderr
    folder = dataset / "v0001"
    assert _shard_hashes(folder) == expected
    assert release.verify(folder) == []
    resumed = json.loads((folder / "manifest.json").read_text())["resumed"]
    assert resumed["shard_results_reused"] == finished  # every finished shard reused, none recomputed
    if finished:
        assert f"resumed: {finished} shard results reused" in again.stdout
    assert not list(dataset.glob(".tmp-*"))


def test_second_run_on_the_same_dataset_fails_fast(reference, tmp_path):
    cfg, _ = reference
    dataset = tmp_path / "releases" / "gsm8k"
    with release.dataset_lock(dataset):
        result = _sluice_run(cfg, tmp_path / "releases")
        with pytest.raises(ReleaseError, match="another run"):
            with release.dataset_lock(dataset):
                pass
    assert result.returncode == 1
    assert "another run (pid" in result.stderr and "is writing this dataset" in result.stderr
    assert release.versions(dataset) == []
