"""A shard task that the driver has just looked up in the cache (and found nothing for) does not ask the cache
again: on an object store that was a request per task (~60 of a 1M-row run's ~600 on loopback S3). A retry
asks again, so the entry its failed first attempt made is reused, not made twice."""

from __future__ import annotations

import polars as pl

from operators.base import DETAIL, REASON, Split
from pipelines.cache import ShardCache
from pipelines.engine import Job, Part, map_cached, map_local
from test_flow import prefect_api  # noqa: F401  (one Prefect API for the module)

made: list[str] = []  # the batches a task computed, by their first id


def keep_all(batch: pl.DataFrame) -> Split:
    made.append(batch["id"][0])
    return Split(batch, pl.DataFrame(schema={"id": pl.String, REASON: pl.String, DETAIL: pl.String}))


def _jobs(n: int) -> list[Job]:
    return [Job(Part(2, pl.DataFrame({"id": [f"{i}a", f"{i}b"], "text": ["one", "two"]})), f"key{i}", f"s{i}")
            for i in range(n)]


def test_the_tasks_of_a_stage_do_not_ask_the_cache_the_driver_just_asked(s3, monkeypatch):
    cache, asked = ShardCache(s3.url("cache")), []
    files = ShardCache.files
    monkeypatch.setattr(ShardCache, "files", lambda self, key: asked.append(key) or files(self, key))
    made.clear()
    first = map_cached(map_local, keep_all, _jobs(3), "keep", cache)
    assert [reused for _, reused in first] == [False] * 3 and made == ["0a", "1a", "2a"]
    assert asked == []  # the driver asked once for all three (ShardCache.lookup), the tasks not again
    again = map_cached(map_local, keep_all, _jobs(3), "keep", cache)
    assert [reused for _, reused in again] == [True] * 3 and len(made) == 3
    assert [result.kept.load().to_dicts() for result, _ in again] == [job.part.frame.to_dicts() for job in _jobs(3)]


def test_a_retried_task_asks_the_cache_again(prefect_api, tmp_path, monkeypatch):  # noqa: F811
    """The first attempt stores its entry, then fails with an I/O error (a lost answer); Prefect's retry finds
    the entry instead of computing the shard a second time."""
    from prefect import flow

    from pipelines.executors import PrefectThreads

    cache = ShardCache(tmp_path / "cache")
    monkeypatch.setenv("SLUICE_FAIL_AT", "cache.put:1:EIO")
    made.clear()

    @flow
    def stage() -> list:
        return map_cached(PrefectThreads().map, keep_all, _jobs(1), "keep", cache)

    [(result, reused)] = stage()
    assert made == ["0a"] and reused and result.kept.rows == 2


def test_a_stage_looks_up_only_the_shards_made_from_cached_ones(tmp_path, monkeypatch, write_config):
    """A shard result this run made has nothing made from it in the cache yet, so the next stage does not look
    its key up (on an object store, a request per shard on the way from one stage to the next). A fresh run
    looks up only its reads (and the decision); a resume everything; a run with one of two inputs changed
    only what was made from the other's cached shards. The rows are the same as without a cache every time."""
    from conftest import GSM8K
    from pipelines import config
    from pipelines.engine import execute

    lines = GSM8K.read_text().splitlines()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(lines[:300]) + "\n")
    b.write_text("\n".join(lines[300:600]) + "\n")
    stages = [{"op": "normalize"}, {"op": "length_filter", "min_words": 30}, {"op": "exact_dedup"}]
    inputs = [{"path": str(path), "fields": {"text": "question"}} for path in (a, b)]
    pipeline = config.load(write_config(inputs, stages, shard_rows=100))
    cache, asked = ShardCache(tmp_path / "cache"), []
    lookup = ShardCache.lookup
    monkeypatch.setattr(ShardCache, "lookup", lambda self, keys: asked.append(len(keys)) or lookup(self, keys))

    def run() -> tuple[list[int], list[dict]]:
        asked.clear()
        rows = pl.concat([p.load() for p in execute(pipeline, cache=cache).parts]).to_dicts()
        assert rows == pl.concat([p.load() for p in execute(pipeline).parts]).to_dicts()
        return [n for n in asked if n], rows

    looked, first = run()
    assert looked == [6, 1]  # the 6 read tasks, the decision: no shard of the stages after the read
    looked, again = run()
    assert looked == [6, 6, 6, 1, 6] and again == first  # reads, normalize+length, index, decision, apply
    b.write_text("\n".join(lines[600:900]) + "\n")
    looked, _ = run()
    assert looked == [6, 3, 3, 1, 3]  # only what was made from a's (cached) shards
