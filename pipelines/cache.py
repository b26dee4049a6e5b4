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

from pipelines import failpoints


def derive(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class ShardCache:
    """`key -> tuple of DataFrames`, one folder per entry, written atomically (temp folder + rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started = time.time()

    def get(self, key: str) -> tuple[pl.DataFrame, ...] | None:
        entry = self.folder / key
        if not entry.is_dir():
            return None
        os.utime(entry)  # mark as used by this run, so prune() keeps it
        parts = sorted(entry.glob("*.parquet"), key=lambda p: int(p.stem))
        return tuple(pl.read_parquet(p) for p in parts)

    def put(self, key: str, frames: tuple[pl.DataFrame, ...]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for i, frame in enumerate(frames):
            frame.write_parquet(tmp / f"{i}.parquet", compression="lz4", statistics=False)
        try:
            os.rename(tmp, self.folder / key)
        except OSError:  # another worker finished the same shard first: same key, same content
            shutil.rmtree(tmp, ignore_errors=True)
        failpoints.hit("cache.put")

    def prune(self) -> int:
        """Delete entries this run did not use (and temp folders of killed runs); return how many."""
        removed = 0
        for entry in self.folder.iterdir() if self.folder.is_dir() else []:
            if entry.stat().st_mtime < self.started - 1:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
