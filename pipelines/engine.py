"""The engine: read inputs into shards, run each stage over them, keep the books.

Row-local stages map over shards; a global stage is a barrier (index every shard, decide once, apply to
every shard). How the per-shard calls run is the caller's choice: `map_local` runs them in-process, the
Prefect flow (pipelines/flow.py) runs each as a task. The functions here are the same either way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from operators.base import DETAIL, REASON, Decision, GlobalOperator, Operator, RowOperator, Split
from operators.errors import SluiceError
from pipelines import failpoints
from pipelines.accounting import Ledger
from pipelines.cache import ShardCache, derive
from pipelines.config import Pipeline, Stage
from pipelines.progress import Progress
from pipelines.readers import IdRegistry, Source, check_read_loss, read_shards

LANG = "lang"  # the column a langid stage writes; `languages:` on a stage reads it


@dataclass(frozen=True)
class Part:
    """One shard's rows between stages: a frame in memory or, in a run with a shard cache, the cached file,
    read by the task that needs it. So a run holds a few shards in memory at a time, and a Dask task ships
    a path, not the rows."""

    rows: int
    frame: pl.DataFrame | None = None
    path: Path | None = None

    def load(self) -> pl.DataFrame:
        return self.frame if self.frame is not None else pl.read_parquet(self.path)


@dataclass(frozen=True)
class ShardResult:
    """A row stage's (or an apply step's) result for one shard: kept and rejected rows, rejects by reason."""

    kept: Part
    rejected: Part
    reasons: dict[str, int]


@dataclass(frozen=True)
class Job:
    """One per-shard call: the shard, the cache key of its result, and a name for logs and the Prefect UI."""

    part: Part
    key: str
    name: str


# map_fn(fn, jobs, label, cache, **kwargs) -> [(result, reused), ...] in job order; see call_cached.
# map_local runs them in a loop; the flow runs Prefect tasks.
MapFn = Callable[..., list]


def call_cached(fn: Callable, job: Job, cache: ShardCache | None, **kwargs: Any) -> tuple[Any, bool]:
    """fn(the job's rows, **kwargs), or its cached result. A Split comes back as a ShardResult whose parts
    are the cache's files (in memory without a cache); an index frame comes back as the frame."""
    if cache is None:
        result = fn(job.part.load(), **kwargs)
        return (_in_memory(result) if isinstance(result, Split) else result), False
    if (files := cache.files(job.key)) is not None:
        return _from_files(files), True
    result = fn(job.part.load(), **kwargs)
    files = cache.put(job.key, tuple(result) if isinstance(result, Split) else (result,))
    if not isinstance(result, Split):
        return result, False
    return ShardResult(Part(len(result.kept), path=files[0]), Part(len(result.rejected), path=files[1]),
                       _reason_counts(result.rejected)), False


def _in_memory(split: Split) -> ShardResult:
    return ShardResult(Part(len(split.kept), split.kept), Part(len(split.rejected), split.rejected),
                       _reason_counts(split.rejected))


def _from_files(files: list[Path]) -> pl.DataFrame | ShardResult:
    if len(files) == 1:
        return pl.read_parquet(files[0])
    kept, rejected = (pq.read_metadata(f).num_rows for f in files)
    reasons = _reason_counts(pl.read_parquet(files[1], columns=[REASON])) if rejected else {}
    return ShardResult(Part(kept, path=files[0]), Part(rejected, path=files[1]), reasons)


def map_local(fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, **kwargs: Any) -> list:
    progress = Progress(label, total=sum(j.part.rows for j in jobs))
    results = []
    for job in jobs:
        results.append(call_cached(fn, job, cache, **kwargs))
        progress.advance(job.part.rows)
    progress.close()
    return results


@dataclass
class Outcome:
    """What a run produced: surviving rows by shard (with their cache keys and names), rejected rows, the
    books, the inputs read, side tables of global stages, and how many shard results came from the cache."""

    parts: list[Part]
    rejected: list[Part]
    ledger: Ledger
    inputs: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)  # "<stage>.<name>" -> table (Decision.tables)
    reused: int = 0
    computed: int = 0

    @property
    def shards(self) -> list[pl.DataFrame]:
        """The surviving rows, shard by shard (read into memory)."""
        return [p.load() for p in self.parts]

    @property
    def rejects(self) -> list[pl.DataFrame]:
        """The rejected rows with their reasons (read into memory)."""
        return [p.load() for p in self.rejected]

    def jobs(self, keys: list[str]) -> list[Job]:
        return [Job(p, k, n) for p, k, n in zip(self.parts, keys, self.names)]


def execute(pipeline: Pipeline, map_fn: MapFn = map_local, cache: ShardCache | None = None) -> Outcome:
    return run_stages(pipeline.sources, pipeline.stages, pipeline.config.shard_rows, map_fn, cache)


def run_stages(sources: list[Source], stages: list[Stage], shard_rows: int, map_fn: MapFn = map_local,
               cache: ShardCache | None = None) -> Outcome:
    """Read `sources`, run `stages` in order, and check the books (each stage's seconds too)."""
    with _clock() as took:
        outcome = read_inputs(sources, shard_rows, cache)
    outcome.ledger.stages[0].timed(*took())
    for stage in stages:
        with _clock() as took:
            run_stage(stage, outcome, map_fn, cache)
        outcome.ledger.stages[-1].timed(*took())
        failpoints.hit("stage.done")
    outcome.ledger.check()
    return outcome


@contextmanager
def _clock() -> Iterator[Callable[[], tuple[float, float]]]:
    """Wall and CPU seconds (this process, all threads) of the block: `with _clock() as took: ...; took()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    end: list[float] = []
    yield lambda: (end[0] - wall, end[1] - cpu)
    end += [time.perf_counter(), time.process_time()]


def read_inputs(sources: list[Source], shard_rows: int, cache: ShardCache | None = None) -> Outcome:
    """Read every input, in order, as shards of `shard_rows` rows (ids unique across all inputs); with a
    cache, each shard goes to disk as soon as it is read."""
    ledger = Ledger()
    count = ledger.stage("read", "read")
    ids = IdRegistry()
    shards, rejects, inputs, names = [], [], [], []
    progress = Progress("read")
    for src in sources:
        rows, documents, reasons, example = 0, 0, Counter(), None
        for shard in read_shards(src, shard_rows, ids):
            shards.append(_part(shard.rows, cache))
            if len(shard.rejects):
                rejects.append(_part(shard.rejects, cache))
                example = example or shard.rejects[DETAIL][0]
            names.append(shard.key)
            reasons.update(shard.errors)
            documents += len(shard.rows) + sum(shard.errors.values())  # not the skipped records (WARC requests)
            count.add(shard.rows_read, len(shard.rows), _reason_counts(shard.rejects))
            rows += shard.rows_read
            progress.advance(shard.rows_read)
            failpoints.hit("read.shard")
        check_read_loss(src, documents, reasons, example)
        inputs.append({"path": str(src.path), "format": src.format, "source": src.source, "rows": rows,
                       "bytes": src.path.stat().st_size, "sha256": file_sha256(src.path)})
    progress.close()
    # Ids depend on every earlier input, so each shard's key covers all inputs and how they were read.
    read_key = derive(json.dumps([inputs, [asdict(s) for s in sources], shard_rows], default=str, sort_keys=True))
    keys = [derive(read_key, str(i)) for i in range(len(shards))]
    return Outcome(shards, rejects, ledger, inputs, keys, names)


def _part(frame: pl.DataFrame, cache: ShardCache | None) -> Part:
    return Part(len(frame), path=cache.spill(frame)) if cache is not None else Part(len(frame), frame)


def run_stage(stage: Stage, outcome: Outcome, map_fn: MapFn = map_local, cache: ShardCache | None = None) -> None:
    """Run one stage over every shard of `outcome`, in place, and record its counts."""
    op, fingerprint = stage.operator, stage.operator.fingerprint
    if stage.languages is not None:
        fingerprint = derive(fingerprint, *stage.languages)
    added = 0
    if isinstance(op, RowOperator):
        keys = [derive(k, fingerprint) for k in outcome.keys]
        results = map_fn(split_rows, outcome.jobs(keys), stage.name, cache, stage=stage)
    elif isinstance(op, GlobalOperator):
        index_keys = [derive(k, fingerprint, "index") for k in outcome.keys]
        indexed = map_fn(index_rows, outcome.jobs(index_keys), f"{stage.name}.index", cache, stage=stage)
        decision = decide(pl.concat([r for r, _ in indexed], how="vertical_relaxed"), stage=stage)
        decision_key = derive(fingerprint, *outcome.keys)
        keys = [derive(k, decision_key) for k in outcome.keys]
        results = map_fn(apply_decision, outcome.jobs(keys), f"{stage.name}.apply", cache, stage=stage,
                         decision=decision)
        _tally(outcome, indexed)
        outcome.tables.update({f"{stage.name}.{name}": table for name, table in decision.tables.items()})
        added = copies_added(decision)
    else:
        raise SluiceError(f"stage {stage.name!r}: operator {op.name!r} cannot run as a pipeline stage")
    count = outcome.ledger.stage(stage.name, op.name)
    count.added = added
    for part, (result, _) in zip(outcome.parts, results):
        count.add(part.rows, result.kept.rows, result.reasons)
    _tally(outcome, results)
    outcome.parts = [result.kept for result, _ in results]
    rejected = [result.rejected for result, _ in results if result.rejected.rows]
    outcome.rejected += rejected
    outcome.keys = keys
    if type(op).stats is not Operator.stats:
        count.stats = op.stats(scan(outcome.parts), _own_reasons(scan(rejected), stage))
    count.languages = rows_by_language(scan(outcome.parts), scan(rejected))
    if stage.languages is not None and count.languages:
        skipped = {lang: n["out"] for lang, n in count.languages.items() if lang not in stage.languages}
        count.stats = {**count.stats, "not_in_languages": skipped}  # rows that passed the stage untouched


def rows_by_language(kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict[str, dict[str, int]]:
    """{language: {"out": rows kept, "dropped": rows rejected}} where the rows have a `lang` column."""
    if LANG not in kept.collect_schema():
        return {}
    counts = {}
    for side, frame in (("out", kept), ("dropped", rejected)):
        if LANG in frame.collect_schema():
            for lang, n in frame.group_by(LANG).len().collect().iter_rows():
                counts.setdefault(lang or "null", {"out": 0, "dropped": 0})[side] = n
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]["out"] - kv[1]["dropped"]))


def _tally(outcome: Outcome, results: list[tuple[Any, bool]]) -> None:
    reused = sum(hit for _, hit in results)
    outcome.reused += reused
    outcome.computed += len(results) - reused


def split_rows(batch: pl.DataFrame, stage: Stage) -> Split:
    with _stage_errors(stage, batch):
        kept, rejected = stage.operator.process(batch) if stage.languages is None else _in_languages(batch, stage)
    return Split(kept, _prefix_reasons(rejected, stage))


def _in_languages(batch: pl.DataFrame, stage: Stage) -> Split:
    """Run the stage on the rows whose `lang` it lists; the others pass untouched, in their places."""
    if LANG not in batch.columns:
        raise SluiceError(
            f"stage {stage.name!r} ({stage.operator.name}) has languages: {list(stage.languages)}, which reads the "
            f"`{LANG}` column, but the rows have columns {batch.columns}: run a langid stage before it or map an "
            f"input field to `{LANG}`")
    listed = pl.col(LANG).cast(pl.String).is_in(list(stage.languages)).fill_null(False)
    kept, rejected = stage.operator.process(batch.filter(listed))
    order = batch.select("id").with_row_index("__order")
    kept = pl.concat([kept.join(order, on="id", how="left"), batch.filter(~listed).join(order, on="id", how="left")],
                     how="diagonal_relaxed")
    return Split(kept.sort("__order").drop("__order"), rejected)


def index_rows(batch: pl.DataFrame, stage: Stage) -> pl.DataFrame:
    with _stage_errors(stage, batch):
        return stage.operator.index(batch)


def decide(index: pl.DataFrame, stage: Stage) -> Decision:
    decision = stage.operator.decide(index)
    decision = decision if isinstance(decision, Decision) else Decision(decision)
    if decision.copies is not None and len(decision.copies):
        where = f"stage {stage.name!r} ({stage.operator.name})"
        if decision.copies["copies"].fill_null(1).min() < 1:
            raise SluiceError(f"{where}: a row was given fewer than 1 copy")
        extra = decision.copies.with_columns(pl.int_ranges(2, pl.col("copies") + 1).alias("k")).explode("k")
        copy_ids = extra.drop_nulls("k").select(pl.format("{}#{}", "id", "k"))["id"]
        if (taken := copy_ids.filter(copy_ids.is_in(index["id"].implode()))).len():
            raise SluiceError(f"{where}: the copy id {taken[0]!r} is already a row's id; rename the input ids")
    return decision


def apply_decision(batch: pl.DataFrame, stage: Stage, decision: Decision) -> Split:
    """Drop, label and repeat the rows of one shard as `decision` says."""
    hit = pl.col("id").is_in(decision.drops["id"].implode())
    rejected = batch.filter(hit).join(decision.drops, on="id", how="left", maintain_order="left")
    kept = batch.filter(~hit)
    if decision.labels is not None:  # a label replaces a column of the same name (an earlier stage's cluster)
        kept = kept.drop([c for c in decision.labels.columns if c != "id"], strict=False) \
            .join(decision.labels, on="id", how="left", maintain_order="left")
    if decision.copies is not None:
        kept = _repeated(kept, decision.copies)
    return Split(kept, _prefix_reasons(rejected, stage))


def _repeated(kept: pl.DataFrame, copies: pl.DataFrame) -> pl.DataFrame:
    """Each row `copies` times in a row; copy k > 1 gets the id `<id>#k`."""
    copy = pl.int_ranges(1, pl.col("copies").fill_null(1) + 1).alias("_copy")
    exploded = kept.join(copies.select("id", "copies"), on="id", how="left", maintain_order="left") \
        .with_columns(copy).explode("_copy")
    new_id = pl.when(pl.col("_copy") > 1).then(pl.format("{}#{}", "id", "_copy")).otherwise(pl.col("id"))
    return exploded.with_columns(new_id.alias("id")).drop("copies", "_copy")


def copies_added(decision: Decision) -> int:
    """Rows the decision adds: every extra copy of a row it keeps."""
    if decision.copies is None or not len(decision.copies):
        return 0
    kept = decision.copies.filter(~pl.col("id").is_in(decision.drops["id"].implode()))
    return int((kept["copies"] - 1).sum())


def concat_frames(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One table from shards whose columns may differ (inputs with different extra fields)."""
    frames = [f for f in frames if f.width]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema={"id": pl.String})


def scan(parts: list[Part]) -> pl.LazyFrame:
    """All rows of `parts` as one lazy table (columns that differ between parts are unified)."""
    frames = [pl.scan_parquet(p.path) if p.frame is None else p.frame.lazy() for p in parts]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.LazyFrame(schema={"id": pl.String})


def _own_reasons(rejected: pl.LazyFrame, stage: Stage) -> pl.LazyFrame:
    """Rejects with the stage prefix taken off their reasons (what the operator itself said)."""
    if REASON not in rejected.collect_schema():  # nothing was rejected
        return pl.LazyFrame(schema={"id": pl.String, REASON: pl.String, DETAIL: pl.String})
    return rejected.with_columns(pl.col(REASON).str.strip_prefix(f"{stage.name}:"))


def _prefix_reasons(rejected: pl.DataFrame, stage: Stage) -> pl.DataFrame:
    return rejected.with_columns((pl.lit(f"{stage.name}:") + pl.col(REASON)).alias(REASON))


def _reason_counts(rejects: pl.DataFrame) -> dict[str, int]:
    if not len(rejects):
        return {}
    return dict(rejects.group_by(REASON).len().iter_rows())


@contextmanager
def _stage_errors(stage: Stage, batch: pl.DataFrame) -> Iterator[None]:
    """Turn a missing column inside an operator into an error that names the stage and the columns."""
    try:
        yield
    except pl.exceptions.ColumnNotFoundError as err:
        missing = str(err).splitlines()[0]
        raise SluiceError(
            f"stage {stage.name!r} ({stage.operator.name}): column not found: {missing}; the rows have "
            f"columns {batch.columns}. Map an input field to it with `fields:` or change the stage's parameters."
        ) from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

