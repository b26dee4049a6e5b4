"""Versioned releases: Parquet shards + rejects + manifest.json + dataset card, published atomically.

    <root>/<dataset>/<version>/manifest.json, README.md, report.html, data/part-*.parquet,
        rejects/part-*.parquet, tables/<stage>.<name>.parquet (side tables of global stages, e.g. a dedup index)

A version is written to a hidden temporary folder and renamed into place, so a reader never sees half a
release; files are then read-only and a published version is never touched again. Versions are
`v0001`, `v0002`, ... so they sort by name.

The root may be a URL (`s3://bucket/releases`; pipelines/storage.py). An object store has no folder rename,
so there a version is committed in three steps: its number is claimed with a conditional create of
`<dataset>/.claims/<version>` (two writers never get the same number), the version is written to a local
temporary folder and its files uploaded (each size checked), and manifest.json is uploaded last, again as a
conditional create. Readers (`versions`, `resolve`, `release list/show/verify/diff`, `inspect`) trust only a
version whose manifest exists, and `verify` re-checks every checksum; a writer that died mid-upload leaves a
version number with no manifest, which nothing lists and nothing reuses.

Each data and rejects file is written by a task of the run's map_fn (`write_file`; on a Dask cluster, by the
workers): locally into the temporary folder; on an object store straight to its place in the claimed version,
which nobody trusts until the manifest is there. The driver writes the card, the report, the side tables and
the manifest. A file's rows, row groups and bytes do not depend on where it was written.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from operators.errors import ReleaseError
from pipelines import failpoints, storage
from pipelines.accounting import Ledger
from pipelines.card import dataset_card
from pipelines.report import render_report
from pipelines.engine import Job, MapFn, Outcome, Part, columns, map_local
from pipelines.storage import Location

DEFAULT_ROOT = Path("data/releases")
ROW_GROUP = 131_072  # rows per Parquet row group of a release file
READ_AHEAD = 8  # parts a release file task reads at once
_VERSION = re.compile(r"^v(\d{4,})$")


def versions(dataset_dir: Location) -> list[str]:
    """The published versions of a dataset, oldest first (on an object store: those whose manifest exists)."""
    if storage.is_remote(dataset_dir):
        named = [n for n in storage.list_names(dataset_dir) if _VERSION.match(n)]
        found = [n for n in named if storage.exists(storage.join(dataset_dir, n, "manifest.json"))]
        return sorted(found, key=lambda v: int(v[1:]))
    if not dataset_dir.is_dir():
        return []
    return sorted((p.name for p in dataset_dir.iterdir() if _VERSION.match(p.name)), key=lambda v: int(v[1:]))


@contextmanager
def dataset_lock(dataset_dir: Location) -> Iterator[None]:
    """Hold the dataset for one run: a second run on the same dataset fails fast instead of racing.

    The lock is an flock, so the kernel releases it when the holder dies, even by SIGKILL. On an object
    store there is no lock: two runs may both work, and the version claim keeps their releases apart."""
    if storage.is_remote(dataset_dir):
        yield
        return
    dataset_dir.mkdir(parents=True, exist_ok=True)
    with open(dataset_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ReleaseError(f"{dataset_dir}: another run ({holder}) is writing this dataset; "
                               "wait for it to finish, then run again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            for stale in dataset_dir.glob(".tmp-*"):  # left by a killed run; safe to remove under the lock
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def next_version(dataset_dir: Location) -> str:
    if storage.is_remote(dataset_dir):  # numbers claimed or half-written count too: never reused
        names = storage.list_names(dataset_dir) + storage.list_names(storage.join(dataset_dir, CLAIMS))
        numbers = [int(n[1:]) for n in names if _VERSION.match(n)]
        return f"v{max(numbers, default=0) + 1:04d}"
    existing = versions(dataset_dir)
    return f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"


CLAIMS = ".claims"  # <dataset>/.claims/<version> on an object store: who took which version number


def publish(root: Location, dataset: str, outcome: Outcome, info: dict[str, Any], rows_per_file: int,
            map_fn: MapFn = map_local) -> Location:
    """Write `outcome` as the next version of `dataset` under `root` (its files as `map_fn` tasks); return the
    version folder."""
    if storage.is_remote(root):
        return _publish_remote(root, dataset, outcome, info, rows_per_file, map_fn)
    dataset_dir = root / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(dataset_dir)
    tmp = dataset_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        final = _write_version(tmp, dataset_dir / version, dataset, outcome, info, rows_per_file, map_fn)
    except (OSError, pl.exceptions.ComputeError) as err:  # a full disk, a permission, a quota (Polars wraps its IO errors)
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReleaseWriteError(_cannot_write(dataset_dir / version, err)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(dataset_dir)
    return final


def _publish_remote(root: str, dataset: str, outcome: Outcome, info: dict[str, Any], rows_per_file: int,
                    map_fn: MapFn) -> str:
    dataset_dir = storage.join(root, dataset)
    version, final = _claim(dataset_dir), ""
    tmp = Path(tempfile.mkdtemp(prefix=f"sluice-{dataset}-{version}-")) / version
    try:
        final = storage.join(dataset_dir, version)
        tmp.mkdir()
        _write_version(tmp, final, dataset, outcome, info, rows_per_file, map_fn)
    except (OSError, pl.exceptions.ComputeError) as err:  # StorageError is an OSError: retries ran out
        raise ReleaseWriteError(_cannot_write(final, err)) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return final


def _claim(dataset_dir: str) -> str:
    """Take the next free version number of a dataset on an object store (a conditional create)."""
    token = f"pid {os.getpid()} {uuid.uuid4().hex}\n".encode()
    for _ in range(100):
        version = next_version(dataset_dir)
        claim = storage.join(dataset_dir, CLAIMS, version)
        try:
            storage.write_bytes(claim, token, exclusive=True)
            return version
        except FileExistsError:  # another run took it between our listing and our claim, or our own claim
            if storage.read_bytes(claim) == token:  # went through and its answer was lost, then the retry met it
                return version
    raise ReleaseError(f"{storage.display(dataset_dir)}: could not claim a version number after 100 tries")


class ReleaseWriteError(ReleaseError, OSError):
    """A release that could not be written; an OSError too, for callers that catch those."""


def _cannot_write(final: Location, err: Exception) -> str:
    if isinstance(err, storage.StorageError):
        what = str(err)
    elif isinstance(err, OSError):
        what = (err.strerror or str(err)) + (f": {err.filename}" if err.filename else "")
    else:
        what = str(err).splitlines()[0]
    earlier = versions(storage.parent(final))
    kept = f"{earlier[-1]} and earlier versions are untouched" if earlier else "there is no earlier version"
    return f"{storage.display(final)}: cannot write the release ({what}); nothing was published, {kept}"


def _write_version(tmp: Path, final: Location, dataset: str, outcome: Outcome, info: dict[str, Any],
                   rows_per_file: int, map_fn: MapFn = map_local) -> Location:
    """The version in `tmp` (on an object store: its data and rejects files already at `final`), committed."""
    schema = unified_schema(outcome.parts)
    files = final if storage.is_remote(final) else tmp  # where the data and rejects files go
    manifest = {
        "dataset": dataset,
        "version": storage.name(final),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
        "code_version": code_version(),
        "inputs": outcome.inputs,
        "rows": sum(p.rows for p in outcome.parts),
        "rejected_rows": sum(p.rows for p in outcome.rejected),
        "schema": {name: str(dtype) for name, dtype in schema.items()},
        "shards": _write_parts(outcome.parts, schema, tmp, files, "data", rows_per_file, map_fn),
        "rejects": (_write_parts(outcome.rejected, unified_schema(outcome.rejected), tmp, files, "rejects",
                                 rows_per_file, map_fn) if outcome.rejected else []),
        "tables": _write_tables(outcome.tables, tmp),
        "stages": outcome.ledger.to_json(),
    }
    (tmp / "README.md").write_text(dataset_card(manifest))
    (tmp / "report.html").write_text(render_report(files, manifest))
    manifest["documents"] = [_describe(tmp, name) for name in ("README.md", "report.html")]
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    failpoints.hit("publish.write")
    _seal(tmp)
    failpoints.hit("publish.seal")
    try:
        storage.commit_folder(tmp, final, "manifest.json")
    except FileExistsError:
        raise ReleaseError(f"{storage.display(final)} was published by another run meanwhile; nothing was "
                           "overwritten, run again") from None
    failpoints.hit("publish.rename")
    return final


def _write_parts(parts: list[Part], schema: pl.Schema, tmp: Path, files: Location, name: str, rows_per_file: int,
                 map_fn: MapFn = map_local) -> list[dict[str, Any]]:
    """Write the rows of `parts`, in order and cast to `schema`, as files `<name>/part-NNNNN.parquet` of
    `rows_per_file` rows under `files` (`tmp`, or the version's place on an object store), one `map_fn`
    task per file; return their manifest entries."""
    (tmp / name).mkdir()
    plan = [FileTask(f"{name}/part-{i:05d}.parquet", pieces) for i, pieces in enumerate(_file_plan(parts, rows_per_file))]
    if not plan:  # no rows: one empty file that still carries the columns
        rel = f"{name}/part-00000.parquet"
        pl.DataFrame(schema=schema).write_parquet(tmp / rel, compression="zstd", statistics=True)
        return [_describe(tmp, rel, 0)]
    jobs = [Job(task, "", storage.name(task.rel)) for task in plan]
    return [entry for entry, _ in map_fn(write_file, jobs, f"release.{name}", None, schema=schema, folder=files)]


@dataclass(frozen=True)
class FileTask:
    """One release file: `rel` holds the rows of `pieces` in order, (part, first row, rows) each."""

    rel: str
    pieces: tuple[tuple[Part, int, int], ...]

    @property
    def rows(self) -> int:
        return sum(n for _, _, n in self.pieces)

    @property
    def kept_by(self) -> str | None:
        """The process that keeps copies of most of the file's rows (Part.kept_by): where it is best written."""
        rows: dict[str, int] = {}
        for part, _, n in self.pieces:
            if part.kept_by is not None:
                rows[part.kept_by] = rows.get(part.kept_by, 0) + n
        return max(rows, key=rows.__getitem__, default=None)

    def load(self) -> FileTask:  # map_fn hands `job.part.load()` to the task
        return self


def _file_plan(parts: list[Part], rows_per_file: int) -> list[tuple[tuple[Part, int, int], ...]]:
    """The pieces of `parts` that make each file of `rows_per_file` rows (the last one shorter)."""
    files: list[tuple[tuple[Part, int, int], ...]] = []
    pieces: list[tuple[Part, int, int]] = []
    filled = 0
    for part in parts:
        start = 0
        while start < part.rows:
            take = min(rows_per_file - filled, part.rows - start)
            pieces.append((part, start, take))
            start, filled = start + take, filled + take
            if filled == rows_per_file:
                files.append(tuple(pieces))
                pieces, filled = [], 0
    if pieces:
        files.append(tuple(pieces))
    return files


def write_file(task: FileTask, schema: pl.Schema, folder: Location) -> dict[str, Any]:
    """Write one release file at `folder`/`task.rel` and return its manifest entry. Its parts are read a few at
    a time (`_loaded`) and appended in row groups of up to ROW_GROUP rows, so memory holds about two row
    groups' rows. To an object store the file is written locally first, then uploaded and its size checked."""
    if not storage.is_remote(folder):
        _write_rows(task, schema, Path(folder) / task.rel)
        return _describe(Path(folder), task.rel, storage.parquet_rows(Path(folder) / task.rel))
    local = Path(tempfile.mkdtemp(prefix="sluice-release-"))
    try:
        (local / task.rel).parent.mkdir(parents=True)
        _write_rows(task, schema, local / task.rel)
        entry = _describe(local, task.rel, storage.parquet_rows(local / task.rel))
        dest = storage.join(folder, task.rel)
        storage.upload(local / task.rel, dest)
        if storage.size(dest) != entry["bytes"]:
            raise storage.StorageError(f"{storage.display(dest)}: uploaded object is incomplete; nothing was published")
        return entry
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _write_rows(task: FileTask, schema: pl.Schema, path: Path) -> None:
    empty = pl.DataFrame(schema=schema)
    pending: list[pl.DataFrame] = []  # rows of the current row group not yet written
    in_group = 0
    with pq.ParquetWriter(path, _arrow(empty).schema, compression="zstd") as writer:
        for (part, start, rows), loaded in _loaded(task.pieces):
            frame = pl.concat([empty, loaded], how="diagonal_relaxed").slice(start, rows)  # the release's types
            while len(frame):
                take = min(ROW_GROUP - in_group, len(frame))
                pending.append(frame.head(take))
                frame, in_group = frame.slice(take), in_group + take
                if in_group == ROW_GROUP:
                    writer.write_table(_arrow(pl.concat(pending)))
                    pending.clear()
                    in_group = 0
        if pending:
            writer.write_table(_arrow(pl.concat(pending)))


def _loaded(pieces: tuple[tuple[Part, int, int], ...]) -> Iterator[tuple[tuple[Part, int, int], pl.DataFrame]]:
    """Each piece with its part's rows, in order. Parts are read a few at once (up to READ_AHEAD, and ROW_GROUP
    rows, together): a rejects file gathers dozens of small parts, on an object store one GET each."""
    with ThreadPoolExecutor(READ_AHEAD) as pool:
        batch: list[tuple[Part, int, int]] = []
        for piece in [*pieces, None]:
            if batch and (piece is None or len(batch) == READ_AHEAD
                          or sum(p.rows for p, _, _ in batch) + piece[0].rows > ROW_GROUP):
                yield from zip(batch, pool.map(Part.load, [p for p, _, _ in batch]))
                batch = []
            if piece is not None:
                batch.append(piece)


def _arrow(frame: pl.DataFrame):
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def unified_schema(parts: list[Part]) -> pl.Schema:
    """The columns of all parts together, each with a type that holds every part's values."""
    try:
        return columns(parts)
    except pl.exceptions.PolarsError as err:
        raise ReleaseError(f"the shards' columns cannot be combined into one table: {str(err).splitlines()[0]}; "
                           "map or drop the column whose type differs between inputs (`fields:`)") from None


def _write_tables(tables: dict[str, pl.DataFrame | pl.LazyFrame], folder: Path) -> list[dict[str, Any]]:
    entries = []
    for name, table in sorted(tables.items()):
        (folder / "tables").mkdir(exist_ok=True)
        rel = f"tables/{name}.parquet"
        if isinstance(table, pl.LazyFrame):  # e.g. a scan of the shards' index: streamed, never whole in memory
            table.sink_parquet(folder / rel, compression="zstd", statistics=True)
        else:
            table.write_parquet(folder / rel, compression="zstd", statistics=True)
        entries.append(_describe(folder, rel, pl.scan_parquet(folder / rel).select(pl.len()).collect().item()))
    return entries


def _describe(folder: Path, rel: str, rows: int | None = None) -> dict[str, Any]:
    path = folder / rel
    entry = {"path": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": storage.sha256(path)}
    return entry if rows is not None else {k: v for k, v in entry.items() if k != "rows"}


def _seal(folder: Path) -> None:
    """Flush every file to disk and make it read-only."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            path.chmod(0o444)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def code_version() -> dict[str, str | None]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"sluice": metadata.version("sluice"), "git_commit": commit}


# --- reading releases back -------------------------------------------------------------------------


def resolve(ref: str, root: Location = DEFAULT_ROOT) -> Location:
    """A release folder from a path or URL, `dataset/version`, or `dataset` (its latest version)."""
    given = storage.location(ref)
    candidates = [given] if storage.is_remote(given) else [given, storage.join(storage.location(root), ref)]
    for candidate in candidates:
        if storage.is_file(storage.join(candidate, "manifest.json")):
            return candidate
        if found := versions(candidate):
            return storage.join(candidate, found[-1])
    where = " and ".join(storage.display(c) for c in candidates)
    raise ReleaseError(f"no release found at {storage.display(ref)!r} (looked in {where})")


def read_manifest(folder: Location) -> dict[str, Any]:
    path = storage.join(folder, "manifest.json")
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise ReleaseError(f"{storage.display(path)}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReleaseError(f"{storage.display(path)}: not valid JSON ({err})") from None


def listing(root: Location) -> list[dict[str, Any]]:
    out = []
    root = storage.location(root)
    for dataset in storage.list_names(root):
        dataset_dir = storage.join(root, dataset)
        for version in versions(dataset_dir) if not str(dataset).startswith(".") else []:
            try:
                m = read_manifest(storage.join(dataset_dir, version))
            except ReleaseError:
                m = {}
            out.append({"dataset": dataset, "version": version, "rows": m.get("rows"),
                        "created_at": m.get("created_at"), "path": storage.display(storage.join(dataset_dir, version))})
    return out


def verify(folder: Location) -> list[str]:
    """Every problem with a published release: checksums, row counts, stray or missing files, books."""
    try:
        manifest = read_manifest(folder)
    except ReleaseError as err:
        return [str(err)]
    problems = []
    for entry in manifest.get("documents", []):  # the card and the report
        problems += _check_file(folder, entry)
    for kind, sub in (("shards", "data"), ("rejects", "rejects"), ("tables", "tables")):
        listed = {entry["path"] for entry in manifest.get(kind, [])}
        for entry in manifest.get(kind, []):
            problems += _check_file(folder, entry)
        for stray in storage.list_names(storage.join(folder, sub)):
            if f"{sub}/{stray}" not in listed:
                problems.append(f"{storage.display(storage.join(folder, sub, stray))}: file not listed in the manifest")
    ledger = Ledger.from_json(manifest["stages"])
    try:
        ledger.check()
    except Exception as err:
        problems.append(f"{storage.display(storage.join(folder, 'manifest.json'))}: {err}")
    shard_rows = sum(e["rows"] for e in manifest["shards"])
    reject_rows = sum(e["rows"] for e in manifest["rejects"])
    if ledger.stages and shard_rows != ledger.stages[-1].rows_out:
        problems.append(f"{storage.display(folder)}: shards hold {shard_rows} rows but the last stage passed on {ledger.stages[-1].rows_out}")
    if reject_rows != ledger.total_dropped:
        problems.append(f"{storage.display(folder)}: rejects hold {reject_rows} rows but the stages dropped {ledger.total_dropped}")
    return problems


def _check_file(folder: Location, entry: dict[str, Any]) -> list[str]:
    path = storage.join(folder, entry["path"])
    shown = storage.display(path)
    if not storage.is_file(path):
        return [f"{shown}: missing"]
    if (size := storage.size(path)) != entry["bytes"]:
        return [f"{shown}: size {size} bytes, manifest says {entry['bytes']}"]
    if storage.sha256(path) != entry["sha256"]:
        return [f"{shown}: sha256 differs from the manifest (file changed or corrupt)"]
    if "rows" not in entry:
        return []
    try:
        rows = storage.parquet_rows(path)
    except storage.StorageError:
        raise
    except Exception as err:
        return [f"{shown}: not readable as Parquet ({err})"]
    if rows != entry["rows"]:
        return [f"{shown}: {rows} rows, manifest says {entry['rows']}"]
    return []
