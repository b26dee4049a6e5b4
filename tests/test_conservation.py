"""Row conservation as a property: for random inputs and random stage lists, every stage balances
(rows_in = rows_out + dropped) and every input row ends up in exactly one place, kept or rejected."""

from __future__ import annotations

import json

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators import get
from pipelines.config import Stage
from pipelines.engine import run_stages
from pipelines.readers import Source

WORDS = ["the", "cat", "sat", "on", "a", "mat", "Café", "naïve", "数据", "!!", "...", "\t", "\n", " "]
texts = st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join)
rows = st.lists(st.one_of(texts, texts.map(lambda t: t.upper()), st.just("")), min_size=1, max_size=60)

STAGE_CHOICES = [
    ("normalize", st.fixed_dictionaries({"form": st.sampled_from(["NFC", "NFKC"])})),
    ("length_filter", st.fixed_dictionaries({"min_words": st.integers(0, 8), "min_chars": st.integers(0, 20)})),
    ("exact_dedup", st.fixed_dictionaries({"normalize": st.booleans()})),
]
stage_lists = st.lists(st.sampled_from(range(len(STAGE_CHOICES))).flatmap(
    lambda i: STAGE_CHOICES[i][1].map(lambda params, i=i: (STAGE_CHOICES[i][0], params))), max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=rows, stages=stage_lists, shard_rows=st.integers(1, 25))
def test_every_row_is_accounted_for(tmp_path, texts, stages, shard_rows):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts) + "{broken\n")
    source = Source(path, "jsonl", {"text": "text"}, on_error="skip")
    pipeline_stages = [Stage(f"{name}_{i}", get(name)(**params)) for i, (name, params) in enumerate(stages)]
    outcome = run_stages([source], pipeline_stages, shard_rows)

    ledger = outcome.ledger
    ledger.check()  # every stage balances and feeds the next
    assert ledger.stages[0].rows_in == len(texts) + 1
    kept = pl.concat([s.select("id") for s in outcome.shards])
    rejected = pl.concat([r.select("id") for r in outcome.rejects]) if outcome.rejects else kept.clear()
    assert len(kept) == ledger.stages[-1].rows_out
    assert len(rejected) == ledger.total_dropped
    assert pl.concat([kept, rejected])["id"].n_unique() == len(texts) + 1  # each row in exactly one place
