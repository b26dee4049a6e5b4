"""`sluice run --runner dask --dask-address ADDRESS` on a cluster as on separate machines (tests/cluster.py: a
scheduler and two workers as separate processes with their own working directories), the input and the
release on S3 (moto's server on loopback, tests/s3server.py): the object store is all the processes share.
The release is byte for byte the in-process run's on local disk, the workers start no Prefect server of their
own, and a worker killed mid-run costs a retry, not the run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cluster import Cluster
from conftest import SHARED, threads_left
from pipelines import config, storage
from pipelines.flow import run_pipeline
from test_flow import prefect_api  # noqa: F401  (one Prefect API for the module)

MMLU = SHARED / "benchmarks" / "mmlu_test" / "mmlu_test_56subjects.jsonl"  # 12,508 real questions, 56 subjects
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 8}, {"op": "exact_dedup"},
          {"op": "minhash_dedup"}]


@pytest.fixture
def pipeline(write_config):
    """The pipeline over MMLU on local disk."""
    return config.load(write_config([{"path": str(MMLU), "fields": {"text": "question"}}], STAGES, shard_rows=3200))


@pytest.fixture
def on_s3(s3, write_config):
    """The same pipeline with its input uploaded to the test's bucket and its release there too."""
    storage.upload(MMLU, s3.url("inputs", MMLU.name))
    return config.load(write_config([{"path": s3.url("inputs", MMLU.name), "fields": {"text": "question"}}], STAGES,
                                    name="s3.yaml", shard_rows=3200, release={"dir": s3.url("releases")}))


def _manifest(folder: storage.Location) -> dict:
    return json.loads(storage.read_text(storage.join(folder, "manifest.json")))


def _shards(folder: storage.Location) -> list[str]:
    return [s["sha256"] for s in _manifest(folder)["shards"]]


def _books(folder: storage.Location) -> list[dict]:
    return [{k: v for k, v in s.items() if not k.endswith("_seconds")} for s in _manifest(folder)["stages"]]


def _commands(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return found


def test_a_cluster_sharing_only_s3_gives_the_local_release_though_a_worker_dies(prefect_api, pipeline, on_s3, s3,
                                                                               tmp_path):
    """Worker 0 stops inside its second task (after storing the result, before returning it) and is killed
    there with its nanny, as if its machine went away: the scheduler gives the task to worker 1, which finds
    the stored result; the release on S3 is byte for byte the in-process run's on local disk."""
    paused = tmp_path / "paused"
    local, _ = run_pipeline(pipeline, root=tmp_path / "local", use_prefect=False)
    with Cluster(workers=2, env=s3.env, worker_env={0: {"SLUICE_PAUSE_AT": f"cache.put:2:{paused}"}}) as cluster:

        def kill_when_paused() -> None:
            deadline = time.monotonic() + 300
            while not paused.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            cluster.kill(0)

        killer = threading.Thread(target=kill_when_paused, daemon=True)
        killer.start()
        remote, outcome = run_pipeline(on_s3, runner="dask", dask_address=cluster.address)
        commands = _commands(cluster.pids())
        killer.join(timeout=60)
        assert paused.exists() and cluster.processes["worker-0"].poll() is not None
        assert cluster.processes["worker-1"].poll() is None
    assert str(remote).startswith(f"s3://{s3.bucket}/releases/")
    assert outcome.reused == 1 and outcome.computed > 10  # the killed worker's task ran again, on the other worker
    assert _shards(remote) == _shards(local) and len(_shards(local)) >= 1
    assert _books(remote) == _books(local)
    dropped = {s["stage"]: sum(s["dropped"].values()) for s in _books(local)}
    assert dropped["exact_dedup"] > 0 and dropped["minhash_dedup"] > 0  # both global stages had work to do
    # the workers ran plain functions: none of them started a Prefect API server of its own
    assert sum("dask worker" in c for c in commands) == 1
    assert not [c for c in commands if "prefect" in c], commands


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


def test_the_scheduler_imports_the_task_code_when_the_run_connects():
    """A Dask scheduler unpickles every task graph it is sent, so the first one (the read stage's) waited
    1.5-2 s for the scheduler to import the code its calls name. The run has it imported when it connects,
    while the driver waits for Prefect's API, before any graph is sent."""
    from pipelines.executors import PrefectDask

    def imported() -> bool:
        return executor.client.run_on_scheduler(lambda: {"pipelines.reading", "operators"} <= set(__import__("sys").modules))

    with Cluster(workers=1, preload=False) as cluster:  # a cluster started without pipelines.preload
        executor = PrefectDask(cluster.address)
        with executor.session():
            deadline = time.monotonic() + 30
            while not imported():
                assert time.monotonic() < deadline, "the scheduler has not imported the task code"
                time.sleep(0.1)


def test_a_scheduler_that_cannot_import_sluice_is_named_in_the_run_s_log(caplog, tmp_path):
    """The scheduler's warm-up never stops a run, but a scheduler started where Sluice is not installed (its
    graphs would fail to load) is said, with its address, in the run's log (Prefect's, under `sluice run`)."""
    from pipelines.executors import PrefectDask

    (tmp_path / "operators").mkdir()  # first on the scheduler's path: Sluice's code does not import there
    (tmp_path / "operators" / "__init__.py").write_text("raise ImportError('not the Sluice of this run')\n")
    from cluster import ROOT

    with Cluster(workers=1, env={"PYTHONPATH": str(tmp_path)}, worker_env={0: {"PYTHONPATH": str(ROOT)}},
                 preload=False) as cluster, \
            caplog.at_level("WARNING"):
        executor = PrefectDask(cluster.address)
        with executor.session():
            deadline = time.monotonic() + 30
            while "could not import Sluice's code" not in caplog.text:
                assert time.monotonic() < deadline, "no warning about the scheduler"
                time.sleep(0.1)
    assert cluster.address in caplog.text and "not the Sluice of this run" in caplog.text


def test_the_scheduler_warm_up_of_a_session_that_ended_first_says_nothing(caplog):
    """A run that stops before the scheduler answers (bad input found at once) closes its client: the warm-up's
    call then fails, and that is no news about the scheduler (it printed a false warning beside the user's error)."""
    from pipelines.executors import PrefectDask

    class Closed:  # a client whose connection is gone
        def run_on_scheduler(self, fn):
            raise OSError("the client is closed")

    executor = PrefectDask("tcp://127.0.0.1:8786")
    with caplog.at_level("WARNING"):
        executor.client = None  # the session has ended
        executor._warm_scheduler(Closed())
        assert "could not import" not in caplog.text
        executor.client = client = Closed()  # still open: the failure is the scheduler's
        executor._warm_scheduler(client)
        assert "could not import" in caplog.text


def test_every_worker_fetches_the_first_input_it_reads_spans_of_while_the_run_starts(s3):
    """A worker's first read task of an input at a URL read as spans (Parquet, plain JSONL) used to start with
    downloading the whole object: each worker now fetches it while the driver waits for Prefect's API, and the
    driver fetches the JSONL inputs it plans spans of."""
    from pipelines.executors import PrefectDask
    from pipelines.readers import Source

    url = s3.url("inputs", MMLU.name)
    storage.upload(MMLU, url)
    size = MMLU.stat().st_size

    def copies() -> list[int]:  # the sizes of the input copies a worker fetched (storage.local_copy)
        from pipelines import storage as store

        return sorted(p.stat().st_size for p in Path(store._fetched[0]).rglob("*") if p.is_file()) if store._fetched else []

    with Cluster(workers=2, env=s3.env) as cluster:
        executor = PrefectDask(cluster.address)
        with executor.session((Source(url, "jsonl"),)):
            deadline = time.monotonic() + 60
            while not all(sizes == [size] for sizes in executor.client.run(copies).values()):
                assert time.monotonic() < deadline, "the workers have not fetched the input"
                time.sleep(0.2)
            fetched = executor.client.run(copies)
            assert len(fetched) == 2
            while not storage._copy_of(url, storage.object_version(url)).is_file():  # the driver plans its spans
                assert time.monotonic() < deadline, "the driver has not fetched the JSONL input"
                time.sleep(0.2)


def test_which_inputs_are_fetched_ahead(tmp_path):
    """Only the first input at a URL read as spans goes to every worker (ahead, a later single-span file would
    be copied to every worker, and the tasks fetch later inputs anyway), never a local file or a compressed
    JSONL (read whole by one task); the driver fetches every plain JSONL at a URL (it plans their spans)."""
    from pipelines.executors import first_spans, spans_planned
    from pipelines.readers import Source

    inputs = (Source("s3://b/whole.jsonl.gz", "jsonl"), Source(tmp_path / "local.parquet", "parquet"),
              Source("s3://b/first.parquet", "parquet"), Source("s3://b/later.jsonl", "jsonl"),
              Source("s3://b/last.parquet", "parquet"))
    assert first_spans(inputs) == ("s3://b/first.parquet",)
    assert spans_planned(inputs) == ("s3://b/later.jsonl",)
    assert first_spans(inputs[:2]) == spans_planned(inputs[:3]) == ()


def test_a_run_on_threads_fetches_its_first_input_at_a_url_while_prefect_s_api_starts(s3):
    from pipelines.executors import PrefectThreads
    from pipelines.readers import Source

    url = s3.url("inputs", "first.parquet")
    storage.upload(MMLU, url)  # the bytes are all that matter here
    with PrefectThreads().session((Source(url, "parquet"),)):
        deadline = time.monotonic() + 30
        while not storage._copy_of(url, storage.object_version(url)).is_file():
            assert time.monotonic() < deadline, "the input was not fetched"
            time.sleep(0.1)
    assert storage._copy_of(url, storage.object_version(url)).read_bytes() == MMLU.read_bytes()


def test_a_cluster_started_with_sluice_s_preload_has_its_code_and_s3_client_before_any_run(s3):
    """`dask scheduler/worker --preload pipelines.preload` (as README starts them): the processes import the task
    code, and a worker set up for S3 builds its S3 client, when they start, so a run pays neither. A preloaded
    worker reuses the memory of the multi-MB buffers it frees (executors.reuse_buffers): under Dask's nanny
    (MALLOC_TRIM_THRESHOLD_=65536) each one otherwise costs a new mapping, a page fault per 4 KiB page."""
    from distributed import Client

    def warmed() -> tuple[bool, bool]:  # task code imported, an S3 client built (storage's client cache)
        import sys

        imported = "pipelines.reading" in sys.modules
        from pipelines import storage as store

        return imported, store._filesystem.cache_info().currsize > 0

    def faults() -> int:  # page faults of 20 buffers of 8 MiB made and freed in turn (a file's bytes, a body)
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            buffer = b"x" * (8 << 20)
            del buffer
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with Cluster(workers=1, env=s3.env) as cluster, Client(cluster.address) as client:
        assert client.run_on_scheduler(lambda: "pipelines.reading" in __import__("sys").modules)
        assert list(client.run(warmed).values()) == [(True, True)]
        reused = list(client.run(faults).values())[0]
    with Cluster(workers=1, env=s3.env, preload=False) as cluster, Client(cluster.address) as client:
        assert not client.run_on_scheduler(lambda: "pipelines.reading" in __import__("sys").modules)
        assert list(client.run(warmed).values()) == [(False, False)]
        mapped = list(client.run(faults).values())[0]
    assert mapped > 20 * 2048 * 0.9 and reused < 20 * 2048 * 0.1, (mapped, reused)  # 2048 pages in 8 MiB


def test_an_input_bigger_than_the_fetch_ahead_limit_is_left_to_its_tasks(s3, monkeypatch):
    """The fetch for the first read tasks is a guess made before the read is planned (a run whose reads are all
    cached needs no copy), so it is bounded: an object over executors.FETCH_AHEAD bytes is not fetched ahead.
    The planner's copy of a plain JSONL input is fetched at any size: the planner reads it on every run."""
    from pipelines import executors
    from pipelines.readers import Source

    guessed, planned = s3.url("inputs", "big.parquet"), s3.url("inputs", "big.jsonl")
    storage.upload(MMLU, guessed)  # the bytes are all that matter here
    storage.upload(MMLU, planned)
    inputs = (Source(guessed, "parquet"), Source(planned, "jsonl"))
    fetched = []
    monkeypatch.setattr(storage, "local_copy", lambda *args: fetched.append(args))

    def fetches(limit: int) -> set:
        fetched.clear()
        monkeypatch.setattr(executors, "FETCH_AHEAD", limit)
        with executors.PrefectThreads().session(inputs):
            assert not threads_left("fetch-ahead", 30), "the fetch did not end"
        return {url for url, _ in fetched}

    assert fetches(MMLU.stat().st_size - 1) == {planned}
    assert fetches(MMLU.stat().st_size) == {planned, guessed}
    assert sorted(fetched) == sorted((url, storage.object_version(url)) for url in (guessed, planned))


def test_a_big_stage_parameter_goes_to_every_worker_once():
    """A global stage's decision (a parameter over SHIP_ONCE pickled bytes) is sent to every worker at once: on
    one worker only, Dask queued the tasks that need it there (14 of a stage's 20 tasks on one of 2 workers)."""
    from distributed import Client

    from pipelines.executors import SHIP_ONCE, ship

    with Cluster(workers=2) as cluster, Client(cluster.address) as client:
        shipped = ship(client, {"stage": "exact_dedup", "decision": b"x" * (SHIP_ONCE + 1)})
        assert list(shipped) == ["decision"]
        [(key, holders)] = client.who_has(list(shipped.values())).items()
        assert sorted(holders) == sorted(client.nthreads())
        assert client.gather(shipped["decision"]) == b"x" * (SHIP_ONCE + 1)


def test_stage_parameters_shipped_to_the_workers_give_the_local_release(prefect_api, pipeline, tmp_path,
                                                                       monkeypatch):
    """Every stage parameter shipped as a future (SHIP_ONCE 0: at this size only a decision over 1 MB is) reaches
    the tasks as its value: the same release as a run in one process."""
    from pipelines import executors

    local, _ = run_pipeline(pipeline, root=tmp_path / "local", use_prefect=False)
    monkeypatch.setattr(executors, "SHIP_ONCE", 0)
    with Cluster(workers=2) as cluster:
        shipped, _ = run_pipeline(pipeline, root=tmp_path / "cluster", runner="dask", dask_address=cluster.address)
    assert _shards(shipped) == _shards(local) and _books(shipped) == _books(local)


def test_jobs_go_to_the_workers_that_keep_their_inputs_taking_each_worker_in_turn():
    from pipelines.executors import interleaved

    assert interleaved(["a", "a", "a", "b", None, "b"]) == [0, 3, 4, 1, 5, 2]
    assert interleaved([None, None]) == [0, 1] and interleaved([]) == []


def test_a_stage_s_task_runs_where_its_input_was_written_and_reads_it_from_there(prefect_api, s3, write_config,
                                                                                  tmp_path):
    """Each shard task goes to the worker that wrote its input and keeps a copy of it (Part.kept_by): the run
    reads far fewer bytes of the cache's files from the bucket than it writes (every file but the decision was
    read at least once before), and gives the release of a run in one process."""
    stages = STAGES[:3]  # (minhash_dedup's decide tasks each read their bands' columns of every shard's index)
    local, _ = run_pipeline(config.load(write_config([{"path": str(MMLU), "fields": {"text": "question"}}], stages,
                                                     shard_rows=3200)), root=tmp_path / "local", use_prefect=False)
    storage.upload(MMLU, s3.url("inputs", MMLU.name))
    on_s3 = config.load(write_config([{"path": s3.url("inputs", MMLU.name), "fields": {"text": "question"}}], stages,
                                     name="s3.yaml", shard_rows=3200, release={"dir": s3.url("releases")}))
    with s3.faults(every=10**9) as proxy, Cluster(workers=2, env=s3.env) as cluster:
        remote, _ = run_pipeline(on_s3, runner="dask", dask_address=cluster.address)
    sent = {"PUT": 0, "GET": 0}  # bytes of the cache's files written and read
    for method, path, up, down in proxy.exchanges:
        if "/.cache/" in path and path.split("?")[0].endswith(".parquet") and method in sent:
            sent[method] += up + down
    assert sent["GET"] < sent["PUT"] / 2, sent  # was 1.4x the PUTs; now ~1/3 (the decide reads every index part)
    assert _shards(remote) == _shards(local) and _books(remote) == _books(local)
