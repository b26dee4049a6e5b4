"""Consecutive row-local stages run as one task per shard (one read, one write between barriers), with every
stage's books and rejects exactly as when each stage runs alone."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from conftest import GSM8K
from operators.dedup import ExactDedup
from pipelines import config
from pipelines.cache import ShardCache
from pipelines.engine import read_inputs, run_stage, run_stages, stage_groups

STAGES = """
  - {op: normalize, fields: [text]}
  - {op: length_filter, field: text, min_words: 40}
  - {op: gopher_repetition, field: text, dup_line_frac: 0.05}
  - {op: langid, field: text}
  - {op: gopher_quality, field: text, languages: [en]}
  - {op: exact_dedup, fields: [answer]}
  - {op: c4, field: text}
"""


def books(outcome) -> list[dict]:
    """The ledger without the stages' seconds."""
    return [{k: v for k, v in s.items() if not k.endswith("_seconds")} for s in outcome.ledger.to_json()]


def test_fused_stages_keep_each_stages_books_and_rejects(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: f\ninputs: [{{path: {GSM8K}, fields: {{text: question}}}}]\nshard_rows: 300\nstages:{STAGES}")
    pipeline = config.load(cfg)
    # a global stage is a barrier; the row-local stages around it run as one task per shard
    assert [[s.name for s in g] for g in stage_groups(pipeline.stages)] == [
        ["normalize", "length_filter", "gopher_repetition", "langid", "gopher_quality"], ["exact_dedup"], ["c4"]]
    cache = ShardCache(tmp_path / "cache")
    fused = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    shards = len(fused.parts)
    assert shards >= 4
    # one cached result per shard per group (the dedup: index + apply), not one per stage; its read; and the
    # dedup's decide parts
    parts = 1  # the dedup's decide tasks: one per 1M index rows (none that would get no rows)
    assert fused.computed == shards * 5 + parts
    assert len([e for e in cache.folder.iterdir() if not e.name.startswith(".")]) == shards * 5 + parts

    alone = read_inputs(pipeline.sources, 300)
    for stage in pipeline.stages:
        run_stage(stage, alone)
    assert books(fused) == books(alone)  # stats too (gopher, langid: languages, not_calibrated)
    assert all(s["stats"] for s in books(fused) if s["stage"] in ("langid", "gopher_quality"))
    assert sum(sum(s["dropped"].values()) for s in books(fused)) > 50  # every stage had work
    assert pl.concat(fused.shards).equals(pl.concat(alone.shards))
    by_id = lambda parts: pl.concat([p.load().select("id", "reason") for p in parts]).sort("id")  # noqa: E731
    assert by_id(fused.rejected).equals(by_id(alone.rejected))
    again = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    assert again.computed == 0 and books(again) == books(fused)


UDHR = GSM8K.parents[2] / "langid" / "udhr" / "udhr.jsonl"


def test_a_global_stages_index_is_cached_by_the_tasks_before_it(tmp_path, monkeypatch):
    """The fused row stages before a global stage, and a global stage's apply before another, also index their
    kept rows for it: no index task runs, and the cache ends up holding the very entries (keys and frames) of a
    run that indexes in tasks of its own, with the same books. A task killed after caching its rows but
    before their index costs a re-run that one shard's index task, nothing else."""
    from pipelines import engine
    from pipelines.engine import map_local

    pipeline = udhr_pipeline(tmp_path, "  - {op: normalize}\n  - {op: length_filter, min_words: 3}\n"
                                       "  - {op: exact_dedup}\n  - {op: minhash_dedup}\n")
    labels: list[str] = []

    def recording(fn, jobs, label, cache=None, inline=False, **kwargs):
        labels.extend(label for _ in jobs)
        return map_local(fn, jobs, label, cache, inline, **kwargs)

    def run(folder: str):
        return run_stages(pipeline.sources, pipeline.stages, 300, recording, ShardCache(tmp_path / folder))

    looked_up: list[str] = []
    lookup = ShardCache.lookup
    monkeypatch.setattr(ShardCache, "lookup", lambda cache, keys: looked_up.extend(keys) or lookup(cache, keys))
    ahead = run("ahead")
    assert labels and not [label for label in labels if label.endswith(".index")]
    assert ahead.indexed and not set(ahead.indexed) & set(looked_up)  # the tasks said where: no look-up, no footer
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_ahead", lambda group: None)
        labels.clear()
        apart = run("apart")
    shards = len(apart.parts)
    assert shards >= 6 and labels.count("exact_dedup.index") == labels.count("minhash_dedup.index") == shards
    assert entries(tmp_path / "ahead") == entries(tmp_path / "apart")
    assert books(ahead) == books(apart) and (ahead.computed, ahead.reused) == (apart.computed, 0)
    assert all(s["dropped"] for s in books(ahead)[2:])  # both dedups found duplicates
    assert pl.concat(ahead.shards).equals(pl.concat(apart.shards))

    exact_index = [name for name, frames in entries(tmp_path / "ahead").items() if frames[0].columns == ["id", "key"]]
    assert len(exact_index) == shards
    for name in exact_index[:2]:  # as if their tasks had died between the rows' entry and the index's
        shutil.rmtree(tmp_path / "ahead" / name)
    labels.clear()
    again = run("ahead")
    assert labels == ["exact_dedup.index"] * 2
    assert again.computed == 2 and books(again) == books(ahead)
    assert entries(tmp_path / "ahead") == entries(tmp_path / "apart")


def test_results_of_tasks_carry_their_columns_so_the_books_and_release_read_no_footers(tmp_path, monkeypatch):
    """A part a task wrote carries the columns it wrote (its file's footer says the same), so the release's
    unified schema and the books' language check need no read of every part's footer (on an object store a
    request each); parts found in the cache (a resume) are asked their footers, with the same answer."""
    from pipelines import engine, release, storage

    pipeline = udhr_pipeline(tmp_path, "  - {op: normalize}\n  - {op: langid, languages: null}\n  - {op: exact_dedup}\n")
    cache = ShardCache(tmp_path / "cache")
    fresh = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    parts = fresh.parts + fresh.rejected
    assert len(fresh.parts) >= 6 and all(p.schema == storage.parquet_schema(p.path) for p in parts)
    resumed = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    assert resumed.computed == 0 and not any(p.schema for p in resumed.parts)
    schemas = [release.unified_schema(resumed.parts), release.unified_schema(resumed.rejected)]
    assert "lang" in schemas[0] and schemas[0] != schemas[1]
    with monkeypatch.context() as patch:
        patch.setattr(engine, "scan", lambda parts: pytest.fail("a footer read"))
        assert [release.unified_schema(fresh.parts), release.unified_schema(fresh.rejected)] == schemas
    assert books(fresh) == books(resumed) and fresh.ledger.stages[-1].languages.keys() >= {"en", "zh", "ru"}


def test_a_drop_only_stage_caches_its_rejects_and_keeps_the_rows_it_read_in_their_file(tmp_path, monkeypatch):
    """Exact and MinHash dedup only drop rows: their apply tasks cache the rejects alone, and a shard's kept rows
    are the file the stage read less the rejects' ids (no second copy of the shard written: on an object store
    an encode and a PUT of the whole shard saved). Every reader (load, scan, the books, the release) sees the
    rows a copying apply keeps; a resume rebuilds the same parts from the rejects."""
    from pipelines import engine
    from pipelines.flow import run_pipeline

    pipeline = udhr_pipeline(tmp_path, "  - {op: normalize}\n  - {op: length_filter, min_words: 3}\n"
                                       "  - {op: exact_dedup}\n  - {op: minhash_dedup}\n")
    cache = ShardCache(tmp_path / "cache")
    views = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    fused = {e.name: e for e in cache.folder.iterdir() if len(list(e.glob("*.parquet"))) == 3  # rows, rejects, side
             and "rows_read" not in pl.read_parquet_schema(e / "0.parquet")}  # (not a read's books, rows, ids)
    assert len(views.parts) >= 6 and len(fused) == len(views.parts)
    assert all(p.path.parent.name in fused for p in views.parts)  # the row stages' files, read through a filter
    assert sum(p.dropped is not None and len(p.dropped) > 0 for p in views.parts) >= 3
    with monkeypatch.context() as patch:  # the same run with the kept rows written as before
        patch.setattr(engine, "drops_only_decision", lambda op, decision: False)
        copies = run_stages(pipeline.sources, pipeline.stages, 300, cache=ShardCache(tmp_path / "copies"))
    assert all(p.path.parent.parent.name == "copies" and p.dropped is None for p in copies.parts)
    assert books(views) == books(copies) and all(s["dropped"] for s in books(views)[2:])
    assert pl.concat(views.shards).equals(pl.concat(copies.shards))
    assert engine.scan(views.parts).collect().equals(pl.concat(copies.shards))
    assert [p.rows for p in views.parts] == [len(f) for f in views.shards] == [p.rows for p in copies.parts]
    by_id = lambda parts: pl.concat([p.load() for p in parts], how="diagonal").sort("id")  # noqa: E731
    assert by_id(views.rejected).equals(by_id(copies.rejected))

    resumed = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    assert resumed.computed == 0 and books(resumed) == books(views)
    assert [(p.path, p.rows) for p in resumed.parts] == [(p.path, p.rows) for p in views.parts]
    assert pl.concat(resumed.shards).equals(pl.concat(views.shards))

    ours, _ = run_pipeline(pipeline, tmp_path / "releases", use_prefect=False)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "drops_only_decision", lambda op, decision: False)
        theirs, _ = run_pipeline(pipeline, tmp_path / "releases-copies", use_prefect=False)
    for name in ("data", "rejects"):
        assert [f.read_bytes() for f in sorted((ours / name).glob("*.parquet"))] == \
            [f.read_bytes() for f in sorted((theirs / name).glob("*.parquet"))]


def test_a_drop_only_entry_is_reused_only_for_the_rows_it_was_made_from(tmp_path):
    """A drop-only entry holds only the rejects; its kept part is the stage's input file less their ids. If
    that input changed under its key (an entry rebuilt, or restored from elsewhere), the old rejects must not
    be reused with it: the kept part would claim one row less than it reads per reject no longer in the file,
    and the books would not match the release. The entry's key names the input's row count, so it is made
    again, and the stages after it get keys of their own."""
    pipeline = udhr_pipeline(tmp_path, "  - {op: normalize}\n  - {op: exact_dedup}\n")
    cache = ShardCache(tmp_path / "cache")
    first = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    shard = next(i for i, p in enumerate(first.parts) if p.dropped is not None and len(p.dropped) >= 2)
    part = first.parts[shard]
    rows, rejects = pl.read_parquet(part.path), part.path.with_name("1.parquet")  # the normalize stage's entry:
    gone = pl.col("id") == part.dropped[0]  # one of the rows exact dedup rejected is now a reject of normalize
    moved = rows.filter(gone).with_columns(reason=pl.lit("normalize:moved"), detail=pl.lit(None, pl.String))
    pl.concat([pl.read_parquet(rejects), moved], how="diagonal_relaxed").write_parquet(rejects)
    rows.filter(~gone).write_parquet(part.path)

    again = run_stages(pipeline.sources, pipeline.stages, 300, cache=cache)
    assert [p.rows for p in again.parts] == [len(f) for f in again.shards]  # the books' rows are the rows read
    assert again.computed == 1 and again.keys[shard] != first.keys[shard]
    assert again.parts[shard].rows == part.rows and again.ledger.stages[-1].dropped["exact_dedup:duplicate"] == \
        first.ledger.stages[-1].dropped["exact_dedup:duplicate"] - 1
    assert [k for i, k in enumerate(again.keys) if i != shard] == [k for i, k in enumerate(first.keys) if i != shard]


def udhr_pipeline(tmp_path, stages: str):
    """A pipeline over UDHR lines in English, Chinese (six versions, which share lines), Russian, Arabic and
    Hindi, GSM8K questions, and every ninth row again."""
    rows = [{"text": line} for record in map(json.loads, UDHR.read_text().splitlines())
            if record["lang"] in ("en", "zh", "ru", "ar", "hi") for line in record["text"].splitlines()]
    rows += [{"text": json.loads(line)["question"]} for line in GSM8K.read_text().splitlines()[:800]]
    rows += rows[::9]  # exact copies, beside the Chinese versions' shared lines
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: f\ninputs: [{{path: {data}}}]\nshard_rows: 300\nstages:\n{stages}")
    return config.load(cfg)


def entries(folder) -> dict[str, list[pl.DataFrame]]:
    """A shard cache's entries: name -> frames (comparable with ==)."""
    return {entry.name: Frames(pl.read_parquet(f) for f in sorted(entry.glob("*.parquet")))
            for entry in sorted(folder.iterdir()) if not entry.name.startswith(".")}


class Frames(list):
    def __eq__(self, other: object) -> bool:
        return len(self) == len(other) and all(a.equals(b) for a, b in zip(self, other))
