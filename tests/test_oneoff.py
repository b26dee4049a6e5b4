"""One-off jobs: any input format in, Parquet or JSONL out, rejects beside it, every row accounted for."""

from __future__ import annotations

import argparse
import json

import polars as pl
import pytest

from conftest import ALPACA, GSM8K
from operators.dedup import ExactDedup
from operators.errors import ConfigError
from operators.quality import LengthFilter
from pipelines.oneoff import add_io_arguments, rejects_path, run_job


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_io_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_alpaca_json_to_parquet_keeps_columns_and_writes_rejects(tmp_path, alpaca, capsys):
    out = tmp_path / "out.parquet"
    args = parse(ALPACA, out, "--text-field", "output")
    outcome = run_job(args, [ExactDedup(fields=["output"])], fields=["output"])
    kept = pl.read_parquet(out)
    rejects = pl.read_parquet(tmp_path / "out.rejects.parquet")
    assert kept.columns[:2] == ["id", "output"] and {"instruction", "input", "source"} <= set(kept.columns)
    assert len(kept) + len(rejects) == len(alpaca)
    assert dict(rejects.group_by("reason").len().iter_rows()) == {"read:empty_field": 49, "exact_dedup:duplicate": 1451}
    assert "wrote 50,502 rows" in capsys.readouterr().out
    assert outcome.ledger.stages[-1].rows_out == len(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "out.rejects.parquet"]  # no scratch left


def test_jsonl_output_and_no_stale_rejects(tmp_path):
    out = tmp_path / "gsm8k.jsonl"
    stale = rejects_path(out)
    stale.write_text("old")
    run_job(parse(GSM8K, out, "--text-field", "question"), [LengthFilter(field="question", min_words=1)],
            fields=["question"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1319 and rows[0]["question"].startswith("Janet")
    assert not stale.exists()


def test_output_must_not_overwrite_input_and_needs_a_known_suffix(tmp_path):
    with pytest.raises(ConfigError, match="would overwrite the input"):
        run_job(parse(GSM8K, GSM8K), [], fields=["question"])
    with pytest.raises(ConfigError, match="must end in .parquet, .jsonl, .jsonl.gz"):
        run_job(parse(GSM8K, tmp_path / "out.txt"), [], fields=["question"])
