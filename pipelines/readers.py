"""Readers: JSONL (.gz), JSON arrays, Parquet and CSV, streamed as shards of validated rows.

Every input row either becomes a row of a shard (payload fields renamed by the field mapping, every other
column kept unless the input says `keep: mapped` or `drop: [...]`, a unique string `id`) or a reject with a `read:<kind>` reason and a detail naming the file
and line. With `on_error: fail` (the default) the first bad row stops the run with that message instead.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow.parquet as pq

from operators.base import DETAIL, REASON
from operators.errors import InputError

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
    if suffixes and suffixes[-1] == ".gz":
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
    index: int  # shard number within its source
    rows: pl.DataFrame
    rejects: pl.DataFrame
    rows_read: int  # rows + rejects
    errors: Counter = field(default_factory=Counter)  # rejects that are mistakes (not `counted` skips), by reason

    @property
    def key(self) -> str:
        return f"{self.source.path.name}#{self.index:05d}"


class IdRegistry:
    """Run-wide id bookkeeping: user-given ids must be unique; missing ids become content hashes."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def claim(self, given: Any, content: dict[str, Any], where: str) -> str:
        if given is not None and given != "":
            rid = str(given)
            if rid in self._seen:
                raise RowError("duplicate_id", f"duplicate id {rid!r} (first seen at {self._seen[rid]})")
        else:
            canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
            digest = hashlib.blake2b(canonical.encode(), digest_size=8)
            rid = base = digest.hexdigest()
            n = 1
            while rid in self._seen:  # identical content: keep both rows, tell them apart
                n += 1
                rid = f"{base}-{n}"
        self._seen[rid] = where
        return rid


def read_shards(src: Source, shard_rows: int, ids: IdRegistry) -> Iterator[Shard]:
    """Stream `src` as shards of at most `shard_rows` input rows."""
    if not src.path.is_file():
        raise InputError(f"{src.path}: input file not found")
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    errors: Counter = Counter()
    index = 0
    for where, record in _records(src):
        try:
            good.append(_validate(src, where, record, ids))
        except RowError as err:
            if src.on_error == "fail" and not err.counted:
                raise InputError(f"{where}: {err} ({_advice(src, err)})") from None
            bad.append(_reject(where, record, err))
            errors[f"read:{err.kind}"] += not err.counted
        if len(good) + len(bad) >= shard_rows:
            yield _shard(src, index, good, bad, errors)
            good, bad, errors, index = [], [], Counter(), index + 1
    if index == 0 and not good and not bad:
        raise InputError(f"{src.path}: the input has no rows (empty file); remove it from `inputs` or fill it")
    if good or bad:
        yield _shard(src, index, good, bad, errors)


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
        f"{src.path}: reading rejected {rejected:,} of {rows_read:,} rows ({rejected / rows_read:.1%}), more than "
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


def _shard(src: Source, index: int, good: list[dict], bad: list[dict], errors: Counter) -> Shard:
    rows = _frame(src, good) if good else pl.DataFrame(schema={"id": pl.String, **{f: pl.String for f in src.fields}})
    rejects = pl.DataFrame(bad, schema={"id": pl.String, REASON: pl.String, DETAIL: pl.String, "raw": pl.String})
    return Shard(src, index, rows, rejects, len(good) + len(bad), +errors)


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


def _validate(src: Source, where: str, record: Any, ids: IdRegistry) -> dict[str, Any]:
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
    row["id"] = ids.claim(given, row | {"source": src.source}, where)
    if src.source:
        row.setdefault("source", src.source)
    return row


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


def _records(src: Source) -> Iterator[tuple[str, Any]]:
    read = {"jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records, "parquet": _parquet_records}
    try:
        if src.format not in read:
            from pipelines.sources import raw_records

            yield from raw_records(src.path, src.format)
            return
        if src.format != "parquet":
            _check_encoding(src.path)
        yield from read[src.format](src.path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(f"{src.path}: truncated or corrupt gzip file ({err})") from None
    except OSError as err:
        raise InputError(f"{src.path}: cannot read ({err.strerror or err})") from None


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def _check_encoding(path: Path) -> None:
    """Text inputs are UTF-8 (a BOM is fine). UTF-16/32 would otherwise surface as a reject per line."""
    with _open_binary(path) as fh:
        head = fh.read(64)
    wide = next((name for bom, name in _WIDE_BOMS.items() if head.startswith(bom)), None)
    if wide is None and len(head) >= 8 and (head[1:8:2] == b"\0" * 4 or head[0:8:2] == b"\0" * 4):
        wide = "UTF-16 (NUL bytes between the characters)"
    if wide:
        raise InputError(f"{path}: the file is encoded as {wide}; Sluice reads UTF-8. Convert it first, e.g. "
                         f"iconv -f {wide.split()[0]} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}")


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_binary(path) as fh:
        for number, line in enumerate(fh, start=1):
            where = f"{path}:{number}"
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
            if not line.strip():
                continue  # blank lines are not rows
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raw = line.decode("utf-8", errors="replace").rstrip("\n")
                yield where, _BadLine("invalid_utf8", f"not valid UTF-8 (byte {err.start})", raw)
                continue
            text = text.rstrip("\r\n")
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as err:
                yield where, _BadLine("malformed_json", f"malformed JSON: {_json_problem(err)}", text)
            except RecursionError:
                yield where, _BadLine("malformed_json", "malformed JSON: nested too deeply", text)


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_binary(path) as fh:
        data = fh.read()
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: malformed JSON: {_json_problem(err)}") from None
    except RecursionError:
        raise InputError(f"{path}: malformed JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON array of objects, got a JSON {type(items).__name__}")
    for number, item in enumerate(items, start=1):
        yield f"{path}: item {number}", item


def _json_problem(err: json.JSONDecodeError) -> str:
    return f"{err.msg}{'' if err.msg.endswith(' at') else ' at'} column {err.colno}"


def _csv_records(path: Path) -> Iterator[tuple[str, Any]]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB, is shorter than many documents
    with _open_binary(path) as fh:
        # undecodable bytes become lone surrogates, so one bad row is a reject, not the end of the file
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        try:
            for record in reader:
                where = f"{path}:{reader.line_num}"
                if None in record or None in record.values():
                    yield where, RowError("wrong_columns", f"expected {len(reader.fieldnames or [])} columns")
                elif bad := [k for k, v in record.items() if _SURROGATE.search(k) or _SURROGATE.search(v)]:
                    yield where, RowError("invalid_utf8", f"field {bad[0]!r} is not valid UTF-8")
                else:
                    yield where, record
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: malformed CSV: {err}") from None


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    number = 0
    batches = parquet.iter_batches(batch_size=10_000)
    while True:
        try:
            batch = next(batches, None)
        except Exception as err:  # a corrupt page or column chunk
            raise InputError(f"{path}: corrupt Parquet data after row {number} ({err})") from None
        if batch is None:
            return
        for record in batch.to_pylist():
            number += 1
            yield f"{path}: row {number}", record
