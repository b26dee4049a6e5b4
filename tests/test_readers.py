"""Readers on real files in every supported format, and on bad input."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ALPACA, GSM8K, SHARED, TRUTHFULQA
from operators.errors import InputError
from pipelines.readers import IdRegistry, Source, read_shards


def read_all(src: Source, shard_rows: int = 10_000) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    shards = list(read_shards(src, shard_rows, IdRegistry()))
    rows = pl.concat([s.rows for s in shards], how="diagonal_relaxed")
    rejects = pl.concat([s.rejects for s in shards])
    return rows, rejects, shards


def test_alpaca_json_array_in_shards(alpaca):
    src = Source(ALPACA, "json", {"instruction": "instruction", "input": "input", "output": "output"},
                 optional=("input",), source="alpaca", on_error="skip")
    rows, rejects, shards = read_all(src, shard_rows=10_000)
    assert [s.rows_read for s in shards] == [10_000] * 5 + [2_002]
    empty_outputs = [i + 1 for i, r in enumerate(alpaca) if not r["output"].strip()]
    assert len(empty_outputs) == 49  # real Alpaca rows with a blank answer
    assert len(rows) + len(rejects) == len(alpaca) == 52_002
    assert rejects["reason"].unique().to_list() == ["read:empty_field"]
    assert rejects["detail"].to_list() == [
        f"{ALPACA}: item {n}: field 'output' is empty or whitespace-only" for n in empty_outputs
    ]
    alpaca = [r for r in alpaca if r["output"].strip()]
    assert rows["id"].n_unique() == len(rows)  # content ids, made unique even for repeated rows
    assert rows.columns[:4] == ["id", "instruction", "input", "output"]
    assert rows["instruction"].to_list() == [r["instruction"] for r in alpaca]
    assert (rows["input"] == "").sum() == sum(1 for r in alpaca if not r["input"])
    assert set(rows["source"]) == {"alpaca"}


def test_content_ids_are_stable_across_reads():
    src = Source(GSM8K, "jsonl", {"text": "question"})
    first, _, _ = read_all(src)
    again, _, _ = read_all(src, shard_rows=100)
    assert first["id"].to_list() == again["id"].to_list()


def test_jsonl_gz_parquet_and_csv_read_the_same_rows(tmp_path):
    records = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    gz = tmp_path / "gsm8k.jsonl.gz"
    gz.write_bytes(gzip.compress(GSM8K.read_bytes()))
    parquet = tmp_path / "gsm8k.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    csv_path = tmp_path / "gsm8k.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(records)
    mapping = {"text": "question", "answer": "answer"}
    plain, _, _ = read_all(Source(GSM8K, "jsonl", mapping))
    for path, fmt in ((gz, "jsonl"), (parquet, "parquet"), (csv_path, "csv")):
        rows, rejects, _ = read_all(Source(path, fmt, mapping))
        assert len(rejects) == 0
        assert rows.select("id", "text", "answer").equals(plain.select("id", "text", "answer")), fmt
    assert len(plain) == 1319


def test_truthfulqa_csv_with_field_mapping():
    rows, rejects, _ = read_all(Source(TRUTHFULQA, "csv", {"text": "Question"}))
    assert len(rows) == 817 and len(rejects) == 0
    assert "Best Answer" in rows.columns  # unmapped columns are kept
    assert rows["text"][0].startswith("What happens to you if you eat watermelon seeds")


def test_given_ids_are_kept_and_cast_to_string(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 7, "text": "seven"}\n{"id": "x", "text": "ex"}\n')
    rows, _, _ = read_all(Source(path, "jsonl", {"text": "text"}))
    assert rows["id"].to_list() == ["7", "x"]


# --- bad input ---------------------------------------------------------------------------------------

BAD_LINES = [
    ('{"text": "fine"}\n{"text": "broken\n', "malformed_json", ":2: malformed JSON"),
    ('{"text": "fine"}\n{"body": "no text"}\n', "missing_field", ":2: missing field 'text'"),
    ('{"text": "fine"}\n{"text": ["a", "list"]}\n', "wrong_type", ":2: field 'text' must be a string, got list"),
    ('{"text": "fine"}\n{"text": "  \\n\\t "}\n', "empty_field", ":2: field 'text' is empty or whitespace-only"),
    ('{"text": "fine"}\n{"text": null}\n', "missing_field", ":2: field 'text' is null"),
    ('{"text": "fine"}\n[1, 2]\n', "not_an_object", ":2: expected an object"),
    ('{"id": "a", "text": "fine"}\n{"id": "a", "text": "again"}\n', "duplicate_id", ":2: duplicate id 'a' (first seen at"),
]


@pytest.mark.parametrize("content, kind, message", BAD_LINES, ids=[k for _, k, _ in BAD_LINES])
def test_bad_row_fails_naming_file_and_line(tmp_path, content, kind, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_all(Source(path, "jsonl", {"text": "text"}))
    assert f"{path}{message}" in str(err.value)
    assert "on_error: skip" in str(err.value)


@pytest.mark.parametrize("content, kind, message", BAD_LINES, ids=[k for _, k, _ in BAD_LINES])
def test_bad_row_is_a_counted_reject_with_skip(tmp_path, content, kind, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    rows, rejects, shards = read_all(Source(path, "jsonl", {"text": "text"}, on_error="skip"))
    assert len(rows) == 1 and len(rejects) == 1 and sum(s.rows_read for s in shards) == 2
    assert rejects["reason"][0] == f"read:{kind}"
    assert rejects["detail"][0].startswith(f"{path}{message}")


def test_non_utf8_line_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("utf-8") + '{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.jsonl:3: not valid UTF-8"):
        read_all(Source(path, "jsonl", {"text": "text"}))
    rows, rejects, _ = read_all(Source(path, "jsonl", {"text": "text"}, on_error="skip"))
    assert rows["text"].to_list() == ["ok", "caf\u00e9"]
    assert rejects["reason"].to_list() == ["read:invalid_utf8"]


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    rows, _, _ = read_all(Source(path, "jsonl", {"text": "text"}))
    assert rows["text"].to_list() == ["first", "second"]


def test_empty_file_and_missing_file_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl: the input has no rows"):
        read_all(Source(empty, "jsonl", {"text": "text"}))
    with pytest.raises(InputError, match="nowhere.jsonl: input file not found"):
        read_all(Source(tmp_path / "nowhere.jsonl", "jsonl", {"text": "text"}))


def test_truncated_gzip_is_a_clear_error(tmp_path):
    whole = gzip.compress(GSM8K.read_bytes())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.jsonl.gz: truncated or corrupt gzip"):
        read_all(Source(path, "jsonl", {"text": "question"}))


def test_json_that_is_not_an_array_is_a_clear_error(tmp_path):
    path = tmp_path / "object.json"
    path.write_text('{"text": "a single object"}')
    with pytest.raises(InputError, match="object.json: expected a JSON array of objects, got a JSON dict"):
        read_all(Source(path, "json", {"text": "text"}))
    broken = tmp_path / "broken.json"
    shutil.copy(ALPACA, broken)
    broken.write_text(broken.read_text()[:5000])
    with pytest.raises(InputError, match=r"broken.json:\d+: malformed JSON"):
        read_all(Source(broken, "json", {"text": "instruction"}))


def test_csv_row_with_missing_columns_is_rejected(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("text,label\nhello there,1\njust text\n")
    rows, rejects, _ = read_all(Source(path, "csv", {"text": "text"}, on_error="skip"))
    assert rows["text"].to_list() == ["hello there"]
    assert rejects["reason"].to_list() == ["read:wrong_columns"]
    assert rejects["detail"][0].startswith(f"{path}:3:")


def test_extra_fields_with_mixed_types_are_kept_as_json_text(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a", "meta": {"k": 1}}\n{"text": "b", "meta": 5}\n')
    rows, _, _ = read_all(Source(path, "jsonl", {"text": "text"}))
    assert rows["meta"].to_list() == ['{"k": 1}', "5"]


DOLMA = Path(__file__).resolve().parents[1] / "data" / "web" / "dolma" / "cc_en_head-0091.jsonl"


def test_an_input_keeps_only_its_mapped_fields_or_drops_named_ones():
    """Real Dolma rows carry id, source, added, created and a metadata object beside their text."""
    records = [json.loads(line) for line in DOLMA.read_text().splitlines()]
    assert {"added", "created", "metadata"} <= records[0].keys()
    everything, _, _ = read_all(Source(DOLMA, "jsonl", {"body": "text"}, source="dolma"))
    assert set(everything.columns) == {"id", "body", "source", "added", "created", "metadata"}
    mapped, _, _ = read_all(Source(DOLMA, "jsonl", {"body": "text"}, source="dolma", keep="mapped"))
    assert mapped.columns == ["id", "body", "source"]  # identity and provenance stay
    assert mapped["id"].to_list() == [r["id"] for r in records] == everything["id"].to_list()
    assert mapped["source"].to_list() == [r["source"] for r in records]  # the rows' own source, as before
    assert mapped["body"].to_list() == [r["text"] for r in records]
    dropped, _, _ = read_all(Source(DOLMA, "jsonl", {"body": "text"}, source="dolma", drop=("metadata", "added")))
    assert set(dropped.columns) == {"id", "body", "source", "created"}
    assert dropped["created"].to_list() == [r["created"] for r in records]


def _truthfulqa_with_bad_rows(tmp_path: Path, ragged: bool = False) -> Path:
    """TruthfulQA (English) plus UDHR texts in Chinese, Russian and Arabic (quoted fields over several lines),
    CRLF line ends as csv.writer writes them, with an empty and a blank question, a blank line, and (`ragged`)
    a row with one field too few."""
    with open(TRUTHFULQA, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    udhr = {}
    for line in (SHARED / "langid" / "udhr" / "udhr.jsonl").read_text().splitlines():
        record = json.loads(line)
        udhr.setdefault(record["lang"], record["text"][:600])
    header, body = rows[0], rows[1:]
    for k, lang in enumerate(("zh", "ru", "ar")):
        body.insert(100 * k + 50, ["UDHR", lang, udhr[lang], *body[0][3:]])
    body[10][2], body[20][2] = "", " \t "
    out = io.StringIO()
    csv.writer(out).writerows([header, *body[:300]])
    text = out.getvalue()
    ragged_row = io.StringIO()
    csv.writer(ragged_row).writerow(body[400][:-1])
    cut = text.index("\r\n", len(text) // 2) + 2
    text = text[:cut] + "\r\n" + text[cut:]  # a blank line
    if ragged:
        text += ragged_row.getvalue()
    path = tmp_path / "truthfulqa.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("ragged", [False, True], ids=["polars", "ragged row: row by row"])
def test_csv_through_polars_and_the_row_reader_gives_the_same_rows_rejects_and_ids(tmp_path, monkeypatch, ragged):
    from pipelines import readers

    path = _truthfulqa_with_bad_rows(tmp_path, ragged)
    src = Source(path, "csv", {"text": "Question"}, on_error="skip")
    assert (readers._csv_batches(path, str(path), 64) is None) == ragged  # the fast path reads it, or declines
    fast = read_all(src, 64)
    monkeypatch.setattr(readers, "_csv_batches", lambda *args: None)
    slow = read_all(src, 64)
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])  # rows with their ids, rejects with theirs
    assert [(s.rows_read, s.errors) for s in fast[2]] == [(s.rows_read, s.errors) for s in slow[2]]
    rows, rejects, _ = fast
    assert {"zh", "ru", "ar"} <= set(rows["Category"]) and any("\n" in t for t in rows["text"])
    lines = io.StringIO(path.read_text(encoding="utf-8"), newline="").readlines()  # lines as csv counts them
    details = rejects["detail"].to_list()
    assert [d.split(": ", 1)[1] for d in details[:2]] == ["field 'Question' is empty or whitespace-only"] * 2
    for detail in details:  # each reject names the line its row ends on
        number = int(detail.split(": ")[0].rsplit(":", 1)[1])
        assert lines[number - 1].startswith(("Adversarial,", "Non-Adversarial,"))
    assert len(rejects) == 2 + ragged and len(rows) == 300 - 2


def test_the_csv_fast_path_is_bounded_by_the_text_not_the_gzipped_file(tmp_path, monkeypatch):
    """The fast path holds the whole text: a gzipped CSV is measured by its text (compressed it is far
    smaller), and a file over the bound streams through the row reader with the same rows."""
    from pipelines import readers

    text = _truthfulqa_with_bad_rows(tmp_path, False).read_bytes()
    path = tmp_path / "truthfulqa.csv.gz"
    path.write_bytes(gzip.compress(text))
    assert path.stat().st_size < len(text) // 2
    monkeypatch.setattr(readers, "CSV_FAST_MAX", len(text))
    assert readers._csv_batches(path, str(path), 64) is not None
    fast = read_all(Source(path, "csv", {"text": "Question"}, on_error="skip"), 64)
    monkeypatch.setattr(readers, "CSV_FAST_MAX", len(text) - 1)
    assert readers._csv_batches(path, str(path), 64) is None
    slow = read_all(Source(path, "csv", {"text": "Question"}, on_error="skip"), 64)
    assert fast[0].equals(slow[0]) and fast[1].equals(slow[1]) and len(fast[0]) == 298
