"""Readers: JSONL (.gz), JSON arrays, Parquet and CSV, streamed as shards of validated rows.

Every input row either becomes a row of a shard (payload fields renamed by the field mapping, every other
column kept unless the input says `keep: mapped` or `drop: [...]`, a unique string `id`) or a reject with a `read:<kind>` reason and a detail naming the file
and line. With `on_error: fail` (the default) the first bad row stops the run with that message instead.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import hashlib
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from operators.base import DETAIL, REASON
from operators.errors import InputError, SluiceError
from pipelines import storage

Format = Literal["jsonl", "json", "parquet", "csv", "warc", "html", "text", "text_lines", "pdf", "pdf_pages"]
_SURROGATE = re.compile("[\udc80-\udcff]")
_SUFFIX_FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
    ".warc": "warc", ".wet": "warc", ".html": "html", ".htm": "html", ".txt": "text", ".md": "text", ".pdf": "pdf",
}  # raw web and documents: pipelines/sources.py


@dataclass(frozen=True)
class Source:
    """One input file and how to read it (built from the config's `inputs` entry)."""

    path: Path
    format: Format
    fields: dict[str, str] = field(default_factory=dict)  # output column -> input field
    optional: tuple[str, ...] = ()  # output columns that may be missing, null or empty ("" then)
    source: str = ""
    on_error: Literal["fail", "skip"] = "fail"
    keep: Literal["all", "mapped"] = "all"  # mapped: only the mapped fields (plus `id` and `source`)
    drop: tuple[str, ...] = ()  # input fields left out of the rows (never a mapped one)
    configured: bool = True  # from a config's `inputs` (else a one-off verb's arguments): which advice fits
    max_reject_share: float | None = None  # reading may reject at most this share of the rows (None: any)


def detect_format(path: Path) -> Format | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and gzipped(path):
        suffixes.pop()
    return _SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


class RowError(Exception):
    """A bad input row: `kind` becomes the reject reason `read:<kind>`. A `counted` one (a WARC request
    record, say) is always a reject, even under `on_error: fail`: it is not a mistake in the input."""

    counted = False

    def __init__(self, kind: str, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.column = column  # the mapped column that is missing or empty, which `optional:` would allow


@dataclass
class Shard:
    """One batch of rows from one input file, plus the rows rejected while reading it."""

    source: Source
    index: int  # shard number within its source (or within its span of the source)
    rows: pl.DataFrame
    rejects: pl.DataFrame
    rows_read: int  # rows + rejects
    errors: Counter = field(default_factory=Counter)  # rejects that are mistakes (not `counted` skips), by reason
    ids: pl.DataFrame | None = None  # without an IdRegistry: id, hashed, where of every row (for `unique_ids`)


@dataclass(frozen=True)
class Span:
    """The part of a file one read task covers: bytes [start, stop) of a JSONL file whose first line is
    number `line`, or rows [start, stop) of a Parquet file; stop None: to the end."""

    start: int = 0
    stop: int | None = None
    line: int = 1


WHOLE = Span()


def content_id(content: dict[str, Any]) -> str:
    """The id of a row that has none: a hash of its content (the same content, the same id, in any run, and
    whichever reader read it: nulls and absent keys are alike, 2.0 is 2, as a column of numbers makes them)."""
    canonical = json.dumps(_canonical(content), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class IdRegistry:
    """Ids unique within what one registry sees: a given id seen before is a `duplicate_id` reject; a
    content id seen before (identical rows) gets a suffix, `-2`, `-3`, ... (`sluice run` checks the ids of all
    its inputs at once instead: pipelines/reading.py `unique_ids`)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def claim(self, rid: str, hashed: bool, where: str) -> str:
        if not hashed and rid in self._seen:
            raise RowError("duplicate_id", f"duplicate id {rid!r} (first seen at {self._seen[rid]})")
        base, n = rid, 1
        while rid in self._seen:  # identical content: keep both rows, tell them apart
            n += 1
            rid = f"{base}-{n}"
        self._seen[rid] = where
        return rid


def read_shards(src: Source, shard_rows: int, ids: IdRegistry | None, span: Span = WHOLE,
                version: str | None = None) -> Iterator[Shard]:
    """Stream `src` (the `span` of it) as shards of at most `shard_rows` input rows. With `ids`, row ids are
    made unique as they are read; without, each shard carries its rows' raw ids (`Shard.ids`) for a check of
    all inputs together. JSONL, Parquet and CSV are read by Polars, a shard at a time; the rows it cannot read or
    that break a rule go through the row-by-row reader, which names file, row and field. An input at a URL is
    read from a local copy (storage.local_copy) but named by its URL, in rejects and messages alike."""
    if not storage.is_remote(src.path) and not Path(src.path).is_file():  # at a URL: storage.local_copy says so
        raise InputError(f"{storage.display(src.path)}: input file not found")
    index = 0
    try:
        for batch in _batches(src, shard_rows, span, version):
            yield _shard(src, index, batch, ids)
            index += 1
    except SluiceError:
        _unchanged(src, version)  # a local file rewritten while read: that is the error, not a row it cut
        raise
    _unchanged(src, version)
    if index == 0 and span == WHOLE:
        raise InputError(f"{storage.display(src.path)}: the input has no rows (empty file); remove it from "
                         "`inputs` or fill it")


def _unchanged(src: Source, version: str | None) -> None:
    """A local input still has the `version` its read was planned on (a URL's is read from a snapshot)."""
    if version is not None and not storage.is_remote(src.path):
        storage.local_copy(src.path, version)


def check_read_loss(src: Source, rows_read: int, reasons: Counter, example: str | None) -> None:
    """Fail loudly when reading `src` rejected more than its `max_reject_share` of the rows as bad (`reasons`:
    Shard.errors; records that are no documents, such as WARC requests, do not count): a wrong field mapping
    or format then names itself instead of publishing a release that quietly lacks the input."""
    reasons = +reasons
    rejected = sum(reasons.values())
    if src.max_reject_share is None or not rows_read or rejected <= src.max_reject_share * rows_read:
        return
    top = ", ".join(f"{reason} {n:,}" for reason, n in reasons.most_common(3))
    raise InputError(
        f"{storage.display(src.path)}: reading rejected {rejected:,} of {rows_read:,} rows ({rejected / rows_read:.1%}), more than "
        f"this input's max_reject_share {src.max_reject_share:.0%}: {top}" + (f"; e.g. {example}" if example else "")
        + ". Check the input's format, `fields:` and `optional:`, or raise `max_reject_share` on this input "
        "if the loss is expected")


def _advice(src: Source, err: RowError) -> str:
    """What the user can do about a bad row: allow the field to be empty first, counting rejects second."""
    if not src.configured:
        return "to reject and count such rows instead: --on-error skip"
    allow = (f"if {err.column!r} may be empty or missing, list it as `optional: [{err.column}]` on this input; "
             if err.column else "")
    return f"{allow}to reject and count such rows instead: `on_error: skip` on this input, or --on-error skip"


def _shard(src: Source, index: int, batch: _Batch, ids: IdRegistry | None) -> Shard:
    if batch.frame is not None and (shard := _fast_shard(src, index, batch, ids)) is not None:
        return shard
    records = batch.records if batch.frame is None else [(w, batch.record(i)) for i, w in enumerate(batch.wheres)]
    return _slow_shard(src, index, records, ids)


_ID_SCHEMA = {"id": pl.String, "hashed": pl.Boolean, "where": pl.String}


def _slow_shard(src: Source, index: int, records: list[tuple[str, Any]], ids: IdRegistry | None) -> Shard:
    """The row-by-row reader: each record validated on its own, a bad one a reject naming file, row and field."""
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    raw_ids: list[tuple[str, bool, str]] = []
    errors: Counter = Counter()
    for where, record in records:
        try:
            row, hashed = _validate(src, record)
            if ids is not None:
                row["id"] = ids.claim(row["id"], hashed, where)
            else:
                raw_ids.append((row["id"], hashed, where))
            good.append(row)
        except RowError as err:
            if src.on_error == "fail" and not err.counted:
                raise InputError(f"{where}: {err} ({_advice(src, err)})") from None
            bad.append(_reject(where, record, err))
            errors[f"read:{err.kind}"] += not err.counted
    rows = _frame(src, good) if good else pl.DataFrame(schema={"id": pl.String, **{f: pl.String for f in src.fields}})
    rejects = pl.DataFrame(bad, schema=REJECT_SCHEMA)
    table = None if ids is not None else pl.DataFrame(raw_ids, schema=_ID_SCHEMA, orient="row")
    return Shard(src, index, rows, rejects, len(good) + len(bad), +errors, table)


REJECT_SCHEMA = {"id": pl.String, REASON: pl.String, DETAIL: pl.String, "raw": pl.String}


def _fast_shard(src: Source, index: int, batch: _Batch, ids: IdRegistry | None) -> Shard | None:
    """A shard from a frame Polars read: the mapped fields checked as columns, the rows that break a rule
    sent through `_validate` (for the reject it names). None when a column is not what the row-by-row reader
    would make of it (a mapped field that is no text, an id that is no string or integer): then that reader
    reads the whole batch."""
    frame, n = batch.frame, batch.frame.height
    suspect = pl.Series([False] * n)
    payload: dict[str, pl.Series] = {}
    for target, name in src.fields.items():
        if target == "id":
            continue
        column = frame[name] if name in frame.columns else pl.Series(name, [None] * n, pl.String)
        column = column.cast(pl.String) if column.dtype == pl.Null else column
        if column.dtype != pl.String:
            return None
        if target in src.optional:
            column = column.fill_null("")
        else:
            suspect = suspect | column.is_null() | column.str.contains(r"^[\s\x1c-\x1f]*$")  # what str.strip() strips
        payload[target] = column.alias(target)
    id_column = _id_column(src)
    given = frame[id_column] if id_column in frame.columns else pl.Series([None] * n, dtype=pl.String)
    if not (given.dtype in (pl.String, pl.Null) or given.dtype.is_integer()):
        return None
    given = given.cast(pl.String)
    mapped = set(src.fields.values())
    if src.keep == "mapped":
        extra = [c for c in ("id", "source") if c in frame.columns and c not in mapped]
    else:
        extra = [c for c in frame.columns if c not in mapped and c not in src.drop]
    columns = {c: frame[c] for c in extra} | payload
    columns.pop("id", None)
    if src.source:
        columns["source"] = columns["source"].fill_null(src.source) if "source" in columns else \
            pl.Series("source", [src.source] * n)
    rows = pl.DataFrame([*(columns[t] for t in src.fields if t != "id" and t in columns),
                         *(s for c, s in columns.items() if c not in src.fields)], height=n)
    hashed = given.is_null() | (given == "")
    content = rows.with_columns(source=pl.lit(src.source, pl.String)).filter(hashed).to_dicts()
    hashes = iter([content_id(c) for c in content])
    raw = [next(hashes) if h else g for g, h in zip(given.to_list(), hashed.to_list())]
    rows = rows.insert_column(0, pl.Series("id", raw, pl.String))
    good, bad, errors = [], [], Counter()
    wheres = batch.wheres
    if ids is not None or suspect.any():
        flags, hashed_flags = suspect.to_list(), hashed.to_list()
        for i, where in enumerate(wheres):
            try:
                if flags[i]:
                    record = batch.record(i)
                    _validate(src, record)
                    return None  # the rule said bad, the reader says good: let the reader read the batch
                if ids is not None:
                    raw[i] = ids.claim(raw[i], hashed_flags[i], where)
                good.append(i)
            except RowError as err:
                if src.on_error == "fail" and not err.counted:
                    raise InputError(f"{where}: {err} ({_advice(src, err)})") from None
                bad.append(_reject(where, batch.record(i), err))
                errors[f"read:{err.kind}"] += 1
        keep = pl.Series([False] * n).scatter(good, True) if good else pl.Series([False] * n)
        rows = rows.with_columns(pl.Series("id", raw, pl.String)).filter(keep)
        table = None if ids is not None else pl.DataFrame(
            {"id": raw, "hashed": hashed, "where": wheres}, schema=_ID_SCHEMA).filter(keep)
    else:
        table = pl.DataFrame({"id": raw, "hashed": hashed, "where": wheres}, schema=_ID_SCHEMA)
    return Shard(src, index, rows, pl.DataFrame(bad, schema=REJECT_SCHEMA), n, +errors, table)


def _id_column(src: Source) -> str | None:
    """The input field a row's given id comes from (None: rows get content ids)."""
    if "id" in src.fields:
        return src.fields["id"]
    if "id" in src.fields.values() or (src.keep == "all" and "id" in src.drop):
        return None
    return "id"


def _frame(src: Source, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows -> DataFrame. An extra (unmapped) column whose values mix kinds (say a number and an object)
    is kept as JSON text, because Polars would otherwise turn the odd values into nulls."""
    mixed = _mixed_columns(rows)
    if mixed:
        rows = [{k: (json.dumps(v, ensure_ascii=False) if k in mixed and v is not None else v) for k, v in r.items()}
                for r in rows]
    frame = pl.from_dicts(rows, infer_schema_length=None)
    payload = ["id", *src.fields]
    return frame.select(payload + [c for c in frame.columns if c not in payload])


def _mixed_columns(rows: list[dict[str, Any]]) -> set[str]:
    """Columns whose values disagree in kind anywhere inside (a number here, text there; {"a": 1} here,
    {"a": {"b": 2}} there): Polars would null or refuse them."""
    kinds: dict[str, dict[str, set[type]]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                _kinds(value, "", kinds.setdefault(key, {}))
    return {key for key, paths in kinds.items() if any(len(seen) > 1 for seen in paths.values())}


def _kinds(value: Any, path: str, seen: dict[str, set[type]]) -> None:
    """Record the kind of `value` and of everything nested in it, by path (int and float are one kind)."""
    seen.setdefault(path, set()).add(float if type(value) is int else type(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if item is not None:
                _kinds(item, f"{path}.{key}", seen)
    elif isinstance(value, list):
        for item in value:
            if item is not None:
                _kinds(item, f"{path}[]", seen)


def _validate(src: Source, record: Any) -> tuple[dict[str, Any], bool]:
    """One record as a row, and whether its id is a content hash (it had none); a bad one raises RowError."""
    if isinstance(record, RowError):
        raise record
    if not isinstance(record, dict):
        raise RowError("not_an_object", f"expected an object with fields, got {type(record).__name__}")
    row = _unmapped(src, record)
    for target, name in src.fields.items():
        row[target] = _field_value(src, record, target, name)
    given = row.pop("id", None)
    if isinstance(given, (dict, list, float, bool)):
        raise RowError("wrong_type", f"field 'id' must be a string or an integer, got {type(given).__name__}")
    hashed = given is None or given == ""
    row["id"] = content_id(row | {"source": src.source}) if hashed else str(given)
    if src.source:
        row.setdefault("source", src.source)
    return row, hashed


def _unmapped(src: Source, record: dict[str, Any]) -> dict[str, Any]:
    """The fields of `record` that travel along unrenamed: all but the mapped and dropped ones, or with
    `keep: mapped` only `id` and `source` (the row's identity and provenance)."""
    mapped = set(src.fields.values())
    if src.keep == "mapped":
        return {k: record[k] for k in ("id", "source") if k in record and k not in mapped}
    return {k: v for k, v in record.items() if k not in mapped and k not in src.drop}


def _field_value(src: Source, record: dict, target: str, name: str) -> Any:
    value = record.get(name)
    if target == "id":
        return value
    if target in src.optional:
        if value is None:
            return ""
    elif name not in record:
        raise RowError("missing_field", f"missing field {name!r}" + (f" (mapped to {target!r})" if name != target else ""),
                       target)
    elif value is None:
        raise RowError("missing_field", f"field {name!r} is null", target)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"field {name!r} must be a string, got {type(value).__name__}: {_clip(value)}")
    if target not in src.optional and not value.strip():
        raise RowError("empty_field", f"field {name!r} is empty or whitespace-only", target)
    return value


def _reject(where: str, record: Any, err: RowError) -> dict[str, Any]:
    raw = record.raw if isinstance(record, _BadLine) else json.dumps(record, ensure_ascii=False, default=str)
    rid = hashlib.blake2b(f"{where}\n{raw}".encode(errors="replace"), digest_size=8).hexdigest()
    return {"id": rid, REASON: f"read:{err.kind}", DETAIL: f"{where}: {err}", "raw": raw}


def _clip(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


class _BadLine(RowError):
    """A line that is not a record at all (bad JSON, bad encoding); keeps the raw text for rejects."""

    def __init__(self, kind: str, message: str, raw: str) -> None:
        super().__init__(kind, message)
        self.raw = raw


# --- record streams: (where, record-or-error) ---------------------------------------------------------


@dataclass
class _Batch:
    """Up to `shard_rows` input rows: a `frame` Polars read (row i from `wheres[i]`; `record(i)`: row i as the
    row-by-row reader sees it), or `records`, (where, record-or-error) pairs for the row-by-row reader."""

    records: list[tuple[str, Any]] | None = None
    frame: pl.DataFrame | None = None
    wheres: list[str] | None = None
    record: Callable[[int], Any] | None = None


def _batches(src: Source, shard_rows: int, span: Span, version: str | None) -> Iterator[_Batch]:
    """The batches of `src`: read from `path` (a local copy of an input at a URL, of the object `version`
    when given), named `name` (its URL)."""
    path, name = storage.local_copy(src.path, version), storage.display(src.path)
    try:
        if src.format == "parquet":
            yield from _parquet_batches(path, name, shard_rows, span)
        elif src.format == "jsonl":
            _check_encoding(path, name)
            yield from _jsonl_batches(path, name, shard_rows, span)
        elif src.format == "csv" and (batches := _csv_batches(path, name, shard_rows)) is not None:
            yield from batches
        else:
            records = _records(src.format, path, name)
            while chunk := list(itertools.islice(records, shard_rows)):
                yield _Batch(records=chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"{name}: truncated or corrupt gzip file ({err})") from None
    except OSError as err:
        raise InputError(f"{name}: cannot read ({err.strerror or err})") from None


def _jsonl_batches(path: Path, name: str, shard_rows: int, span: Span) -> Iterator[_Batch]:
    number, lines = span.line - 1, []
    for line in _lines(path, span):
        number += 1
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
        if line.strip():  # blank lines are not rows
            lines.append((number, line))
            if len(lines) >= shard_rows:
                yield _jsonl_batch(name, lines)
                lines = []
    if lines:
        yield _jsonl_batch(name, lines)


def _lines(path: Path, span: Span, block: int = 1 << 24) -> Iterator[bytes]:
    """The lines of bytes [span.start, span.stop) of a file (without their newlines), read in big blocks."""
    left = None if span.stop is None else span.stop - span.start
    rest = b""
    with open_binary(path) as fh:
        fh.seek(span.start)
        while left is None or left > 0:
            data = fh.read(block if left is None else min(block, left))
            if not data:
                break
            left = None if left is None else left - len(data)
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            yield from lines
    if rest:
        yield rest


# Bytes that json.loads refuses inside a string but Polars may not (raw control characters, kept by this
# translation table's `delete` of every other byte); a lone high surrogate escape (Polars reads a NUL).
_NOT_CONTROL = bytes(range(0x20, 0x100)) + b"\n"
_LONE_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")


def _jsonl_batch(name: str, lines: list[tuple[int, bytes]]) -> _Batch:
    raw = [line for _, line in lines]
    wheres = [f"{name}:{number}" for number, _ in lines]
    data = b"\n".join(raw)
    if b"\r" in data:  # CRLF line ends; a "\r" inside a line is a control character
        data = b"\n".join(line.removesuffix(b"\r") for line in raw)
    frame = None
    if not data.translate(None, _NOT_CONTROL) and not _surrogate(data):
        try:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        except Exception:  # a line Polars cannot read (bad JSON, types that do not mix): the row-by-row reader
            frame = None
    if frame is None or frame.height != len(raw) or _coerced(frame, data):
        return _Batch(records=[(where, _parse_line(line)) for where, line in zip(wheres, raw)])
    return _Batch(frame=frame, wheres=wheres, record=lambda i: _parse_line(raw[i]))


def _surrogate(data: bytes) -> bool:
    for probe in (b"\\ud", b"\\uD"):
        at = data.find(probe)
        while at != -1:
            if _LONE_SURROGATE.match(data, at):
                return True
            at = data.find(probe, at + 3)
    return False


def _coerced(frame: pl.DataFrame, data: bytes) -> bool:
    """Did Polars turn a non-string value into text (a number in a column of strings)? The row-by-row reader
    keeps such a column as JSON text, and rejects a mapped field that is no string. (One search per key:
    a pattern that starts with the whole key is found fast.)"""
    scalars: set[str] = set()
    lists: set[str] = set()
    for name, dtype in frame.schema.items():
        _string_keys(name, dtype, scalars, lists)
    quoted = lambda key: re.escape(json.dumps(key, ensure_ascii=False).encode())  # noqa: E731
    patterns = [quoted(k) + rb"\s*:\s*[-0-9tf\[{]" for k in scalars]
    patterns += [quoted(k) + rb"\s*:\s*\[(?:[^\]]*?,)?\s*[-0-9tf\[{]" for k in lists]
    return any(re.search(p, data) for p in patterns)


def _string_keys(name: str, dtype: pl.DataType, scalars: set[str], lists: set[str]) -> None:
    """Keys whose values Polars read as text: `scalars` hold strings, `lists` lists of strings."""
    if dtype == pl.String:
        scalars.add(name)
    elif isinstance(dtype, pl.Struct):
        for f in dtype.fields:
            _string_keys(f.name, f.dtype, scalars, lists)
    elif isinstance(dtype, (pl.List, pl.Array)):
        inner = dtype.inner
        if inner == pl.String:
            lists.add(name)
        elif isinstance(inner, pl.Struct):
            _string_keys(name, inner, scalars, lists)
        elif isinstance(inner, (pl.List, pl.Array)):  # nested lists: any value stops the fast path (rare)
            lists.add(name)


def _parse_line(line: bytes) -> Any:
    """One JSONL line as the row-by-row reader sees it: the record, or a _BadLine."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raw = line.decode("utf-8", errors="replace").rstrip("\n")
        return _BadLine("invalid_utf8", f"not valid UTF-8 (byte {err.start})", raw)
    text = text.rstrip("\r\n")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        return _BadLine("malformed_json", f"malformed JSON: {_json_problem(err)}", text)
    except RecursionError:
        return _BadLine("malformed_json", "malformed JSON: nested too deeply", text)


def _parquet_batches(path: Path, name: str, shard_rows: int, span: Span) -> Iterator[_Batch]:
    total = parquet_rows(path, name)
    stop = total if span.stop is None else min(span.stop, total)
    for start in range(span.start, stop, shard_rows):
        n = min(shard_rows, stop - start)
        try:
            frame = pl.scan_parquet(path).slice(start, n).collect()
        except Exception as err:  # a corrupt page or column chunk
            raise InputError(f"{name}: corrupt Parquet data after row {start} ({err})") from None
        wheres = [f"{name}: row {start + i + 1}" for i in range(n)]
        yield _Batch(frame=frame, wheres=wheres, record=lambda i, f=frame: f.row(i, named=True))


def input_sha256(path: Path | str, version: str | None = None) -> str:
    """The sha256 of an input's bytes (of a URL: of its local copy, of the object `version` when given), as
    the read's cache keys and the release manifest name it."""
    return storage.sha256(storage.local_copy(path, version))


def same_input(src: Source, recorded: dict) -> bool:
    """Whether `src` still holds the bytes a manifest's `recorded` input names: for an input at a URL whose
    version names its content (storage.stated_version; the manifest keeps it), one look-up of that version;
    else its sha256 (of a URL: its bytes downloaded)."""
    if recorded.get("version") and storage.is_remote(src.path):
        return storage.stated_version(src.path) == (recorded["version"], True)
    return input_sha256(src.path) == recorded.get("sha256")


def parquet_rows(path: Path, name: str | None = None) -> int:
    """storage.parquet_rows of an input, whose unreadable footer is the user's mistake: an InputError."""
    try:
        return storage.parquet_rows(path)
    except Exception as err:
        raise InputError(f"{name or path}: not a readable Parquet file ({err})") from None


def _records(fmt: Format, path: Path, name: str) -> Iterator[tuple[str, Any]]:
    """The row-by-row reader's records of the other formats: (where, record-or-error)."""
    read = {"json": _json_records, "csv": _csv_records}
    if fmt not in read:
        from pipelines.sources import raw_records

        yield from raw_records(path, fmt, name)
        return
    _check_encoding(path, name)
    yield from read[fmt](path, name)


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def _check_encoding(path: Path, name: str) -> None:
    """Text inputs are UTF-8 (a BOM is fine). UTF-16/32 would otherwise surface as a reject per line."""
    with open_binary(path) as fh:
        head = fh.read(64)
    wide = next((name for bom, name in _WIDE_BOMS.items() if head.startswith(bom)), None)
    if wide is None and len(head) >= 8 and (head[1:8:2] == b"\0" * 4 or head[0:8:2] == b"\0" * 4):
        wide = "UTF-16 (NUL bytes between the characters)"
    if wide:
        raise InputError(f"{name}: the file is encoded as {wide}; Sluice reads UTF-8. Convert it first, e.g. "
                         f"iconv -f {wide.split()[0]} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}")


def gzipped(path: Path | str) -> bool:
    """Is this input gzip-compressed? By its name, as every reader tells (a path or a URL)."""
    return str(path).lower().endswith(".gz")


def open_binary(path: Path) -> io.BufferedIOBase:
    """A local input's bytes, decompressed if `gzipped`."""
    return gzip.open(path, "rb") if gzipped(path) else open(path, "rb")


def _json_records(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    with open_binary(path) as fh:
        data = fh.read()
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise InputError(f"{name}: not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{name}:{err.lineno}: malformed JSON: {_json_problem(err)}") from None
    except RecursionError:
        raise InputError(f"{name}: malformed JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise InputError(f"{name}: expected a JSON array of objects, got a JSON {type(items).__name__}")
    for number, item in enumerate(items, start=1):
        yield f"{name}: item {number}", item


def _json_problem(err: json.JSONDecodeError) -> str:
    return f"{err.msg}{'' if err.msg.endswith(' at') else ' at'} column {err.colno}"


CSV_FAST_MAX = 64 << 20  # bytes of text: a bigger CSV file streams through the row-by-row reader (the fast path
                         # holds the text, its field positions and the frame: a few times the text at once)


def _csv_batches(path: Path, name: str, shard_rows: int) -> list[_Batch] | None:
    """A CSV file as Polars reads it, in batches for the fast path, each row named by the line it ends on as
    `csv` counts lines; None when the row-by-row reader must read it: where `csv` and Polars could differ
    (quotes that are not RFC 4180's, a row with too few or many fields, a lone CR line end, bytes that are not
    UTF-8 or NUL, a header over several lines or with a repeated name) and for a big file. Polars reads an
    empty field as null and a blank line as a row of nulls; `csv` reads "" and skips the line."""
    with open_binary(path) as fh:
        data = fh.read(CSV_FAST_MAX + 1)  # the text's size, gzipped or not
    if len(data) > CSV_FAST_MAX:
        return None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        header = next(csv.reader([data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if not header or b"\0" in data or data.count(b"\r") != data.count(b"\r\n") or len(set(header)) != len(header):
        return None
    records = _csv_layout(data, len(header))
    if records is None:
        return None
    lines, blank = records
    try:
        frame = pl.read_csv(data, infer_schema=False, raise_if_empty=False)
    except Exception:  # noqa: BLE001 - anything Polars refuses (bytes that are not UTF-8 too), csv reads or names
        return None
    if frame.columns != header:
        return None
    if len(frame) == len(blank):  # a row of nulls for each blank line: dropped, as csv skips the line
        frame = frame.filter(pl.Series(~blank))
    lines = lines[~blank]
    if len(frame) != len(lines):
        return None
    frame = frame.with_columns(pl.all().fill_null(""))
    wheres = [f"{name}:{line}" for line in lines.tolist()]
    return [_Batch(frame=part, wheres=wheres[start: start + shard_rows], record=lambda i, f=part: f.row(i, named=True))
            for start, part in zip(range(0, len(frame), shard_rows), frame.iter_slices(shard_rows))]


def _csv_layout(data: bytes, columns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For each record after the header: the line it ends on, and whether it is a blank line; None when the
    quotes are not RFC 4180's (a quoted field starts at a field's start and ends at its end, a quote inside it
    doubled) or a record has other than `columns` fields. Quotes alternate opening and closing (a doubled one
    closes and opens again), so a running count of them tells which bytes are inside a quoted field."""
    raw = np.frombuffer(data, np.uint8)
    quotes = np.flatnonzero(raw == ord('"'))
    if len(quotes) % 2:
        return None  # a quoted field that never ends
    opens, closes = quotes[0::2], quotes[1::2]
    if not (np.isin(raw[opens[opens > 0] - 1], list(b',\n"')).all()
            and np.isin(raw[closes[closes < len(raw) - 1] + 1], list(b',\r\n"')).all()):
        return None

    def outside(at: np.ndarray) -> np.ndarray:  # positions not inside a quoted field: an even number of quotes before
        return at[np.searchsorted(quotes, at) % 2 == 0]

    newlines = np.flatnonzero(raw == 10)
    ends = outside(newlines)  # where records end (a last one without a newline: the end of the data)
    if len(raw) and raw[-1] != 10:
        ends = np.append(ends, len(raw))
    starts = np.concatenate([[0], ends[:-1] + 1])
    fields = np.bincount(np.searchsorted(ends, outside(np.flatnonzero(raw == ord(",")))), minlength=len(ends)) + 1
    blank = (ends - starts) - (raw[np.maximum(ends - 1, 0)] == 13) * (ends > starts) == 0
    if not (fields[~blank] == columns).all():
        return None
    lines = np.searchsorted(newlines, ends) + 1  # the line number of each record's last line
    return lines[1:], blank[1:]


def _csv_records(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB, is shorter than many documents
    with open_binary(path) as fh:
        # undecodable bytes become lone surrogates, so one bad row is a reject, not the end of the file
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        try:
            for record in reader:
                where = f"{name}:{reader.line_num}"
                if None in record or None in record.values():
                    yield where, RowError("wrong_columns", f"expected {len(reader.fieldnames or [])} columns")
                elif bad := [k for k, v in record.items() if _SURROGATE.search(k) or _SURROGATE.search(v)]:
                    yield where, RowError("invalid_utf8", f"field {bad[0]!r} is not valid UTF-8")
                else:
                    yield where, record
        except csv.Error as err:
            raise InputError(f"{name}:{reader.line_num}: malformed CSV: {err}") from None
