"""html_extract on real Common Crawl pages (the bundled WARC samples) and on pages in Chinese and Russian."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import SHARED
from operators.clean.html_extract import HtmlExtract
from pipelines.readers import IdRegistry, Source, read_shards

WARC = SHARED / "web" / "dolma_cc_samples" / "warc" / "sample-0000.warc.gz"
SENTENCES = SHARED / "langid" / "lingua" / "sentences"


@pytest.fixture(scope="module")
def pages() -> pl.DataFrame:
    return pl.concat([s.rows for s in read_shards(Source(WARC, "warc", {}, on_error="skip"), 1000, IdRegistry())])


def page(lang: str, extra: str = "") -> str:
    lines = (SENTENCES / f"{lang}.txt").read_text().splitlines()[:12]
    body = "".join(f"<p>{line}</p>" for line in lines)
    nav = "<nav><ul>" + "".join(f"<li><a href='/{i}'>Menu {i}</a></li>" for i in range(8)) + "</ul></nav>"
    return (f"<html><head><title>{lines[0][:20]}</title></head><body>{nav}<article><h1>{lines[0][:20]}</h1>"
            f"{body}{extra}</article><footer>Copyright 2024 · Privacy · Terms</footer></body></html>")


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_real_pages_give_text_and_titles(pages, extractor):
    kept, rejected = HtmlExtract(extractor=extractor).process(pages.head(8))
    assert len(kept) + len(rejected) == 8 and len(kept) >= 7
    assert "html" not in kept.columns and kept["title"].str.len_chars().min() > 0
    assert kept["text"].str.len_chars().min() > 50
    soldaini = kept.filter(pl.col("url") == "https://soldaini.net/lineage/")
    assert "<" not in soldaini["text"][0][:200] and soldaini["title"][0] == "Academic Lineage"


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
@pytest.mark.parametrize("lang", ["en", "zh", "ru"])
def test_main_text_without_menus_in_three_languages(extractor, lang):
    lines = (SENTENCES / f"{lang}.txt").read_text().splitlines()[:12]
    batch = pl.DataFrame({"id": ["a"], "html": [page(lang)]})
    kept, _ = HtmlExtract(extractor=extractor).process(batch)
    text = kept["text"][0]
    assert all(line.strip() in text for line in lines[1:])
    assert "Menu 3" not in text and "Privacy" not in text
    assert kept["title"][0] == lines[0][:20].strip()


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_tables_code_and_links_by_option(extractor):
    extra = ("<table><tr><td>Zürich</td><td>415367</td></tr><tr><td>Genève</td><td>203856</td></tr></table>"
             "<pre><code>def tally(xs):\n    return sum(xs)</code></pre>"
             "<p>The full list of the cities with their populations in every census since 1850 is on "
             "<a href='https://lingua.example.org/docs'>the documentation page of the statistics office</a>, "
             "which is updated every year when the new figures come out.</p>")
    batch = pl.DataFrame({"id": ["a"], "html": [page("de", extra)]})
    plain = HtmlExtract(extractor=extractor).process(batch).kept["text"][0]
    assert "415367" in plain and "return sum(xs)" in plain and "lingua.example.org" not in plain
    trimmed = HtmlExtract(extractor=extractor, tables=False, code=False, links=True).process(batch).kept["text"][0]
    assert "415367" not in trimmed and "return sum(xs)" not in trimmed and "lingua.example.org/docs" in trimmed


def test_empty_and_textless_pages_are_rejected_with_reasons():
    batch = pl.DataFrame({"id": ["blank", "script", "null", "ok"],
                          "html": ["   ", "<html><script>var x = 1;</script><img src=a.png></html>", None, page("en")]})
    kept, rejected = HtmlExtract().process(batch)
    assert kept["id"].to_list() == ["ok"]
    assert dict(zip(rejected["id"], rejected["reason"])) == {"blank": "empty", "script": "empty", "null": "empty"}
    assert rejected.filter(pl.col("id") == "script")["detail"][0] == "empty: no main text found"


def test_keep_html_and_other_columns():
    batch = pl.DataFrame({"id": ["a"], "page": [page("en")], "url": ["https://x.test/"]})
    kept, _ = HtmlExtract(field="page", keep_html=True, title=False).process(batch)
    assert kept.columns == ["id", "page", "url", "text"]


def test_rows_of_a_text_input_pass_and_a_missing_column_is_an_error():
    text_rows = pl.DataFrame({"id": ["t"], "text": ["already text"]})
    assert HtmlExtract().process(text_rows).kept.equals(text_rows)
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        HtmlExtract(field="page").process(pl.DataFrame({"id": ["x"], "body": ["<p>hi</p>"]}))
