"""The engine: read inputs into shards, run each stage over them, keep the books.

Row-local stages map over shards; a global stage is a barrier (index every shard, decide once, apply to
every shard). How the per-shard calls run is the caller's choice: `map_local` runs them in-process, the
Prefect flow (pipelines/flow.py) runs each as a task. The functions here are the same either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from operators.base import REASON, GlobalOperator, RowOperator, Split
from operators.errors import SluiceError
from pipelines.accounting import Ledger
from pipelines.config import Pipeline, Stage
from pipelines.progress import Progress
from pipelines.readers import IdRegistry, Source, read_shards

# map_fn(fn, items, label, **kwargs) -> [fn(item, **kwargs) for item in items], in order
MapFn = Callable[..., list]


def map_local(fn: Callable, items: list, label: str, **kwargs: Any) -> list:
    progress = Progress(label, total=sum(len(x) for x in items if isinstance(x, pl.DataFrame)) or None)
    results = []
    for item in items:
        results.append(fn(item, **kwargs))
        progress.advance(len(item) if isinstance(item, pl.DataFrame) else 1)
    progress.close()
    return results


@dataclass
class Outcome:
    """What a run produced: surviving rows by shard, rejected rows, the books, and the inputs read."""

    shards: list[pl.DataFrame]
    rejects: list[pl.DataFrame]
    ledger: Ledger
    inputs: list[dict[str, Any]] = field(default_factory=list)


def execute(pipeline: Pipeline, map_fn: MapFn = map_local) -> Outcome:
    return run_stages(pipeline.sources, pipeline.stages, pipeline.config.shard_rows, map_fn)


def run_stages(sources: list[Source], stages: list[Stage], shard_rows: int, map_fn: MapFn = map_local) -> Outcome:
    """Read `sources`, run `stages` in order, and check the books."""
    outcome = read_inputs(sources, shard_rows)
    for stage in stages:
        run_stage(stage, outcome, map_fn)
    outcome.ledger.check()
    return outcome


def read_inputs(sources: list[Source], shard_rows: int) -> Outcome:
    """Read every input, in order, as shards of `shard_rows` rows (ids unique across all inputs)."""
    ledger = Ledger()
    count = ledger.stage("read", "read")
    ids = IdRegistry()
    shards, rejects, inputs = [], [], []
    progress = Progress("read")
    for src in sources:
        rows = 0
        for shard in read_shards(src, shard_rows, ids):
            shards.append(shard.rows)
            rejects.append(shard.rejects)
            count.add(shard.rows_read, len(shard.rows), _reason_counts(shard.rejects))
            rows += shard.rows_read
            progress.advance(shard.rows_read)
        inputs.append({"path": str(src.path), "format": src.format, "source": src.source, "rows": rows,
                       "bytes": src.path.stat().st_size, "sha256": file_sha256(src.path)})
    progress.close()
    return Outcome(shards, [r for r in rejects if len(r)], ledger, inputs)


def run_stage(stage: Stage, outcome: Outcome, map_fn: MapFn = map_local) -> None:
    """Run one stage over every shard of `outcome`, in place, and record its counts."""
    op = stage.operator
    if isinstance(op, RowOperator):
        splits = map_fn(split_rows, outcome.shards, stage.name, stage=stage)
    elif isinstance(op, GlobalOperator):
        indexes = map_fn(index_rows, outcome.shards, f"{stage.name}.index", stage=stage)
        drops = decide(pl.concat(indexes, how="vertical_relaxed"), stage=stage)
        splits = map_fn(apply_drops, outcome.shards, f"{stage.name}.apply", stage=stage, drops=drops)
    else:
        raise SluiceError(f"stage {stage.name!r}: operator {op.name!r} cannot run as a pipeline stage")
    count = outcome.ledger.stage(stage.name, op.name)
    for shard, split in zip(outcome.shards, splits):
        count.add(len(shard), len(split.kept), _reason_counts(split.rejected))
    outcome.shards = [s.kept for s in splits]
    outcome.rejects += [s.rejected for s in splits if len(s.rejected)]


def split_rows(batch: pl.DataFrame, stage: Stage) -> Split:
    with _stage_errors(stage, batch):
        kept, rejected = stage.operator.process(batch)
    return Split(kept, _prefix_reasons(rejected, stage))


def index_rows(batch: pl.DataFrame, stage: Stage) -> pl.DataFrame:
    with _stage_errors(stage, batch):
        return stage.operator.index(batch)


def decide(index: pl.DataFrame, stage: Stage) -> pl.DataFrame:
    return stage.operator.decide(index)


def apply_drops(batch: pl.DataFrame, stage: Stage, drops: pl.DataFrame) -> Split:
    hit = pl.col("id").is_in(drops["id"].implode())
    rejected = batch.filter(hit).join(drops, on="id", how="left", maintain_order="left")
    return Split(batch.filter(~hit), _prefix_reasons(rejected, stage))


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

