"""Generators as stages of `sluice run`: seeds are inputs, generator stages make rows through the run's LLM
client, a re-run is free, a killed run resumes with only the missing calls, and the release records the tokens
behind its rows (fresh calls and cached answers apart); the embedded local model answers a few small requests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT
from fault_server import FaultServer
from test_generate_operators import held_out, scripted


def write_config(tmp_path: Path, seeds: list[dict], stages: list[dict], endpoint: dict | None, **extra) -> Path:
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(s) + "\n" for s in seeds))
    config = {"dataset": "gen", "inputs": [{"path": "seeds.jsonl", "fields": {"instruction": "instruction"},
                                            "on_error": "skip", "max_reject_share": 0.5}],
              "stages": stages, "release": {"dir": "releases"}} | extra
    if endpoint is not None:
        config["endpoint"] = endpoint
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def manifest(tmp_path: Path, version: str) -> dict:
    return json.loads((tmp_path / "releases" / "gen" / version / "manifest.json").read_text())


def test_generator_stages_release_rows_with_their_books_and_cost(tmp_path, sluice, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_KEY", "sk-very-secret-123")
    seeds = [{"instruction": text} for text in held_out(3)] + [{"instruction": "broken [500]"}, {"instruction": ""}]
    with FaultServer(scripted) as server:
        endpoint = {"base_url": server.url, "model": "scripted", "api_key_env": "SLUICE_TEST_KEY", "max_retries": 1,
                    "backoff_s": 0.01, "prices": {"scripted": {"prompt": 0.5, "completion": 1.5}}}
        config = write_config(tmp_path, seeds, [{"op": "responses", "samples": 2}, {"op": "judge"},
                                                {"op": "judge_filter", "min_score": 3},
                                                {"op": "exact_dedup", "fields": ["instruction", "output"]}], endpoint)
        code, stdout, stderr = sluice("run", config, "--no-prefect")
        assert code == 0, stderr
        calls = server.calls
        code, again, stderr = sluice("run", config, "--no-prefect", "--force")  # (unchanged: publishes only forced)
        assert code == 0, stderr
        assert server.calls == calls + 4  # only the failing requests (2 samples x 2 attempts) again
    first, second = manifest(tmp_path, "v0001"), manifest(tmp_path, "v0002")
    stages = {s["stage"]: s for s in second["stages"]}
    # books: a generator uses its seeds up and adds every candidate it made; each one is kept or rejected
    assert stages["read"]["dropped"] == {"read:empty_field": 1}
    books = {k: v for k, v in stages["responses"].items() if k in ("rows_in", "rows_out", "consumed", "added", "dropped")}
    assert books == {"rows_in": 4, "rows_out": 6, "consumed": 4, "added": 8, "dropped": {"responses:failed_server_error": 2}}
    rows = pl.read_parquet(tmp_path / "releases" / "gen" / "v0002" / "data" / "*.parquet")
    assert len(rows) == second["rows"] == stages["exact_dedup"]["rows_out"] and rows["score_judge_accuracy"].min() >= 3
    assert set(rows["gen_model"]) == {"scripted"} and rows["id"].n_unique() == len(rows)
    # what the rows cost: the same tokens both times; fresh the first time, from the cache the second
    used, reused = first["generation"], second["generation"]
    model, again_model = used["models"]["scripted"], reused["models"]["scripted"]
    assert model["requests"] == 12 and model["fresh_requests"] == 12 and model["cached_requests"] == 0
    assert again_model["prompt_tokens"] == model["prompt_tokens"] > 0 and again_model["cached_requests"] == 12
    assert again_model["fresh_requests"] == 0 and reused["cost"] == used["cost"] > 0 and reused["fresh_cost"] == 0
    assert used["failures"] == {"server_error": 2} and reused["calls"] == 4
    assert used["endpoint"] == {"base_url": server.url, "model": "scripted", "local": False}
    assert "shard results reused" in again
    # the card shows them
    card = (tmp_path / "releases" / "gen" / "v0002" / "README.md").read_text()
    assert "## Generation" in card and "cached_prompt_tokens" in card


def test_a_generator_runs_once_over_all_seeds_unless_its_rows_depend_on_one_seed_each(tmp_path, sluice):
    seeds = [{"id": f"s{k}", "instruction": text} for k, text in enumerate(held_out(30))]
    with FaultServer(scripted) as server:
        config = write_config(tmp_path, seeds, [{"op": "self_instruct", "num_instructions": 4, "request_batch_size": 2,
                                                 "max_rounds": 2, "instances": False}, {"op": "responses"}],
                              {"base_url": server.url, "model": "scripted"}, shard_rows=10)
        code, stdout, stderr = sluice("run", config, "--no-prefect")
    assert code == 0, stderr
    stages = {s["stage"]: s for s in manifest(tmp_path, "v0001")["stages"]}
    assert stages["self_instruct"]["consumed"] == 30  # one task over the 3 seed shards: it samples the whole pool
    made = stages["self_instruct"]["rows_out"]
    assert 4 <= made and stages["responses"]["rows_in"] == made and stages["responses"]["rows_out"] == made


def test_a_killed_run_resumes_with_only_the_calls_it_had_not_finished(tmp_path, sluice):
    seeds = [{"instruction": f"question {k} [slow@0.4]"} for k in range(16)]
    with FaultServer() as server:
        endpoint = {"base_url": server.url, "model": "m", "max_concurrency": 2, "timeout_s": 30}
        config = write_config(tmp_path, seeds, [{"op": "responses"}], endpoint)
        job = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config), "--no-prefect"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        cache = tmp_path / "releases" / "gen" / "llm-cache.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _cached(cache) < 4:
            time.sleep(0.1)
        job.send_signal(signal.SIGKILL)
        job.wait()
        done = _cached(cache)
        assert 4 <= done < 16 and not (tmp_path / "releases" / "gen" / "v0001").exists()
        before = server.calls
        code, stdout, stderr = sluice("run", config, "--no-prefect")
        assert code == 0, stderr
        assert server.calls - before == 16 - done
    usage = manifest(tmp_path, "v0001")["generation"]["models"]["m"]
    assert usage["cached_requests"] == done and usage["fresh_requests"] == 16 - done
    assert manifest(tmp_path, "v0001")["rows"] == 16


def _cached(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.skipif(bool(os.environ.get("SLUICE_SKIP_LOCAL_MODEL")), reason="SLUICE_SKIP_LOCAL_MODEL set")
def test_embedded_model_starts_answers_and_stops(tmp_path, sluice, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    seeds = [{"instruction": "Name a primary colour."}, {"instruction": "Say hello in French."}]
    # 12 tokens may cut every answer off: an empty release is allowed here, the books are what is checked
    config = write_config(tmp_path, seeds, [{"op": "responses", "max_tokens": 12, "temperature": 0}], None,
                          release={"dir": "releases", "allow_empty": True})
    code, stdout, stderr = sluice("run", config, "--no-prefect")
    assert code == 0, stderr
    assert "starting the embedded model" in stdout
    gen = manifest(tmp_path, "v0001")["generation"]
    assert gen["endpoint"]["local"] is True and gen["endpoint"]["model"] == "SmolLM2-135M-Instruct-Q4_1"
    usage = gen["models"]["SmolLM2-135M-Instruct-Q4_1"]
    assert usage["fresh_requests"] == 2 and usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    # every seed is answered or rejected with a typed failure (12 tokens may cut an answer off)
    stage = manifest(tmp_path, "v0001")["stages"][1]
    assert stage["rows_out"] + sum(stage["dropped"].values()) == 2
    assert set(stage["dropped"]) <= {"responses:failed_truncated"}
    # the answers are cached under a stable identity (the port changes every run): a re-run starts no server
    code, stdout, stderr = sluice("run", config, "--no-prefect", "--force")
    assert code == 0, stderr
    assert "starting the embedded model" not in stdout
    again = manifest(tmp_path, "v0002")["generation"]
    assert again["models"]["SmolLM2-135M-Instruct-Q4_1"]["cached_requests"] == 2 and again["calls"] == 0
