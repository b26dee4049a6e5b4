"""Determinism beyond Prefect vs plain vs Dask (tests/test_flow.py): the same config and inputs give
byte-identical releases whatever the number of workers and whatever order shard tasks finish in, and a
generation job gives byte-identical rows at any request concurrency."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import ALPACA
from fault_server import FaultServer
from pipelines import config
from pipelines.engine import call_cached
from pipelines.flow import _run

STAGES = [{"op": "normalize", "fields": ["instruction", "output"]},
          {"op": "length_filter", "field": "output", "min_words": 3},
          {"op": "exact_dedup", "fields": ["instruction", "output"]},
          {"op": "minhash_dedup", "fields": ["instruction", "output"]}]


def threaded_map(workers: int, seed: int):
    """A map_fn like the Prefect thread-pool runner's, submitting shards in a shuffled order."""

    def map_fn(fn, jobs, label, cache=None, inline=False, **kwargs):
        order = list(range(len(jobs)))
        random.Random(f"{seed}{label}").shuffle(order)
        with ThreadPoolExecutor(workers) as pool:
            futures = {i: pool.submit(call_cached, fn, jobs[i], cache, **kwargs) for i in order}
            return [futures[i].result() for i in range(len(jobs))]

    return map_fn


@pytest.fixture(scope="module")
def alpaca_with_copies(tmp_path_factory, alpaca) -> Path:
    """3,000 Alpaca rows plus 600 exact and near copies of them, interleaved."""
    rng = random.Random(3)
    rows = alpaca[:3000]
    copies = [dict(r, output=r["output"] + rng.choice(["", " Indeed.", " That is all."])) for r in rng.sample(rows, 600)]
    mixed = rows + copies
    rng.shuffle(mixed)
    path = tmp_path_factory.mktemp("input") / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed))
    return path


def release_bytes(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    return {"shards": [s["sha256"] for s in m["shards"]], "rejects": [s["sha256"] for s in m["rejects"]],
            "stages": [{k: v for k, v in s.items() if not k.endswith("_seconds")} for s in m["stages"]]}


def test_release_is_identical_with_1_and_4_workers_in_any_completion_order(tmp_path, alpaca_with_copies):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": "alpaca", "shard_rows": 250, "stages": STAGES,
        "inputs": [{"path": str(alpaca_with_copies), "fields": {"instruction": "instruction", "output": "output"},
                    "optional": ["output"]}]}))
    pipeline = config.load(cfg)
    releases = {}
    for workers, seed in ((1, 0), (4, 1)):
        folder, outcome = _run(pipeline, tmp_path / f"w{workers}", threaded_map(workers, seed))
        assert outcome.reused == 0 and len(outcome.names) == 15
        releases[workers] = release_bytes(folder)
    assert releases[1] == releases[4]
    dropped = {s["stage"]: sum(s["dropped"].values()) for s in releases[1]["stages"]}
    assert dropped["exact_dedup"] > 0 and dropped["minhash_dedup"] > 0  # the global stages had work to order


def test_generated_rows_are_identical_at_any_request_concurrency(tmp_path, sluice):
    seeds = [{"instruction": f"say something about the number {k} [slow@0.0{k % 4}]"} for k in range(12)]
    outputs = []
    with FaultServer() as server:
        for concurrency in (1, 8):
            folder = tmp_path / f"c{concurrency}"
            folder.mkdir()
            (folder / "seeds.jsonl").write_text("".join(json.dumps(s) + "\n" for s in seeds))
            (folder / "gen.yaml").write_text(yaml.safe_dump({
                "dataset": "gen", "endpoint": {"base_url": server.url, "model": "m", "max_concurrency": concurrency},
                "inputs": [{"path": "seeds.jsonl", "fields": {"instruction": "instruction"}}],
                "stages": [{"op": "responses", "samples": 2}], "release": {"dir": "releases"}}))
            code, _, stderr = sluice("run", folder / "gen.yaml", "--no-prefect")
            assert code == 0, stderr
            outputs.append(release_bytes(folder / "releases" / "gen" / "v0001")["shards"])
        assert server.max_in_flight > 1  # the second run really had requests in flight together
    assert outputs[0] == outputs[1]
