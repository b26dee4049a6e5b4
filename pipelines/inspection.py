"""Looking at rows: open a release or a Parquet file as a table, filter it, and print rows for a terminal.

Used by `sluice inspect` and `sluice release diff`. Reading is lazy (Polars scans), so a filter or a
sample touches only what it needs. A release or file at a URL is downloaded first (its shards, or its
rejects) into a temporary folder that goes when the process ends.
"""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from operators.base import DETAIL, REASON
from operators.errors import ConfigError, ReleaseError
from pipelines.card import PROVENANCE
from pipelines.oneoff import rejects_path
from pipelines import storage
from pipelines.release import DEFAULT_ROOT, read_manifest, resolve
from pipelines.storage import Location

FIRST = (REASON, DETAIL, *PROVENANCE, "lang")  # shown first, in this order, under the row's id


@dataclass
class Table:
    """Rows to look at: a lazy frame, a label for humans, and the release's manifest when it is one."""

    frame: pl.LazyFrame
    label: str
    manifest: dict[str, Any] | None = None
    folder: Location | None = None

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return dict(self.frame.collect_schema())


def open_table(ref: str, root: Location = DEFAULT_ROOT, rejects: bool = False) -> Table:
    """A release (folder, DATASET/VERSION or DATASET; a path or a URL), a Parquet file, or a folder of them.

    With `rejects`, the release's rejects/, or the `<stem>.rejects.parquet` beside a one-off job's output."""
    path = storage.location(ref)
    if storage.is_remote(path) and path.endswith(".parquet"):
        if rejects and not path.endswith(".rejects.parquet"):
            path = storage.join(storage.parent(path), rejects_path(Path(storage.name(path))).name)
        if storage.is_file(path):
            return _parquet_file(storage.local_copy(path), False, shown=path)
    if not storage.is_remote(path) and path.is_file():
        return _parquet_file(path, rejects)
    if not storage.is_remote(path) and path.is_dir() and not (path / "manifest.json").exists() and any(path.glob("*.parquet")):
        return Table(_scan(sorted(path.glob("*.parquet")), path), str(path))
    try:
        folder = resolve(ref, root)
    except ReleaseError:
        raise ConfigError(f"{storage.display(ref)}: not a Parquet file, a folder of Parquet files or a release "
                          f"(releases are looked up under {storage.display(root)}; pass --releases ROOT to look "
                          "elsewhere)") from None
    manifest = read_manifest(folder)
    kind = "rejects" if rejects else "shards"
    files = [storage.local_copy(storage.join(folder, f["path"])) for f in manifest[kind] if f["rows"]]
    label = f"{manifest['dataset']}/{manifest['version']}" + (" rejects" if rejects else "")
    frame = _scan(files, folder) if files else pl.LazyFrame(schema={"id": pl.String})
    return Table(frame, label, manifest, folder)


def _parquet_file(path: Path, rejects: bool, shown: str | None = None) -> Table:
    if not path.name.endswith(".parquet"):
        raise ConfigError(f"{path}: inspect reads Parquet files and releases; this file is not .parquet")
    if rejects and not path.name.endswith(".rejects.parquet"):
        sibling = rejects_path(path)
        if not sibling.is_file():
            raise ConfigError(f"{path}: --rejects looks for {sibling.name} beside it, and there is none")
        path = sibling
    return Table(_scan([path], path), shown or str(path))


def _scan(files: list[Path], where: Path) -> pl.LazyFrame:
    frame = pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")
    try:
        frame.collect_schema()
    except pl.exceptions.PolarsError as err:
        raise ConfigError(f"{where}: not readable as Parquet ({_first_line(err)})") from None
    return frame


def where(table: Table, expression: str | None) -> pl.LazyFrame:
    """The table's rows for which the SQL expression is true, e.g. `score_words_text > 100 AND source = 'c4'`."""
    if not expression:
        return table.frame
    try:
        filtered = table.frame.filter(pl.sql_expr(expression))
        filtered.collect_schema()  # resolves names and types now, so a typo fails here and not mid-print
    except pl.exceptions.PolarsError as err:
        message = _first_line(err)
        hint = "" if "valid columns" in message else f" (columns: {', '.join(table.schema)})"
        raise ConfigError(f"--where {expression!r}: {message}{hint}") from None
    return filtered


def pick(frame: pl.LazyFrame, limit: int, sample: int | None = None, seed: int = 0) -> tuple[pl.DataFrame, int]:
    """(rows to show, rows matching): the first `limit` rows, or `sample` random ones (reproducible by seed)."""
    try:
        total = frame.select(pl.len()).collect().item()
        if sample is None:
            return frame.head(limit).collect(), total
        chosen = sorted(random.Random(seed).sample(range(total), min(sample, total)))
        rows = frame.with_row_index("_row").filter(pl.col("_row").is_in(chosen)).drop("_row").collect()
    except pl.exceptions.PolarsError as err:
        raise ConfigError(f"cannot read the rows: {_first_line(err)}") from None
    return rows, total


def reason_counts(frame: pl.LazyFrame) -> list[tuple[str, int]]:
    if REASON not in frame.collect_schema():
        return []
    counts = frame.group_by(REASON).len().sort("len", REASON, descending=[True, False]).collect()
    return [(str(r), n) for r, n in counts.iter_rows()]


def render_rows(rows: pl.DataFrame, first_number: int = 1, width: int | None = None, max_chars: int | None = 1200,
                columns: list[str] | None = None) -> str:
    """Rows as blocks: a rule with the id, provenance and reasons, then each field wrapped, then the scores."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    if columns:
        rows = rows.select(c for c in rows.columns if c in columns or c == "id")
    blocks = [_render_row(row, first_number + i, width, max_chars) for i, row in enumerate(rows.iter_rows(named=True))]
    return "\n\n".join(blocks)


def _render_row(row: dict[str, Any], number: int, width: int, max_chars: int | None) -> str:
    title = f"── {number}  id {row.get('id')} "
    lines = [title + "─" * max(width - len(title), 3)]
    order = [c for c in FIRST if c in row] + [c for c in row if c not in FIRST and c != "id" and not c.startswith("score_")]
    label_width = min(max((len(c) for c in order), default=6), 16)
    nulls = [c for c in order if row[c] is None]
    for column in order:
        if row[column] is not None:
            lines += _field(column, _as_text(row[column]), label_width, width, max_chars)
    scores = [f"{c.removeprefix('score_')}={_number(v)}" for c, v in row.items() if c.startswith("score_") and v is not None]
    if scores:
        lines += _field("scores", "  ".join(scores), label_width, width, None)
    if nulls:
        lines.append(f"  {'(null)':<{label_width}}  {', '.join(nulls)}")
    return "\n".join(lines)


def _field(label: str, text: str, label_width: int, width: int, max_chars: int | None) -> list[str]:
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars] + f" … [+{len(text) - max_chars:,} chars; --full shows all]"
    indent = " " * (label_width + 4)
    first = f"  {label[:label_width]:<{label_width}}  "
    lines: list[str] = []
    for paragraph in text.split("\n"):
        wrapped = textwrap.wrap(paragraph, width=max(width - len(indent), 20), break_long_words=True, break_on_hyphens=False,
                                replace_whitespace=False, drop_whitespace=True) or [""]
        lines += wrapped
    while len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return [(first if i == 0 else indent) + line for i, line in enumerate(lines)]


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _number(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
