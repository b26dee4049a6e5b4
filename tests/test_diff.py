"""`sluice release diff A B`: two demo releases with a changed threshold differ by exactly the expected rows."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from test_card import demo_release


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diff") / "releases"
    return demo_release(root, min_words=50), demo_release(root, min_words=150)


def test_raised_threshold_removes_exactly_the_short_rows(sluice, releases):
    a, b = releases
    data_a = pl.read_parquet(a / "data")
    short = sorted(data_a.filter(pl.col("score_words_text") < 150)["id"])
    code, out, _ = sluice("release", "diff", "demo-web/v0001", "demo-web/v0002", "--releases", a.parents[1],
                          "--json", "--examples", "100")
    assert code == 0
    d = json.loads(out)
    assert d["rows"] == {"a": 79, "b": 79 - len(short), "added": 0, "removed": len(short), "changed": 0,
                         "unchanged": 79 - len(short)}
    assert d["examples"]["removed"] == short and 0 < len(short) < 79
    assert d["why"]["removed"] == {"length_filter:too_few_words": len(short)}
    assert d["config"] == [["stages.length_filter.min_words", 50, 150]]
    assert d["metrics"]["drops"] == {"length_filter:too_few_words": [1, 1 + len(short)]}
    assert d["inputs"] == [] and d["schema"] == {"added": {}, "removed": {}, "retyped": {}}


def test_text_output_reads_well(sluice, releases):
    a, b = releases
    code, out, _ = sluice("release", "diff", a, b)
    removed = 79 - pl.read_parquet(b / "data").height
    assert code == 0
    assert f"rows: +0 added, -{removed} removed, ~0 changed, {79 - removed} unchanged" in out
    assert f"  removed: B rejected them as length_filter:too_few_words {removed}" in out
    assert f"(+{removed - 5} more)" in out  # five example ids by default
    assert "  stages.length_filter.min_words: 50 -> 150" in out
    assert f"    length_filter:too_few_words          1 ->        {1 + removed}  (+{removed})" in out
    assert "inputs: the same (by sha256)" in out and "schema: unchanged" in out


def test_lowered_threshold_adds_rows_back_and_says_why(sluice, releases):
    a, b = releases
    code, out, _ = sluice("release", "diff", b, a, "--json")
    d = json.loads(out)
    assert code == 0 and d["rows"]["added"] == d["rows"]["removed"] + 79 - pl.read_parquet(b / "data").height
    assert d["why"]["added"] == {"length_filter:too_few_words": d["rows"]["added"]}


def test_a_release_against_itself(sluice, releases):
    code, out, _ = sluice("release", "diff", releases[0], releases[0])
    assert code == 0 and "rows: +0 added, -0 removed, ~0 changed, 79 unchanged" in out and "config: unchanged" in out


def test_changed_rows_and_schema_changes_on_parquet_files(sluice, releases, tmp_path):
    data = pl.read_parquet(releases[0] / "data").head(20)
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    data.write_parquet(old)
    edited = data.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.col("text") + " (edited)").otherwise(pl.col("text")).alias("text"),
        pl.lit("en").alias("lang"),
    ).drop("created").slice(1)  # row 0 removed, rows 1-2 edited, a column added and one dropped
    edited.write_parquet(new)
    code, out, _ = sluice("release", "diff", old, new, "--json")
    d = json.loads(out)
    assert code == 0
    assert d["rows"] == {"a": 20, "b": 19, "added": 0, "removed": 1, "changed": 2, "unchanged": 17}
    assert d["changed_columns"] == {"text": 2}  # the new `lang` column alone changes no row
    assert d["examples"]["changed"] == sorted(data["id"][1:3]) and d["examples"]["removed"] == [data["id"][0]]
    assert d["schema"] == {"added": {"lang": "String"}, "removed": {"created": "String"}, "retyped": {}}
    assert "metrics" not in d  # plain Parquet files have no manifest


def test_repeated_ids_are_refused(sluice, releases, tmp_path):
    data = pl.read_parquet(releases[0] / "data").head(5)
    twice = tmp_path / "twice.parquet"
    pl.concat([data, data.head(2)]).write_parquet(twice)
    code, _, err = sluice("release", "diff", releases[0], twice)
    assert code == 2 and "2 rows repeat an id" in err
