"""Language-ID accuracy of lid.176 (as `langid` runs it) per language on the lingua sentences
(../shared/data/langid/lingua, ~1,000 short sentences each).

    .venv/bin/python bench/quality/langid_accuracy.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = (ROOT / ".." / "shared" / "data").resolve()

from operators.quality.langid import identify, load_fasttext, lid_model_path  # noqa: E402


def main() -> None:
    rows = [(f.stem, line) for f in sorted((SHARED / "langid" / "lingua" / "sentences").glob("*.txt"))
            for line in f.read_text().splitlines() if line.strip()]
    frame = pl.DataFrame(rows, schema=["gold", "text"], orient="row")
    labels = {label.removeprefix("__label__") for label in load_fasttext(str(lid_model_path())).get_labels()}
    start = time.perf_counter()
    lang, score = identify(frame["text"])
    seconds = time.perf_counter() - start
    per_lang = (frame.with_columns(lang=lang, score=score)
                .group_by("gold").agg(pl.len().alias("sentences"), (pl.col("lang") == pl.col("gold")).mean().alias("accuracy"),
                                      pl.col("score").median().alias("median_score"))
                .with_columns(pl.col("gold").is_in(list(labels)).alias("in_lid176"))
                .sort("accuracy"))
    covered = per_lang.filter(pl.col("in_lid176"))
    pl.Config.set_tbl_rows(100)
    print(per_lang.with_columns(pl.selectors.float().round(3)))
    print(f"{len(frame):,} sentences in {seconds:.1f} s ({len(frame) / seconds:,.0f}/s); languages lid.176 knows: "
          f"{len(covered)}/{len(per_lang)}, mean accuracy {covered['accuracy'].mean():.3f}, "
          f"median {covered['accuracy'].median():.3f}, >= 0.95 on {(covered['accuracy'] >= 0.95).sum()}")


if __name__ == "__main__":
    main()
