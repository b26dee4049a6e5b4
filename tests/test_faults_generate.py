"""Crash safety inside LLM calls: `sluice run` of a generating pipeline SIGKILLed at the generation failpoints
(an answer just cached mid-batch, a generator stage finished, the release being written) resumes to a
byte-identical release, and the re-run sends no request whose answer was already cached."""

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
STAGES = [{"op": "responses", "samples": 2}, {"op": "judge"}, {"op": "judge_filter", "min_score": 3}]
REQUESTS = SEEDS * 2 * 2  # 2 responses per seed, each judged once


@pytest.fixture(scope="module")
def server():
    with FaultServer(scripted) as server:
        yield server


def write_config(folder: Path, server: FaultServer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeds.jsonl").write_text("".join(json.dumps({"instruction": t}) + "\n" for t in held_out(SEEDS)))
    config = {"dataset": "gen", "endpoint": {"base_url": server.url, "model": "scripted", "max_concurrency": 4},
              "inputs": [{"path": "seeds.jsonl", "fields": {"instruction": "instruction"}}],
              "shard_rows": 6, "stages": STAGES, "release": {"dir": "releases"}}
    path = folder / "gen.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def killed_run(config: Path, kill_at: str) -> subprocess.CompletedProcess:
    """A real `sluice run` process, SIGKILLed at `kill_at` (re-runs go in-process: no start-up cost)."""
    env = os.environ | {"SLUICE_KILL_AT": kill_at}
    return subprocess.run([SLUICE, "run", config, "--no-prefect"], capture_output=True, text=True, env=env, timeout=120)


def cached(config: Path) -> int:
    with sqlite3.connect(config.parent / "releases" / "gen" / "llm-cache.sqlite") as db:
        return db.execute("SELECT count(*) FROM answers").fetchone()[0]


def release(config: Path) -> dict:
    m = json.loads((config.parent / "releases" / "gen" / "v0001" / "manifest.json").read_text())
    return {"shards": [s["sha256"] for s in m["shards"]], "rejects": [s["sha256"] for s in m["rejects"]],
            "stages": [{k: v for k, v in s.items() if not k.endswith("_seconds")} for s in m["stages"]],
            "generation": m["generation"]}


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> dict:
    """An uninterrupted run: the release every resumed run must reproduce byte for byte."""
    config = write_config(tmp_path_factory.mktemp("reference"), server)
    assert main(["run", str(config), "--no-prefect"]) == 0
    expected = release(config)
    assert expected["generation"]["requests"] == REQUESTS and expected["generation"]["calls"] == REQUESTS
    return expected


# llm.cached:5 falls mid-batch in the first responses task (4 requests in flight); stage.done:1 after the
# responses stage (24 answers); publish.write while the release is written (every answer).
@pytest.mark.parametrize("kill_at, answered", [("llm.cached:5", 5), ("stage.done:1", 24), ("publish.write", REQUESTS)])
def test_killed_generation_resumes_to_an_identical_release_without_repeat_calls(server, reference, tmp_path, sluice,
                                                                                 kill_at, answered):
    config = write_config(tmp_path, server)
    killed = killed_run(config, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert cached(config) == answered  # every answer received before the kill is durable
    assert not (config.parent / "releases" / "gen" / "v0001").exists()

    calls = server.calls
    code, stdout, stderr = sluice("run", config, "--no-prefect")
    assert code == 0, stderr
    assert server.calls - calls == REQUESTS - answered  # cached requests are not sent again
    again = release(config)
    usage = again["generation"]
    assert usage["cache_hits"] == answered and usage["calls"] == REQUESTS - answered
    assert usage["models"]["scripted"]["prompt_tokens"] == reference["generation"]["models"]["scripted"]["prompt_tokens"]
    assert {k: again[k] for k in ("shards", "rejects", "stages")} == {k: reference[k] for k in ("shards", "rejects", "stages")}
