"""`sluice generate CONFIG` end to end: files written, books kept, keys kept out, a killed run resumes;
and the embedded local model (a real llama.cpp server on loopback) answering a few small requests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import polars as pl
import pytest
import yaml

from conftest import ROOT
from fault_server import FaultServer
from test_generate_operators import held_out, scripted


def write_job(tmp_path, seeds: list[dict], steps: list[dict], endpoint: dict | None, name="gen.yaml") -> tuple:
    seeds_path = tmp_path / "seeds.jsonl"
    seeds_path.write_text("".join(json.dumps(s) + "\n" for s in seeds))
    config = {"seeds": {"path": "seeds.jsonl", "fields": {"instruction": "instruction"}, "on_error": "skip"}, "steps": steps,
              "output": "out/generated.parquet"}
    if endpoint is not None:
        config["endpoint"] = endpoint
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, tmp_path / "out"


def test_generate_writes_rows_rejects_failures_and_a_report_without_the_key(tmp_path, sluice, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_KEY", "sk-very-secret-123")
    seeds = [{"instruction": text} for text in held_out(3)] + [{"instruction": "broken [500]"}, {"instruction": ""}]
    with FaultServer(scripted) as server:
        endpoint = {"base_url": server.url, "model": "scripted", "api_key_env": "SLUICE_TEST_KEY", "max_retries": 1,
                    "backoff_s": 0.01, "prices": {"scripted": {"prompt": 0.5, "completion": 1.5}}}
        config, out = write_job(tmp_path, seeds, [{"op": "responses", "samples": 2}, {"op": "judge"},
                                                  {"op": "judge_filter", "min_score": 3}], endpoint)
        code, stdout, stderr = sluice("generate", config)
        assert code == 0, stderr
        first = json.loads((out / "generated.generation.json").read_text())
        calls = server.calls
        code, again, _ = sluice("generate", config)
        assert code == 0 and server.calls == calls + 4  # only the failing requests (2 samples x 2 attempts) again
    rows = pl.read_parquet(out / "generated.parquet")
    rejects = pl.read_parquet(out / "generated.rejects.parquet")
    failures = pl.read_parquet(out / "generated.failures.parquet")
    report = json.loads((out / "generated.generation.json").read_text())
    reasons = dict(rejects.group_by("reason").len().iter_rows())
    assert reasons["read:empty_field"] == 1 and reasons["responses:failed_server_error"] == 2
    assert set(reasons) <= {"read:empty_field", "responses:failed_server_error", "judge_filter:low_judge_score"}
    assert failures["kind"].to_list() == ["server_error"] * 2 and failures["attempts"].to_list() == [2, 2]
    books = {s["step"]: s for s in report["steps"]}
    assert books["responses"]["rows_in"] == 4 and books["responses"]["rows_out"] == 6
    assert books["judge_filter"]["rows_out"] == len(rows) and rows["score_judge_accuracy"].min() >= 3
    assert first["usage"]["failures"] == {"server_error": 2} and first["usage"]["cost"] > 0
    assert report["usage"]["calls"] == 4 and report["usage"]["cache_hits"] == first["usage"]["requests"] - 2
    assert report["usage"]["cost"] == 0  # this run's cost: everything else came from the cache
    assert report["endpoint"] == {"base_url": server.url, "model": "scripted", "local": False}
    assert "6 rows" not in stdout and f"wrote {len(rows)} rows" in stdout and "from cache" in again
    # The key never reaching an output is tests/test_faults_secrets.py's job (it decodes Parquet and gzip).


def test_bad_generation_configs_exit_2_naming_the_field(tmp_path, sluice):
    config, _ = write_job(tmp_path, [{"instruction": "x"}], [{"op": "exact_dedup"}, {"op": "responses", "samplez": 2}], None)
    code, _, err = sluice("generate", config)
    assert code == 2
    assert f"{config}:" in err and "steps[0].op: a generation step must be a generator" in err
    assert "steps[1].samplez: unknown field" in err


def test_a_killed_run_resumes_with_only_the_calls_it_had_not_finished(tmp_path, sluice):
    seeds = [{"instruction": f"question {k} [slow@0.4]"} for k in range(16)]
    with FaultServer() as server:
        endpoint = {"base_url": server.url, "model": "m", "max_concurrency": 2, "timeout_s": 30}
        config, out = write_job(tmp_path, seeds, [{"op": "responses"}], endpoint)
        job = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "generate", str(config)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        cache = out / "generated.cache.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _cached(cache) < 4:
            time.sleep(0.1)
        job.send_signal(signal.SIGKILL)
        job.wait()
        done = _cached(cache)
        assert 4 <= done < 16 and not (out / "generated.parquet").exists()
        before = server.calls
        code, stdout, stderr = sluice("generate", config)
        assert code == 0, stderr
        assert server.calls - before == 16 - done and f"{done:,} from cache" in stdout
    assert len(pl.read_parquet(out / "generated.parquet")) == 16


def _cached(path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.skipif(bool(os.environ.get("SLUICE_SKIP_LOCAL_MODEL")), reason="SLUICE_SKIP_LOCAL_MODEL set")
def test_embedded_model_starts_answers_and_stops(tmp_path, monkeypatch, capsys):
    from pipelines.generation import load, run_generation

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    seeds = [{"instruction": "Name a primary colour."}, {"instruction": "Say hello in French."}]
    config, out = write_job(tmp_path, seeds, [{"op": "responses", "max_tokens": 12, "temperature": 0}], None)
    outcome = run_generation(load(config))
    assert "starting the embedded model" in capsys.readouterr().out
    report = outcome.report
    assert report["endpoint"]["local"] is True and report["endpoint"]["model"] == "SmolLM2-135M-Instruct-Q4_1"
    usage = report["usage"]["models"]["SmolLM2-135M-Instruct-Q4_1"]
    assert usage["calls"] == 2 and usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    # every seed is answered or rejected with a typed failure (12 tokens may cut an answer off)
    assert len(outcome.rows) + len(outcome.rejects) == 2
    assert set(outcome.rejects["reason"].to_list()) <= {"responses:failed_truncated"} if len(outcome.rejects) else True
    # the answers are cached under a stable identity (the port changes every run): a re-run starts no server
    again = run_generation(load(config))
    assert "starting the embedded model" not in capsys.readouterr().out
    assert again.report["usage"]["cache_hits"] == 2 and again.report["usage"]["calls"] == 0

