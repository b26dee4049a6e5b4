"""`sluice run` as a Prefect flow: per-shard tasks, the same release as the in-process engine."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import ROOT
from pipelines import config
from pipelines.flow import PREFECT_DEFAULTS, run_pipeline


@pytest.fixture(scope="module")
def prefect_api():
    import os

    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _books(manifest: dict) -> list[dict]:
    """The stages' row accounting, without their seconds (which differ from run to run)."""
    return [{k: v for k, v in s.items() if k not in ("wall_seconds", "cpu_seconds")} for s in manifest["stages"]]


def test_prefect_flow_matches_in_process_run(prefect_api, write_config):
    cfg = write_config([{"path": str(ROOT / "data/web/redpajama/*.jsonl"), "fields": {"text": "text"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 50}, {"op": "exact_dedup"}],
                       shard_rows=4)
    pipeline = config.load(cfg)
    with_prefect, outcome = run_pipeline(pipeline, use_prefect=True)
    plain, fresh = run_pipeline(pipeline, root=pipeline.release_dir / "plain", use_prefect=False)
    assert fresh.reused == 0
    m1, m2 = (json.loads((f / "manifest.json").read_text()) for f in (with_prefect, plain))
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert _books(m1) == _books(m2)

    from prefect.client.orchestration import get_client

    async def task_names() -> set[str]:
        async with get_client() as client:
            return {t.name for t in await client.read_task_runs()}

    shards = len(outcome.names)
    assert outcome.names[0] == "redpajama-c4-refined.jsonl#00000"
    # the consecutive row-local stages run as one task per shard (which also indexes its rows for the dedup)
    expected = {f"{stage}[{name}]" for name in outcome.names
                for stage in ("normalize+length_filter", "exact_dedup.apply")}
    deadline = time.monotonic() + 60
    while not expected <= (names := asyncio.run(task_names())) and time.monotonic() < deadline:
        time.sleep(0.5)  # the API records task runs from events, a moment after they finish
    assert shards == 15 and expected <= names


def test_dask_runner_gives_the_same_release(prefect_api, write_config, tmp_path):
    cfg = write_config([{"path": str(ROOT / "data/web/dolma/*.jsonl"), "fields": {"text": "text"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 50}, {"op": "exact_dedup"}],
                       shard_rows=5)
    pipeline = config.load(cfg)
    on_dask, outcome = run_pipeline(pipeline, root=tmp_path / "dask", runner="dask")
    local, _ = run_pipeline(pipeline, root=tmp_path / "local", use_prefect=False)
    assert outcome.computed > 0 and outcome.reused == 0
    m1, m2 = (json.loads((f / "manifest.json").read_text()) for f in (on_dask, local))
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert _books(m1) == _books(m2)


def test_generator_stages_run_as_prefect_tasks(prefect_api, tmp_path):
    from fault_server import FaultServer
    from test_generate_operators import held_out, scripted

    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps({"instruction": t}) + "\n" for t in held_out(4)))
    with FaultServer(scripted) as server:
        cfg = tmp_path / "gen.yaml"
        cfg.write_text(json.dumps({"dataset": "gen", "shard_rows": 2, "endpoint": {"base_url": server.url, "model": "s"},
                                   "inputs": [{"path": "seeds.jsonl"}], "stages": [{"op": "responses"}, {"op": "judge"}],
                                   "release": {"dir": "releases"}}))
        folder, outcome = run_pipeline(config.load(cfg), use_prefect=True)
    m = json.loads((folder / "manifest.json").read_text())
    assert m["rows"] == 4 and m["generation"]["models"]["s"]["fresh_requests"] == 8
    assert [s["stage"] for s in m["stages"]] == ["read", "responses", "judge"]
