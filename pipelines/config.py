"""Pipeline configs: YAML -> validated `Pipeline`, before any work starts (pipelines/checks.py: stage kinds
and the columns each stage reads).

Relative paths in a config resolve against the config file's folder. Every problem is reported at once,
each as `FILE:LINE: field.path: what is wrong (got VALUE)`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operators import registry
from operators.base import Generator, Operator, RowOperator
from operators.errors import ConfigError
from operators.generate import EndpointConfig
from pipelines.checks import check_stages
from pipelines.local_model import LocalModelConfig
from pipelines import storage
from pipelines.readers import Format, Source, detect_format
from pipelines.storage import Location, StorageError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(Strict):
    path: str = Field(description="file or glob, relative to the config file")
    format: Literal["auto"] | Format = "auto"
    fields: dict[str, str] = Field(default_factory=dict, description="output column -> input field")
    optional: list[str] = Field(default_factory=list, description="mapped columns that may be missing or empty")
    source: str | None = Field(default=None, description="provenance label; default: the file name")
    on_error: Literal["fail", "skip"] = "fail"
    keep: Literal["all", "mapped"] = Field(
        default="all", description="all: unmapped fields travel along; mapped: only the mapped fields (and id, source)")
    drop: list[str] = Field(default_factory=list, description="input fields to leave out (with keep: all)")
    max_reject_share: float = Field(default=0.1, ge=0, le=1, description=(
        "the run fails if reading rejects more than this share of a file's rows (with on_error: skip)"))


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="allow")  # the extra keys are the operator's parameters
    op: str
    name: str | None = None


class ReleaseConfig(Strict):
    dir: str | None = Field(default=None, description="release root; default: ./data/releases")
    rows_per_file: int = Field(default=100_000, ge=1)
    license: str = "other"
    description: str = ""
    allow_empty: bool = Field(default=False, description="publish a release of 0 rows instead of failing")


class PipelineConfig(Strict):
    dataset: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="release name")
    inputs: list[InputConfig] = Field(min_length=1)
    shard_rows: int = Field(default=10_000, ge=1, description="rows per processing shard")
    stages: list[StageConfig] = Field(default_factory=list)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    endpoint: EndpointConfig | None = Field(default=None, description="LLM for generator stages; omit for "
                                            "OPENAI_BASE_URL, else the embedded local model")
    local_model: LocalModelConfig = Field(default_factory=LocalModelConfig)
    llm_cache: str | None = Field(default=None, description="LLM response cache (SQLite), relative to the config; "
                                  "default <release dir>/<dataset>/llm-cache.sqlite")


@dataclass
class Stage:
    name: str
    operator: Operator
    languages: tuple[str, ...] | None = None  # a row-local stage sees only rows whose `lang` is listed


@dataclass
class Pipeline:
    """A validated config: what to read, which operators to run, where to publish."""

    path: Path
    config: PipelineConfig
    sources: list[Source]
    stages: list[Stage]
    release_dir: Location | None  # a local folder or a URL (pipelines/storage.py)

    @property
    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in, as recorded in the manifest."""
        data = self.config.model_dump(mode="json", exclude={"stages"})
        data["stages"] = [
            {"name": s.name, "op": s.operator.name, **s.operator.params.model_dump(mode="json"),
             **({"languages": list(s.languages)} if s.languages is not None else {})} for s in self.stages
        ]
        return data

    @property
    def generates(self) -> bool:
        """Whether a stage calls an LLM (the run then opens an endpoint)."""
        return any(isinstance(s.operator, Generator) for s in self.stages)

    def llm_cache(self, root: Path) -> Path:
        if self.config.llm_cache:
            return Path(os.path.normpath(self.path.parent / self.config.llm_cache))
        return root / self.config.dataset / "llm-cache.sqlite"

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.resolved, sort_keys=True).encode()).hexdigest()


def load(path: str | Path, on_error: Literal["fail", "skip"] | None = None) -> Pipeline:
    """Read and validate the config at `path`; `on_error` (from `sluice run --on-error`) overrides every input's."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with dataset, inputs, stages, release")
    if on_error and isinstance(data.get("inputs"), list):
        data["inputs"] = [{**inp, "on_error": on_error} if isinstance(inp, dict) else inp for inp in data["inputs"]]
    return _build(path, node, data)


def _build(path: Path, node: yaml.Node, data: dict) -> Pipeline:
    problems = Problems(path, node)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        problems.add_validation(err, PipelineConfig)
        build_stages(_raw_stages(data.get("stages")), problems)  # report stage problems in the same message
        problems.raise_if_any()
    base = path.parent
    sources = [src for i, inp in enumerate(config.inputs) for src in build_sources(inp, i, base, problems)]
    stages = build_stages(config.stages, problems)
    if not problems.lines:
        check_stages(config, sources, stages, problems)
    problems.raise_if_any()
    try:
        release_dir = location(base, config.release.dir) if config.release.dir else None
        storage.check_writable(release_dir)
    except StorageError as err:
        raise ConfigError(f"{path}: release.dir: {err}") from None
    return Pipeline(path, config, sources, stages, release_dir)


def location(base: Path, value: str) -> Location:
    """A path relative to the config's folder, or a URL as it is."""
    where = storage.location(value)
    return where if storage.is_remote(where) else Path(os.path.normpath(base / where))


def build_sources(inp: InputConfig, i: int, base: Path, problems: Problems) -> list[Source]:
    try:
        pattern = location(base, inp.path)
        paths = storage.glob(pattern) if storage.is_remote(pattern) else []  # a URL: a file, a folder or a pattern
    except StorageError as err:
        problems.add(("inputs", i, "path"), str(err), storage.display(inp.path))
        return []
    if not storage.is_remote(pattern):
        pattern = str(pattern)
        if os.path.isdir(pattern):  # a folder: every file in it
            pattern = os.path.join(pattern, "*")
        paths = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(pattern) else [Path(pattern)]
        paths = [p for p in paths if p.is_file()]
    if not paths:
        problems.add(("inputs", i, "path"), f"no input file matches {pattern}", inp.path)
    for name in inp.optional:
        if name not in inp.fields:
            problems.add(("inputs", i, "optional"), f"{name!r} is not a mapped field; mapped: {sorted(inp.fields)}", name)
    _check_drop(inp, i, problems)
    sources = []
    for p in paths:
        fmt = detect_format(Path(storage.name(p))) if inp.format == "auto" else inp.format
        if fmt is None:
            problems.add(("inputs", i, "format"), f"cannot tell the format of {storage.name(p)}; set format: {'|'.join(typing.get_args(Format))}", "auto")
            continue
        source = inp.source or storage.name(p).split(".")[0]
        sources.append(Source(p, fmt, dict(inp.fields), tuple(inp.optional), source, inp.on_error, inp.keep,
                              tuple(inp.drop), max_reject_share=inp.max_reject_share))
    return sources


def _check_drop(inp: InputConfig, i: int, problems: Problems) -> None:
    if inp.drop and inp.keep == "mapped":
        problems.add(("inputs", i, "drop"), "keep: mapped already leaves out every unmapped field; use one of the two",
                     inp.drop)
    for name in inp.drop:
        if name in inp.fields.values():
            target = next(t for t, n in inp.fields.items() if n == name)
            problems.add(("inputs", i, "drop"), f"{name!r} is mapped to {target!r}; drop names unmapped fields", name)


def _raw_stages(raw: Any) -> list[StageConfig | None]:
    """Stage entries that parse on their own (None for the rest, keeping the indexes)."""
    if not isinstance(raw, list):
        return []
    ok = (isinstance(s, dict) and isinstance(s.get("op"), str) for s in raw)
    return [StageConfig.model_validate(s) if good else None for s, good in zip(raw, ok)]


def build_stages(configs: list[StageConfig | None], problems: Problems) -> list[Stage]:
    stages, names = [], set()
    for i, sc in enumerate(configs):
        if sc is None:
            continue
        try:
            cls = registry.get(sc.op)
        except ConfigError as err:
            problems.add(("stages", i, "op"), str(err), sc.op)
            continue
        params = dict(sc.model_extra or {})
        languages = stage_languages(cls, params, ("stages", i), problems)
        try:
            operator = cls(cls.Params.model_validate(params))
        except ValidationError as err:
            problems.add_validation(err, cls.Params, prefix=("stages", i))
            continue
        name = sc.name or sc.op
        if name in names:
            if sc.name:
                problems.add(("stages", i, "name"), "stage names must be unique", sc.name)
            k = 2
            while f"{sc.op}_{k}" in names:
                k += 1
            name = f"{sc.op}_{k}"
        names.add(name)
        stages.append(Stage(name, operator, languages))
    return stages


def stage_languages(cls: type[Operator], params: dict, loc: tuple, problems: Problems) -> tuple[str, ...] | None:
    """The stage's `languages:` limit, taken out of `params` (unless the operator has a parameter of that
    name, as langid does: the languages it keeps)."""
    if "languages" not in params or "languages" in cls.Params.model_fields:
        return None
    languages = params.pop("languages")
    if not issubclass(cls, RowOperator):
        problems.add((*loc, "languages"), "only a row-local stage can be limited to languages", languages)
        return None
    if not isinstance(languages, list) or not languages or not all(isinstance(x, str) for x in languages):
        problems.add((*loc, "languages"), "expected a list of language codes such as [en, de]", languages)
        return None
    return tuple(languages)


class Problems:
    """Collects config problems with the YAML line of each field path."""

    def __init__(self, path: Path, node: yaml.Node) -> None:
        self.path, self.node, self.lines = path, node, []

    def add(self, loc: tuple, message: str, value: Any = ...) -> None:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        got = "" if value is ... else f" (got {value!r})"
        self.lines.append(f"{self.path}:{_line_of(self.node, loc)}: {dotted}: {message}{got}")

    def add_validation(self, err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> None:
        for e in err.errors():
            loc = prefix + tuple(e["loc"])
            if e["type"] == "extra_forbidden":
                self.add(loc, f"unknown field; allowed: {', '.join(_fields_at(model, e['loc'][:-1]))}")
            elif e["type"] == "missing":
                self.add(loc, "required field is missing")
            else:
                self.add(loc, e["msg"].removeprefix("Value error, "), e.get("input", ...))

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.lines))


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model found at `loc`."""
    for key in loc:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation
        nested = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _line_of(node: yaml.Node | None, loc: tuple) -> int:
    """The 1-based line of the deepest YAML node along `loc` that exists."""
    line = node.start_mark.line + 1 if node else 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line
