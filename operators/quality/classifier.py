"""A fastText quality classifier, DCLM-style: trained on positives (curated instruction or reference
text) against negatives (raw web text); `score_quality` is the probability of the positive class."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import polars as pl
from pydantic import Field, model_validator

from operators.base import Threshold, thresholds_of
from operators.errors import SluiceError
from operators.quality import languages as lg
from operators.quality.text import text_of
from operators.quality.langid import load_fasttext
from operators.registry import register

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "data" / "models" / "quality_fasttext.ftz"
POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
MAX_CHARS = 20_000  # the classifier reads a document's beginning; bounds time and memory on huge rows


def prepare(texts: pl.Series) -> list[str]:
    """The form the classifier reads: lower case, punctuation split off words, one line per text."""
    flat = (texts.fill_null("").str.slice(0, MAX_CHARS).str.to_lowercase()
            .str.replace_all(r"([\p{P}\p{S}])", " $1 ").str.replace_all(r"\s+", " ").str.strip_chars())
    return flat.to_list()


def train(positives: list[str], negatives: list[str], output: Path, *, epoch: int = 25, lr: float = 0.1,
          word_ngrams: int = 2, dim: int = 32, seed: int = 0, quantize: bool = False) -> dict:
    """Train on the two lists (shuffled together with `seed`), write the model to `output` and return
    the training-set counts. `quantize` makes a ~1 MB .ftz fit to ship, but costs minutes of CPU."""
    import fasttext

    if not positives or not negatives:
        raise SluiceError(f"training needs both classes: {len(positives)} positives, {len(negatives)} negatives")
    lines = [f"{POSITIVE} {t}" for t in prepare(pl.Series(positives)) if t]
    lines += [f"{NEGATIVE} {t}" for t in prepare(pl.Series(negatives)) if t]
    random.Random(seed).shuffle(lines)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("\n".join(lines) + "\n")
        for attempt_lr in (lr, lr / 2, lr / 4):  # fastText can diverge ("Encountered NaN"): retry more gently
            try:
                model = fasttext.train_supervised(input=str(data), epoch=epoch, lr=attempt_lr, wordNgrams=word_ngrams,
                                                  dim=dim, minCount=2, bucket=200_000, seed=seed, thread=1, verbose=0)
                break
            except RuntimeError as err:
                failure = err
        else:
            raise SluiceError(f"training failed ({failure}) even at learning rate {lr / 4}; lower --lr or --epoch")
        if quantize:
            model.quantize(input=str(data), qnorm=True, retrain=False, cutoff=50_000)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_model(str(output))
    return {"positives": sum(1 for x in lines if x.startswith(POSITIVE)),
            "negatives": sum(1 for x in lines if x.startswith(NEGATIVE)), "model": str(output),
            "bytes": output.stat().st_size}


def positive_probability(model, texts: pl.Series) -> pl.Series:
    """P(positive) per text; 0.0 for a text without a letter (no evidence of quality)."""
    labels, probs = model.predict(prepare(texts), k=2)
    scores = pl.Series([float(dict(zip(lab, p)).get(POSITIVE, 0.0)) for lab, p in zip(labels, probs)],
                       dtype=pl.Float64).clip(0.0, 1.0)
    has_letters = texts.fill_null("").str.contains(r"\p{L}")
    return pl.select(pl.when(has_letters).then(scores).otherwise(0.0)).to_series().alias("score_quality")


@register
class QualityClassifier(lg.CalibratedFilter):
    """fastText quality classifier (DCLM-style): `score_quality` = P(high quality); keep above a threshold or the top fraction."""

    name = "quality_classifier"
    LANGUAGE_RULES = {"low_quality_score": "model", "below_top_fraction": "model"}

    class Params(lg.LanguageParams):
        model: str = Field(default=str(DEFAULT_MODEL), description="fastText model (.bin/.ftz) from `sluice quality train`")
        model_languages: list[str] | None = Field(
            default=["en"], description="languages the model was trained on (the default model: English web text); "
            "with a `lang` column, rows in others are kept and counted as not_calibrated; null: judge every row")
        min_score: float | None = Field(default=0.5, ge=0, le=1, description="lowest P(high quality) kept")
        keep_top: float | None = Field(default=None, gt=0, le=1,
                                       description="instead: keep this fraction of each batch, best first")

        @model_validator(mode="after")
        def _one_rule(self):
            if self.keep_top is not None and self.min_score is not None and "min_score" in self.model_fields_set:
                raise ValueError("set min_score or keep_top, not both")
            return self

    def data_files(self) -> list[Path]:
        return [Path(self.params.model)]

    def thresholds(self) -> list[Threshold]:
        return thresholds_of(("score_quality", "min_score", None if self.params.keep_top else self.params.min_score,
                              "min"))

    def columns(self) -> dict[str, str]:
        return {"score_quality": f"P(high quality) from the fastText classifier {Path(self.params.model).name}"}

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        path = Path(self.params.model)
        if not path.is_file():
            raise SluiceError(f"quality_classifier: model {path} not found; train one with "
                              f"`sluice quality train --pos FILE --neg FILE -o MODEL`")
        model = load_fasttext(str(path))
        scores = positive_probability(model, batch.select(text_of(self.params.field)).to_series())
        return batch.with_columns(scores.alias("score_quality"))

    def calibrated(self, rule: str) -> set[str]:
        return set(self.params.model_languages or [])

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        score, languages = pl.col("score_quality"), self.params.model_languages
        if lang is not None and languages is not None:  # rows in other languages: null, neither judged nor ranked
            score = pl.when(pl.col(lang).cast(pl.String).is_in(languages)).then(score)
        if self.params.keep_top is not None:
            # the top fraction of this batch (a shard), ties kept together
            return {"below_top_fraction": score < score.quantile(1 - self.params.keep_top, "higher")}
        return {"low_quality_score": score < self.params.min_score}
