"""A damaged shard cache entry (a file of it deleted: its books or a data file) is a miss: its task makes it
again and the run's log names it, on local disk and on a bucket, for a read entry and for a stage entry; never a
traceback, and never a failure on every re-run."""

from __future__ import annotations

import gzip
import logging

import polars as pl
import pytest
from conftest import GSM8K

from pipelines import storage
from pipelines.cache import ShardCache
from pipelines.config import Stage
from pipelines.engine import Job, Part, call_cached, map_cached, map_local, scan, split_rows
from pipelines.readers import Source
from pipelines.reading import read_inputs

WHERE = ["local", "bucket"]


def _folder(where, request, tmp_path):
    return request.getfixturevalue("s3").url("cache") if where == "bucket" else tmp_path / "cache"


def _delete(folder, key, name):
    loc = storage.join(folder, key, name)
    if storage.is_remote(loc):
        fs, path = storage.filesystem(loc)
        fs.rm(path)
    else:
        loc.unlink()


def _rows(parts):
    return scan(parts).collect()


@pytest.mark.parametrize(("where", "name"), [("local", "0.parquet"), ("bucket", "0.parquet")],
                         ids=["local, its books deleted", "bucket, its books deleted"])
def test_a_damaged_read_entry_is_read_again(where, name, request, tmp_path, caplog):
    """(A data file deleted: test_reading's damaged read entries; on a bucket, the test after the next.)"""
    path = tmp_path / "gsm8k.jsonl.gz"
    path.write_bytes(gzip.compress(GSM8K.read_bytes()))  # one task, 5 shards: its entry has 1 + 5 x 2 files
    src = Source(path, "jsonl", {"text": "question"})
    folder = _folder(where, request, tmp_path)
    cache = ShardCache(folder)
    first = read_inputs([src], 300, cache)
    [key] = {storage.name(storage.parent(p.path)) for p in first.parts}
    _delete(folder, key, name)
    with caplog.at_level(logging.WARNING):
        again = read_inputs([src], 300, cache)
    assert (again.reused, again.computed) == (0, 1)
    assert f"the read cache entry {storage.display(storage.join(folder, key))} is damaged" in caplog.text
    assert _rows(again.parts).equals(_rows(first.parts)) and again.keys == first.keys
    third = read_inputs([src], 300, cache)  # made anew: reused
    assert (third.reused, third.computed) == (1, 0) and _rows(third.parts).equals(_rows(first.parts))


def _stage_run(cache, path="driver"):
    from operators.quality import LengthFilter

    questions = pl.read_ndjson(GSM8K).head(50).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    stage = Stage("length_filter", LengthFilter(field="question", min_words=40))
    job = Job(Part(len(questions), questions), "stagekey", "questions")
    if path == "driver":
        [(result, reused)] = map_cached(map_local, split_rows, [job], "length", cache, stage=stage)
        return result, reused
    return call_cached(split_rows, job, cache, stage=stage)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", ["0.parquet", "1.parquet"], ids=["its kept rows deleted", "its rejects deleted"])
@pytest.mark.parametrize("path", ["driver", "task"])
def test_a_damaged_stage_entry_is_made_again(where, name, path, request, tmp_path, caplog):
    """The driver's look-up (map_cached) and a task's own (call_cached, e.g. a task run again) both take a
    stage entry with a file missing for a miss, drop it and make it again."""
    folder = _folder(where, request, tmp_path)
    cache = ShardCache(folder)
    first, _ = _stage_run(cache, path)
    assert 0 < first.rejected.rows < 50
    _delete(folder, "stagekey", name)
    with caplog.at_level(logging.WARNING):
        again, reused = _stage_run(cache, path)
    assert not reused
    assert f"the stage cache entry {storage.display(storage.join(folder, 'stagekey'))} is damaged" in caplog.text
    assert _rows([again.kept]).equals(_rows([first.kept])) and _rows([again.rejected]).equals(_rows([first.rejected]))
    third, reused = _stage_run(cache, path)  # made anew: reused
    assert reused and _rows([third.kept]).equals(_rows([first.kept]))
    assert _rows([third.rejected]).equals(_rows([first.rejected]))


def test_a_bucket_read_entry_with_a_data_file_deleted_fails_once(s3, tmp_path):
    """On a bucket, an entry's look-up is one GET of its `_done` (the number of its files), and a read entry's
    data files are not read until a stage loads them: an object deleted from it is seen only then. The stage's
    task then drops the entry and says to run again (a SluiceError: no traceback), and the next run makes the
    entry again; it used to fail with the same `Missing` on every re-run."""
    from operators.errors import SluiceError
    from operators.quality import LengthFilter

    path = tmp_path / "gsm8k.jsonl.gz"
    path.write_bytes(gzip.compress(GSM8K.read_bytes()))
    src = Source(path, "jsonl", {"text": "question"})
    folder = s3.url("cache")
    cache = ShardCache(folder)
    first = read_inputs([src], 300, cache)
    [key] = {storage.name(storage.parent(p.path)) for p in first.parts}
    damaged = first.parts[1].path
    _delete(folder, key, storage.name(damaged))
    again = read_inputs([src], 300, cache)
    assert (again.reused, again.computed) == (1, 0)  # not seen yet: no request more per entry
    stage = Stage("length_filter", LengthFilter(field="question", min_words=40))
    [part] = [p for p in again.parts if p.path == damaged]
    with pytest.raises(SluiceError, match="is damaged and now removed; run again"):
        call_cached(split_rows, Job(part, "stagekey", "q"), cache, asked=True, stage=stage)
    third = read_inputs([src], 300, cache)
    assert (third.reused, third.computed) == (0, 1)
    assert _rows(third.parts).equals(_rows(first.parts)) and third.keys == first.keys


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("damage", ["cut short", "garbled footer", "garbled _done", "a _done not UTF-8"])
def test_an_entry_cut_short_or_with_a_garbled_marker_is_made_again(where, damage, request, tmp_path, caplog):
    """A file that is there but is not Parquet (half of it, a footer that does not deserialize) or a `_done`
    marker that is not a count is damage too: a miss, made again, named in the run's log (the marker was a bare
    ValueError on a bucket; a garbled footer, pyarrow's OSError, failed every run)."""
    folder = _folder(where, request, tmp_path)
    cache = ShardCache(folder)
    first, _ = _stage_run(cache)
    whole = storage.read_bytes(storage.join(folder, "stagekey", "1.parquet"))
    if damage == "cut short":
        storage.write_bytes(storage.join(folder, "stagekey", "1.parquet"), whole[:len(whole) // 2])
    elif damage == "garbled footer":  # its metadata flipped, its length and magic kept: pyarrow's OSError
        size = int.from_bytes(whole[-8:-4], "little")
        start = len(whole) - 8 - size
        garbled = whole[:start] + bytes(b ^ 0xFF for b in whole[start:-8]) + whole[-8:]
        storage.write_bytes(storage.join(folder, "stagekey", "1.parquet"), garbled)
    else:
        marker = b"two\n" if damage == "garbled _done" else b"\xff\xfe"
        storage.write_bytes(storage.join(folder, "stagekey", "_done"), marker)
    with caplog.at_level(logging.WARNING):
        again, reused = _stage_run(cache)
    assert not reused and "the stage cache entry" in caplog.text and "is damaged" in caplog.text
    assert _rows([again.rejected]).equals(_rows([first.rejected]))
    assert _stage_run(cache)[1]  # made anew: reused


@pytest.mark.parametrize("path", ["driver", "task"])
def test_a_store_that_fails_leaves_the_entry_as_it_is(s3, monkeypatch, path):
    """A read of an entry that fails after retries (a timeout, a 5xx, a 403: a StorageError other than Missing)
    says nothing about the entry, which stays for the next run (it used to be dropped and made again, and all
    downstream with it). The driver's look-up takes it for one not found: its task makes it (the same rows); a
    task's own look-up fails with that error, which its retry runs again."""
    from pipelines.storage import StorageError

    folder = s3.url("cache")
    cache = ShardCache(folder)
    first, _ = _stage_run(cache, path)

    def unavailable(*_args, **_kwargs):
        raise StorageError(f"{folder}/stagekey/1.parquet: cannot read its Parquet footer (503 SlowDown)")

    dropped = []
    with monkeypatch.context() as patched:
        patched.setattr(storage, "parquet_rows", unavailable)
        patched.setattr(storage, "read_parquet", unavailable)
        patched.setattr(ShardCache, "drop", lambda _cache, key: dropped.append(key))
        if path == "driver":
            made, reused = _stage_run(cache, path)
            assert not reused and made.rejected.rows == first.rejected.rows
        else:
            with pytest.raises(StorageError, match="503 SlowDown"):
                _stage_run(cache, path)
    assert dropped == [] and cache.files("stagekey") is not None
    again, reused = _stage_run(cache, path)
    assert reused and _rows([again.rejected]).equals(_rows([first.rejected]))


def test_a_read_entry_the_store_fails_to_give_stays(s3, tmp_path, monkeypatch):
    from pipelines.storage import StorageError

    path = tmp_path / "gsm8k.jsonl.gz"
    path.write_bytes(gzip.compress(GSM8K.read_bytes()))
    src = Source(path, "jsonl", {"text": "question"})
    cache = ShardCache(s3.url("cache"))
    first = read_inputs([src], 300, cache)

    def unavailable(loc, *_args, **_kwargs):
        raise StorageError(f"{loc}: cannot read (503 SlowDown)")

    with monkeypatch.context() as patched:
        patched.setattr(storage, "read_parquet", unavailable)
        with pytest.raises(StorageError, match="503 SlowDown"):
            read_inputs([src], 300, cache)
    again = read_inputs([src], 300, cache)
    assert (again.reused, again.computed) == (1, 0) and _rows(again.parts).equals(_rows(first.parts))


def test_an_entry_another_worker_made_first_is_kept_by_prune(tmp_path):
    """Two tasks of one shard (a retried one and the first, still running) both put its entry; the second
    finds the first's and keeps it, marked as used by this run: prune, at the run's end, does not delete it."""
    import os

    frame = pl.DataFrame({"id": ["a", "b"]})
    ShardCache(tmp_path).put("key", (frame,))
    os.utime(tmp_path / "key", (1, 1))  # made by an earlier run
    cache = ShardCache(tmp_path)  # this run
    cache.put("key", (frame,))
    assert cache.prune() == 0 and cache.files("key") == [tmp_path / "key" / "0.parquet"]
