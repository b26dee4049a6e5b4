"""Versioned releases: Parquet shards + rejects + manifest.json + dataset card, published atomically.

    <root>/<dataset>/<version>/manifest.json, README.md, report.html, data/part-*.parquet,
        rejects/part-*.parquet, tables/<stage>.<name>.parquet (side tables of global stages, e.g. a dedup index)

A version is written to a hidden temporary folder and renamed into place, so a reader never sees half a
release; files are then read-only and a published version is never touched again. Versions are
`v0001`, `v0002`, ... so they sort by name.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from operators.errors import ReleaseError
from pipelines import failpoints
from pipelines.accounting import Ledger
from pipelines.card import dataset_card
from pipelines.report import render_report
from pipelines.engine import Outcome, Part, file_sha256, scan

DEFAULT_ROOT = Path("data/releases")
ROW_GROUP = 131_072  # rows per Parquet row group of a release file
_VERSION = re.compile(r"^v(\d{4,})$")


def versions(dataset_dir: Path) -> list[str]:
    if not dataset_dir.is_dir():
        return []
    return sorted((p.name for p in dataset_dir.iterdir() if _VERSION.match(p.name)), key=lambda v: int(v[1:]))


@contextmanager
def dataset_lock(dataset_dir: Path) -> Iterator[None]:
    """Hold the dataset for one run: a second run on the same dataset fails fast instead of racing.

    The lock is an flock, so the kernel releases it when the holder dies, even by SIGKILL."""
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


def next_version(dataset_dir: Path) -> str:
    existing = versions(dataset_dir)
    return f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"


def publish(root: Path, dataset: str, outcome: Outcome, info: dict[str, Any], rows_per_file: int) -> Path:
    """Write `outcome` as the next version of `dataset` under `root`; return the version folder."""
    dataset_dir = root / dataset
    dataset_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(dataset_dir)
    tmp = dataset_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        final = _write_version(tmp, dataset_dir / version, dataset, outcome, info, rows_per_file)
    except (OSError, pl.exceptions.ComputeError) as err:  # a full disk, a permission, a quota (Polars wraps its IO errors)
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReleaseWriteError(_cannot_write(dataset_dir / version, err)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(dataset_dir)
    return final


class ReleaseWriteError(ReleaseError, OSError):
    """A release that could not be written; an OSError too, for callers that catch those."""


def _cannot_write(final: Path, err: Exception) -> str:
    if isinstance(err, OSError):
        what = (err.strerror or str(err)) + (f": {err.filename}" if err.filename else "")
    else:
        what = str(err).splitlines()[0]
    earlier = versions(final.parent)
    kept = f"{earlier[-1]} and earlier versions are untouched" if earlier else "there is no earlier version"
    return f"{final}: cannot write the release ({what}); nothing was published, {kept}"


def _write_version(tmp: Path, final: Path, dataset: str, outcome: Outcome, info: dict[str, Any],
                   rows_per_file: int) -> Path:
    schema = unified_schema(outcome.parts)
    manifest = {
        "dataset": dataset,
        "version": final.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
        "code_version": code_version(),
        "inputs": outcome.inputs,
        "rows": sum(p.rows for p in outcome.parts),
        "rejected_rows": sum(p.rows for p in outcome.rejected),
        "schema": {name: str(dtype) for name, dtype in schema.items()},
        "shards": _write_parts(outcome.parts, schema, tmp, "data", rows_per_file),
        "rejects": (_write_parts(outcome.rejected, unified_schema(outcome.rejected), tmp, "rejects", rows_per_file)
                    if outcome.rejected else []),
        "tables": _write_tables(outcome.tables, tmp),
        "stages": outcome.ledger.to_json(),
    }
    (tmp / "README.md").write_text(dataset_card(manifest))
    (tmp / "report.html").write_text(render_report(tmp, manifest))
    manifest["documents"] = [_describe(tmp, name) for name in ("README.md", "report.html")]
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    failpoints.hit("publish.write")
    _seal(tmp)
    failpoints.hit("publish.seal")
    try:
        os.rename(tmp, final)
    except OSError:
        raise ReleaseError(f"{final} was published by another run meanwhile; nothing was overwritten, run again") from None
    failpoints.hit("publish.rename")
    return final


def _write_parts(parts: list[Part], schema: pl.Schema, folder: Path, name: str,
                 rows_per_file: int) -> list[dict[str, Any]]:
    """Write the rows of `parts`, in order and cast to `schema`, as files of `rows_per_file` rows. Parts are
    read one at a time and appended to the open file in row groups of up to ROW_GROUP rows, so memory holds
    about one part and one row group."""
    (folder / name).mkdir()
    empty = pl.DataFrame(schema=schema)
    entries: list[dict[str, Any]] = []
    pending: list[pl.DataFrame] = []  # rows of the current file not yet written
    writer = None

    def rel() -> str:
        return f"{name}/part-{len(entries):05d}.parquet"

    def flush(end_of_file: bool) -> None:
        nonlocal writer
        if pending:
            if writer is None:
                writer = pq.ParquetWriter(folder / rel(), _arrow(empty).schema, compression="zstd")
            writer.write_table(_arrow(pl.concat(pending)))
            pending.clear()
        if end_of_file and writer is not None:
            writer.close()
            writer = None
            entries.append(_describe(folder, rel(), pq.read_metadata(folder / rel()).num_rows))

    try:
        in_file = in_group = 0
        for part in parts:
            frame = pl.concat([empty, part.load()], how="diagonal_relaxed")  # the release's columns and types
            while len(frame):
                take = min(rows_per_file - in_file, ROW_GROUP - in_group, len(frame))
                pending.append(frame.head(take))
                frame, in_file, in_group = frame.slice(take), in_file + take, in_group + take
                if in_file == rows_per_file or in_group == ROW_GROUP:
                    flush(end_of_file=in_file == rows_per_file)
                    in_group, in_file = 0, in_file % rows_per_file
        flush(end_of_file=True)
    finally:
        if writer is not None:
            writer.close()
    if not entries:  # no rows: one empty file that still carries the columns
        empty.write_parquet(folder / rel(), compression="zstd", statistics=True)
        entries.append(_describe(folder, rel(), 0))
    return entries


def _arrow(frame: pl.DataFrame):
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def unified_schema(parts: list[Part]) -> pl.Schema:
    """The columns of all parts together, each with a type that holds every part's values."""
    try:
        return scan(parts).collect_schema()
    except pl.exceptions.PolarsError as err:
        raise ReleaseError(f"the shards' columns cannot be combined into one table: {str(err).splitlines()[0]}; "
                           "map or drop the column whose type differs between inputs (`fields:`)") from None


def _write_tables(tables: dict[str, pl.DataFrame], folder: Path) -> list[dict[str, Any]]:
    entries = []
    for name, table in sorted(tables.items()):
        (folder / "tables").mkdir(exist_ok=True)
        rel = f"tables/{name}.parquet"
        table.write_parquet(folder / rel, compression="zstd", statistics=True)
        entries.append(_describe(folder, rel, len(table)))
    return entries


def _describe(folder: Path, rel: str, rows: int | None = None) -> dict[str, Any]:
    path = folder / rel
    entry = {"path": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
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


def resolve(ref: str, root: Path = DEFAULT_ROOT) -> Path:
    """A release folder from a path, `dataset/version`, or `dataset` (its latest version)."""
    for candidate in (Path(ref), root / ref):
        if (candidate / "manifest.json").is_file():
            return candidate
        if candidate.is_dir() and (found := versions(candidate)):
            return candidate / found[-1]
    raise ReleaseError(f"no release found at {ref!r} (looked in {Path(ref)} and {root / ref})")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReleaseError(f"{path}: not valid JSON ({err})") from None


def listing(root: Path) -> list[dict[str, Any]]:
    out = []
    for dataset_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for version in versions(dataset_dir):
            try:
                m = read_manifest(dataset_dir / version)
            except ReleaseError:
                m = {}
            out.append({"dataset": dataset_dir.name, "version": version, "rows": m.get("rows"),
                        "created_at": m.get("created_at"), "path": str(dataset_dir / version)})
    return out


def verify(folder: Path) -> list[str]:
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
        for stray in sorted((folder / sub).glob("*")) if (folder / sub).is_dir() else []:
            if f"{sub}/{stray.name}" not in listed:
                problems.append(f"{stray}: file not listed in the manifest")
    ledger = Ledger.from_json(manifest["stages"])
    try:
        ledger.check()
    except Exception as err:
        problems.append(f"{folder / 'manifest.json'}: {err}")
    shard_rows = sum(e["rows"] for e in manifest["shards"])
    reject_rows = sum(e["rows"] for e in manifest["rejects"])
    if ledger.stages and shard_rows != ledger.stages[-1].rows_out:
        problems.append(f"{folder}: shards hold {shard_rows} rows but the last stage passed on {ledger.stages[-1].rows_out}")
    if reject_rows != ledger.total_dropped:
        problems.append(f"{folder}: rejects hold {reject_rows} rows but the stages dropped {ledger.total_dropped}")
    return problems


def _check_file(folder: Path, entry: dict[str, Any]) -> list[str]:
    path = folder / entry["path"]
    if not path.is_file():
        return [f"{path}: missing"]
    if path.stat().st_size != entry["bytes"]:
        return [f"{path}: size {path.stat().st_size} bytes, manifest says {entry['bytes']}"]
    if file_sha256(path) != entry["sha256"]:
        return [f"{path}: sha256 differs from the manifest (file changed or corrupt)"]
    if "rows" not in entry:
        return []
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as err:
        return [f"{path}: not readable as Parquet ({err})"]
    if rows != entry["rows"]:
        return [f"{path}: {rows} rows, manifest says {entry['rows']}"]
    return []
