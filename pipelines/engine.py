"""The engine: read inputs into shards, run each stage over them, keep the books.

Row-local stages map over shards; a global stage is a barrier (index every shard, decide once, apply to
every shard); a generator stage turns seed rows into new rows through the run's LLM client (per shard when
the generator says its rows depend on one seed row each, else once over all seeds), its request tallies
cached with its shard results so a release built from cached results still says what its rows cost. How the per-shard calls run is the caller's choice: `map_local` runs them in-process, the
Prefect flow (pipelines/flow.py) runs each as a task. The functions here are the same either way.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, TypeVar

import polars as pl

from operators.base import DETAIL, REASON, Decision, Generator, GlobalOperator, Mapper, Operator, RowOperator, Split
from operators.errors import SluiceError
from pipelines import failpoints, storage
from pipelines.accounting import Ledger
from pipelines.cache import DAMAGED, ShardCache, derive
from pipelines.storage import Location, StorageError
from pipelines.config import Pipeline, Stage
from pipelines.progress import Progress
from pipelines.readers import Source

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
LANG = "lang"  # the column a langid stage writes; `languages:` on a stage reads it


@dataclass(frozen=True)
class Part:
    """One shard's rows between stages: a frame in memory or, in a run with a shard cache, the cached file,
    read by the task that needs it. So a run holds a few shards in memory at a time, and a Dask task ships
    a path, not the rows."""

    rows: int
    frame: pl.DataFrame | None = None
    path: Location | None = None  # a local path or a URL (a shard cache on an object store)
    schema: pl.Schema | None = None  # the file's columns, when the task that wrote it said (see `columns`)
    dropped: pl.Series | None = None  # ids of the file's rows that are not the part's (see `less`)
    kept_by: str | None = None  # the process that wrote the file and keeps a copy of it (storage.keep), if any

    def load(self) -> pl.DataFrame:
        rows = self.frame if self.frame is not None else storage.read_parquet(self.path, kept_by=self.kept_by)
        return self._kept(rows)

    def scan(self) -> pl.LazyFrame:
        rows = self.frame.lazy() if self.frame is not None else storage.scan_parquet(self.path, self.kept_by)
        return self._kept(rows)

    def _kept(self, rows: FrameT) -> FrameT:
        """The rows less the `dropped` ones."""
        return rows if self.dropped is None else rows.filter(~pl.col("id").is_in(self.dropped.implode()))

    @property
    def columns(self) -> pl.Schema | None:
        """The part's columns if known without reading its file."""
        return self.frame.schema if self.frame is not None else self.schema


@dataclass(frozen=True)
class ShardResult:
    """A row stage's (or an apply step's) result for one shard: kept and rejected rows, rejects by reason,
    the small side table of a `Produced` result, and the next global stage's index of the kept rows when the
    task cached it (see Ahead)."""

    kept: Part
    rejected: Part
    reasons: dict[str, int]
    side: pl.DataFrame | None = None
    index: Part | None = None
    final: bool = True  # False: a generator's result with failed requests, not cached (see Produced)


class Produced(NamedTuple):
    """A task's rows, rejects and a small side table: a generator's request tallies (pipelines/generation.py),
    or a fused task's rows per stage and language. `final` is False when a request failed in a way a re-run
    may not repeat (timeout, 5xx): such a result is not cached, so the next run asks again (the answers it
    did get are in the response cache)."""

    kept: pl.DataFrame
    rejected: pl.DataFrame
    side: pl.DataFrame
    final: bool = True


@dataclass(frozen=True)
class Job:
    """One per-shard call: the shard, the cache key of its result, and a name for logs and the Prefect UI.
    `new`: the shard was made in this run, so nothing made from it can be in the cache yet (its key is derived
    from the shard's): map_cached does not look the key up (on an object store, a request on the way from
    one stage to the next)."""

    part: Part
    key: str
    name: str
    new: bool = False


# map_fn(fn, jobs, label, cache, inline=False, **kwargs) -> [(result, reused), ...] in job order; see call_cached.
# map_local runs them in a loop; the flow runs Prefect tasks. `inline`: the calls must run in this process
# (they use the run's LLM client), so a runner with worker processes runs them here.
MapFn = Callable[..., list]


class LLM(Protocol):
    """The run's LLM endpoint as the engine sees it (pipelines/generation.py builds it)."""

    identity: str  # endpoint and model: part of a generator result's cache key

    def task_client(self) -> Any:
        """A client for one task: same endpoint, cache and limits; `usage_frame()` tallies its requests."""


class Ahead(NamedTuple):
    """The global stage that comes next, for the tasks whose kept rows are its input: each such task also
    computes that stage's index of its kept rows and caches it under the key the index step looks up
    (`index_key`), so the index step finds every shard's index in the cache instead of reading every shard
    again (on an object store: a GET and a decode of the whole shard each)."""

    stage: Stage
    fingerprint: str  # stage_fingerprint(stage), computed once in the driver


def index_key(key: str, fingerprint: str) -> str:
    """The cache key of a global stage's index of the rows cached under `key`."""
    return key_of(key, fingerprint, "index")


PARTIAL = "~"  # marks the key of rows a re-run will not repeat (see Produced.final) and of all derived from them


def key_of(*parts: str) -> str:
    """`derive(*parts)`, marked PARTIAL when a part is: the rows under such a key are not cached (a re-run
    makes others), and neither is anything computed from them (see call_cached)."""
    key = derive(*parts)
    return PARTIAL + key if any(part.startswith(PARTIAL) for part in parts) else key


def call_cached(fn: Callable, job: Job, cache: ShardCache | None, ahead: Ahead | None = None,
                drops_only: bool = False, asked: bool = False, **kwargs: Any) -> tuple[Any, bool]:
    """fn(the job's rows, **kwargs), or its cached result. A Split comes back as a ShardResult whose parts
    are the cache's files (in memory without a cache); a single frame (a global stage's index or decision
    part) comes back as the frame without a cache, as a Part naming the cache's file with one. `ahead`: a
    Split's kept rows are also indexed for the next global stage, into the cache (see Ahead). `drops_only`:
    the Split's kept rows are the job's rows less its rejects (a drop-only decision), so only the rejects are
    cached and the kept part is the job's file with their ids left out (`less`): no copy of the shard written
    (unless the rows do not allow it: see `_only_drops`). `asked`: the driver asked the cache for the job's key
    just before and found nothing (map_cached), so the task does not ask again (on an object store, a request
    each); an executor clears it for a retry. A task run again after its worker died then makes its entry
    again, the same bytes under the same key (the dead worker's `_done`, if written, stays: see put)."""
    if cache is None:
        result = fn(job.part.load(), **kwargs)
        return (_in_memory(result) if isinstance(result, Split | Produced) else result), False
    if job.key.startswith(PARTIAL):  # not to be cached: parked in the run's spill folder, not held in memory
        return _spilled(fn(job.part.load(), **kwargs), cache), False
    if asked:
        batch = _rows_of(job.part, cache)
    else:
        pool = ThreadPoolExecutor(1)  # the rows are read while the cache is asked (on an object store, a request)
        rows = pool.submit(job.part.load)
        try:
            if (files := cache.files(job.key)) is not None and \
                    (found := _from_entry(cache, job.key, files, job.part if drops_only else None)) is not None:
                return found, True
            batch = _rows_of(job.part, cache, rows)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # on a hit: the read is not waited for
    result = fn(batch, **kwargs)
    if isinstance(result, Produced) and not result.final:
        return replace(_in_memory(result), final=False), False
    split = isinstance(result, Split | Produced)
    drops_only = drops_only and _only_drops(result, len(batch))
    frames = (result.rejected,) if drops_only else tuple(result)[:3] if split else (result,)
    index = None
    if split and ahead is not None:
        with ThreadPoolExecutor(1) as writer:  # the rows' entry is written while their index is computed
            storing = writer.submit(cache.put, job.key, frames)
            frame = index_rows(result.kept, ahead.stage)
            files = storing.result()
        # stored after the rows' own entry: a task killed between the two leaves a resumable state
        index = stored(frame, cache.put(index_key(job.key, ahead.fingerprint), (frame,))[0])
    else:
        files = cache.put(job.key, frames)
    if not split:
        return stored(result, files[0]), False
    kept = less(job.part, result.rejected["id"], len(result.kept)) if drops_only else stored(result.kept, files[0])
    return ShardResult(kept, stored(result.rejected, files[-1 if drops_only else 1]),
                       _reason_counts(result.rejected), getattr(result, "side", None), index), False


def stored(frame: pl.DataFrame, path: Location) -> Part:
    """A Part of `frame`, which this process has just stored at `path` (and may keep a copy of: storage.keep)."""
    return Part(len(frame), path=path, schema=frame.schema, kept_by=storage.kept(path))


def _rows_of(part: Part, cache: ShardCache, loading: Future | None = None) -> pl.DataFrame:
    """part.load() (or what `loading` it), but a file missing from the entry of the cache that holds it (an
    object deleted from a bucket's read entry: its look-up, one GET of `_done`, cannot see that) drops that
    entry and says so, so the next run makes it again instead of failing the same way."""
    try:
        return part.load() if loading is None else loading.result()
    except storage.Missing as error:
        entry = storage.parent(part.path) if part.path is not None else None
        if entry is None or storage.name(entry).startswith(".") or \
                storage.join(cache.folder, storage.name(entry)) != entry:
            raise
        cache.drop(storage.name(entry))
        raise SluiceError(f"{error}: the cache entry {storage.display(entry)} is damaged and now removed; run "
                          "again to make it anew") from error


def _only_drops(split: Split, rows: int) -> bool:
    """True when `split`'s kept rows are exactly its batch's rows whose ids are not among its rejects' (each
    rejected row one row of the batch, with an id of its own): only then can the kept part be the batch's file
    read through that filter. Else (ids repeated in a shard, a decision naming a row twice) the kept rows are
    written as by any stage, and the books see what the stage did."""
    return len(split.kept) + len(split.rejected) == rows and split.rejected["id"].is_unique().all()


def less(part: Part, ids: pl.Series, rows: int | None = None) -> Part:
    """`part` without its rows whose ids are `ids` (`rows` of them left; by default one less per id), as a Part
    of the same file: a drop-only stage's kept rows, read through a filter on `id` (see `_only_drops`)."""
    if not len(ids):
        return part
    dropped = ids if part.dropped is None else pl.concat([part.dropped, ids])
    return replace(part, rows=part.rows - len(ids) if rows is None else rows, dropped=dropped.rename("id"))


def map_cached(map_fn: MapFn, fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None,
               inline: bool = False, ahead: Ahead | None = None, drops_only: bool = False, **kwargs: Any) -> list:
    """map_fn over the jobs whose results the cache does not hold; those it holds are answered here (a look-up
    and Parquet footers each), so a resume does not pay a task's start-up for every finished shard (a Prefect
    task run costs ~0.09 CPU s: 609 cached ones were 53 of a 1M-row resume's 60 CPU s). `ahead`, `drops_only`:
    see call_cached."""
    if cache is None:
        return map_fn(fn, jobs, label, cache, inline=inline, **kwargs)
    if ahead is not None:
        kwargs["ahead"] = ahead  # for call_cached
    if drops_only:
        kwargs["drops_only"] = True
    stored = [job.key for job in jobs if not job.key.startswith(PARTIAL) and not job.new]  # never stored, none yet
    found = [*map(dict(zip(stored, cache.lookup(stored))).get, [job.key for job in jobs])]
    hits = [i for i, files in enumerate(found) if files is not None]
    todo = [i for i, files in enumerate(found) if files is None]
    results: list = [None] * len(jobs)
    with ThreadPoolExecutor(16 if cache.remote else 1) as pool:  # on an object store: footers read concurrently
        answers = pool.map(_answer, [cache] * len(hits), [jobs[i].key for i in hits], [found[i] for i in hits],
                           [jobs[i].part if drops_only else None for i in hits])
        for i, part in zip(hits, answers):
            results[i] = (part, True)
    todo = sorted(todo + [i for i in hits if results[i][0] is None])  # damaged (dropped) or not given: made
    if todo:
        done = map_fn(fn, [jobs[i] for i in todo], label, cache, inline=inline, asked=True, **kwargs)
        for i, result in zip(todo, done):
            results[i] = result
    return results


def _in_memory(split: Split | Produced) -> ShardResult:
    return _as_result(split, lambda frame: Part(len(frame), frame))


def _spilled(result: Split | Produced | pl.DataFrame, cache: ShardCache) -> ShardResult | Part:
    def park(frame: pl.DataFrame) -> Part:
        return stored(frame, cache.spill(frame))

    return _as_result(result, park) if isinstance(result, Split | Produced) else park(result)


def _as_result(split: Split | Produced, part: Callable[[pl.DataFrame], Part]) -> ShardResult:
    return ShardResult(part(split.kept), part(split.rejected), _reason_counts(split.rejected),
                       getattr(split, "side", None))


def _answer(cache: ShardCache, key: str, files: list[Location], less_of: Part | None) -> Part | ShardResult | None:
    """The driver's `_from_entry`: an entry the store fails to give (after retries) is made by its task, as one
    not found (see ShardCache.lookup): the same bytes under the same key, the entry kept."""
    try:
        return _from_entry(cache, key, files, less_of)
    except StorageError:
        return None


def _from_entry(cache: ShardCache, key: str, files: list[Location], less_of: Part | None) -> Part | ShardResult | None:
    """`_from_files`, or None when the entry is damaged (a file missing or unreadable): it is then dropped, the
    run's log names it, and its task makes it again (a cache only saves work)."""
    try:
        if not files:
            raise FileNotFoundError("a file missing")
        return _from_files(files, less_of)
    except DAMAGED as error:
        cache.damaged(key, error, "stage cache entry")
        return None


def _from_files(files: list[Location], less_of: Part | None = None) -> Part | ShardResult:
    """The result cached as `files`; `less_of`: a drop-only entry (its rejects only) of that part's rows, or the
    kept rows and rejects of a stage whose rows did not allow that (see `_only_drops`)."""
    if less_of is not None and len(files) == 1:
        rejected = storage.read_parquet(files[0], columns=["id", REASON])
        return ShardResult(less(less_of, rejected["id"]), Part(len(rejected), path=files[0]), _reason_counts(rejected))
    if len(files) == 1:
        return Part(storage.parquet_rows(files[0]), path=files[0])
    kept, rejected = (storage.parquet_rows(f) for f in files[:2])
    reasons = _reason_counts(storage.read_parquet(files[1], columns=[REASON])) if rejected else {}
    side = storage.read_parquet(files[2]) if len(files) > 2 else None
    return ShardResult(Part(kept, path=files[0]), Part(rejected, path=files[1]), reasons, side)


def map_local(fn: Callable, jobs: list[Job], label: str, cache: ShardCache | None = None, inline: bool = False,
              **kwargs: Any) -> list:
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
    usage: list[tuple[pl.DataFrame, bool]] = field(default_factory=list)  # generator tasks' tallies, reused?
    reused: int = 0
    computed: int = 0
    indexed: dict[str, Part] = field(default_factory=dict)  # index key -> the index this run's tasks cached ahead
    made: set[str] = field(default_factory=set)  # keys of the shard results this run made (not from the cache)

    @property
    def shards(self) -> list[pl.DataFrame]:
        """The surviving rows, shard by shard (read into memory)."""
        return [p.load() for p in self.parts]

    @property
    def rejects(self) -> list[pl.DataFrame]:
        """The rejected rows with their reasons (read into memory)."""
        return [p.load() for p in self.rejected]

    def jobs(self, keys: list[str]) -> list[Job]:
        """A job per shard, under `keys` derived from the shards' own (`new` for a shard this run made)."""
        return [Job(p, k, n, own in self.made) for p, k, n, own in zip(self.parts, keys, self.names, self.keys)]


def execute(pipeline: Pipeline, map_fn: MapFn = map_local, cache: ShardCache | None = None,
            llm: LLM | None = None) -> Outcome:
    return run_stages(pipeline.sources, pipeline.stages, pipeline.config.shard_rows, map_fn, cache, llm)


def run_stages(sources: list[Source], stages: list[Stage], shard_rows: int, map_fn: MapFn = map_local,
               cache: ShardCache | None = None, llm: LLM | None = None) -> Outcome:
    """Read `sources`, run `stages` in order, and check the books (each stage's seconds too; stages fused into
    one task per shard are timed together, on the group's last stage: the others show none)."""
    with _clock() as took:
        outcome = read_inputs(sources, shard_rows, cache, map_fn)
    outcome.ledger.stages[0].timed(*took())
    groups = stage_groups(stages)
    for group, after in zip(groups, [*groups[1:], None]):
        ahead = _ahead(after) if cache is not None else None
        with _clock() as took:
            if len(group) == 1:
                run_stage(group[0], outcome, map_fn, cache, llm, ahead)
            else:
                run_fused(group, outcome, map_fn, cache, ahead)
        outcome.ledger.stages[-1].timed(*took())
        for _ in group:
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


def _ahead(group: list[Stage] | None) -> Ahead | None:
    """An Ahead when `group` is a global stage (whose index the tasks before it can compute)."""
    if group is None or not isinstance(group[0].operator, GlobalOperator):
        return None
    return Ahead(group[0], stage_fingerprint(group[0]))


def stage_groups(stages: list[Stage]) -> list[list[Stage]]:
    """Consecutive row-local stages run together, one task per shard (one read and one write between
    barriers). A stage with its own summary (`Operator.stats`) reads its kept rows, which a group rebuilds
    from the group's output and the rows later stages of the group rejected; a mapper after it would have
    rewritten them, so there a group ends."""
    groups: list[list[Stage]] = []
    for stage in stages:
        row_local = isinstance(stage.operator, RowOperator)
        previous = groups[-1][-1].operator if groups else None
        joins = (row_local and isinstance(previous, RowOperator)
                 and not (_has_stats(previous) and isinstance(stage.operator, Mapper)))
        if joins:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _has_stats(op: Operator) -> bool:
    return type(op).stats is not Operator.stats


def read_inputs(sources: list[Source], shard_rows: int, cache: ShardCache | None = None,
                map_fn: MapFn = map_local) -> Outcome:
    """Read every input as shards of `shard_rows` rows, one task per file or span (pipelines/reading.py)."""
    from pipelines import reading

    return reading.read_inputs(sources, shard_rows, cache, map_fn)


def stage_fingerprint(stage: Stage) -> str:
    fingerprint = stage.operator.fingerprint
    return fingerprint if stage.languages is None else derive(fingerprint, *stage.languages)


def run_fused(group: list[Stage], outcome: Outcome, map_fn: MapFn = map_local, cache: ShardCache | None = None,
              ahead: Ahead | None = None) -> None:
    """Run consecutive row-local stages as one task per shard, in place; each stage keeps its own books
    (rows in, out, dropped by reason, rows per language, its summary) and rejects, as if it had run alone.
    `ahead`: the global stage after the group, whose index the tasks compute too."""
    fingerprints = [stage_fingerprint(s) for s in group]  # once per stage, not per shard (each hashes modules)
    keys = [key_of(k, *fingerprints) for k in outcome.keys]
    results = map_cached(map_fn, split_fused, outcome.jobs(keys), "+".join(s.name for s in group), cache,
                         ahead=ahead, stages=group)
    level = sum(p.rows for p in outcome.parts)
    reasons: Counter = Counter()
    for result, _ in results:
        reasons.update(result.reasons)
    sides = pl.concat([r.side for r, _ in results if r.side is not None], how="vertical_relaxed")
    _tally(outcome, results, ahead, keys)
    outcome.parts = [result.kept for result, _ in results]
    rejected = [result.rejected for result, _ in results if result.rejected.rows]
    outcome.rejected += rejected
    outcome.keys = keys
    for i, stage in enumerate(group):
        count = outcome.ledger.stage(stage.name, stage.operator.name)
        own = {reason: n for reason, n in reasons.items() if reason.startswith(f"{stage.name}:")}
        count.rows_in = level
        count.add(0, level - sum(own.values()), own)
        level = count.rows_out
        mine = sides.filter(pl.col("stage") == stage.name)
        count.languages = _languages_of(mine["languages"].explode().struct.unnest() if len(mine) else None)
        if _has_stats(stage.operator):
            columns = list(dict.fromkeys(c for cs in mine["columns"].to_list() for c in cs))
            kept = pl.concat([scan(outcome.parts), _rejected_by(group[i + 1:], rejected).drop(REASON, DETAIL)],
                             how="diagonal_relaxed").select(columns)
            count.stats = stage.operator.stats(kept, _own_reasons(_rejected_by([stage], rejected), stage))
        _not_in_languages(count, stage)


def _rejected_by(stages: list[Stage], rejected: list[Part]) -> pl.LazyFrame:
    """The rows `stages` rejected, from a fused group's rejects."""
    if not rejected or not stages:
        return pl.LazyFrame(schema={"id": pl.String, REASON: pl.String, DETAIL: pl.String})
    return scan(rejected).filter(pl.any_horizontal(pl.col(REASON).str.starts_with(f"{s.name}:") for s in stages))


def split_fused(batch: pl.DataFrame, stages: list[Stage]) -> Produced:
    """`split_rows` of each stage in turn on one shard: the last one's kept rows, every stage's rejects, and a
    side table with one row per stage: the columns of the rows it kept and its rows per language. (A stage's
    kept rows are rebuilt for its summary from the group's output and what later stages rejected, with those
    columns: row-local stages after it only add columns, and a group ends before a mapper.)"""
    rejected, side = [], []
    for stage in stages:
        batch, dropped = split_rows(batch, stage)
        rejected.append(dropped)
        side.append({"stage": stage.name, "columns": batch.columns,
                     "languages": _language_counts(batch, dropped).to_dicts()})
    languages = pl.List(pl.Struct({LANG: pl.String, "out": pl.Int64, "dropped": pl.Int64}))
    return Produced(batch, concat_frames(rejected) if any(len(r) for r in rejected) else rejected[-1],
                    pl.DataFrame(side, schema={"stage": pl.String, "columns": pl.List(pl.String), "languages": languages}))


def _language_counts(kept: pl.DataFrame, rejected: pl.DataFrame) -> pl.DataFrame:
    """lang, out, dropped: one stage's rows per language in one shard (none when the rows have no `lang`)."""
    empty = pl.DataFrame(schema={LANG: pl.String, "out": pl.Int64, "dropped": pl.Int64})
    if LANG not in kept.columns:
        return empty
    counts = [frame.group_by(pl.col(LANG).cast(pl.String)).len(name=side).with_columns(pl.col(side).cast(pl.Int64))
              for side, frame in (("out", kept), ("dropped", rejected)) if LANG in frame.columns]
    return pl.concat([empty, *counts], how="diagonal_relaxed").group_by(LANG) \
        .agg(pl.col("out").sum(), pl.col("dropped").sum())


def _languages_of(counts: pl.DataFrame | None) -> dict[str, dict[str, int]]:
    """The `rows_by_language` books from per-shard counts."""
    if counts is None or not len(counts) or LANG not in counts.columns:
        return {}
    totals = counts.group_by(LANG).agg(pl.col("out").sum(), pl.col("dropped").sum()).iter_rows()
    books = {lang or "null": {"out": out, "dropped": dropped} for lang, out, dropped in totals}
    return dict(sorted(books.items(), key=lambda kv: -kv[1]["out"] - kv[1]["dropped"]))


def _not_in_languages(count: Any, stage: Stage) -> None:
    if stage.languages is not None and count.languages:
        skipped = {lang: n["out"] for lang, n in count.languages.items() if lang not in stage.languages}
        count.stats = {**count.stats, "not_in_languages": skipped}  # rows that passed the stage untouched


def run_stage(stage: Stage, outcome: Outcome, map_fn: MapFn = map_local, cache: ShardCache | None = None,
              llm: LLM | None = None, ahead: Ahead | None = None) -> None:
    """Run one stage over every shard of `outcome`, in place, and record its counts. `ahead`: the global
    stage after this one, whose index the row or apply tasks compute too."""
    op, fingerprint = stage.operator, stage_fingerprint(stage)
    added = consumed = 0
    decided: dict[str, Any] = {}  # a global stage's Decision.stats
    names = outcome.names
    if isinstance(op, RowOperator):
        keys = [key_of(k, fingerprint) for k in outcome.keys]
        results = map_cached(map_fn, split_rows, outcome.jobs(keys), stage.name, cache, ahead=ahead, stage=stage)
    elif isinstance(op, GlobalOperator):
        index_keys = [index_key(k, fingerprint) for k in outcome.keys]
        indexed = index_parts(stage, outcome, index_keys, map_fn, cache)
        _tally(outcome, indexed)
        decision_key = key_of(fingerprint, *outcome.keys)
        decision = decide([as_part(r) for r, _ in indexed], stage, map_fn, cache, decision_key, outcome)
        drops_only = cache is not None and drops_only_decision(op, decision) and all(p.path for p in outcome.parts)
        # a drop-only entry (rejects only) is of other content, and holds for its input rows only: its key names them
        keys = [key_of(k, decision_key, *(["drops", str(p.rows)] if drops_only else []))
                for k, p in zip(outcome.keys, outcome.parts)]
        results = map_cached(map_fn, apply_decision, outcome.jobs(keys), f"{stage.name}.apply", cache, ahead=ahead,
                             drops_only=drops_only, stage=stage,
                             decision=decision._replace(tables={}))  # tables go to the release only
        outcome.tables.update({f"{stage.name}.{name}": table for name, table in decision.tables.items()})
        added, decided = copies_added(decision), decision.stats
    elif isinstance(op, Generator):
        if llm is None:
            raise SluiceError(f"stage {stage.name!r}: the generator {op.name!r} needs an LLM endpoint")
        ahead = None  # its rows are made in this process, not in tasks of the shards: the index step reads them
        jobs = generator_jobs(stage, fingerprint, outcome, llm)
        keys, names = [j.key for j in jobs], [j.name for j in jobs]
        results = map_cached(map_fn, generate_rows, jobs, stage.name, cache, inline=True, stage=stage, llm=llm)
        # rows of a result with failed requests differ from the next run's: nothing made from them is cached
        keys = [key if result.final else PARTIAL + key for key, (result, _) in zip(keys, results)]
        outcome.usage += [(result.side, reused) for result, reused in results]
        consumed = sum(p.rows for p in outcome.parts)
        added = sum(r.kept.rows + r.rejected.rows for r, _ in results)
    else:
        raise SluiceError(f"stage {stage.name!r}: operator {op.name!r} cannot run as a pipeline stage")
    count = outcome.ledger.stage(stage.name, op.name)
    count.added, count.consumed = added, consumed
    count.rows_in = sum(p.rows for p in outcome.parts)
    for result, _ in results:
        count.add(0, result.kept.rows, result.reasons)
    _tally(outcome, results, ahead, keys)
    outcome.parts = [result.kept for result, _ in results]
    rejected = [result.rejected for result, _ in results if result.rejected.rows]
    outcome.rejected += rejected
    outcome.keys, outcome.names = keys, names
    if type(op).stats is not Operator.stats:
        count.stats = op.stats(scan(outcome.parts), _own_reasons(scan(rejected, read_now=True), stage))
    if decided:
        count.stats = {**count.stats, **decided}
    count.languages = rows_by_language(scan(outcome.parts), scan(rejected)) if LANG in columns(outcome.parts) else {}
    _not_in_languages(count, stage)


def index_parts(stage: Stage, outcome: Outcome, keys: list[str], map_fn: MapFn = map_local,
                cache: ShardCache | None = None) -> list[tuple[Any, bool]]:
    """Every shard's index for `stage` (cached under `keys`): what the tasks before it cached ahead (as computed
    by this run: no look-up, no footer read), the rest from the cache or index tasks."""
    jobs = [job for job in outcome.jobs(keys) if job.key not in outcome.indexed]
    found = iter(map_cached(map_fn, index_rows, jobs, f"{stage.name}.index", cache, stage=stage))
    return [(outcome.indexed[key], False) if key in outcome.indexed else next(found) for key in keys]


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


def generator_jobs(stage: Stage, fingerprint: str, outcome: Outcome, llm: LLM) -> list[Job]:
    """One job per seed shard when the generator's rows depend on one seed row each, else one over all seeds."""
    if stage.operator.per_seed_row:
        return outcome.jobs([key_of(k, fingerprint, llm.identity) for k in outcome.keys])
    seeds = concat_frames([p.load() for p in outcome.parts])
    return [Job(Part(len(seeds), seeds), key_of(fingerprint, llm.identity, *outcome.keys), "all")]


def generate_rows(batch: pl.DataFrame, stage: Stage, llm: LLM) -> Produced:
    """New rows and rejected candidates from one job's seed rows, with the tallies of the requests behind them."""
    op, client = stage.operator, llm.task_client()
    with _stage_errors(stage, batch):
        try:
            if hasattr(op, "run"):  # an LLMGenerator: rows and rejected candidates
                kept, rejected = op.run(batch, client)
            else:
                kept, rejected = op.generate(batch, client), _empty_rejects()
        except ValueError as err:  # a generator's word on its seeds or parameters
            raise SluiceError(f"stage {stage.name!r} ({op.name}): {err}") from None
    return Produced(kept, _prefix_reasons(rejected, stage), client.usage_frame(), client.unanswered == 0)


def _empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema={"id": pl.String, REASON: pl.String, DETAIL: pl.String})


def _tally(outcome: Outcome, results: list[tuple[Any, bool]], ahead: Ahead | None = None,
           keys: list[str] = ()) -> None:
    """Count results reused from the cache and computed, and note the `keys` of the computed ones (see Job.new);
    with `ahead`, note the index entries the computed ones cached (an index step that finds them reuses
    nothing from an earlier run)."""
    reused = sum(hit for _, hit in results)
    outcome.reused += reused
    outcome.computed += len(results) - reused
    outcome.made |= {key for key, (_, hit) in zip(keys, results) if not hit}
    if ahead is not None:
        outcome.indexed |= {index_key(key, ahead.fingerprint): result.index for key, (result, hit) in zip(keys, results)
                            if not hit and result.index is not None}


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


def as_part(result: pl.DataFrame | Part) -> Part:
    """A single-frame task result (see `call_cached`) as a Part."""
    return result if isinstance(result, Part) else Part(len(result), result)


def decide(index: list[Part] | pl.DataFrame, stage: Stage, map_fn: MapFn = map_local, cache: ShardCache | None = None,
           key: str = "", outcome: Outcome | None = None) -> Decision:
    """The stage's decision from every shard's index (or one frame of it all): `decide` once in this process
    on the concatenated index, or, for an operator with `partitions(rows)`, `decide_part` as tasks (cached under
    `key`) over a lazy scan of the index files and `combine` here, so the driver never holds the whole index."""
    op = stage.operator
    index = [as_part(index)] if isinstance(index, pl.DataFrame) else index
    rows = sum(p.rows for p in index)  # the tasks are told, so none scans the index to count it
    if parts := op.partitions(rows):
        jobs = [Job(Part(0, pl.DataFrame({"part": [k], "rows": [rows]})), key_of(key, "decide", str(k)), f"part{k}")
                for k in range(parts)]
        results = map_cached(map_fn, decide_part, jobs, f"{stage.name}.decide", cache, stage=stage, index=index)
        if outcome is not None:
            _tally(outcome, results)
        decision = op.combine(scan(index), [as_part(r).load() for r, _ in results])
    else:
        decision = op.decide(concat_frames([p.load() for p in index]))
    decision = decision if isinstance(decision, Decision) else Decision(decision)
    if decision.copies is not None and len(decision.copies):
        where = f"stage {stage.name!r} ({op.name})"
        if decision.copies["copies"].fill_null(1).min() < 1:
            raise SluiceError(f"{where}: a row was given fewer than 1 copy")
        extra = decision.copies.with_columns(pl.int_ranges(2, pl.col("copies") + 1).alias("k")).explode("k")
        copy_ids = extra.drop_nulls("k").select(pl.format("{}#{}", "id", "k"))["id"]
        taken = scan(index).select("id").filter(pl.col("id").is_in(copy_ids.implode())).head(1).collect()["id"]
        if len(taken):
            raise SluiceError(f"{where}: the copy id {taken[0]!r} is already a row's id; rename the input ids")
    return decision


def decide_part(job: pl.DataFrame, stage: Stage, index: list[Part]) -> pl.DataFrame:
    """One part of a partitioned decision (`job` names the part), over a lazy scan of every shard's index."""
    return stage.operator.decide_part(scan(index, read_now=True), job["part"][0], job["rows"][0])


def apply_decision(batch: pl.DataFrame, stage: Stage, decision: Decision) -> Split:
    """Carry `decision` out on one shard (the operator's `apply`: drop, label, repeat, or its own rewrite)."""
    with _stage_errors(stage, batch):
        kept, rejected = stage.operator.apply(batch, decision)
    return Split(kept, _prefix_reasons(rejected, stage))


def drops_only_decision(op: GlobalOperator, decision: Decision) -> bool:
    """True when applying `decision` keeps every row it does not drop as it is (the default `apply`, no labels
    and no copies): then a shard's kept rows are its rows less the rejects' ids (see call_cached)."""
    return type(op).apply is GlobalOperator.apply and decision.labels is None and decision.copies is None


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


def columns(parts: list[Part]) -> pl.Schema:
    """`scan(parts).collect_schema()`, from the columns the tasks that wrote the parts gave where they did: a
    footer read per part saved (on an object store, a request each) for the books and the release."""
    if not parts or any(p.columns is None for p in parts):
        return scan(parts, read_now=True).collect_schema()
    return pl.concat([pl.LazyFrame(schema=p.columns) for p in parts], how="diagonal_relaxed").collect_schema()


def scan(parts: list[Part], read_now: bool = False) -> pl.LazyFrame:
    """All rows of `parts` as one lazy table (columns that differ between parts are unified). `read_now`: the
    caller reads it at once, so on an object store every file's footer (its schema and column sizes, a request
    each, which Polars would ask for one after another) is asked for now, all at once, unless the tasks that
    wrote the files gave their columns; and parts of one schema are read several at a time."""
    frames = [p.scan() for p in parts]
    remote = [f for f, p in zip(frames, parts) if p.frame is None and storage.is_remote(p.path)]
    if read_now and len(remote) > 1:
        schemas = [p.columns for p in parts]  # as the tasks that wrote them said: no footer asked first
        if len(remote) < len(frames) or None in schemas:
            with ThreadPoolExecutor(min(16, len(remote))) as pool:
                schemas = list(pool.map(pl.LazyFrame.collect_schema, frames))
        if len(remote) == len(frames) and all(schema == schemas[0] for schema in schemas):
            return _read_together(frames, schemas[0], [p.rows for p in parts])
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.LazyFrame(schema={"id": pl.String})


def _read_together(frames: list[pl.LazyFrame], schema: pl.Schema, rows: list[int], at_once: int = 8) -> pl.LazyFrame:
    """`frames` (of one schema, `rows` each) as one lazy table whose query reads up to `at_once` of them at a
    time, in order: Polars reads the files of a concatenated scan one after another (on an object store, a
    request's wait each; a decide task's 20 index files at 1M rows took ~0.5 s so). A query with a row limit
    (`head`) reads only the parts that hold its rows; one without (Polars gives a source no limit after a
    filter) wants every part, so `at_once` are read ahead from the start (a decide task's filtered index)."""
    from polars.io.plugins import register_io_source

    def source(columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
               _batch: int | None) -> Iterator[pl.DataFrame]:
        def read(frame: pl.LazyFrame) -> pl.DataFrame:
            frame = frame if columns is None else frame.select(columns)
            frame = frame if predicate is None else frame.filter(predicate)
            return frame.collect() if n_rows is None else frame.head(n_rows).collect()

        def wanted() -> bool:  # another part: the query may want rows beyond those of the parts being read
            return not reading or left is None or predicate is not None or sum(n for _, n in reading) < left

        left, todo, reading = n_rows, iter(zip(frames, rows)), deque()
        # not `with`: a query that stops pulling rows must not wait for the reads ahead
        pool = ThreadPoolExecutor(at_once, thread_name_prefix="read-together")
        try:
            while True:
                while len(reading) < at_once and wanted() and (ahead := next(todo, None)) is not None:
                    reading.append((pool.submit(read, ahead[0]), ahead[1]))
                if not reading:
                    return
                got = reading.popleft()[0].result()
                if left is not None:
                    got, left = got.head(left), left - min(left, len(got))
                yield got
                if left == 0:
                    return
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    return register_io_source(source, schema=schema)


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


