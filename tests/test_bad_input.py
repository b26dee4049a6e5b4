"""The bad-input corpus (tests/badinput/, plus large or binary cases built here): every file either stops the
run with a clear message (file, line or row, field; exit 1, or 2 for a bad config; never a traceback) or, with
--on-error skip, becomes counted rejects with a reason, and rows read = rows out + rejects (nothing dropped
silently). Configs with unknown operators and mistyped fields exit 2 naming the field; data paths outside the
project are legitimate (shared corpora usually live elsewhere) and resolve against the config's folder."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import GSM8K

CORPUS = Path(__file__).parent / "badinput"
GIANT = 50_000_000  # bytes in one JSON line


@dataclass(frozen=True)
class Read:
    """Read to the end: `reasons` counts the rejects by reason (none: every row was read)."""

    rows: int  # records in the file
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Fails:
    """Stopped with exit `code` and a message holding every fragment (the file name is always checked)."""

    fragments: tuple[str, ...]
    code: int = 1


def fails(*fragments: str) -> Fails:
    return Fails(fragments)


# --- inputs built at test time: too large, or binary ------------------------------------------------------


def giant_line(folder: Path) -> Path:
    path = folder / "giant_line.jsonl"
    text = "lorem ipsum dolor sit amet " * (GIANT // 27)
    path.write_text(json.dumps({"id": "g", "text": text}) + "\n" + json.dumps({"id": "s", "text": "a small row"}) + "\n")
    return path


def giant_broken_line(folder: Path) -> Path:
    path = folder / "giant_broken_line.jsonl"
    text = "lorem ipsum dolor sit amet " * (GIANT // 27)
    path.write_text('{"id": "g", "text": "' + text + "\n" + json.dumps({"id": "s", "text": "a small row"}) + "\n")
    return path


def deep_nesting(folder: Path) -> Path:
    path = folder / "deep_nesting.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n"
                    + '{"id": "d", "text": "x", "n": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    return path


def long_csv_field(folder: Path) -> Path:
    path = folder / "long_field.csv"
    path.write_text("id,text\nr1," + "word " * 60_000 + "\nr2,a short row\n")
    return path


def truncated_gzip(folder: Path) -> Path:
    path = folder / "truncated.jsonl.gz"
    lines = "".join(json.dumps({"text": f"row {i} of a file cut off in transfer"}) + "\n" for i in range(20_000))
    path.write_bytes(gzip.compress(lines.encode())[:20_000])
    return path


def not_parquet(folder: Path) -> Path:
    path = folder / "corrupt.parquet"
    path.write_bytes(b"PAR1" + os.urandom(2_000))
    return path


BUILT = {f.__name__: f for f in (giant_line, giant_broken_line, deep_nesting, long_csv_field, truncated_gzip, not_parquet)}

# file -> (with --on-error fail, with --on-error skip); None: not run (the same as the other mode, and slow)
CASES: dict[str, tuple[Read | Fails | None, Read | Fails]] = {
    "bom.jsonl": (Read(3), Read(3)),
    "bom.csv": (Read(2), Read(2)),
    "utf16.jsonl": (fails("UTF-16", "iconv"),) * 2,
    "utf16_no_bom.jsonl": (fails("UTF-16 (NUL bytes between the characters)"),) * 2,
    "utf32.csv": (fails("UTF-32"),) * 2,
    "latin1.jsonl": (fails("latin1.jsonl:4:", "not valid UTF-8", "--on-error skip"), Read(4, {"read:invalid_utf8": 1})),
    "latin1.csv": (fails("latin1.csv:3:", "field 'text' is not valid UTF-8"), Read(3, {"read:invalid_utf8": 1})),
    "nul_escaped.jsonl": (Read(4), Read(4)),  # a NUL character is text (normalize strips it); not an error
    "nul_raw.jsonl": (fails("nul_raw.jsonl:4:", "Invalid control character"), Read(4, {"read:malformed_json": 1})),
    "nul.csv": (Read(2), Read(2)),
    "empty.jsonl": (fails("has no rows"),) * 2,
    "whitespace.jsonl": (fails("has no rows"),) * 2,
    "header_only.csv": (fails("has no rows"),) * 2,
    "missing_field.jsonl": (fails("missing_field.jsonl:4:", "missing field 'text'"), Read(4, {"read:missing_field": 1})),
    "extra_field.jsonl": (Read(4), Read(4)),
    "mistyped_text.jsonl": (fails("mistyped_text.jsonl:4:", "field 'text' must be a string, got int"),
                            Read(5, {"read:wrong_type": 2})),
    "mistyped_id.jsonl": (fails("mistyped_id.jsonl:4:", "field 'id' must be a string or an integer"),
                          Read(4, {"read:wrong_type": 1})),
    "null_text.jsonl": (fails("null_text.jsonl:4:", "field 'text' is null"),
                        Read(5, {"read:missing_field": 1, "read:wrong_type": 1})),
    "duplicate_ids.jsonl": (fails("duplicate_ids.jsonl:4:", "duplicate id 'r1'", "first seen at", "duplicate_ids.jsonl:2"),
                            Read(6, {"read:duplicate_id": 2})),
    "mixed_nested.jsonl": (Read(5), Read(5)),
    "malformed.jsonl": (fails("malformed.jsonl:4:", "Unterminated string"),
                        Read(5, {"read:malformed_json": 1, "read:not_an_object": 1})),
    "ragged.csv": (fails("ragged.csv:3:", "expected 2 columns"), Read(3, {"read:wrong_columns": 2})),
    "not_array.json": (fails("expected a JSON array of objects"),) * 2,
    "malformed.json": (fails("malformed.json:1:", "malformed JSON"),) * 2,
    "giant_line": (None, Read(2)),
    "giant_broken_line": (fails("giant_broken_line.jsonl:1:", "Unterminated string"), Read(2, {"read:malformed_json": 1})),
    "deep_nesting": (fails("deep_nesting.jsonl:2:", "nested too deeply"), Read(2, {"read:malformed_json": 1})),
    "long_csv_field": (Read(2), Read(2)),
    "truncated_gzip": (fails("truncated or corrupt gzip"),) * 2,
    "not_parquet": (fails("not a readable Parquet file"),) * 2,
}


def test_the_corpus_folder_and_the_table_agree():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(c for c in CASES if c not in BUILT)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The inputs built at test time, each built once."""
    folder, paths = tmp_path_factory.mktemp("built"), {}

    def get(case: str) -> Path:
        if case not in paths:
            paths[case] = BUILT[case](folder)
        return paths[case]

    return get


@pytest.mark.parametrize("case, mode", [(case, mode) for case, outcomes in CASES.items()
                                        for mode, outcome in zip(("fail", "skip"), outcomes) if outcome is not None])
def test_bad_input_gives_a_clear_error_or_counted_rejects(case, mode, tmp_path, sluice, built):
    path = built(case) if case in BUILT else CORPUS / case
    expected = CASES[case][mode == "skip"]
    out = tmp_path / "out.parquet"
    code, stdout, stderr = sluice("filter", path, out, "--rules", "length_filter", "--on-error", mode)
    assert "Traceback" not in stdout + stderr  # (an unexpected exception would also fail this test here)
    if isinstance(expected, Fails):
        assert code == expected.code, stdout + stderr
        message = stderr.strip()
        assert message.startswith(f"sluice: error: {path}") and len(message.splitlines()) == 1, message
        for fragment in expected.fragments:
            assert fragment in message
        assert len(message) < 500  # never the (possibly 50 MB) offending line itself
        return
    assert code == 0, stderr
    rows = pl.read_parquet(out)
    rejects = pl.read_parquet(out.with_name("out.rejects.parquet")) if expected.reasons else pl.DataFrame()
    assert len(rows) + len(rejects) == expected.rows  # every record is a row or a reject
    if expected.reasons:
        assert dict(rejects.group_by("reason").len().iter_rows()) == expected.reasons
        assert all(d.startswith(f"{path}:") for d in rejects["detail"])  # each names its file and line
    assert rows["id"].n_unique() == len(rows)


def test_a_byte_order_mark_is_not_part_of_the_first_field_or_value(tmp_path, sluice):
    for name, ids in (("bom.jsonl", ["r0", "r1", "r2"]), ("bom.csv", ["r1", "r2"])):
        assert sluice("filter", CORPUS / name, tmp_path / "o.parquet", "--rules", "length_filter")[0] == 0
        rows = pl.read_parquet(tmp_path / "o.parquet")
        assert rows["id"].to_list() == ids and not any(c.startswith("\ufeff") for c in rows.columns)


def test_extra_fields_are_kept_and_nested_values_of_different_kinds_survive_as_json(tmp_path, sluice):
    assert sluice("filter", CORPUS / "mixed_nested.jsonl", tmp_path / "o.parquet", "--rules", "length_filter")[0] == 0
    meta = dict(pl.read_parquet(tmp_path / "o.parquet").select("id", "meta").iter_rows())
    assert json.loads(meta["r0"]) == {"a": 1} and json.loads(meta["x"]) == {"a": {"b": 2}}
    assert json.loads(meta["w"]) == [1, "a"] and meta["r1"] is None  # nothing nulled, nothing coerced


# --- one glob of Parquet files with different schemas, through `sluice run` --------------------------------


def parquet_parts(folder: Path) -> None:
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a1", "a2"], "text": ["first part one", "first part two"], "score": [7, 8]}),
                   folder / "part-0.parquet")
    pq.write_table(pa.table({"id": ["b1"], "body": ["no text column here"]}), folder / "part-1.parquet")
    pq.write_table(pa.table({"id": ["c1", "c2"], "text": pa.array([1, 2], pa.int64())}), folder / "part-2.parquet")
    pq.write_table(pa.table({"id": ["d1"], "text": ["last part"], "score": ["high"]}), folder / "part-3.parquet")


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_parquet_files_with_different_schemas_in_one_glob(tmp_path, write_config, sluice, on_error):
    parquet_parts(tmp_path / "parts")
    config = write_config([{"path": "parts/*.parquet", "fields": {"text": "text"}, "on_error": on_error,
                            "max_reject_share": 1}],  # two of the four files hold no usable row
                          [{"op": "length_filter", "min_words": 1}])
    code, stdout, stderr = sluice("run", config, "--no-prefect")
    if on_error == "fail":
        assert code == 1 and stderr.startswith(f"sluice: error: {tmp_path / 'parts' / 'part-1.parquet'}: row 1: "
                                               "missing field 'text'"), stderr
        assert not (tmp_path / "releases" / "test").exists() or not list((tmp_path / "releases" / "test").glob("v*"))
        return
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "releases" / "test" / "v0001" / "manifest.json").read_text())
    read = manifest["stages"][0]
    assert read["rows_in"] == 6 and read["rows_out"] == 3
    assert read["dropped"] == {"read:missing_field": 1, "read:wrong_type": 2}
    rows = pl.read_parquet(tmp_path / "releases" / "test" / "v0001" / "data")
    assert dict(rows.select("id", "score").iter_rows()) == {"a1": "7", "a2": "8", "d1": "high"}  # widened, not nulled


# --- configs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, fragments", [
    ({"stages": [{"op": "normalise"}]}, ["stages[0].op", "normalise"]),
    ({"stages": [{"op": "length_filter", "min_words": "ten"}]}, ["stages[0].min_words", "'ten'"]),
    ({"stages": [{"op": "length_filter", "min_wrds": 3}]}, ["stages[0].min_wrds: unknown field"]),
    ({"shard_rows": "many"}, ["shard_rows", "'many'"]),
    ({"inputs": [{"path": "nowhere/*.jsonl"}]}, ["inputs[0].path: no input file matches"]),
    ({"inputs": [{"path": str(GSM8K), "on_error": "ignore"}]}, ["inputs[0].on_error"]),
    ({"dataset": "../escape"}, ["dataset", "'../escape'"]),
    ({"release": {"dir": 5}}, ["release.dir"]),
])
def test_bad_configs_exit_2_naming_file_line_and_field(tmp_path, sluice, change, fragments):
    config = {"dataset": "test", "inputs": [{"path": str(GSM8K), "fields": {"text": "question"}}],
              "stages": [], "release": {"dir": str(tmp_path / "releases")}} | change
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code, stdout, stderr = sluice("run", path, "--no-prefect")
    assert code == 2 and "Traceback" not in stderr
    assert f"{path}:" in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    assert not (tmp_path / "releases").exists()


def test_data_paths_outside_the_project_are_read_relative_to_the_config(tmp_path, sluice):
    """A decision: inputs (and the release root) may live anywhere; only the dataset name is confined."""
    project = tmp_path / "project" / "configs"
    project.mkdir(parents=True)
    config = project / "outside.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": "gsm8k", "inputs": [{"path": os.path.relpath(GSM8K, project), "fields": {"text": "question"}}],
        "release": {"dir": "../../releases"}}))
    code, stdout, stderr = sluice("run", config, "--no-prefect")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "releases" / "gsm8k" / "v0001" / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"] == str(GSM8K) and manifest["rows"] == 1319
