"""The engine keeps the books: every stage balances, and a stage that loses rows fails the run."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import ALPACA, GSM8K, threads_left
from operators.base import Decision, GlobalOperator, Mapper, Split
from operators.dedup import ExactDedup
from operators.errors import AccountingError, SluiceError
from pipelines import config
from pipelines.accounting import Ledger
from pipelines.config import Stage
from pipelines.engine import execute
from pipelines.flow import run_pipeline
from pipelines.release import verify

ALPACA_INPUT = {"path": str(ALPACA), "fields": {"instruction": "instruction", "input": "input", "output": "output"},
                "optional": ["input"], "on_error": "skip"}


def test_alpaca_pipeline_balances_at_every_stage(write_config, alpaca):
    path = write_config([ALPACA_INPUT], [
        {"op": "normalize", "fields": ["instruction", "input", "output"]},
        {"op": "length_filter", "field": "output", "min_words": 3},
        {"op": "exact_dedup", "fields": ["output"]},
    ], shard_rows=7_000)
    outcome = execute(config.load(path))
    ledger = outcome.ledger
    ledger.check()
    assert [s.stage for s in ledger.stages] == ["read", "normalize", "length_filter", "exact_dedup"]
    assert ledger.stages[0].rows_in == len(alpaca)
    assert ledger.stages[0].dropped == {"read:empty_field": 49}
    assert ledger.stages[2].dropped.keys() == {"length_filter:too_few_words"}
    assert ledger.stages[3].dropped["exact_dedup:duplicate"] > 0
    kept = sum(len(s) for s in outcome.shards)
    rejected = sum(len(r) for r in outcome.rejects)
    assert kept == ledger.stages[-1].rows_out and kept + rejected == len(alpaca)
    assert len(outcome.shards) == 8  # 52,002 rows in shards of 7,000
    ids = pl.concat([s.select("id") for s in outcome.shards] + [r.select("id") for r in outcome.rejects])
    assert ids["id"].n_unique() == len(alpaca)  # every input row is in exactly one place


def test_global_stage_sees_duplicates_across_shards(write_config, tmp_path):
    path = tmp_path / "dupes.jsonl"
    path.write_text("".join(f'{{"text": "Row number {i % 5}."}}\n' for i in range(20)))
    cfg = write_config([{"path": str(path), "fields": {"text": "text"}}], [{"op": "exact_dedup"}], shard_rows=3)
    outcome = execute(config.load(cfg))
    assert sorted(outcome.shards[0]["text"].to_list() + outcome.shards[1]["text"].to_list()) == [
        f"Row number {i}." for i in range(5)]
    assert outcome.ledger.stages[-1].dropped == {"exact_dedup:duplicate": 15}


class LosesRows(Mapper):
    """A buggy operator: silently drops the last row."""

    name = "loses_rows"

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch.head(len(batch) - 1)


def test_a_stage_that_loses_rows_fails_the_run(write_config):
    pipeline = config.load(write_config([ALPACA_INPUT | {"path": str(ALPACA)}]))
    pipeline.stages.append(Stage("loses_rows", LosesRows()))
    with pytest.raises(AccountingError, match="stage 'loses_rows': rows do not balance"):
        execute(pipeline)


def test_missing_column_names_the_stage_and_the_columns(write_config):
    pipeline = config.load(write_config([ALPACA_INPUT], [{"op": "length_filter"}]))  # default field: text
    with pytest.raises(SluiceError, match=r"stage 'length_filter' \(length_filter\): column not found.*'instruction'"):
        execute(pipeline)


def test_ledger_round_trips_and_prints_a_table():
    ledger = Ledger()
    ledger.stage("read", "read").add(10, 9, {"read:malformed_json": 1})
    ledger.stage("f", "length_filter").add(9, 7, {"f:too_few_words": 2})
    ledger.stages[1].timed(12.34, 20.06)
    again = Ledger.from_json(ledger.to_json())
    again.check()
    table = again.table().splitlines()
    assert table[0].split()[:4] == ["stage", "op", "rows", "in"]
    assert table[1].split() == ["read", "read", "10", "9", "1", "-", "-", "read:malformed_json", "1"]  # no time kept
    assert table[2].split() == ["f", "length_filter", "9", "7", "2", "12.3", "20.1", "f:too_few_words", "2"]


def test_every_stage_records_its_wall_and_cpu_seconds(write_config, sluice, tmp_path):
    cfg = write_config([{"path": str(GSM8K), "fields": {"text": "question"}}],
                       [{"op": "normalize", "fields": ["text"]}, {"op": "exact_dedup", "fields": ["text"]}])
    code, out, err = sluice("run", cfg, "--no-prefect")
    assert code == 0, err
    manifest = json.loads((tmp_path / "releases" / "test" / "v0001" / "manifest.json").read_text())
    for stage in manifest["stages"]:
        assert stage["wall_seconds"] > 0 and stage["cpu_seconds"] > 0, stage
    assert "wall s  cpu s" in out.splitlines()[0]
    report = (tmp_path / "releases" / "test" / "v0001" / "report.html").read_text()
    assert "<th>wall s</th><th>cpu s</th>" in report


class Rebalance(GlobalOperator):
    """Drops rows ending in 0, labels every kept row with its digit, triples rows ending in 1, publishes a table."""

    name = "rebalance"

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch.select("id", pl.col("text").str.slice(-2, 1).alias("digit"))

    def decide(self, index: pl.DataFrame) -> Decision:
        return Decision(drops=self.drops(index.filter(pl.col("digit") == "0"), "ends_in_zero"),
                        labels=index.select("id", "digit"),
                        copies=index.filter(pl.col("digit") == "1").select("id", pl.lit(3).alias("copies")),
                        tables={"digits": index.group_by("digit").len().sort("digit")})

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        return {"kept": kept.select(pl.len()).collect().item(),
                "reasons": sorted(set(rejected.select("reason").collect()["reason"]))}


def test_a_decision_drops_labels_repeats_and_publishes_a_table(write_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"text": "Row {i}."}}\n' for i in range(20)))
    pipeline = config.load(write_config([{"path": str(path), "fields": {"text": "text"}}], shard_rows=6))
    pipeline.stages.append(Stage("rebalance", Rebalance()))
    folder, outcome = run_pipeline(pipeline, tmp_path / "releases", use_prefect=False)

    rows = pl.read_parquet(folder / "data" / "*.parquet")
    assert len(rows) == 20 - 2 + 2 * 2  # rows 0 and 10 dropped; rows 1 and 11 three times each
    assert rows["id"].n_unique() == len(rows)
    copies = rows.filter(pl.col("text") == "Row 11.")
    assert copies["digit"].to_list() == ["1"] * 3 and copies["id"].str.ends_with("#2").sum() == 1
    stage = json.loads((folder / "manifest.json").read_text())["stages"][-1]
    assert stage["added"] == 4 and stage["dropped"] == {"rebalance:ends_in_zero": 2}
    assert stage["stats"] == {"kept": 22, "reasons": ["ends_in_zero"]}  # the operator's rule, unprefixed
    assert pl.read_parquet(folder / "tables" / "rebalance.digits.parquet")["len"].sum() == 20
    assert verify(folder) == []
    (folder / "tables" / "rebalance.digits.parquet").chmod(0o644)
    (folder / "tables" / "rebalance.digits.parquet").write_bytes(b"not parquet")
    assert any("rebalance.digits.parquet" in p for p in verify(folder))


class TrimRepeats(GlobalOperator):
    """Rewrites rows through its own `apply`: a text seen earlier is cut to its first word; row 3's are dropped."""

    name = "trim_repeats"

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch.select("id", "text")

    def decide(self, index: pl.DataFrame) -> Decision:
        repeats = index.filter(pl.col("text").is_first_distinct().not_())
        return Decision(drops=self.drops(index.filter(pl.col("text") == "Row 3 here."), "three"),
                        edits=repeats.select("id"))

    def apply(self, batch: pl.DataFrame, decision: Decision) -> Split:
        kept, rejected = super().apply(batch, decision)
        cut = pl.col("id").is_in(decision.edits["id"].implode())
        return Split(kept.with_columns(pl.when(cut).then(pl.col("text").str.extract(r"^(\S+)"))
                                       .otherwise(pl.col("text")).alias("text")), rejected)


def test_an_operator_can_rewrite_rows_in_its_own_apply(write_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"text": "Row {i % 4} here."}}\n' for i in range(10)))
    pipeline = config.load(write_config([{"path": str(path), "fields": {"text": "text"}}], shard_rows=3))
    pipeline.stages.append(Stage("trim", TrimRepeats()))
    folder, _ = run_pipeline(pipeline, tmp_path / "releases", use_prefect=False)
    rows = pl.read_parquet(folder / "data" / "*.parquet")
    assert rows["text"].to_list() == [f"Row {i} here." for i in range(3)] + ["Row"] * 5
    stage = json.loads((folder / "manifest.json").read_text())["stages"][-1]
    assert stage["dropped"] == {"trim:three": 2}


def test_ledger_balances_added_rows_and_names_them_when_it_does_not():
    ledger = Ledger()
    ledger.stage("read", "read").add(10, 10, {})
    mix = ledger.stage("mix", "mix")
    mix.add(10, 14, {"mix:not_selected": 1})
    mix.added = 5
    Ledger.from_json(ledger.to_json()).check()
    assert "(+5 copies added)" in ledger.table()
    mix.added = 4
    with pytest.raises(AccountingError, match=r"10 in \+ 4 added != 14 out \+ 1 dropped"):
        ledger.check()


def test_a_run_with_a_cache_keeps_shards_on_disk_between_stages(write_config, tmp_path):
    path = write_config([ALPACA_INPUT], [{"op": "normalize", "fields": ["output"]}, {"op": "exact_dedup",
                                                                                     "fields": ["output"]}],
                        shard_rows=20_000)
    folder, outcome = run_pipeline(config.load(path), use_prefect=False)
    cache = folder.parent / ".cache"
    assert all(p.frame is None and cache in p.path.parents for p in outcome.parts + outcome.rejected)
    assert not list(cache.glob(".spill-*"))  # read shards parked on disk are gone once the release is out
    assert sum(p.rows for p in outcome.parts) == json.loads((folder / "manifest.json").read_text())["rows"]


def test_copies_whose_ids_are_taken_fail_the_run(write_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "r1", "text": "Row 1."}\n{"id": "r1#2", "text": "Row 2."}\n')
    pipeline = config.load(write_config([{"path": str(path), "fields": {"text": "text"}}]))
    pipeline.stages.append(Stage("rebalance", Rebalance()))
    with pytest.raises(SluiceError, match="the copy id 'r1#2' is already a row's id"):
        execute(pipeline)


def test_an_executor_is_a_class_registered_by_name(write_config, monkeypatch):
    """The seam of pipelines/executors.py: a new way to run the shard calls is one class (here: a thread pool
    that runs them in reverse order) added to EXECUTORS; the release is the in-process run's."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines import config, executors
    from pipelines.engine import call_cached
    from pipelines.flow import run_pipeline

    class Reversed:
        prefect = False
        calls = 0

        def map(self, fn, jobs, label, cache=None, inline=False, **kwargs):
            Reversed.calls += len(jobs)
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(call_cached, fn, job, cache, **kwargs) for job in reversed(jobs)]
            return [f.result() for f in reversed(futures)]

    monkeypatch.setitem(executors.EXECUTORS, "reversed", lambda address=None: Reversed())
    cfg = write_config([{"path": str(GSM8K), "fields": {"text": "question"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 25}, {"op": "exact_dedup"}],
                       shard_rows=300)
    pipeline = config.load(cfg)
    ours, _ = run_pipeline(pipeline, runner="reversed")
    plain, _ = run_pipeline(pipeline, root=pipeline.release_dir / "plain", use_prefect=False)
    manifests = [json.loads((f / "manifest.json").read_text()) for f in (ours, plain)]
    # 5 shards: their read, the fused row stages (which index the rows for the dedup too), the dedup's apply;
    # the dedup's decide part; and the release's files (data and rejects, one task each)
    assert Reversed.calls == 5 * 3 + 1 + len(manifests[0]["shards"] + manifests[0]["rejects"])
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]


def test_a_scan_of_parts_on_an_object_store_read_at_once_asks_for_their_footers_at_once(s3, monkeypatch):
    """Each remote part's footer (its schema and column sizes) is a request: a scan its caller reads at once
    asks for them all at once, not one after another, and for each only once; the rows are the parts'. A scan
    that may never be read asks for none."""
    import threading
    import time

    from pipelines import engine, storage

    questions = pl.read_ndjson(GSM8K).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    parts = []
    for i, frame in enumerate(questions.head(600).iter_slices(100)):
        storage.write_parquet(frame, s3.url(f"parts/{i}.parquet"))
        parts.append(engine.Part(len(frame), path=s3.url(f"parts/{i}.parquet")))
    asked: list[int] = []
    footer = storage._parquet_footer

    def slow_footer(loc):
        asked.append(threading.get_ident())
        time.sleep(0.05)  # a request's round trip
        return footer(loc)

    monkeypatch.setattr(storage, "_parquet_footer", slow_footer)
    engine.scan(parts)  # its caller may never read it (a summary that needs no kept rows)
    assert not asked
    rows = engine.scan(parts, read_now=True).collect()
    assert rows.equals(questions.head(600)) and len(asked) == len(parts) and len(set(asked)) > 1


def test_a_scan_of_parts_on_an_object_store_read_at_once_reads_their_rows_side_by_side(s3, monkeypatch):
    """Polars reads the files of a concatenated scan one after another: a decide task's index files (20 at 1M
    rows) waited for each GET in turn. A scan its caller reads at once reads up to 8 parts at a time, and
    gives the rows, columns, filters and row limits of a plain scan, in order, the dropped rows left out."""
    import threading
    import time
    from dataclasses import replace

    from pipelines import engine, storage

    questions = pl.read_ndjson(GSM8K).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    parts = []
    for i, frame in enumerate(questions.head(1000).iter_slices(100)):
        storage.write_parquet(frame, s3.url(f"parts/{i}.parquet"))
        parts.append(engine.Part(len(frame), path=s3.url(f"parts/{i}.parquet")))
    parts[3] = engine.less(parts[3], pl.Series(["300", "302"]))
    plain = pl.concat([p.load() for p in parts])
    reading, most = set(), [0]
    read = storage.read_parquet

    def slow_read(loc, columns=None):
        reading.add(loc)
        most[0] = max(most[0], len(reading))
        time.sleep(0.05)  # a request's round trip
        try:
            return read(loc, columns=columns)
        finally:
            reading.discard(loc)

    monkeypatch.setattr(storage, "read_parquet", slow_read)
    monkeypatch.setattr(storage, "FOOTER_GUESS", 2 << 10)  # each part's rows a read apart from its footer's
    assert all(storage.size(p.path) > storage.FOOTER_GUESS for p in parts)
    assert engine.scan(parts, read_now=True).collect().equals(plain)
    assert most[0] == 8  # at most 8 at a time
    shorter = pl.col("question").str.len_chars() < 200
    query = lambda scan: scan.filter(shorter).select("id").head(123).collect()  # noqa: E731
    assert query(engine.scan(parts, read_now=True)).equals(query(plain.lazy())) and len(query(plain.lazy())) == 123
    threads_left("read-together")  # the reads that query left running, not counted with the next scan's
    most[0] = 0
    assert engine.scan(parts, read_now=True).filter(shorter).collect().equals(plain.filter(shorter))
    assert most[0] == 8  # a filter and no row limit (a decide task's) wants every part: 8 read at a time from the start

    def readers_left() -> list[str]:  # the scans' reader threads end once their reads do
        return threads_left("read-together")

    assert not readers_left()

    started = []

    def slower_read(loc, columns=None):  # every part but the first takes long: a query that stops early waits for none
        started.append(loc)
        time.sleep(0 if loc == parts[0].path else 1)
        return read(loc, columns=columns)

    monkeypatch.setattr(storage, "read_parquet", slower_read)
    assert engine.scan(parts, read_now=True).head(5).collect().equals(plain.head(5))
    assert not readers_left() and started == [parts[0].path]  # no read ahead of rows the query does not want (it
    # used to start 8, and to wait for them all)

    footers, footer = [], storage._parquet_footer
    monkeypatch.setattr(storage, "_parquet_footer", lambda loc: footers.append(loc) or footer(loc))
    known = engine.scan([replace(p, schema=questions.schema) for p in parts], read_now=True)
    assert not footers  # the columns the writing tasks gave: no footer asked before the reads, each with its own
    assert known.collect().equals(plain) and len(footers) == len(parts)


def test_a_task_writes_its_rows_while_it_indexes_them_for_the_next_stage(tmp_path, monkeypatch):
    """A row task that indexes its kept rows for the global stage after it (see Ahead) computes that index
    while its own entry is written (on an object store: an encode and PUTs, time the task waited), and
    stores the index only after that entry: a task killed between the two leaves a resumable state."""
    import threading

    from operators.quality import LengthFilter
    from pipelines import engine
    from pipelines.cache import ShardCache
    from pipelines.engine import Ahead, Job, Part, call_cached, index_key, split_rows

    indexing, stored = threading.Event(), []
    index_rows = engine.index_rows
    monkeypatch.setattr(engine, "index_rows", lambda *args: indexing.set() or index_rows(*args))

    class Storing(ShardCache):
        def put(self, key, frames):
            if key == "rows":
                assert indexing.wait(10), "the rows' index was not computed while their entry was written"
            files = super().put(key, frames)
            stored.append(key)
            return files

    questions = pl.read_ndjson(GSM8K).head(50).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    dedup = Stage("exact_dedup", ExactDedup(fields=["question"]))
    ahead = Ahead(dedup, engine.stage_fingerprint(dedup))
    stage = Stage("length_filter", LengthFilter(field="question", min_words=40))
    result, _ = call_cached(split_rows, Job(Part(len(questions), questions), "rows", "q"), Storing(tmp_path),
                            ahead=ahead, stage=stage)
    assert stored == ["rows", index_key("rows", ahead.fingerprint)]
    assert result.index.load().equals(ExactDedup(fields=["question"]).index(result.kept.load()))


def test_a_task_reads_its_rows_while_it_asks_the_cache_for_its_result(tmp_path, monkeypatch):
    """map_cached asked the cache already, so a task's own look-up (for a task run again after its worker died
    with the result stored) finds nothing nearly always: on an object store that request waits beside the
    shard's read instead of before it. A stored result is still found and used."""
    import threading

    from pipelines.cache import ShardCache
    from pipelines.engine import Job, Part, call_cached, split_rows

    reading = threading.Event()
    load = Part.load
    monkeypatch.setattr(Part, "load", lambda part: reading.set() or load(part))

    class Asking(ShardCache):
        def files(self, key):
            assert reading.wait(10), "the rows were not read while the cache was asked"
            return super().files(key)

    questions = pl.read_ndjson(GSM8K).head(50).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    from operators.quality import LengthFilter

    stage = Stage("length_filter", LengthFilter(field="question", min_words=40))
    job = Job(Part(len(questions), questions), "key", "questions")
    fresh, reused = call_cached(split_rows, job, Asking(tmp_path), stage=stage)
    again, reused_again = call_cached(split_rows, job, Asking(tmp_path), stage=stage)
    assert (reused, reused_again) == (False, True)
    assert fresh.kept.rows == again.kept.rows and 0 < fresh.rejected.rows == again.rejected.rows


class DropsTwice(GlobalOperator):
    """A buggy decision: names the rows ending in 0 twice among its drops."""

    name = "drops_twice"

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch.select("id", "text")

    def decide(self, index: pl.DataFrame) -> pl.DataFrame:
        zeros = index.filter(pl.col("text").str.ends_with("0."))
        return self.drops(pl.concat([zeros, zeros]), "zero")


def test_a_decision_that_drops_a_row_twice_fails_the_books_with_a_cache_too(write_config, tmp_path):
    """A drop-only stage keeps the rows it read less its rejects' ids (no copy written) only when each reject is
    one row of its own: a row named twice (or ids repeated in a shard) is written as by any stage, so the books
    see what the stage did and fail the run, as without a cache."""
    from pipelines.cache import ShardCache
    from pipelines.engine import run_stages

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"text": "Row {i}."}}\n' for i in range(20)))
    pipeline = config.load(write_config([{"path": str(path), "fields": {"text": "text"}}], shard_rows=6))
    pipeline.stages.append(Stage("drops_twice", DropsTwice()))
    for cache in (None, ShardCache(tmp_path / "cache")):
        with pytest.raises(AccountingError, match="stage 'drops_twice': rows do not balance"):
            run_stages(pipeline.sources, pipeline.stages, 6, cache=cache)


def test_repeated_ids_in_a_shard_give_a_drop_only_stage_parts_whose_rows_match_their_count(write_config, tmp_path):
    """Ids repeated within a shard (a mapper's or a generator's own ids): exact dedup drops both rows of the
    repeated id (once each); the stage's rows are written as by any stage (its rejects share an id), never a
    part whose rows do not match its count (the release cuts files by the count), and the books balance."""
    from pipelines.accounting import Ledger
    from pipelines.cache import ShardCache
    from pipelines.engine import Outcome, Part, run_stage

    path = tmp_path / "shard.parquet"
    pl.DataFrame({"id": ["a", "X", "X", "b"], "text": ["Same words.", "Same words.", "Same words.", "Other words."]}) \
        .write_parquet(path)
    ledger = Ledger()
    ledger.stage("read", "read").add(4, 4, {})
    outcome = Outcome([Part(4, path=path)], [], ledger, keys=["k0"], names=["s0"])
    run_stage(Stage("exact_dedup", ExactDedup()), outcome, cache=ShardCache(tmp_path / "cache"))
    assert [p.rows for p in outcome.parts] == [len(p.load()) for p in outcome.parts] == [2]
    assert outcome.parts[0].dropped is None and sorted(outcome.parts[0].load()["id"]) == ["a", "b"]
    ledger.check()
    assert ledger.stages[-1].dropped == {"exact_dedup:duplicate": 2}


def test_a_generators_result_with_failed_requests_hands_no_reusable_key_to_the_stages_after_it(tmp_path):
    """A generator's result with a failed request is not cached, and its rows differ from the next run's: the
    global stage after it must not cache its index or decision under the key the complete result will have,
    nor under any other (each retry would add entries nobody finds again). The next run (requests answered)
    dedups its own rows, as a clean run does."""
    from operators.base import Generator
    from pipelines.accounting import Ledger
    from pipelines.cache import ShardCache
    from pipelines.engine import Outcome, Part, run_stage

    answered = {"all": False}

    class Answers(Generator):
        name = "answers"
        per_seed_row = True

        def generate(self, seeds, client):
            client.unanswered = 0 if answered["all"] else 1
            texts = ["Same answer.", "Same answer.", "New answer.", "New answer."]
            rows = 4 if answered["all"] else 2
            return pl.DataFrame({"id": [f"g{i}" for i in range(rows)], "text": texts[:rows]})

    class Client:
        unanswered = 0

        def usage_frame(self):
            return pl.DataFrame({"requests": [1]})

    class LLM:
        identity = "stub"

        def task_client(self):
            return Client()

    seed = tmp_path / "seed.parquet"
    pl.DataFrame({"id": ["s"], "text": ["A seed."]}).write_parquet(seed)

    def run(cache):
        ledger = Ledger()
        ledger.stage("read", "read").add(1, 1, {})
        outcome = Outcome([Part(1, path=seed)], [], ledger, keys=["k0"], names=["s0"])
        run_stage(Stage("answers", Answers()), outcome, cache=cache, llm=LLM())
        run_stage(Stage("exact_dedup", ExactDedup()), outcome, cache=cache)
        ledger.check()
        assert all(p.path for p in outcome.parts)  # on disk (parked if not cached), not in the driver's memory
        ids = sorted(pl.concat([p.load() for p in outcome.parts])["id"])
        cache.drop_spills()
        return ids

    cache = ShardCache(tmp_path / "cache")
    assert run(cache) == run(cache) == ["g0"]  # a request failed: two rows, and nothing made from them cached
    assert not cache.folder.exists() or not any(cache.folder.iterdir())  # (entries nobody could find again)
    answered["all"] = True
    assert run(cache) == run(ShardCache(tmp_path / "clean")) == ["g0", "g2"]


def test_a_task_that_finds_its_result_does_not_wait_for_the_rows_it_began_to_read(tmp_path, monkeypatch):
    """A task run again finds its stored result: it returns it at once, not after the shard's read it started
    beside its look-up (on an object store a GET and a decode of the whole shard)."""
    import threading

    from operators.quality import LengthFilter
    from pipelines.cache import ShardCache
    from pipelines.engine import Job, Part, call_cached, split_rows

    questions = pl.read_ndjson(GSM8K).head(50).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    stage = Stage("length_filter", LengthFilter(field="question", min_words=40))
    cache, job = ShardCache(tmp_path), Job(Part(len(questions), questions), "key", "questions")
    call_cached(split_rows, job, cache, stage=stage)
    slow, read = threading.Event(), []
    load = Part.load
    monkeypatch.setattr(Part, "load", lambda part: slow.wait(10) or read.append(1) or load(part))
    result, reused = call_cached(split_rows, job, cache, stage=stage)
    assert reused and not read and result.kept.rows + result.rejected.rows == 50
    slow.set()


def test_a_scan_read_at_once_starts_reads_only_for_the_rows_its_query_wants(s3):
    """A scan of remote parts read at once reads several parts at a time, but a query that stops after a few
    rows (a row limit) does not pay a GET for every part it would have read ahead: only the parts that hold
    the rows it asks for are read."""
    import threading
    import time

    from pipelines import engine, storage

    questions = pl.read_ndjson(GSM8K).select(pl.int_range(pl.len()).cast(pl.String).alias("id"), "question")
    plain = questions.head(1200)
    parts = []
    for i, frame in enumerate(plain.iter_slices(60)):
        storage.write_parquet(frame, s3.url(f"parts/{i}.parquet"))
        parts.append(engine.Part(len(frame), path=s3.url(f"parts/{i}.parquet"), schema=frame.schema))
    assert len(parts) == 20

    def requests(query) -> tuple[pl.DataFrame, int]:
        with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
            rows = query(engine.scan(parts, read_now=True)).collect()
            threads_left("read-together")  # reads left running would still send theirs
        return rows, proxy.requests

    one_part = requests(lambda scan: scan.select("id").head(1))[1]
    assert 1 <= one_part <= 2  # its rows (and its footer)
    for limit, parts_read in ((5, 1), (250, 5)):
        rows, asked = requests(lambda scan: scan.head(limit))
        assert rows.equals(plain.head(limit)) and asked == one_part * parts_read, (limit, asked)  # were 8 parts'
    rows, asked = requests(lambda scan: scan)
    assert rows.equals(plain) and asked == one_part * 20


def test_a_part_less_some_ids_leaves_them_out_of_its_rows_in_memory_as_in_a_file(tmp_path):
    from pipelines.engine import Part, less

    rows = pl.DataFrame({"id": ["a", "b", "c"], "text": ["one", "two", "three"]})
    rows.write_parquet(tmp_path / "rows.parquet")
    for part in (Part(3, rows), Part(3, path=tmp_path / "rows.parquet")):
        fewer = less(part, pl.Series(["b"]))
        assert fewer.rows == 2 and fewer.load()["id"].to_list() == fewer.scan().collect()["id"].to_list() == ["a", "c"]
