"""url_filter (lists from files) and bad_words (C4's rule, LDNOOBW lists) on real text in several languages."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from conftest import SHARED
from operators.clean.bad_words import BadWords, word_list
from operators.clean.url_filter import UrlFilter
from pipelines.readers import IdRegistry, Source, read_shards

SENTENCES = SHARED / "langid" / "lingua" / "sentences"
WARC = SHARED / "web" / "dolma_cc_samples" / "warc" / "sample-0001.warc.gz"


def lines(lang: str, n: int = 300) -> list[str]:
    return (SENTENCES / f"{lang}.txt").read_text().splitlines()[:n]


@pytest.fixture
def lists(tmp_path):
    def write(name: str, *entries: str) -> str:
        path = tmp_path / name
        path.write_text("# a comment\n\n" + "\n".join(entries) + "\n")
        return str(path)
    return write


def test_block_and_allow_lists_on_real_crawl_urls(lists):
    pages = pl.concat([s.rows for s in read_shards(Source(WARC, "warc", {}, on_error="skip"), 1000, IdRegistry())])
    urls = pages["url"].to_list()
    op = UrlFilter(block_domains=[lists("d.txt", "allenai.org", "commoncrawl.org")],
                   allow_urls=[lists("u.txt", "https://commoncrawl.org/faq/")],
                   block_substrings=[lists("s.txt", "/2024/")])
    kept, rejected = op.process(pages)
    why = dict(zip(rejected["url"], rejected["reason"]))
    assert all(why[u] == "blocked_domain" for u in urls if "allenai.org" in u)  # prior.allenai.org too
    assert "https://commoncrawl.org/faq" in kept["url"].to_list()  # allowed: trailing slash ignored
    assert all(why[u] == "blocked_substring" for u in urls if "/2024/" in u and "commoncrawl" not in u and "allenai" not in u)
    assert len(kept) + len(rejected) == len(pages) and len(kept) >= 3


def test_only_allowed_and_bad_words_in_host(lists):
    host_word = next(w for w in word_list("en") if w.isalpha() and len(w) > 3)
    batch = pl.DataFrame({"id": ["a", "b", "c", "d", "e"],
                          "url": [f"https://www.{host_word}-videos.test/", "https://uni.test/sex-education",
                                  "https://wiki.test/page", None, "https://other.test/"]})
    kept, rejected = UrlFilter().process(batch)
    assert kept["id"].to_list() == ["b", "c", "d", "e"] and rejected["reason"].to_list() == ["bad_word_in_url"]
    only = UrlFilter(only_allowed=True, allow_domains=[lists("a.txt", "wiki.test")], bad_words_in_url=False)
    kept, rejected = only.process(batch)
    assert kept["id"].to_list() == ["c", "d"] and set(rejected["reason"]) == {"not_allowed"}
    assert only.stats(kept.lazy(), rejected.lazy()) == {"rows_without_url": 1}


def test_missing_list_file_is_a_config_error_and_lists_change_the_fingerprint(lists, tmp_path):
    with pytest.raises(ValidationError, match="list file not found"):
        UrlFilter(block_domains=[str(tmp_path / "nope.txt")])
    path = lists("d.txt", "a.test")
    before = UrlFilter(block_domains=[path]).fingerprint
    (tmp_path / "d.txt").write_text("b.test\n")
    assert UrlFilter(block_domains=[path]).fingerprint != before


@pytest.mark.parametrize("lang", ["en", "zh", "de", "ja"])
def test_bad_words_per_language(lang):
    clean = lines(lang)
    word = next(w for w in word_list(lang) if not w.isascii() or lang not in ("zh", "ja"))
    glue = "" if lang in ("zh", "ja") else " "
    dirty = [f"{clean[0]}{glue}{word}{glue}{clean[1]}", f"{word.upper() if lang == 'de' else word}{glue}{clean[2]}"]
    batch = pl.DataFrame({"id": [f"c{i}" for i in range(len(clean))] + ["d1", "d2"], "text": clean + dirty,
                          "lang": [lang] * (len(clean) + 2)})
    kept, rejected = BadWords().process(batch)
    assert {"d1", "d2"} <= set(rejected["id"]) and set(rejected["reason"]) == {"bad_words"}
    # some real sentences do contain a listed word (C4's rule is blunt), but few
    assert len(kept) >= 0.97 * len(clean)


def test_words_inside_other_words_and_latin_entries_in_japanese_do_not_match():
    en_word = next(w for w in word_list("en") if w.isalpha() and len(w) >= 4)
    ja_latin = next(w for w in word_list("ja") if w.isascii() and w.isalpha())
    batch = pl.DataFrame({"id": ["en", "ja", "zh"],
                          "text": [f"x{en_word}y is one token", f"新しい{ja_latin}sはありません", "2013.5 年的报告"],
                          "lang": ["en", "ja", "zh"]})
    kept, _ = BadWords().process(batch)
    assert kept["score_bad_words"].to_list() == [0, 0, 0]


def test_languages_without_a_list_are_kept_and_counted():
    batch = pl.DataFrame({"id": ["sw", "en"], "text": [lines("sw")[0], lines("en")[0]], "lang": ["sw", "en"]})
    op = BadWords()
    kept, rejected = op.process(batch)
    assert kept["score_bad_words"].to_list() == [None, 0] and rejected.is_empty()
    assert op.stats(kept.lazy(), rejected.lazy())["not_calibrated"] == {"sw": 1}
    no_lang = BadWords(language="fr").process(pl.DataFrame({"id": ["f"], "text": [lines("fr")[5]]}))
    assert no_lang.kept["score_bad_words"].to_list() == [0]
