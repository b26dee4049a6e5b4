"""Generation jobs (`sluice generate CONFIG`): seed rows -> generator steps -> a Parquet/JSONL file that a
pipeline config then reads (generate -> clean -> release), so the engine stays a row-accounting engine.

Each step's kept rows are the next step's seeds; a step may also be any row-local operator (normalize,
length_filter, ...). Written beside OUT:
  OUT                           the generated rows
  <OUT stem>.rejects.parquet    rejected candidates, `reason` = "<step>:<rule>" (failed requests: failed_<kind>)
  <OUT stem>.failures.parquet   one row per failed request: kind, request hash, attempts, tag, step
  <OUT stem>.generation.json    endpoint (never the key), usage, cache, per-step books: the manifest's `generation`
The LLM cache (SQLite) defaults to <OUT stem>.cache.sqlite: re-running makes no repeat calls, and a killed
run resumes where it stopped. With no endpoint configured (and no OPENAI_BASE_URL) the embedded model
starts on the first request the cache cannot answer, and stops when the job ends.

Books per step: rows_in (seeds) and rows_out + rejected by reason; a generator makes new rows, so rows_out
is not bounded by rows_in. Every candidate it considered is either out or rejected with a reason.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from pydantic import Field, ValidationError

from operators.base import REASON, RowOperator
from operators.errors import ConfigError, SluiceError
from operators.generate import EndpointConfig, LLMClient, ResponseCache, failures_frame
from operators.generate.base import LLMGenerator
from operators.generate.cache import CachedAnswer
from pipelines import failpoints
from pipelines.config import InputConfig, StageConfig, Stage, Problems, Strict, build_sources, build_stages
from pipelines.engine import concat_frames, read_inputs
from pipelines.local_model import MODEL_NAME, LocalModel, LocalModelConfig
from pipelines.oneoff import OUTPUT_SUFFIXES, output_stem, rejects_path, write_table


class GenerateConfig(Strict):
    endpoint: EndpointConfig | None = Field(default=None, description="omit for OPENAI_BASE_URL, else the local model")
    local_model: LocalModelConfig = Field(default_factory=LocalModelConfig)
    seeds: InputConfig | None = Field(default=None, description="seed rows; omit for generators that need none")
    steps: list[StageConfig] = Field(min_length=1)
    output: str = Field(description="Parquet (.parquet) or JSON lines (.jsonl, .jsonl.gz), relative to the config")
    cache: str | None = Field(default=None, description="LLM response cache (SQLite); default <output stem>.cache.sqlite")


@dataclass
class GenerationJob:
    path: Path
    config: GenerateConfig
    seeds: list  # Source
    steps: list[Stage]
    output: Path
    cache: Path


@dataclass
class StepBooks:
    step: str
    op: str
    rows_in: int
    rows_out: int = 0
    rejected: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "op": self.op, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "rejected": dict(sorted(self.rejected.items())), "failed_requests": dict(sorted(self.failures.items()))}


@dataclass
class GenerationOutcome:
    rows: pl.DataFrame
    rejects: pl.DataFrame
    failures: pl.DataFrame
    report: dict[str, Any]  # JSON-able: what a release manifest carries under `generation`


def load(path: str | Path) -> GenerationJob:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node, data = yaml.compose(text), yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with steps and output (and endpoint, seeds, cache)")
    problems = _StepProblems(path, node)
    try:
        config = GenerateConfig.model_validate(data)
    except ValidationError as err:
        problems.add_validation(err, GenerateConfig)
        problems.raise_if_any()
    base = path.parent
    seeds = build_sources(config.seeds, 0, base, problems) if config.seeds else []
    steps = build_stages(config.steps, problems)
    for i, stage in enumerate(steps):
        if not isinstance(stage.operator, LLMGenerator | RowOperator):
            problems.add(("steps", i, "op"), "a generation step must be a generator or a row-local operator", stage.operator.name)
    output = base / config.output
    if not output.name.endswith(OUTPUT_SUFFIXES):
        problems.add(("output",), f"must end in {', '.join(OUTPUT_SUFFIXES)}", config.output)
    problems.raise_if_any()
    cache = base / config.cache if config.cache else output.with_name(output_stem(output) + ".cache.sqlite")
    return GenerationJob(path, config, seeds, steps, output, cache)


class _StepProblems(Problems):
    """The pipeline config's problem collector, for a file whose operator list is `steps`, not `stages`."""

    def add(self, loc: tuple, message: str, value: Any = ...) -> None:
        super().add(tuple("steps" if part == "stages" else part for part in loc), message, value)


def run_generation(job: GenerationJob, client: LLMClient | None = None) -> GenerationOutcome:
    """Run the job's steps (starting the local model when no endpoint is given) and write its files."""
    with ExitStack() as stack:
        local = False
        if client is None:
            client, local = _client(job, stack)
        outcome = _run_steps(job, client, local)
    _write(job, outcome)
    return outcome


def _client(job: GenerationJob, stack: ExitStack) -> tuple[LLMClient, bool]:
    endpoint = job.config.endpoint or EndpointConfig()
    cache = _Cache(job.cache)
    stack.callback(cache.close)
    if endpoint.resolved_base_url():
        if not endpoint.resolved_model():
            raise ConfigError(f"{job.path}: endpoint.model is not set (nor SLUICE_MODEL)")
        return stack.enter_context(LLMClient(endpoint, cache)), False
    def start() -> str:  # on the first request the cache cannot answer
        print(f"no endpoint configured: starting the embedded model ({MODEL_NAME})", flush=True)
        return stack.enter_context(LocalModel(job.config.local_model))

    # a slow CPU model under load: a timed-out request keeps its slot busy, so a retry only adds work
    local = endpoint.model_copy(update={"model": MODEL_NAME, "timeout_s": max(endpoint.timeout_s, 900),
                                        "max_concurrency": min(endpoint.max_concurrency, job.config.local_model.parallel)})
    return stack.enter_context(LLMClient(local, cache, identity=f"local:{MODEL_NAME}", connect=start)), True


class _Cache(ResponseCache):
    """The response cache, with the crash-test point `llm.cached` right after an answer is committed."""

    def put(self, key: str, answer: CachedAnswer) -> None:
        super().put(key, answer)
        failpoints.hit("llm.cached")


def _run_steps(job: GenerationJob, client: LLMClient, local: bool) -> GenerationOutcome:
    rows = pl.DataFrame({"id": []}, schema={"id": pl.String})
    read_books, rejects = None, []
    if job.seeds:
        read = read_inputs(job.seeds, 100_000)
        rows = concat_frames(read.shards) if read.shards else rows
        rejects += read.rejects
        read_books = read.ledger.stages[0].to_json()
    books = []
    for stage in job.steps:
        before = Counter(client.usage.failures)
        count = StepBooks(stage.name, stage.operator.name, len(rows))
        _check_columns(stage, rows)
        split = stage.operator.run(rows, client) if isinstance(stage.operator, LLMGenerator) else stage.operator.process(rows)
        rows = split.kept
        rejected = split.rejected.with_columns((pl.lit(f"{stage.name}:") + pl.col(REASON)).alias(REASON))
        if len(rejected):
            rejects.append(rejected)
            count.rejected.update(dict(rejected.group_by(REASON).len().iter_rows()))
        count.rows_out = len(rows)
        count.failures = Counter(client.usage.failures) - before
        books.append(count)
        failpoints.hit("generate.step")
    report = {
        "endpoint": {"base_url": "embedded" if local else public_url(client.base_url), "model": client.model,
                     "local": local},
        "usage": client.usage.to_json(client.endpoint.prices),
        "cache": {"path": str(client.cache.path) if client.cache.path else None, "entries": len(client.cache)},
        "read": read_books,
        "steps": [b.to_json() for b in books],
        "rows": len(rows),
    }
    failures = failures_frame(client.failures)
    return GenerationOutcome(rows, concat_frames(rejects) if rejects else pl.DataFrame(), failures, report)


def public_url(url: str) -> str:
    """The endpoint as reports show it: without credentials in the user part or the query (`?api-key=`)."""
    parts = urllib.parse.urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_columns(stage: Stage, rows: pl.DataFrame) -> None:
    """A step reading a column the rows do not have fails here, naming both, not deep inside the step."""
    missing = [f for f in _needed_fields(stage) if f not in rows.columns]
    if missing and len(rows):
        raise SluiceError(f"step {stage.name!r} ({stage.operator.name}) needs column(s) {missing}; the rows have "
                          f"{rows.columns}. Map a seed field to it with seeds.fields, or change the step's parameters.")


def _needed_fields(stage: Stage) -> list[str]:
    optional = {"output_field", "input_field"}  # written, or used only when present
    params = stage.operator.params.model_dump()
    return [v for k, v in params.items() if k.endswith("_field") and k not in optional and isinstance(v, str) and v]


def _write(job: GenerationJob, outcome: GenerationOutcome) -> None:
    write_table(outcome.rows, job.output)
    failpoints.hit("generate.write")
    stem = output_stem(job.output)
    for path, frame in ((rejects_path(job.output), outcome.rejects),
                        (job.output.with_name(stem + ".failures.parquet"), outcome.failures)):
        if len(frame):
            write_table(frame, path)
        elif path.exists():
            path.unlink()  # a stale file from an earlier run would contradict this run's report
    job.output.with_name(stem + ".generation.json").write_text(json.dumps(outcome.report, indent=2) + "\n")


def summary(outcome: GenerationOutcome, job: GenerationJob) -> str:
    """The books as a table, then usage."""
    lines = [f"{'step':<18} {'op':<18} {'rows in':>8} {'rows out':>9}  rejected / failed requests"]
    for s in outcome.report["steps"]:
        reasons = ", ".join(f"{k.split(':', 1)[-1]} {v}" for k, v in s["rejected"].items()) or "-"
        failed = ", ".join(f"{k} {v}" for k, v in s["failed_requests"].items())
        lines.append(f"{s['step']:<18} {s['op']:<18} {s['rows_in']:>8,} {s['rows_out']:>9,}  {reasons}"
                     + (f" / {failed}" if failed else ""))
    u = outcome.report["usage"]
    tokens = ", ".join(f"{m}: {v['prompt_tokens']:,} prompt + {v['completion_tokens']:,} completion tokens"
                       for m, v in u["models"].items()) or "no tokens"
    lines.append(f"\nrequests {u['requests']:,}: {u['cache_hits']:,} from cache, {u['calls']:,} calls "
                 f"({u['retries']:,} retries); {tokens}" + (f"; cost {u['cost']}" if u["cost"] is not None else ""))
    lines.append(f"wrote {len(outcome.rows):,} rows -> {job.output}")
    return "\n".join(lines)
