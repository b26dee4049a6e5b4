"""`sluice dedup`: near-duplicates out, rejects naming survivors, clusters for every row, incremental runs."""

from __future__ import annotations

import json

import polars as pl
import pytest


@pytest.fixture
def alpaca_file(tmp_path, alpaca):
    """600 real rows (no ids) and 60 copies with new casing/punctuation, as JSON lines."""
    rows = [r for r in alpaca if len(r["output"].split()) >= 30][:600]
    copies = [dict(r, instruction=r["instruction"].upper(), output=r["output"].replace(".", "!")) for r in rows[:60]]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + copies))
    return path


def test_dedup_writes_survivors_rejects_and_clusters(sluice, tmp_path, alpaca_file):
    out, clusters = tmp_path / "out.parquet", tmp_path / "clusters.parquet"
    code, stdout, _ = sluice("dedup", alpaca_file, out, "--fields", "instruction,input,output", "--clusters", clusters)
    assert code == 0
    kept, rejects, table = pl.read_parquet(out), pl.read_parquet(tmp_path / "out.rejects.parquet"), pl.read_parquet(clusters)
    assert len(kept) == 600 and len(rejects) == 60
    assert set(rejects["reason"]) == {"minhash_dedup:near_duplicate"}
    assert set(rejects["detail"]) <= set(kept["id"])  # every reject names a row that survived
    assert {"instruction", "input", "output", "id"} <= set(kept.columns)
    assert len(table) == 660 and set(table["id"]) == set(kept["id"]) | set(rejects["id"])
    assert table.filter(pl.col("cluster_size") == 2)["cluster"].n_unique() == 60
    assert "near-duplicate clusters: 60 (120 rows, the largest 2)" in stdout


def test_incremental_run_against_a_saved_index(sluice, tmp_path, alpaca_file):
    first, index = tmp_path / "v1.parquet", tmp_path / "v1.index.parquet"
    assert sluice("dedup", alpaca_file, first, "--fields", "instruction,output", "--save-index", index)[0] == 0
    new = tmp_path / "new.jsonl"
    rows = pl.read_parquet(first).head(5).select("instruction", "output")
    fresh = pl.DataFrame({"instruction": ["Name three rivers that flow through more than four countries in Europe"],
                          "output": ["The Danube, the Rhine and the Elbe each cross several European countries."]})
    pl.concat([rows.with_columns(pl.col("output").str.to_uppercase()), fresh]).write_ndjson(new)
    out = tmp_path / "v2.parquet"
    code, stdout, _ = sluice("dedup", new, out, "--fields", "instruction,output", "--against", index)
    assert code == 0
    rejects = pl.read_parquet(tmp_path / "v2.rejects.parquet")
    assert len(pl.read_parquet(out)) == 1 and len(rejects) == 5
    assert set(rejects["detail"]) == set(pl.read_parquet(first).head(5)["id"])  # survivors from the old release


def test_exact_mode_and_bad_options(sluice, tmp_path, alpaca_file):
    code, stdout, _ = sluice("dedup", alpaca_file, tmp_path / "exact.parquet", "--text-field", "output", "--exact")
    assert code == 0 and "exact_dedup" in stdout
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--against", tmp_path / "missing.parquet")
    assert code == 2 and "no such index file" in err
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--fields", "nope")
    assert code == 1 and "column not found" in err
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--text-field", "output", "--threshold", "2")
    assert code == 2 and "threshold" in err
