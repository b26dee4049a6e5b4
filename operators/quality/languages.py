"""Per-language parameters of the heuristic quality rules, and the rows no rule may judge.

A rule whose numbers depend on the language (stop words, mean word length, n-gram repetition, lines ending in
punctuation, ...) reads each row's language from its `lang` column (the langid stage writes it) and uses:
- for English, the operator's own parameters (datatrove's English defaults unless the config changes them);
- for another language, the value FineWeb-2 published for it (data/quality/languages.json, built by
  data/quality/build.py from FineWeb-2's per-language configs);
- for a language with neither, nothing: the rule does not judge the row, which is kept and counted under
  `not_calibrated` in the stage's stats (the manifest), by rule and language.
Rules that do not depend on the language (word counts, symbols, duplicated lines and paragraphs, lorem ipsum)
judge every row. Rows without a `lang` column are judged with the English parameters, and the stats say so.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
from pydantic import Field

from operators.base import Filter, Split
from operators.quality.text import TextParams

TABLE = Path(__file__).resolve().parents[2] / "data" / "quality" / "languages.json"
ENGLISH = "en"
DATA_FILES = (TABLE,)  # in every fingerprint of a module that imports this one (operators/base.code_version)


@functools.cache
def table() -> dict[str, dict[str, Any]]:
    """language -> operator name -> parameter -> value (FineWeb-2's published calibration)."""
    return json.loads(TABLE.read_text(encoding="utf-8"))


def published(op: str, key: str) -> dict[str, Any]:
    """language -> the published value of `op`'s parameter `key`, for the languages that have one."""
    return {lang: ops[op][key] for lang, ops in table().items() if key in ops.get(op, {})}


class LanguageParams(TextParams):
    lang_field: str = Field(default="lang", description="column with each row's language (ISO 639-1, as langid writes)")
    per_language: bool = Field(default=True, description="language-dependent rules use each row's language's "
                                                         "calibration; false: these parameters for every row")


class CalibratedFilter(Filter):
    """A filter some of whose rules depend on the language. Subclasses list those rules in `LANGUAGE_RULES`
    (rule -> the parameter it reads) and write `language_rules(lang)`, where `lang` is the language column to
    read, or None when the rows have none (then every row is judged with the English parameters)."""

    LANGUAGE_RULES: ClassVar[dict[str, str]] = {}
    # Parameters calibrated for English only (no published value for other languages).
    ENGLISH_ONLY: ClassVar[set[str]] = set()

    def language(self, batch: pl.DataFrame) -> str | None:
        p = self.params
        return p.lang_field if p.per_language and p.lang_field in batch.columns else None

    def limit(self, lang: str | None, key: str, english: Any, sub: str | None = None) -> pl.Expr:
        """The threshold `key` (or its entry `sub`) for each row: English's, another language's published
        value, or null (the rule does not judge the row) for a language with neither."""
        if lang is None:
            return pl.lit(english)
        values = published(self.name, key)
        if sub is not None:
            values = {code: v[sub] for code, v in values.items() if sub in v}
        if key in self.ENGLISH_ONLY:
            values = {}
        return pl.col(lang).cast(pl.String).replace_strict({**values, ENGLISH: english}, default=None, return_dtype=pl.Float64)

    def calibrated(self, rule: str) -> set[str]:
        """The languages `rule` can judge."""
        if rule not in self.LANGUAGE_RULES:
            return set()  # language-independent: every language
        key, _, sub = self.LANGUAGE_RULES[rule].partition(".")
        if key in self.ENGLISH_ONLY:
            return {ENGLISH}
        values = published(self.name, key)
        return {ENGLISH} | {code for code, v in values.items() if not sub or sub in v}

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        raise NotImplementedError

    def rules(self) -> dict[str, pl.Expr]:
        return self.language_rules(None)

    def process(self, batch: pl.DataFrame) -> Split:
        return self.apply_rules(self.score(batch), self.language_rules(self.language(batch)))

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict[str, Any]:
        """Rows each language-dependent rule could not judge (`not_calibrated`: rule -> language -> rows)."""
        lang = self.params.lang_field
        if not self.params.per_language:
            return {"languages": "per_language is off: every row was judged with these parameters"}
        sides = [frame for frame in (kept, rejected) if lang in frame.collect_schema()]  # nothing rejected: no columns
        if lang not in kept.collect_schema():
            rows = kept.select(pl.len()).collect().item() + rejected.select(pl.len()).collect().item()
            return {"languages": f"no `{lang}` column: all {rows:,} rows were judged with the English parameters"}
        counts = pl.concat([frame.select(pl.col(lang).cast(pl.String)) for frame in sides]).group_by(lang).len().collect()
        by_language = {code or "null": n for code, n in counts.iter_rows()}
        not_calibrated = {}
        for rule in self.language_rules(lang):
            if rule in self.LANGUAGE_RULES and self.calibrated(rule):  # an empty set: every language
                missing = {code: n for code, n in sorted(by_language.items()) if code not in self.calibrated(rule)}
                if missing:
                    not_calibrated[rule] = missing
        return {"not_calibrated": not_calibrated}
