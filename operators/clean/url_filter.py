"""Drop pages by their URL: block and allow lists of domains, exact URLs and substrings, read from files.

Each list file has one entry a line (blank lines and `#` comments ignored). A domain entry matches the domain
and its subdomains (`example.org` blocks `news.example.org`). An allow-list match overrides every block;
`only_allowed: true` keeps nothing else. With `bad_words_in_url` (default) a URL is also blocked when a word of
its host name (split at non-letters) is a single-word entry of LDNOOBW's English list (CC BY 4.0,
data/bad_words/en.txt), as RefinedWeb and FineWeb block URLs by word; paths are not judged, so
`/sex-education` on a clean host stays. Rows without a URL are kept and counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from pydantic import Field, field_validator

from operators.base import Filter, Params, Split
from operators.clean.bad_words import word_list
from operators.registry import register

_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?([^/:?#]+)"


def read_list(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


_SCHEME_HOST = r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/?#]+)(.*)$"


def _url_key(url: pl.Expr) -> pl.Expr:
    """A URL as exact-URL lists compare it: no fragment, no trailing slash or spaces, scheme and host lowercased."""
    url = url.str.replace(r"#.*$", "").str.strip_chars_end("/").str.strip_chars()
    head = url.str.extract(_SCHEME_HOST, 1)
    return pl.when(head.is_not_null()).then(head.str.to_lowercase() + url.str.extract(_SCHEME_HOST, 2)).otherwise(url)


def _url_keys(urls: list[str]) -> list[str]:
    return pl.DataFrame({"url": urls}, schema={"url": pl.String}).select(_url_key(pl.col("url"))).to_series().to_list()


def _exact_url_in(url: pl.Expr, urls: list[str]) -> pl.Expr:
    return _url_key(url).is_in(_url_keys(urls)) if urls else pl.lit(False)


@register
class UrlFilter(Filter):
    """Block/allow lists of domains, URLs and URL substrings (files you name), plus bad words in URLs."""

    name = "url_filter"

    class Params(Params):
        field: str = Field(default="url", description="column with the page's URL")
        block_domains: list[str] = Field(default=[], description="files of domains to drop (with subdomains)")
        block_urls: list[str] = Field(default=[], description="files of exact URLs to drop")
        block_substrings: list[str] = Field(default=[], description="files of URL substrings to drop (case ignored)")
        allow_domains: list[str] = Field(default=[], description="files of domains always kept")
        allow_urls: list[str] = Field(default=[], description="files of exact URLs always kept")
        allow_substrings: list[str] = Field(default=[], description="files of URL substrings always kept")
        only_allowed: bool = Field(default=False, description="drop every URL the allow lists do not match")
        bad_words_in_url: bool = Field(default=True, description="drop URLs whose host has a word of LDNOOBW's English list")

        @field_validator("block_domains", "block_urls", "block_substrings", "allow_domains", "allow_urls",
                         "allow_substrings")
        @classmethod
        def _files_exist(cls, paths: list[str]) -> list[str]:
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise ValueError(f"list file not found: {', '.join(missing)} (paths are relative to the working folder)")
            return paths

    def data_files(self) -> list[Path]:
        """The lists' contents count too: editing a list file must not reuse cached results."""
        p = self.params
        return [Path(f) for f in [*p.block_domains, *p.block_urls, *p.block_substrings, *p.allow_domains,
                                  *p.allow_urls, *p.allow_substrings]]

    def _entries(self, files: list[str]) -> list[str]:
        return [entry for path in files for entry in read_list(path)]

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch

    def rules(self) -> dict[str, pl.Expr]:
        p = self.params
        url = pl.col(p.field).fill_null("")
        host = url.str.extract(_HOST, 1).str.to_lowercase().str.strip_chars_end(".").fill_null("")
        allowed = self._matches(url, host, p.allow_domains, p.allow_urls, p.allow_substrings)
        rules = {}
        if p.only_allowed:
            rules["not_allowed"] = ~allowed & (url != "")
        rules["blocked_domain"] = _domain_in(host, self._entries(p.block_domains))
        rules["blocked_url"] = _exact_url_in(url, self._entries(p.block_urls))
        rules["blocked_substring"] = _contains_any(url, self._entries(p.block_substrings))
        if p.bad_words_in_url:
            words = [w for w in word_list("en") if re.fullmatch(r"[a-z]+", w)]
            tokens = host.str.extract_all(r"[a-z]+")
            rules["bad_word_in_url"] = tokens.list.eval(pl.element().is_in(words)).list.any()
        return {name: rule & ~allowed for name, rule in rules.items()}

    def _matches(self, url: pl.Expr, host: pl.Expr, domains: list[str], urls: list[str], subs: list[str]) -> pl.Expr:
        exact = _exact_url_in(url, self._entries(urls))
        return _domain_in(host, self._entries(domains)) | _contains_any(url, self._entries(subs)) | (exact & (url != ""))

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        if self.params.field not in kept.collect_schema():
            return {"rows_without_url": kept.select(pl.len()).collect().item()}
        return {"rows_without_url": kept.select((pl.col(self.params.field).fill_null("") == "").sum()).collect().item()}

    def process(self, batch: pl.DataFrame) -> Split:
        field = self.params.field
        if field in batch.columns:
            return super().process(batch)
        # rows of an input without URLs (already extracted text) pass, and are counted in the stats
        kept, rejected = super().process(batch.with_columns(pl.lit(None, dtype=pl.String).alias(field)))
        return Split(kept.drop(field), rejected.drop(field))


def _domain_in(host: pl.Expr, domains: list[str]) -> pl.Expr:
    """True where the host is one of `domains` or a subdomain of one (`www.` and a final dot ignored)."""
    wanted = sorted({d.lower().strip(".").removeprefix("*.").removeprefix("www.") for d in domains})
    if not wanted:
        return pl.lit(False)
    suffix = r"(?:^|\.)(?:" + "|".join(re.escape(d) for d in wanted) + r")$"
    return host.str.contains(suffix).fill_null(False)


def _contains_any(url: pl.Expr, subs: list[str]) -> pl.Expr:
    if not subs:
        return pl.lit(False)
    return url.str.contains_any(subs, ascii_case_insensitive=True)
