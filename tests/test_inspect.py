"""`sluice inspect`: rows of a release or Parquet file, wrapped, with scores, provenance and reject reasons."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from test_card import demo_release


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return demo_release(tmp_path_factory.mktemp("inspect") / "releases")


def _blocks(out: str) -> list[str]:
    return re.findall(r"^── \d+  id (\S+) ", out, re.M)


def test_first_rows_wrapped_with_scores_and_provenance(sluice, release):
    code, out, _ = sluice("inspect", release, "--limit", "3", "--width", "80")
    assert code == 0
    data = pl.read_parquet(release / "data")
    assert out.startswith(f"demo-web/v0001: 79 rows, {data.width} columns; showing the first 3\n")
    assert _blocks(out) == data["id"][:3].to_list()
    assert all(len(line) <= 80 for line in out.splitlines()[1:])
    first = data.row(0, named=True)
    assert re.search(rf"^  source +{first['source']}$", out, re.M)
    assert re.search(rf"^  scores +words_text={first['score_words_text']}  chars_text={first['score_chars_text']}$",
                     out, re.M)
    assert "[+" in out and "--full shows all]" in out  # a 1,395-character text is shortened


def test_full_shows_every_character(sluice, release):
    data = pl.read_parquet(release / "data")
    longest = data.sort("score_chars_text", descending=True).row(0, named=True)
    code, out, _ = sluice("inspect", release, "--where", f"id = '{longest['id']}'", "--full", "--width", "100")
    assert code == 0 and "--full shows all" not in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  text "))
    indent = len(lines[start]) - len(lines[start][6:].lstrip())
    field = [lines[start]] + [line for line in _until_next_label(lines[start + 1:])]
    shown = "".join(line[indent:] for line in field)
    assert re.sub(r"\s+", "", shown) == re.sub(r"\s+", "", longest["text"])


def _until_next_label(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if not line.startswith("    "):  # a label line ("  metadata ...") ends the field
            break
        out.append(line)
    return out


def test_where_filters_with_sql(sluice, release):
    data = pl.read_parquet(release / "data")
    expected = data.filter((pl.col("score_words_text") > 1000) & pl.col("source").str.starts_with("redpajama"))
    code, out, _ = sluice("inspect", release, "--where", "score_words_text > 1000 AND source LIKE 'redpajama%'",
                          "--limit", "100")
    assert code == 0
    assert f"{len(expected)} of 79 rows match --where" in out
    assert _blocks(out) == expected["id"].to_list() and 0 < len(expected) < 79


@pytest.mark.parametrize("expression, message", [
    ("nope > 3", 'unable to find column "nope"'),
    ("score_words_text >", "unable to parse"),
    ("score_words_text + 1", "must be of type `Boolean`"),
])
def test_bad_where_is_a_usage_error(sluice, release, expression, message):
    code, out, err = sluice("inspect", release, "--where", expression)
    assert code == 2 and out == ""
    assert err.startswith(f"sluice: error: --where {expression!r}: ") and message in err
    assert "Traceback" not in err


def test_sample_is_random_but_reproducible(sluice, release):
    runs = [_blocks(sluice("inspect", release, "--sample", "5", "--seed", seed)[1]) for seed in ("1", "1", "2")]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    ids = set(pl.read_parquet(release / "data")["id"])
    assert len(set(runs[0])) == 5 and set(runs[0]) <= ids
    assert runs[0] != pl.read_parquet(release / "data")["id"][:5].to_list()


def test_rejects_show_why(sluice, release):
    code, out, _ = sluice("inspect", release, "--rejects")
    rejected = pl.read_parquet(release / "rejects").row(0, named=True)
    assert code == 0
    assert out.startswith("demo-web/v0001 rejects: 1 rows") and "reasons: length_filter:too_few_words 1" in out
    block = out.split("── 1  id ")[1]
    assert block.splitlines()[1].split() == ["reason", "length_filter:too_few_words"]  # the reason comes first
    assert f"words_text={rejected['score_words_text']}" in block


def test_any_parquet_file_and_a_one_off_jobs_rejects(sluice, release, tmp_path):
    data = pl.read_parquet(release / "data")
    out_file = tmp_path / "out.parquet"
    data.head(4).write_parquet(out_file)
    code, out, _ = sluice("inspect", out_file, "--columns", "source")
    assert code == 0 and out.startswith(f"{out_file}: 4 rows") and _blocks(out) == data["id"][:4].to_list()
    assert "text" not in out.split("\n", 1)[1] and "scores" not in out  # --columns: only source (and the id)
    code, _, err = sluice("inspect", out_file, "--rejects")
    assert code == 2 and "--rejects looks for out.rejects.parquet beside it" in err
    pl.read_parquet(release / "rejects").write_parquet(tmp_path / "out.rejects.parquet")
    code, out, _ = sluice("inspect", out_file, "--rejects")
    assert code == 0 and "reasons: length_filter:too_few_words 1" in out


@pytest.mark.parametrize("args, message", [
    (["no/such/thing"], "not a Parquet file, a folder of Parquet files or a release"),
    (["{release}", "--columns", "text,nope"], "--columns: no column nope"),
    (["{release}", "--sample", "-1"], "--sample must be 0 or more"),
])
def test_bad_paths_and_options(sluice, release, args, message):
    code, _, err = sluice("inspect", *[a.format(release=release) for a in args])
    assert code == 2 and message in err


def test_not_parquet(sluice, tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet")
    code, _, err = sluice("inspect", bad)
    assert code == 2 and "not readable as Parquet" in err
