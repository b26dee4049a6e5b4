"""Crash safety inside LLM calls: `sluice generate` SIGKILLed at the generation failpoints (an answer just
cached mid-batch, a step finished, the output written but not its side files) resumes to byte-identical
files, and the re-run sends no request whose answer was already cached."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fault_server import FaultServer
from pipelines.cli import main
from test_generate_operators import held_out, scripted

SLUICE = Path(sys.executable).parent / "sluice"
SEEDS = 12
STEPS = [{"op": "responses", "samples": 2}, {"op": "judge"}, {"op": "judge_filter", "min_score": 3}]
REQUESTS = SEEDS * 2 * 2  # 2 responses per seed, each judged once
FILES = ("generated.parquet", "generated.rejects.parquet")


@pytest.fixture(scope="module")
def server():
    with FaultServer(scripted) as server:
        yield server


def write_job(folder: Path, server: FaultServer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeds.jsonl").write_text("".join(json.dumps({"instruction": t}) + "\n" for t in held_out(SEEDS)))
    config = {"endpoint": {"base_url": server.url, "model": "scripted", "max_concurrency": 4},
              "seeds": {"path": "seeds.jsonl", "fields": {"instruction": "instruction"}},
              "steps": STEPS, "output": "out/generated.parquet"}
    path = folder / "gen.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def killed_generate(config: Path, kill_at: str) -> subprocess.CompletedProcess:
    """A real `sluice generate` process, SIGKILLed at `kill_at` (re-runs go in-process: no start-up cost)."""
    env = os.environ | {"SLUICE_KILL_AT": kill_at}
    return subprocess.run([SLUICE, "generate", config], capture_output=True, text=True, env=env, timeout=120)


def cached(config: Path) -> int:
    path = config.parent / "out" / "generated.cache.sqlite"
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM answers").fetchone()[0]


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> dict:
    """An uninterrupted run: the files every resumed run must reproduce byte for byte."""
    config = write_job(tmp_path_factory.mktemp("reference"), server)
    assert main(["generate", str(config)]) == 0
    out = config.parent / "out"
    report = json.loads((out / "generated.generation.json").read_text())
    assert report["usage"]["requests"] == REQUESTS and report["usage"]["calls"] == REQUESTS
    return {"files": {name: (out / name).read_bytes() for name in FILES}, "steps": report["steps"]}


# llm.cached:5 falls mid-batch in the responses step (4 requests in flight); generate.step:1 between the two
# LLM steps; generate.write after the rows, before the side files.
@pytest.mark.parametrize("kill_at, answered", [("llm.cached:5", 5), ("generate.step:1", 24), ("generate.write", REQUESTS)])
def test_killed_generation_resumes_to_identical_files_without_repeat_calls(server, reference, tmp_path, sluice,
                                                                            kill_at, answered):
    config = write_job(tmp_path, server)
    killed = killed_generate(config, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = config.parent / "out"
    assert cached(config) == answered  # every answer received before the kill is durable
    assert not (out / "generated.generation.json").exists()
    assert not list(out.glob(".*.tmp"))  # no half-written file under any name

    calls = server.calls
    code, stdout, stderr = sluice("generate", config)
    assert code == 0, stderr
    assert f"{answered:,} from cache" in stdout
    assert server.calls - calls == REQUESTS - answered  # cached requests are not sent again
    report = json.loads((out / "generated.generation.json").read_text())
    assert report["usage"]["cache_hits"] == answered and report["usage"]["calls"] == REQUESTS - answered
    assert report["steps"] == reference["steps"]
    for name in FILES:
        assert (out / name).read_bytes() == reference["files"][name], name
