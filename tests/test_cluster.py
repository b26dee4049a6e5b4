"""`sluice run --runner dask --dask-address ADDRESS` on a cluster as on separate machines (tests/cluster.py: a
scheduler and two workers as separate processes with their own working directories): the release is byte for
byte the in-process run's, the workers start no Prefect server of their own, and a worker killed mid-run
costs a retry, not the run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cluster import Cluster
from conftest import SHARED
from pipelines import config
from pipelines.flow import run_pipeline
from test_flow import prefect_api  # noqa: F401  (one Prefect API for the module)

MMLU = SHARED / "benchmarks" / "mmlu_test" / "mmlu_test_56subjects.jsonl"  # 12,508 real questions, 56 subjects
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 8}, {"op": "exact_dedup"},
          {"op": "minhash_dedup"}]


@pytest.fixture
def pipeline(write_config):
    return config.load(write_config([{"path": str(MMLU), "fields": {"text": "question"}}], STAGES, shard_rows=1500))


def _shards(folder: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]


def _books(folder: Path) -> list[dict]:
    stages = json.loads((folder / "manifest.json").read_text())["stages"]
    return [{k: v for k, v in s.items() if not k.endswith("_seconds")} for s in stages]


def _commands(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return found


def test_a_cluster_of_separate_processes_gives_the_local_release(prefect_api, pipeline, tmp_path):
    local, _ = run_pipeline(pipeline, root=tmp_path / "local", use_prefect=False)
    with Cluster(workers=2) as cluster:
        remote, outcome = run_pipeline(pipeline, root=tmp_path / "cluster", runner="dask",
                                       dask_address=cluster.address)
        commands = _commands(cluster.pids())
    assert outcome.computed > 0 and outcome.reused == 0
    assert _shards(remote) == _shards(local) and len(_shards(local)) >= 1
    assert _books(remote) == _books(local)
    dropped = {s["stage"]: sum(s["dropped"].values()) for s in _books(local)}
    assert dropped["exact_dedup"] > 0 and dropped["minhash_dedup"] > 0  # both global stages had work to do
    # the workers ran plain functions: none of them started a Prefect API server of its own
    assert sum("dask worker" in c for c in commands) == 2
    assert not [c for c in commands if "prefect" in c], commands


def test_a_worker_killed_mid_run_costs_a_retry(prefect_api, pipeline, tmp_path):
    """Worker 0 stops inside its second task (after storing the result, before returning it) and is killed
    there with its nanny, as if its machine went away: the scheduler gives the task to worker 1, which finds
    the stored result, and the release is the in-process run's."""
    paused = tmp_path / "paused"
    local, _ = run_pipeline(pipeline, root=tmp_path / "local", use_prefect=False)
    with Cluster(workers=2, worker_env={0: {"SLUICE_PAUSE_AT": f"cache.put:2:{paused}"}}) as cluster:

        def kill_when_paused() -> None:
            deadline = time.monotonic() + 300
            while not paused.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            cluster.kill(0)

        killer = threading.Thread(target=kill_when_paused, daemon=True)
        killer.start()
        remote, outcome = run_pipeline(pipeline, root=tmp_path / "cluster", runner="dask",
                                       dask_address=cluster.address)
        killer.join(timeout=60)
        assert paused.exists() and cluster.processes["worker-0"].poll() is not None
        assert cluster.processes["worker-1"].poll() is None
    assert outcome.reused == 1  # the killed worker's task ran again, on the other worker
    assert _shards(remote) == _shards(local)
    assert _books(remote) == _books(local)


def test_no_scheduler_at_the_address_is_one_clear_error(prefect_api, pipeline, tmp_path):
    from operators.errors import SluiceError

    with pytest.raises(SluiceError, match="no Dask scheduler answered"):
        run_pipeline(pipeline, root=tmp_path / "cluster", runner="dask", dask_address="tcp://127.0.0.1:9")


def test_workers_that_cannot_see_a_local_cache_stop_the_run_at_once(tmp_path):
    """A cluster on other machines and a release.dir on this machine's disk: the first stage asks every worker
    whether it sees the shard cache (a probe file) and stops with what to do instead of failing per task."""
    from operators.errors import SluiceError
    from pipelines.cache import ShardCache
    from pipelines.executors import PrefectDask

    class Elsewhere:  # a client of a cluster whose worker `far` mounts nothing of ours
        def run(self, fn, path):
            return {"tcp://near:1": fn(path), "tcp://far:2": False}

    executor = PrefectDask("tcp://scheduler:8786")
    executor.client = Elsewhere()
    cache = ShardCache(tmp_path / "releases" / "test" / ".cache")
    with pytest.raises(SluiceError, match=r"workers tcp://far:2 cannot see the shard cache .*s3://"):
        executor._check_folder(cache)
    assert not list(cache.folder.iterdir())  # the probe is gone
