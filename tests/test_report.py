"""report.html: self-contained, one section per kind of data present, numbers that match the release."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from conftest import ROOT, SHARED
from pipelines import config
from operators.diversity.metrics import diversity_metrics
from pipelines.flow import run_pipeline
from operators.quality.text import plain_word_count
from pipelines import report, storage
from pipelines.report import Mark, render_report, thresholds
from test_card import demo_release

LINGUA = SHARED / "langid" / "lingua" / "sentences"
LANGS = ["en", "de", "fr", "es", "it", "nl", "pl", "pt", "ru", "sv", "fi", "tr", "cs", "da", "hu", "ro", "el", "uk"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_release(tmp_path_factory.mktemp("report") / "releases")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory) -> Path:
    """Real sentences in 18 languages (with `lang`), every 7th repeated up to 3 times, through the real engine."""
    tmp = tmp_path_factory.mktemp("multilingual")
    rows = []
    for lang in LANGS:
        for i, sentence in enumerate(LINGUA.joinpath(f"{lang}.txt").read_text().splitlines()[:40 if lang != "en" else 200]):
            copies = 1 + (i % 3 if i % 7 == 0 else 0)
            rows += [{"text": sentence, "lang": lang}] * copies
    (tmp / "sentences.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = {"dataset": "multilingual", "inputs": [{"path": "sentences.jsonl", "fields": {"text": "text"}}],
           "stages": [{"op": "length_filter", "field": "text", "min_words": 4},
                      {"op": "exact_dedup", "fields": ["text"]}],
           "release": {"dir": str(tmp / "releases"), "license": "apache-2.0"}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    folder, _ = run_pipeline(config.load(tmp / "config.yaml"), use_prefect=False)
    return folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_published_report_is_self_contained_and_valid(demo):
    page = (demo / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<script|<link|<img|src=|@import|url\(", page, re.I)  # nothing to fetch, nothing to run
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page.split("<main>")[0])
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 5  # waterfall, text lengths, two scores, sources
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML, or the browser shows nothing


def test_demo_report_sections_follow_the_data(demo):
    page = (demo / "report.html").read_text()
    assert _headings(page) == ["Where rows went", "Lengths", "Scores", "Sources", "Stages"]
    assert "From 80 rows read to 79 released (98.8% kept)" in page
    assert "<title>length_filter:too_few_words: 1 rows</title>" in page  # the waterfall's drop bar
    assert "length_filter.min_words=50" in page and "length_filter.max_words=100000" in page
    assert "<title>common-crawl: 29</title>" in page
    data = pl.read_parquet(demo / "data")
    words = data["score_words_text"]
    assert f"<td>text</td><td>79</td><td>0</td><td>{words.min():,}</td><td>{words.median():,.0f}</td>" in page


def test_thresholds_are_what_the_operators_declared(demo):
    marks = thresholds(_manifest(demo), ["score_words_text", "score_chars_text"])
    assert marks == {"score_words_text": [Mark(50.0, "length_filter.min_words=50", "length_filter", "min"),
                                          Mark(100000.0, "length_filter.max_words=100000", "length_filter", "max")]}
    # min_chars=0 bounds nothing and max_chars is unset: no line on the chars plot


def test_languages_duplicates_generation_and_diversity(multilingual):
    m = _manifest(multilingual)
    m["generation"] = {"requests": 14, "cache_hits": 2, "calls": 13, "retries": 1, "failures": {"timeout": 1},
                       "models": {"SmolLM2-135M-Instruct": {"prompt_tokens": 900, "completion_tokens": 2_400, "calls": 12}},
                       "cost": None}  # the shape of operators.generate.client.Usage.to_json()
    texts = pl.read_parquet(multilingual / "data")["text"]
    m["diversity"] = diversity_metrics(texts, clusters=9) | {"cluster_sizes": [40, 35, 12, 9, 9, 7, 3, 2, 1]}
    page = render_report(multilingual, m)
    assert _headings(page) == ["Where rows went", "Lengths", "Scores", "Duplicate clusters", "Languages",
                               "Rows and drops per language", "Sources", "Diversity", "Generation", "Stages"]
    assert "<th>length_filter dropped</th><th>exact_dedup dropped</th>" in page  # rows per language, by stage
    data, rejects = pl.read_parquet(multilingual / "data"), pl.read_parquet(multilingual / "rejects")
    # Languages: the largest share first, and 18 languages folded into 14 bars + "other (4)".
    en = (data["lang"] == "en").sum()
    assert f"<title>en: {en}</title>" in page and f"({en / len(data):.1%})" in page
    assert "<title>other (4): " in page
    # Duplicate clusters counted from the rejects' detail (the surviving id).
    dupes = rejects.filter(pl.col("reason") == "exact_dedup:duplicate")
    sizes = dupes.group_by("detail").len()["len"] + 1
    assert len(dupes) > 0
    assert f"{len(sizes):,} clusters, {len(dupes):,} rows dropped; largest {sizes.max()} rows" in page
    assert f"<td>distinct_2</td><td>{m['diversity']['distinct_2']:.4g}</td>" in page
    assert f"<td>cluster.coverage</td><td>{m['diversity']['cluster']['coverage']:.4g}</td>" in page
    assert "<figcaption>9 clusters</figcaption>" in page
    assert "<td>SmolLM2-135M-Instruct</td><td>12</td><td>2,400</td><td>900</td>" in page
    assert "Requests: requests 14; cache hits 2; calls 13; retries 1; failed requests: timeout 1." in page
    # Scores: the rows the length filter dropped are drawn in red beside the kept ones.
    assert "rejected by length_filter" in page and "length_filter.min_words=4" in page


def test_a_release_on_a_bucket_is_read_once_per_file_and_reported_as_on_disk(multilingual, s3, tmp_path, monkeypatch):
    """The report reads each file of a release once (on an object store a request costs ~10 ms; the sections
    used to read footers and ranges per file each), and lengths counted file by file on an even spread of
    rows are those of rows 0, step, 2 step, ... of the whole release, on disk and on the bucket alike."""
    m = _manifest(multilingual)
    data = pl.read_parquet(multilingual / "data").drop("score_words_text")  # lengths counted from the text
    cuts = [0, 101, 338, len(data)]  # uneven files: each file's first sampled row depends on the ones before
    m["shards"] = [{"path": f"data/part-{i:05d}.parquet", "rows": b - a} for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    for entry, (a, b) in zip(m["shards"], zip(cuts, cuts[1:])):
        (tmp_path / "data").mkdir(exist_ok=True)
        data.slice(a, b - a).write_parquet(tmp_path / entry["path"])
        entry["bytes"] = (tmp_path / entry["path"]).stat().st_size
        storage.upload(tmp_path / entry["path"], s3.url("rel", entry["path"]))
    for entry in m["rejects"]:
        (tmp_path / entry["path"]).parent.mkdir(exist_ok=True)
        storage.copy(multilingual / entry["path"], tmp_path / entry["path"])
        storage.upload(multilingual / entry["path"], s3.url("rel", entry["path"]))
    monkeypatch.setattr(report, "LENGTH_ROWS", len(data) // 3)  # one row in 4

    local = render_report(tmp_path, m)
    with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
        remote = render_report(s3.url("rel"), m)
    assert remote == local
    assert proxy.requests <= 2 * (len(m["shards"]) + len(m["rejects"]))  # a footer and one read per file
    words = data.select(plain_word_count(pl.col("text"))).to_series().gather_every(4).to_numpy()
    assert f"Counted on one row in 4 ({len(words):,} of {len(data):,})." in local
    assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in report._stats_row("text", words)) + "</tr>" in local


def test_other_prose_columns_are_found_on_the_release_s_first_rows_across_its_files(multilingual, tmp_path):
    """A string column that is no known payload field counts as prose when the median of its first 10,000 rows
    has 5 or more words: rows of the whole release in order, not only of its first file (here 3 one-word rows)."""
    m = _manifest(multilingual)
    data = pl.read_parquet(multilingual / "data").head(300)
    data = data.with_columns(summary=pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("short")).otherwise(pl.col("text")),
                             tag=pl.col("lang"))
    (tmp_path / "data").mkdir()
    m["shards"], m["rows"], m["rejects"] = [], len(data), []
    for i, (start, rows) in enumerate([(0, 3), (3, len(data) - 3)]):
        data.slice(start, rows).write_parquet(tmp_path / f"data/part-{i}.parquet")
        m["shards"].append({"path": f"data/part-{i}.parquet", "rows": rows, "bytes": 1})
    page = render_report(tmp_path, m)
    assert "<h3>summary: words per row</h3>" in page and "<h3>text: words per row</h3>" in page
    assert "tag: words per row" not in page


def test_report_of_an_empty_release(tmp_path):
    folder = demo_release(tmp_path / "releases", min_words=99_999)
    m = _manifest(folder)
    assert m["rows"] == 0
    page = (folder / "report.html").read_text()
    assert _headings(page) == ["Where rows went", "Stages"] and "to 0 released (0.0% kept)" in page


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    (demo / "report.html").as_uri()], check=True, capture_output=True, timeout=60)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000)
    assert len(png) > 60_000  # plots and text, not a blank page (blank: ~10 KB)


def test_lengths_of_a_big_release_are_counted_on_a_spread_of_rows(demo, monkeypatch):
    monkeypatch.setattr(report, "LENGTH_ROWS", 40)
    page = render_report(demo, _manifest(demo))
    assert "Counted on one row in 2 (40 of 79)." in page
    assert "<td>text</td><td>40</td>" in page


def test_contamination_by_benchmark(tmp_path):
    """Real GSM8K questions planted among real English sentences: the report counts the dropped rows by benchmark."""
    from conftest import GSM8K

    sentences = LINGUA.joinpath("en.txt").read_text().splitlines()[:60]
    questions = [json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[:4]]
    rows = [{"text": t} for t in sentences] + [{"text": f"Homework help. {q} Thanks!"} for q in questions]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"dataset": "planted", "inputs": [{"path": "rows.jsonl", "fields": {"text": "text"}}],
           "stages": [{"op": "decontaminate", "benchmarks": ["gsm8k", "truthfulqa"], "fields": ["text"]}],
           "release": {"dir": str(tmp_path / "releases")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    folder, _ = run_pipeline(config.load(tmp_path / "config.yaml"), use_prefect=False)
    page = (folder / "report.html").read_text()
    assert "Benchmark contamination" in _headings(page)
    assert "dropped rows by benchmark (4)" in page and "<title>gsm8k: 4</title>" in page


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> Path:
    """The bundled web text plus real GSM8K questions planted in real English sentences, through Gopher's rules
    (defaults only), C4's, decontamination (flagging, not dropping) and a sampler."""
    from conftest import GSM8K

    tmp = tmp_path_factory.mktemp("filtered")
    sentences = LINGUA.joinpath("en.txt").read_text().splitlines()
    questions = [json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[:3]]
    rows = [{"text": " ".join(sentences[i * 8:(i + 1) * 8]) + (f" Homework: {questions[i]} Thanks." if i < 3 else "")}
            for i in range(30)]
    (tmp / "planted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"dataset": "filtered", "inputs": [{"path": str(ROOT / "data/web/redpajama/redpajama-c4-refined.jsonl")},
                                             {"path": "planted.jsonl"}],
           "stages": [{"op": "length_filter"}, {"op": "gopher_repetition"}, {"op": "gopher_quality"}, {"op": "c4"},
                      {"op": "decontaminate", "benchmarks": ["gsm8k"], "drop": False},
                      {"op": "random_sample", "budget": 20}],
           "release": {"dir": str(tmp / "releases")}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    folder, _ = run_pipeline(config.load(tmp / "config.yaml"), use_prefect=False)
    return folder


def _figure_of(page: str, column: str) -> str:
    found = re.search(rf"<figure><h3>{column}</h3>(.*?)</figure>", page, re.S)
    return found.group(1) if found else ""


def test_operators_default_thresholds_are_drawn_and_only_on_their_own_scores(filtered):
    page = (filtered / "report.html").read_text()
    words = _figure_of(page, "score_gopher_words")
    assert "paint-order=\"stroke\">gopher_quality.min_words=50</text>" in words  # Gopher's default, not in the config
    assert "gopher_quality.min_alpha_words_ratio=0.8" in _figure_of(page, "score_gopher_alpha_ratio")
    assert "c4.min_sentences=5" in _figure_of(page, "score_c4_sentences")
    # decontaminate's min_words is about benchmark items: never a line on a length plot
    assert "decontaminate.min_words" not in page
    assert "length_filter.min_words=1" in _figure_of(page, "score_words_text")
    # Labels of the lines on one plot sit on separate rows, so they never overlap.
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        rows = re.findall(r'<text x="[\d.]+" y="([\d.]+)"[^>]*paint-order="stroke">', svg)
        assert len(rows) == len(set(rows)), svg[:200]
    assert "gopher_quality.max_words=100000 (above every row)" in page


def test_constant_scores_flags_and_rows_not_sampled(filtered):
    page = (filtered / "report.html").read_text()
    data, rejects = pl.read_parquet(filtered / "data"), pl.read_parquet(filtered / "rejects")
    constant = [c for c in data.columns if c.startswith("score_")
                and pl.concat([data[c], rejects[c]]).drop_nulls().n_unique() == 1]
    assert "score_c4_lorem_ipsum" in constant  # no lorem ipsum in real text
    for column in constant:  # said in words, not drawn as one full-width bar
        assert not _figure_of(page, column)
        assert f"<td>{column}</td><td>{float(data[column][0]):g}</td><td>all {len(data)} released rows" in page
    assert "<td>all 20 released rows and 1 row rejected by gopher_repetition</td>" in page
    # 0/1 flags are counted, not drawn: the planted GSM8K rows are flagged (kept: drop is false)
    flagged = int(data["contaminated"].sum())
    assert flagged >= 1 and set(data["score_contamination"].unique()) <= {0.0, 1.0}
    assert not _figure_of(page, "score_contamination")
    left_out = rejects.filter(pl.col("reason") == "random_sample:not_selected")["score_contamination"]
    assert (f"<td>score_contamination</td><td>{flagged} of {len(data)}</td><td>-</td>"
            f"<td>{int(left_out.sum())} of {len(left_out)}</td>") in page
    lorem_rejected = rejects.filter(pl.col("reason").str.starts_with("c4:"))["score_c4_curly_bracket"]
    not_sampled = rejects.filter(pl.col("reason").str.ends_with("not_selected"))["score_c4_curly_bracket"]
    if lorem_rejected.sum():  # a flag c4 rejects on: counted apart from the rows the sampler left out
        assert (f"<td>score_c4_curly_bracket</td><td>0 of {len(data)}</td><td>{lorem_rejected.sum()} of "
                f"{len(lorem_rejected)}</td><td>0 of {len(not_sampled)}</td>") in page
    # The sampler's drops are grey and named apart, in the waterfall and in the score plots
    unsampled = (rejects["reason"] == "random_sample:not_selected").sum()
    assert unsampled > 0
    assert f'fill="{report.UNSAMPLED}"><title>random_sample:not_selected: {unsampled} rows</title>' in page
    chars = _figure_of(page, "score_chars_text")
    assert "not sampled" in chars and "rejected (any stage)" in chars
    assert "rejected by gopher_quality" in _figure_of(page, "score_gopher_words")
    assert "not sampled" not in _figure_of(page, "score_gopher_words")  # only the stage that thresholds it


def test_one_value_everywhere_is_said_not_drawn():
    """One duplicate cluster (or any histogram of a single value) is a sentence, not one full-width bar."""
    svg = report._histogram_svg(np.array([3.0]), "rows per cluster (kept + dropped)", unit="cluster")
    assert "<rect" not in svg and ">1 cluster: rows per cluster (kept + dropped) = 3</text>" in svg
    svg = report._histogram_svg(np.zeros(79), "dup_para_frac", stacks=[(np.zeros(2), report.REJECTED, "rejected")])
    assert "<rect" not in svg and ">all 81 rows: dup_para_frac = 0</text>" in svg
    svg = report._histogram_svg(np.array([2.0, 3.0, 3.0]), "rows per cluster", unit="cluster")
    assert svg.count("<rect") == 2 and ">clusters</text>" in svg  # the y axis counts clusters
