"""Finished shard results on disk, so a re-run after a crash or kill resumes instead of recomputing.

A result's key is derived from everything it depends on: the input files' hashes and read settings, the shard's
position, and the fingerprints of every operator up to that stage (for a global stage, the keys of all shards).
Change an input or a parameter and the keys change; nothing stale is ever reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import polars as pl

from operators.errors import SluiceError
from pipelines import failpoints


def _write(frame: pl.DataFrame, path: Path) -> None:
    try:
        frame.write_parquet(path, compression="lz4", statistics=False)
    except (OSError, pl.exceptions.ComputeError) as err:  # a full disk, a quota (Polars wraps its IO errors)
        raise SluiceError(f"{path}: cannot write the shard cache ({str(err).splitlines()[0]}); make room on "
                          "that disk or point release.dir elsewhere") from None


def derive(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class ShardCache:
    """`key -> tuple of DataFrames`, one folder per entry, written atomically (temp folder + rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started = time.time()

    def files(self, key: str) -> list[Path] | None:
        """The files of entry `key` (one per frame, in order), or None if there is no such entry."""
        entry = self.folder / key
        if not entry.is_dir():
            return None
        os.utime(entry)  # mark as used by this run, so prune() keeps it
        return sorted(entry.glob("*.parquet"), key=lambda p: int(p.stem))

    def put(self, key: str, frames: tuple[pl.DataFrame, ...], links: list[Path] = ()) -> list[Path]:
        """Store `frames` under `key`, then the Parquet files `links` (hard links to files already in the
        cache folder, e.g. spilled read shards: nothing is written twice); return the entry's files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for i, frame in enumerate(frames):
                _write(frame, tmp / f"{i}.parquet")
            for i, path in enumerate(links, len(frames)):
                try:
                    os.link(path, tmp / f"{i}.parquet")
                except OSError:  # another filesystem: a copy
                    shutil.copyfile(path, tmp / f"{i}.parquet")
        except (SluiceError, OSError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, self.folder / key)
        except OSError:  # another worker finished the same shard first: same key, same content
            shutil.rmtree(tmp, ignore_errors=True)
            if not (self.folder / key).is_dir():  # no: the rename itself failed
                raise
        failpoints.hit("cache.put")
        return [self.folder / key / f"{i}.parquet" for i in range(len(frames) + len(links))]

    @property
    def _spills(self) -> Path:
        return self.folder / f".spill-{os.getpid()}-{int(self.started)}"

    def spill(self, frame: pl.DataFrame) -> Path:
        """Park a frame of this run on disk (read shards) until `drop_spills`."""
        self._spills.mkdir(parents=True, exist_ok=True)
        path = self._spills / f"{uuid.uuid4().hex}.parquet"
        _write(frame, path)
        return path

    def drop_spills(self) -> None:
        """Remove the frames this run parked on disk (whether it succeeded or failed)."""
        shutil.rmtree(self._spills, ignore_errors=True)

    def prune(self) -> int:
        """Delete entries this run did not use, and what killed runs left (temp folders, spills); return how many."""
        removed = 0
        for entry in self.folder.iterdir() if self.folder.is_dir() else []:
            if entry.stat().st_mtime < self.started - 1:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
