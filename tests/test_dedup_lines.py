"""line_dedup: repeated sentences/lines/paragraphs cut out of real pages (English, Chinese, Japanese, German)."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators.dedup.lines import BOUNDARY, LineDedup, split_units
from operators.errors import SluiceError
from pipelines import config
from pipelines.flow import run_pipeline

LINGUA = SHARED / "langid" / "lingua" / "sentences"
FOOTERS = {"en": "Copyright © 2024 Northfield Gazette, all rights reserved.",
           "zh": "版权所有，未经许可不得转载。",
           "ja": "この記事が気に入ったらフォローしてください。",
           "de": "Diese Website verwendet Cookies, um Ihnen ein besseres Nutzererlebnis zu bieten."}


def lingua(lang: str, n: int = 400) -> list[str]:
    return [s for s in (LINGUA / f"{lang}.txt").read_text().split("\n") if s][:n]


def pages() -> pl.DataFrame:
    """40 DCLM pages and 10 pages each of Chinese, Japanese, German lingua sentences, every one with its
    language's footer line; ids shuffled so the smallest id is not the first row."""
    rows = [(lang, text) for text in pl.read_ndjson(DCLM)["text"][:40] for lang in ["en"]]
    for lang in ("zh", "ja", "de"):
        sentences = lingua(lang, 60)
        rows += [(lang, ("" if lang in ("zh", "ja") else " ").join(sentences[i:i + 6])) for i in range(0, 60, 6)]
    ids = random.Random(7).sample(range(1000, 9999), len(rows))
    return pl.DataFrame({"id": [f"p{i}" for i in ids], "lang": [lang for lang, _ in rows],
                         "text": [f"{text}\n{FOOTERS[lang]}" for lang, text in rows]})


def run(op: LineDedup, rows: pl.DataFrame, shard_rows: int = 17) -> tuple[pl.DataFrame, pl.DataFrame]:
    """As the engine does: index each shard, decide once, apply to each shard."""
    shards = [rows.slice(i, shard_rows) for i in range(0, len(rows), shard_rows)]
    decision = op.decide(pl.concat([op.index(s) for s in shards]))
    splits = [op.apply(s, decision) for s in shards]
    return pl.concat([k for k, _ in splits]), pl.concat([r for _, r in splits])


def test_a_footer_repeated_over_pages_stays_only_in_the_first_page_of_each_language():
    rows = pages()
    kept, rejected = run(LineDedup(), rows)
    assert len(kept) + len(rejected) == len(rows) and rejected["reason"].to_list() == []
    for lang, footer in FOOTERS.items():
        mine = kept.filter(pl.col("lang") == lang).sort("id")
        assert mine["text"].str.contains(footer, literal=True).to_list() == [True] + [False] * (len(mine) - 1), lang
        original = rows.filter(pl.col("lang") == lang).sort("id")["text"].str.replace(f"\n{footer}", "", literal=True)
        assert (mine["text"].str.strip_chars().to_list()[1:]) == original.str.strip_chars().to_list()[1:], lang
    assert kept["dedup_units_removed"].sum() == len(rows) - 4
    assert kept["dedup_chars_removed"].sum() == sum(len(f) for f in rows["text"].str.extract(r"\n([^\n]+)$").to_list()) \
        - sum(len(f) for f in FOOTERS.values())


def test_the_result_does_not_depend_on_shard_size_or_row_order():
    rows = pages()
    base, _ = run(LineDedup(unit="sentence", span=2), rows, shard_rows=100)
    shuffled, _ = run(LineDedup(unit="sentence", span=2), rows.sample(fraction=1.0, shuffle=True, seed=3), shard_rows=9)
    assert base.sort("id").equals(shuffled.sort("id").select(base.columns))
    assert base["dedup_units_removed"].sum() > 0


@pytest.mark.parametrize("lang", ["en", "zh", "ja", "de"])
def test_sentences_are_split_where_they_end_in_each_language(lang):
    """Lingua sentences with one mark, at the end, run together as a page: the split gives them back (a
    sentence that opens with a closing bracket or quote would belong to the one before: left out)."""
    marks = "。！？" if lang in ("zh", "ja") else ".!?"
    sentences = [s for s in lingua(lang) if s[-1] in marks and sum(s.count(m) for m in set(marks + ".!?")) == 1
                 and s[0] not in "\"'”’»)]」』）"][:50]
    assert len(sentences) >= 20, lang  # enough real sentences to say something
    text = ("" if lang in ("zh", "ja") else " ").join(sentences)
    units = pl.DataFrame({"text": [text]}).select(split_units(pl.col("text"), "sentence"))["text"][0].to_list()
    assert [u.strip() for u in units] == sentences


@pytest.mark.parametrize("unit", ["sentence", "line", "paragraph"])
def test_units_put_back_together_give_the_text_exactly(unit):
    texts = pl.read_ndjson(DCLM)["text"][:100].to_list() + ["a\n\n\n b.  c!\n", "", "  \n"] + lingua("zh", 5)
    units = pl.DataFrame({"text": texts}).select(split_units(pl.col("text"), unit))["text"].to_list()
    assert ["".join(u) for u in units] == texts
    assert not any(BOUNDARY in t for t in texts)


def test_rows_left_with_nothing_are_rejected_with_their_text_and_counted():
    footer = FOOTERS["en"]
    rows = pl.DataFrame({"id": ["a", "b", "c"], "text": [f"{footer}\nA page of real content that stays here for sure.",
                                                         f"{footer}\n\n{footer}", f"{footer}\nShort."]})
    op = LineDedup(unit="line")
    kept, rejected = run(op, rows)
    assert kept["id"].to_list() == ["a"]
    assert dict(zip(rejected["id"], rejected["reason"])) == {"b": "emptied", "c": "too_short_after_dedup"}
    assert rejected.filter(pl.col("id") == "b")["text"].item() == rows["text"][1]  # the text as it came
    stats = op.stats(kept.lazy(), rejected.lazy())
    assert stats["units_removed"] == 3 and stats["rows_modified"] == 2
    assert op.decide(op.index(rows)).stats == {"units_too_short": 1}  # "Short." (not judged: < 20 characters)


def test_text_without_sentence_marks_is_counted_and_cut_at_line_breaks():
    ends = [s.rstrip(".!?… ") for s in lingua("th")]  # Thai marks no sentence end; the crawl added some dots
    thai = [s for s in ends if not any(m in s for m in ".!?…")][:6]
    rows = pl.DataFrame({"id": ["t1", "t2"], "text": ["\n".join(thai[:3]), "\n".join(thai[2:6])]})
    op = LineDedup(min_chars_left=0)
    kept, rejected = run(op, rows)
    assert thai[2] not in kept.filter(pl.col("id") == "t2")["text"].item()
    stats = op.decide(op.index(rows)).stats
    assert stats["rows_without_sentence_marks"] == 2


def test_line_dedup_in_a_pipeline_keeps_the_books(write_config, tmp_path):
    path = tmp_path / "pages.jsonl"
    rows = pages()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.to_dicts()))
    pipeline = config.load(write_config([{"path": str(path), "fields": {"text": "text", "lang": "lang"}}],
                                        [{"op": "line_dedup"}], shard_rows=20))
    folder, _ = run_pipeline(pipeline, tmp_path / "releases", use_prefect=False)
    stage = json.loads((folder / "manifest.json").read_text())["stages"][-1]
    assert stage["rows_in"] == len(rows) == stage["rows_out"] + sum(stage["dropped"].values())
    assert stage["stats"]["units_removed"] == len(rows) - 4 and stage["stats"]["rows_modified"] == len(rows) - 4
    assert stage["stats"]["units_too_short"] > 0 and stage["stats"]["rows_without_sentence_marks"] == 0
    card = (folder / "README.md").read_text()
    assert "dedup_units_removed" in card


def test_a_missing_text_column_is_a_config_error_naming_the_field(write_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "body": "One line."}\n')
    with pytest.raises(SluiceError, match=r"stages\[0\]\.field: .*'content'"):
        config.load(write_config([{"path": str(path), "fields": {"text": "body"}}],
                                 [{"op": "line_dedup", "field": "content"}]))


def test_sluice_dedup_lines_cuts_boilerplate_and_prints_the_books(sluice, tmp_path):
    rows = pages()
    path, out = tmp_path / "pages.jsonl", tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.to_dicts()))
    code, stdout, _ = sluice("dedup", path, out, "--lines", "line")
    assert code == 0 and "line_dedup" in stdout
    kept = pl.read_ndjson(out)
    assert len(kept) == len(rows) and kept["text"].str.contains(FOOTERS["de"], literal=True).sum() == 1
    assert sluice("dedup", path, out, "--lines", "--exact")[0] == 2


def test_min_docs_leaves_units_held_by_fewer_rows_and_no_rows_is_no_work():
    rows = pages()
    two = rows.head(2).with_columns(pl.col("text") + "\nA line that only these two pages share, word for word.")
    rows = pl.concat([two, rows.slice(2)])
    kept, _ = run(LineDedup(unit="line", min_docs=3), rows)
    assert kept["text"].str.contains("only these two pages share", literal=True).sum() == 2
    assert kept["text"].str.contains(FOOTERS["en"], literal=True).sum() == 1  # in 40 pages
    empty = LineDedup().decide(LineDedup().index(rows.clear()))
    assert len(empty.edits) == 0 and empty.edits.columns == ["id", "pos"]
