"""The fastText quality classifier: `sluice quality train` on real files, the filter's threshold and
top-fraction rules, the bundled default model, and errors a user can act on."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators.errors import SluiceError
from operators.quality import QualityClassifier
from operators.quality.classifier import DEFAULT_MODEL, train

AGREEMENT = SHARED / "web" / "dclm_quality_annotations" / "agreement_data.jsonl"


def dclm(path) -> pl.DataFrame:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return pl.DataFrame({"id": [str(i) for i in range(len(rows))], "text": [r["text"] for r in rows],
                         "label": [int(r["label"]) for r in rows]})


def auc(scores: pl.Series, labels: pl.Series) -> float:
    ranks = scores.rank("average")
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return (ranks.filter(pos).sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_train_verb_then_filter_ranks_held_out_pages(sluice, tmp_path):
    """Train on the DCLM pages outside the agreement set, score the agreement set: better than chance."""
    agreement = dclm(AGREEMENT)
    train_set = dclm(DCLM).filter(~pl.col("text").is_in(agreement["text"].implode()))
    train_set.filter(pl.col("label") == 1).write_ndjson(tmp_path / "pos.jsonl")
    train_set.filter(pl.col("label") == 0).select("text").write_parquet(tmp_path / "neg.parquet")
    model = tmp_path / "q.bin"
    code, out, err = sluice("quality", "train", "--pos", tmp_path / "pos.jsonl", "--neg", tmp_path / "neg.parquet",
                            "-o", model)
    assert code == 0, err
    assert "trained on 120 positives and 98 negatives" in out
    scored = QualityClassifier(model=str(model), min_score=0.0).score(agreement)
    assert scored["score_quality"].is_between(0, 1).all()
    assert auc(scored["score_quality"], scored["label"]) > 0.7


def test_threshold_and_top_fraction_rules_on_the_default_model():
    pages = dclm(AGREEMENT)
    kept, rejected = QualityClassifier(min_score=0.5).process(pages)
    assert len(kept) + len(rejected) == len(pages) and set(rejected["reason"]) <= {"low_quality_score"}
    assert (kept["score_quality"] >= 0.5).all() and (rejected["score_quality"] < 0.5).all()
    top = QualityClassifier(keep_top=0.25).process(pages)
    assert abs(len(top.kept) - 0.25 * len(pages)) <= 2 and set(top.rejected["reason"]) == {"below_top_fraction"}
    assert top.kept["score_quality"].min() >= top.rejected["score_quality"].max()


def test_default_model_is_bundled_and_leans_the_right_way():
    assert DEFAULT_MODEL.is_file() and DEFAULT_MODEL.stat().st_size < 3_000_000
    pages = dclm(DCLM)
    scores = QualityClassifier().score(pages)["score_quality"]
    assert auc(scores, pages["label"]) > 0.6


def test_texts_without_letters_score_zero_and_missing_model_is_explained(tmp_path):
    batch = pl.DataFrame({"id": ["a", "b"], "text": ["", "12 34 !!"]})
    assert QualityClassifier().score(batch)["score_quality"].to_list() == [0.0, 0.0]
    with pytest.raises(SluiceError, match="sluice quality train"):
        QualityClassifier(model=str(tmp_path / "none.ftz")).score(batch)
    with pytest.raises(SluiceError, match="both classes"):
        train(["some text"], [], tmp_path / "m.ftz")


def test_train_verb_reports_a_bad_field(sluice, tmp_path):
    (tmp_path / "pos.jsonl").write_text('{"body": "text"}\n')
    code, _, err = sluice("quality", "train", "--pos", tmp_path / "pos.jsonl", "--neg", DCLM, "-o", tmp_path / "m.ftz")
    assert code == 2 and "--pos-field" in err


def test_divergent_training_is_a_clear_error(tmp_path):
    from operators.errors import SluiceError
    from operators.quality.classifier import train

    good = [r["text"] for r in dclm(DCLM).filter(pl.col("label") == 1).head(40).to_dicts()]
    bad = [r["text"] for r in dclm(DCLM).filter(pl.col("label") == 0).head(40).to_dicts()]
    with pytest.raises(SluiceError, match="training failed .* even at learning rate 250"):
        train(good, bad, tmp_path / "q.bin", lr=1000.0)
