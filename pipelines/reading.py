"""Reading as tasks: one task per input file, or per span of a big JSONL or Parquet file (`shard_rows` rows
each), run through the run's map_fn like every other stage, so Prefect or Dask run them side by side.

A task reads with Polars where it can (pipelines/readers.py) and gives its rows' ids as they come (the input's
id, or a hash of the content); no task looks at another, so a task's result depends on its own file only and is
cached under the file's sha256 (or, at a URL, its version; see `plan`), its span and how it is read: a resume
re-reads no finished task, a changed input re-reads only that file. Ids are then made unique across all inputs in one step (`unique_ids`), in input order:
a repeated given id is a `read:duplicate_id` reject (or, under `on_error: fail`, an error naming both places),
a repeated content id (identical rows) gets a suffix, `-2`, `-3`, ...
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from operators.base import DETAIL, REASON
from operators.errors import InputError
from pipelines import failpoints, storage
from pipelines.accounting import Ledger
from pipelines.cache import DAMAGED, ShardCache, derive
from pipelines.engine import Job, MapFn, Outcome, Part, _reason_counts, map_local, stored
from pipelines.readers import (REJECT_SCHEMA, RowError, Shard, Source, Span, WHOLE, _advice, check_read_loss, gzipped,
                               input_sha256, parquet_rows, read_shards)

READER = "read-4"  # part of every read key: a new way of reading (or of its cache entries) makes new keys


@dataclass(frozen=True)
class ReadTask:
    """One read task: a span of one input file and what names the file's bytes."""

    source: Source
    span: Span
    identity: str  # what names the input's bytes in the task's cache key: their sha256, or a URL and its version
    rows: int  # input rows it covers, as far as planning knows (progress)
    version: str | None = None  # the input's version planned on (size + ETag, or mtime): a worker reads no other
    hashes: bool = False  # also give the input's sha256 (of the worker's copy), which the planner did not compute
    stated: bool = False  # `version` names the input's content (storage.stated_version): the manifest keeps it

    def load(self) -> ReadTask:  # map_fn hands `job.part.load()` to the task
        return self


@dataclass(frozen=True)
class ShardRead:
    """One shard a read task made: rows, rejects, the rows' raw ids (id, hashed, where), its books."""

    rows: Part
    rejects: Part
    ids: Part
    rows_read: int
    errors: dict[str, int]  # rejects that are mistakes, by reason (not `counted` skips)
    key: str
    input_sha256: str | None = None  # of the whole input, from a task that `hashes`
    input_bytes: int | None = None  # of the whole input, from a task that `hashes` (its copy's size)
    id_column: pl.Series | None = None  # `ids`' id column, from the task that read the rows (no file read for it)


def read_inputs(sources: list[Source], shard_rows: int, cache: ShardCache | None = None,
                map_fn: MapFn = map_local) -> Outcome:
    """Read every input as shards of at most `shard_rows` rows, one task per file or span, then make the
    ids unique across all inputs and keep the books."""
    tasks, meta = [], []
    for src in sources:
        planned, sha = plan(src, shard_rows)
        tasks += planned
        size = storage.version_size(planned[0].version)
        if size is None and sha is not None:  # a store that states no size (http without Content-Length): the
            size = storage.local_copy(src.path, planned[0].version).stat().st_size  # planner's copy, no request
        meta.append({"path": storage.display(src.path), "format": src.format, "source": src.source,
                     "bytes": size, "sha256": sha,
                     **({"version": planned[0].version} if planned[0].stated else {})})
    jobs = [Job(task, task_key(task, shard_rows), f"{storage.name(task.source.path)}@{task.span.start}")
            for task in tasks]
    found = cache.lookup([job.key for job in jobs]) if cache else [None] * len(jobs)
    cached = [None if files is None else _answer(files, job.key, cache) for job, files in zip(jobs, found)]
    todo = [job for job, shards in zip(jobs, cached) if shards is None]
    computed = iter(map_fn(read_task, todo, "read", None, store=cache, shard_rows=shard_rows) if todo else [])
    reads = [next(computed)[0] if shards is None else (shards, True) for shards in cached]
    hashed = {id(task.source): _hashed(task, shards) for task, (shards, _) in zip(tasks, reads) if task.hashes}
    for src, about in zip(sources, meta):
        if id(src) in hashed:
            about["sha256"], size = hashed[id(src)]
            about["bytes"] = size if about["bytes"] is None else about["bytes"]
    owners = [task.source for task, (shards, _) in zip(tasks, reads) for _ in shards]
    made = [not reused for shards, reused in reads for _ in shards]
    shards = unique_ids([s for shards, _ in reads for s in shards], owners, cache)
    outcome = _books(sources, owners, shards, meta)
    outcome.reused = sum(reused for _, reused in reads)
    outcome.computed = len(reads) - outcome.reused
    outcome.made = {shard.key for shard, new in zip(shards, made) if new}
    return outcome


def plan(src: Source, shard_rows: int) -> tuple[list[ReadTask], str | None]:
    """The read tasks of one input: a task per `shard_rows` lines of an uncompressed JSONL file or rows of a
    Parquet file, else one for the whole file; and the file's sha256, or None when a task gives it. Each
    task's cache key names the input's bytes by their sha256 or, at a URL whose store gives every write a new
    version (an ETag, a generation), by the URL and that version: then the planner reads no more than a
    Parquet footer, and the first task also hashes its worker's copy (for the manifest). An input at a URL
    is read from local copies (storage.local_copy: downloaded once per process): a JSONL file's spans are
    found on the planner's; each task reads its span from the copy of the process it runs in, so a big
    input on a bucket is read by every worker side by side. The tasks carry the object's version: a worker
    finding another one (the object was overwritten since) stops with an error naming the URL instead of
    reading spans that do not match."""
    version, names_content = _version(src)
    if src.format == "jsonl" and not gzipped(src.path):
        sha, cuts, lines = _scan_lines(storage.local_copy(src.path, version), shard_rows)
        starts = [(0, 1), *cuts]
        stops = [offset for offset, _ in cuts] + [None]
        spans = [Span(start, stop, line) for (start, line), stop in zip(starts, stops)]
        rows = [shard_rows] * (len(spans) - 1) + [max(0, lines - (len(spans) - 1) * shard_rows)]
        identity = sha
    else:
        sha = None if names_content else input_sha256(src.path, version)
        identity = sha or f"{storage.display(src.path)} {version}"
        spans, rows = [WHOLE], [0]
        if src.format == "parquet":  # of a URL: its footer
            total = parquet_rows(src.path, storage.display(src.path))
            spans = [Span(start, min(start + shard_rows, total)) for start in range(0, total, shard_rows)] or [WHOLE]
            rows = [span.stop - span.start if span.stop is not None else 0 for span in spans]
    if len(spans) == 1:
        spans = [WHOLE]  # one task reads the whole file (and says so when it is empty)
    return [ReadTask(src, span, identity, n, version, hashes=sha is None and i == 0, stated=names_content)
            for i, (span, n) in enumerate(zip(spans, rows))], sha


def _hashed(task: ReadTask, shards: list[ShardRead]) -> tuple[str, int | None]:
    """The input's sha256 and bytes its hashing `task` gave with its `shards` (or, from a cache entry made
    before tasks gave them, this process's own: its bytes only if the input's version does not state them)."""
    given = next((s for s in shards if s.input_sha256), None)
    if given is not None and (given.input_bytes is not None or storage.version_size(task.version) is not None):
        return given.input_sha256, given.input_bytes
    return _copy_hash(task)


def _version(src: Source) -> tuple[str, bool]:
    """The input's version now (storage.stated_version: one look-up), or an InputError when there is no file."""
    try:
        if storage.is_remote(src.path) or Path(src.path).is_file():
            return storage.stated_version(src.path)
    except storage.Missing:
        pass
    raise InputError(f"{storage.display(src.path)}: input file not found")


def task_key(task: ReadTask, shard_rows: int) -> str:
    how = json.dumps([asdict(task.source), asdict(task.span), shard_rows], default=str, sort_keys=True)
    return derive(READER, task.identity, how)


def read_task(task: ReadTask, store: ShardCache | None, shard_rows: int) -> tuple[list[ShardRead], bool]:
    """The shards of one read task, and whether they came from the cache (`read_inputs` found no entry, but
    a task run again after its worker died may: the dead worker's). With a cache, each shard's files are
    written to it (or uploaded) as soon as the shard is read, and the task's shards are kept as one cache
    entry, with the rows of its files in its books (so no file is read to count them)."""
    key = task_key(task, shard_rows)
    if store is not None and (files := store.files(key)) is not None:
        if (shards := _cached(files, key, store)) is not None:
            return shards, True
    if store is None:
        shards = [_shard_read(key, i, shard.rows_read, shard.errors, [Part(len(f), f) for f in _frames(shard)])
                  for i, shard in enumerate(read_shards(task.source, shard_rows, None, task.span, task.version))]
        failpoints.hit("read.shard")
        sha, size = _own_hash(task)
        return [replace(shard, input_sha256=sha, input_bytes=size) for shard in shards], False
    books, given = [], []
    with store.entry(key, first=1) as entry:  # each shard's files written (or uploaded) as soon as it is read
        for shard in read_shards(task.source, shard_rows, None, task.span, task.version):
            given.append(shard.ids.get_column("id"))
            books.append({"rows_read": shard.rows_read, "errors": json.dumps(dict(shard.errors)),
                          "frames": [len(frame) for frame in _frames(shard)]})
            entry.add(*(frame for j, frame in enumerate(_frames(shard)) if len(frame) or j != REJECTS))
        sha, size = _own_hash(task)
        index = pl.DataFrame(books, schema={"rows_read": pl.Int64, "errors": pl.String, "frames": pl.List(pl.Int64)})
        index = index.with_columns(input_sha256=pl.lit(sha, pl.String), input_bytes=pl.lit(size, pl.Int64))
        files = entry.commit((index,))
    failpoints.hit("read.shard")
    return [replace(shard, id_column=ids) for shard, ids in zip(_entry(index.to_dicts(), files[1:], key, fresh=True),
                                                                 given)], False


def _own_hash(task: ReadTask) -> tuple[str | None, int | None]:
    """The input's sha256 and bytes from this worker's copy, for the task that `hashes` (the planner did not
    compute them)."""
    return _copy_hash(task) if task.hashes else (None, None)


def _copy_hash(task: ReadTask) -> tuple[str, int]:
    """The sha256 and bytes of this process's local copy of the task's input."""
    copy = storage.local_copy(task.source.path, task.version)
    return storage.sha256(copy), copy.stat().st_size


def _frames(shard: Shard) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return shard.rows, shard.rejects, shard.ids


REJECTS = 1  # in _frames: a shard without rejects (the usual case) keeps no file for them in its cache entry


def _answer(files: list[storage.Location], key: str, cache: ShardCache) -> list[ShardRead] | None:
    """The driver's `_cached`: an entry the store fails to give (after retries) is left to its read task, as one
    not found (see ShardCache.lookup); the task, which has retries, asks again."""
    try:
        return _cached(files, key, cache)
    except storage.StorageError:
        return None


def _cached(files: list[storage.Location], key: str, cache: ShardCache) -> list[ShardRead] | None:
    """The shards of `cache`'s entry `key`, or None when its files are not the ones its books name (a damaged
    or hand-edited entry: a cache only saves work, so it is dropped, the run's log says so, and its task reads
    the input again and makes the entry anew)."""
    try:  # its books (file 0) deleted or unreadable: damaged too
        if not files:
            raise FileNotFoundError("a file missing")
        books = storage.read_parquet(files[0]).to_dicts()
        named = sum(1 for b in books for j, n in enumerate(b["frames"]) if n or j != REJECTS)
    except DAMAGED as error:
        why = f"its books cannot be read: {error}"
    else:
        if len(files) - 1 == named:
            return _entry(books, files[1:], key)
        why = f"{len(files) - 1} shard files where its books name {named}"
    cache.damaged(key, why, "read cache entry")
    return None


def _entry(books: list[dict], files: list[storage.Location], key: str, fresh: bool = False) -> list[ShardRead]:
    """The shards of a read task's cache entry: each shard's books (rows read, errors, the rows of its
    frames: rows, rejects, ids) and its files, one per frame but none for no rejects. `fresh`: this process
    has just written the files (and may keep copies of them: storage.keep)."""
    left = iter(files)

    def part(rows: int) -> Part:
        path = next(left)
        return Part(rows, path=path, kept_by=storage.kept(path) if fresh else None)

    parts = [[Part(0, pl.DataFrame(schema=REJECT_SCHEMA)) if j == REJECTS and not n else part(n)
              for j, n in enumerate(b["frames"])] for b in books]
    return [_shard_read(key, i, b["rows_read"], json.loads(b["errors"]), shard_parts, b.get("input_sha256"),
                        b.get("input_bytes")) for i, (b, shard_parts) in enumerate(zip(books, parts))]


def _shard_read(key: str, i: int, rows_read: int, errors: dict[str, int], parts: list[Part],
                input_sha: str | None = None, input_bytes: int | None = None) -> ShardRead:
    return ShardRead(*parts, rows_read, dict(errors), derive(key, str(i)), input_sha, input_bytes)


# --- ids unique across all inputs -------------------------------------------------------------------------


def unique_ids(shards: list[ShardRead], owners: list[Source], cache: ShardCache | None) -> list[ShardRead]:
    """Make row ids unique across all shards, in input order: the first row with an id keeps it; a later row
    with the same given id is rejected (`read:duplicate_id`, naming where the id was first seen) or, under
    `on_error: fail`, stops the run; a later row with the same content id is renamed `<id>-2`, `-3`, ..."""
    if not shards:
        return shards
    ids = pl.concat([frame.with_row_index("row").with_columns(pl.lit(i, pl.Int64).alias("shard"))
                     for i, frame in enumerate(_ids(shards, cache is not None and cache.remote))])
    if ids["id"].n_unique() == len(ids):  # the usual case, told ~6x faster than which ids repeat
        return shards
    repeated = ids.filter(pl.col("id").is_duplicated())
    if not len(repeated):
        return shards
    about = pl.concat([shards[i].ids.load().select("hashed", "where").with_row_index("row")
                       .with_columns(pl.lit(i, pl.Int64).alias("shard")) for i in repeated["shard"].unique()])
    repeated = repeated.join(about, on=["shard", "row"]).sort("shard", "row")
    taken = set(ids["id"].to_list())
    first: dict[str, str] = {}
    fixes: dict[int, list[tuple[int, str | None, str, str]]] = {}  # shard -> (row, new id or None, where, detail)
    for rid, hashed, where, row, shard in repeated.select("id", "hashed", "where", "row", "shard").iter_rows():
        if rid not in first:
            first[rid] = where
        elif hashed:
            n = 2
            while f"{rid}-{n}" in taken:
                n += 1
            taken.add(f"{rid}-{n}")
            fixes.setdefault(shard, []).append((row, f"{rid}-{n}", where, ""))
        else:
            err = RowError("duplicate_id", f"duplicate id {rid!r} (first seen at {first[rid]})")
            src = owners[shard]
            if src.on_error == "fail":
                raise InputError(f"{where}: {err} ({_advice(src, err)})")
            fixes.setdefault(shard, []).append((row, None, where, f"{where}: {err}"))
    return [_fixed(s, fixes[i], cache) if i in fixes else s for i, s in enumerate(shards)]


def _fixed(shard: ShardRead, fixes: list[tuple[int, str | None, str, str]], cache: ShardCache | None) -> ShardRead:
    """`shard` with its ids renamed and its repeated given ids moved to its rejects."""
    rows = shard.rows.load().with_row_index("__row")
    renamed = {row: new for row, new, _, _ in fixes if new is not None}
    dropped = {row: (where, detail) for row, new, where, detail in fixes if new is None}
    new_id = pl.col("__row").replace_strict(renamed, default=None, return_dtype=pl.String)
    rows = rows.with_columns(pl.coalesce(new_id, pl.col("id")).alias("id"))
    gone = rows.filter(pl.col("__row").is_in(list(dropped))).sort("__row")
    rejects = []
    for record in gone.to_dicts():
        where, detail = dropped[record.pop("__row")]
        raw = json.dumps(record, ensure_ascii=False, default=str)
        rid = hashlib.blake2b(f"{where}\n{raw}".encode(errors="replace"), digest_size=8).hexdigest()
        rejects.append({"id": rid, REASON: "read:duplicate_id", DETAIL: detail, "raw": raw})
    kept = rows.filter(~pl.col("__row").is_in(list(dropped))).drop("__row")
    rejected = pl.concat([shard.rejects.load(), pl.DataFrame(rejects, schema=REJECT_SCHEMA)])
    errors = dict(Counter(shard.errors) + Counter({"read:duplicate_id": len(dropped)}))
    key = derive(shard.key, "ids", json.dumps(sorted((row, new or "") for row, new, _, _ in fixes)))
    return ShardRead(_part(kept, cache), _part(rejected, cache), shard.ids, shard.rows_read, errors, key)


def _part(frame: pl.DataFrame, cache: ShardCache | None) -> Part:
    return stored(frame, cache.spill(frame)) if cache is not None else Part(len(frame), frame)


def _ids(shards: list[ShardRead], remote: bool) -> list[pl.DataFrame]:
    """Every shard's `id` column: as the task that read the shard gave it, else from its file (of a cache
    entry made before); on an object store the files read whole (one GET; a scan adds a footer's) and side
    by side (the driver waits for the slowest, not for each in turn)."""
    def read(shard: ShardRead) -> pl.DataFrame:
        if shard.id_column is not None:
            return shard.id_column.to_frame("id")
        return shard.ids.load().select("id") if remote else shard.ids.scan().select("id").collect()

    with ThreadPoolExecutor(16 if remote else 1) as pool:
        return list(pool.map(read, shards))


# --- books --------------------------------------------------------------------------------------------------


def _books(sources: list[Source], owners: list[Source], shards: list[ShardRead], meta: list[dict]) -> Outcome:
    """The read's outcome: shards named `<file>#<n>` in input order, rejects, the read stage's books, the
    inputs with their rows; each input checked for rows and for its `max_reject_share`."""
    ledger = Ledger()
    count = ledger.stage("read", "read")
    parts, rejected, keys, names = [], [], [], []
    for src, about in zip(sources, meta, strict=True):
        mine = [s for s, owner in zip(shards, owners) if owner is src]
        rows_read = sum(s.rows_read for s in mine)
        if not rows_read:
            raise InputError(f"{storage.display(src.path)}: the input has no rows (empty file); remove it from "
                             "`inputs` or fill it")
        reasons: Counter = Counter()
        example = None
        for n, shard in enumerate(mine):
            reasons.update(shard.errors)
            parts.append(shard.rows)
            keys.append(shard.key)
            names.append(f"{storage.name(src.path)}#{n:05d}")
            counts = {}
            if shard.rejects.rows:
                rejected.append(shard.rejects)
                frame = shard.rejects.load()
                counts = _reason_counts(frame)
                example = example or frame[DETAIL][0]
            count.add(shard.rows_read, shard.rows.rows, counts)
        documents = sum(s.rows.rows for s in mine) + sum(reasons.values())  # not skipped records (WARC requests)
        check_read_loss(src, documents, reasons, example)
        about["rows"] = rows_read
    return Outcome(parts, rejected, ledger, meta, keys, names)


# --- files ---------------------------------------------------------------------------------------------------


def _scan_lines(path: Path, every: int) -> tuple[str, list[tuple[int, int]], int]:
    """One pass over a file: its sha256, where every `every`-th line ends ((byte offset of the next line,
    its line number)), and how many lines it has."""
    digest, cuts, lines, offset = hashlib.sha256(), [], 0, 0
    last = b""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            for k in range(every - 1 - lines % every, len(ends), every):  # line lines + k + 1 ends at ends[k]
                cuts.append((offset + int(ends[k]) + 1, lines + k + 2))
            lines += len(ends)
            offset += len(block)
            last = block[-1:]
    if last and last != b"\n":
        lines += 1  # a last line without a newline
    if cuts and cuts[-1][0] >= offset:
        cuts.pop()  # the file ends on a cut
    return digest.hexdigest(), cuts, lines
