"""Finished shard results on disk, so a re-run after a crash or kill resumes instead of recomputing.

A result's key is derived from everything it depends on: the input files' hashes and read settings, the shard's
position, and the fingerprints of every operator up to that stage (for a global stage, the keys of all shards).
Change an input or a parameter and the keys change; nothing stale is ever reused.

The folder may be a URL (`s3://bucket/releases/<dataset>/.cache`): then entries, spills and the Parts that
point at them are objects every worker can read, with no shared disk. An object store has no rename, so an
entry is complete once its `_done` marker exists (written last, holding the number of files); a worker killed
mid-entry leaves files nobody trusts, and the next run writes them again. A stage task does not ask the cache
after the driver has (engine.call_cached's `asked`): one the scheduler runs again after its worker died writes
its entry again, the same bytes under the same key, and the first `_done` stays. A local entry keeps the
same marker (in the folder before its rename), so a file deleted from any entry is seen as missing when it is
read. An entry that is damaged (a file missing or not Parquet: DAMAGED) is a miss: dropped and made again;
a read that fails for another reason (a timeout, a 5xx, a 403 after retries) fails the task, which its retry
runs again, and the entry stays.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from operators.errors import SluiceError
from pipelines import failpoints, storage
from pipelines.storage import Location, StorageError

# what reading a found entry's books or footers raises when the entry is damaged (a file deleted, an object
# missing, a file cut short or garbled: not Parquet, or books that do not parse): the entry is then a miss,
# dropped and made again (a cache only saves work). Not any other OSError: a StorageError that is not Missing
# (a store that timed out or refused after retries) says nothing about the entry, which stays.
DAMAGED = (FileNotFoundError, ValueError, KeyError, pl.exceptions.PolarsError)
DONE = "_done"  # an entry's commit marker in a cache on an object store


PARQUET = {"compression": "lz4", "statistics": False}  # how cached frames are written: cheap to write and read


def _write(frame: pl.DataFrame, path: Location) -> None:
    try:
        storage.write_parquet(frame, path, **PARQUET)
    except StorageError:
        raise
    except (OSError, pl.exceptions.ComputeError) as err:  # a full disk, a quota (Polars wraps its IO errors)
        raise SluiceError(f"{path}: cannot write the shard cache ({str(err).splitlines()[0]}); make room on "
                          "that disk or point release.dir elsewhere") from None


def _bytes(frame: pl.DataFrame) -> bytes:
    return storage.parquet_bytes(frame, **PARQUET)


def _files(entry: str, done: bytes) -> list[Location]:
    """The files of a bucket's entry whose `_done` marker holds `done`; [] (damaged) when that is not a count."""
    try:
        return [storage.join(entry, f"{i}.parquet") for i in range(int(done))]
    except ValueError:
        return []


def derive(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class ShardCache:
    """`key -> tuple of DataFrames`, one folder per entry, written atomically (temp folder + rename; on an object
    store, a `_done` marker written last)."""

    def __init__(self, folder: Location) -> None:
        self.folder = folder  # a Path or a URL string: the object is pickled into Dask tasks, so nothing else
        self.started = time.time()
        self.owner = os.getpid()  # the driver's: spills of its tasks (on any worker) go to one folder it drops

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.folder)

    def files(self, key: str) -> list[Location] | None:
        """The files of entry `key` (one per frame, in order), or None if there is no such entry; [] for a damaged
        one (a local entry without the files its marker counts, a marker that is not a count: see DAMAGED)."""
        if self.remote:
            entry = storage.join(self.folder, key)
            try:
                return _files(entry, storage.read_bytes(storage.join(entry, DONE)))
            except FileNotFoundError:
                return None
        entry = self.folder / key
        if not entry.is_dir():
            return None
        os.utime(entry)  # mark as used by this run, so prune() keeps it
        names = {p.name for p in entry.glob("*.parquet")}
        try:  # its number of files, as on a bucket
            count = int((entry / DONE).read_text())
        except FileNotFoundError:  # an entry made before the marker was kept: as many as it holds
            count = len(names)
        except ValueError:  # a garbled marker
            return []
        files = [entry / f"{i}.parquet" for i in range(count)]
        return files if names == {p.name for p in files} else []  # []: a file deleted or added, damaged

    def lookup(self, keys: list[str]) -> list[list[Location] | None]:
        """`files(key)` of every key. On an object store the entries' markers are asked for all at once (one
        wait for the slowest, not one round trip per key); a marker that cannot be read counts as no entry."""
        if not self.remote:
            return [self.files(key) for key in keys]
        entries = [storage.join(self.folder, key) for key in keys]
        found = storage.read_many([storage.join(entry, DONE) for entry in entries])
        return [None if (count := found.get(storage.join(entry, DONE))) is None else _files(entry, count)
                for entry in entries]

    def put(self, key: str, frames: tuple[pl.DataFrame, ...]) -> list[Location]:
        """Store `frames` under `key` and return the entry's files (see Entry)."""
        with self.entry(key, len(frames)) as entry:
            return entry.commit(frames)

    @contextmanager
    def entry(self, key: str, first: int) -> Iterator[Entry]:
        """An entry written file by file (see Entry); what a failed writer wrote is nobody's: no marker names it."""
        entry = Entry(self, key, first)
        try:
            yield entry
        finally:
            if entry.tmp is not None:
                shutil.rmtree(entry.tmp, ignore_errors=True)

    def drop(self, key: str) -> None:
        """Remove entry `key` (a damaged one, so that it is made again: put does not replace an entry it finds)."""
        storage.remove_tree(storage.join(self.folder, key))

    def damaged(self, key: str, why: object, what: str = "cache entry") -> None:
        """Say in the run's log that entry `key` is damaged and is made again, and drop it."""
        logging.getLogger(__name__).warning("the %s %s is damaged (%s): it is made again", what,
                                            storage.display(storage.join(self.folder, key)), why)
        self.drop(key)

    @property
    def run(self) -> str:
        """The run this cache serves (its driver's process and start): what a worker keeps copies for (put)."""
        return f"{self.owner}-{self.started}"

    @property
    def _spills(self) -> Location:
        return storage.join(self.folder, f".spill-{self.owner}-{int(self.started)}")

    def spill(self, frame: pl.DataFrame) -> Location:
        """Park a frame of this run on disk (read shards, rows not to be cached) until `drop_spills`."""
        path = storage.join(self._spills, f"{uuid.uuid4().hex}.parquet")
        if not self.remote:
            self._spills.mkdir(parents=True, exist_ok=True)
            _write(frame, path)
            return path
        data = _bytes(frame)
        storage.write_bytes(path, data)
        storage.keep(path, data, self.run)
        return path

    def drop_spills(self) -> None:
        """Remove the frames this run parked on disk (whether it succeeded or failed)."""
        try:
            storage.remove_tree(self._spills)
        except StorageError:  # an object store that fails now: the next prune of a local cache, or a lifecycle rule
            pass

    def prune(self) -> int:
        """Delete entries this run did not use, and what killed runs left (temp folders, spills); return how many.
        A cache on an object store is not pruned (no usable modification times; a bucket lifecycle rule is
        the tool there)."""
        if self.remote:
            return 0
        removed = 0
        for entry in self.folder.iterdir() if self.folder.is_dir() else []:
            if entry.stat().st_mtime < self.started - 1:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed


class Entry:
    """A cache entry being written: `add` its files as they are made (a read task's shards, one after another:
    none waits in memory or in a scratch folder), then `commit` its `first` frames (its books, known last),
    which come first in its files. A local entry is a temporary folder renamed into place; on an object store
    each file is uploaded as it comes (a call's files side by side) and the `_done` marker written last, and
    this process keeps a copy of each file it uploads for the tasks it runs next (storage.keep)."""

    def __init__(self, cache: ShardCache, key: str, first: int) -> None:
        self.cache, self.key, self.first = cache, key, first
        self.files: list[Location] = []  # the files added, after the `first`
        self.tmp: Path | None = None
        if cache.remote:
            self.place = storage.join(cache.folder, key)
        else:
            cache.folder.mkdir(parents=True, exist_ok=True)
            self.tmp = self.place = cache.folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            self.tmp.mkdir()

    def add(self, *frames: pl.DataFrame) -> None:
        numbers = range(self.first + len(self.files), self.first + len(self.files) + len(frames))
        self._write({storage.join(self.place, f"{i}.parquet"): frame for i, frame in zip(numbers, frames)})
        self.files += [storage.join(self.cache.folder, self.key, f"{i}.parquet") for i in numbers]

    def commit(self, frames: tuple[pl.DataFrame, ...]) -> list[Location]:
        """Write the `first` frames and the marker; the entry's files. Another worker that finished the same
        shard first left the same content under the same key: its entry stays."""
        assert len(frames) == self.first, "an entry's first frames are as many as it was opened for"
        self._write({storage.join(self.place, f"{i}.parquet"): frame for i, frame in enumerate(frames)})
        count = str(self.first + len(self.files))
        if self.cache.remote:
            try:
                storage.write_bytes(storage.join(self.place, DONE), count.encode(), exclusive=True)
            except FileExistsError:
                pass
        else:
            (self.tmp / DONE).write_text(count)  # its number of files (see ShardCache.files)
            final = self.cache.folder / self.key
            try:
                os.rename(self.tmp, final)
                self.tmp = None
            except OSError:
                if not final.is_dir():  # no: the rename itself failed
                    raise
                os.utime(final)  # used by this run (see prune)
        failpoints.hit("cache.put")
        return [storage.join(self.cache.folder, self.key, f"{i}.parquet") for i in range(self.first)] + self.files

    def _write(self, files: dict[Location, pl.DataFrame]) -> None:
        if not self.cache.remote:
            for path, frame in files.items():
                _write(frame, path)
            return
        data = {path: _bytes(frame) for path, frame in files.items()}
        storage.write_many(data)
        for path, blob in data.items():
            storage.keep(path, blob, self.cache.run)
