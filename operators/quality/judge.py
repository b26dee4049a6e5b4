"""The LLM-judge filter: a threshold over a rubric score an earlier stage wrote (the `judge` generator
in operators/generate/judge.py asks the LLM; this filter only decides, so thresholds can be re-tuned
without asking again). AlpaGasus keeps responses rated >= 4.5 of 5."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from operators.base import Filter, Params, Threshold
from operators.errors import SluiceError
from operators.registry import register


@register
class JudgeFilter(Filter):
    """Keep rows whose LLM-judge rubric score (from the `judge` stage) is at least min_score; the score stays a column."""

    name = "judge_filter"

    class Params(Params):
        score_column: str = Field(default="score_judge_accuracy", description="column the judge stage wrote")
        min_score: float = Field(default=4.5, description="lowest score kept (AlpaGasus: 4.5 of 5)")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        column = self.params.score_column
        if column not in batch.columns:
            raise SluiceError(f"judge_filter: the rows have no {column!r} column; run the `judge` stage before it "
                              f"(or set score_column). Columns: {batch.columns}")
        if not batch.schema[column].is_numeric():
            raise SluiceError(f"judge_filter: {column!r} holds {batch.schema[column]}, not numbers")
        return batch

    def thresholds(self) -> list[Threshold]:
        return [Threshold(self.params.score_column, "min_score", self.params.min_score, "min")]

    def rules(self) -> dict[str, pl.Expr]:
        score = pl.col(self.params.score_column)
        return {"no_judge_score": score.is_null() | score.is_nan(), "low_judge_score": score < self.params.min_score}
