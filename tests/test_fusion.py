"""Consecutive row-local stages run as one task per shard (one read, one write between barriers), with every
stage's books and rejects exactly as when each stage runs alone."""

from __future__ import annotations

import polars as pl

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
