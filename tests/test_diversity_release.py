"""Samplers and mixing in a real `sluice run`: what the manifest records (selection stats, realised
mixture), cluster ids on kept rows, up-sampled copies in the books, and the report's diversity section."""

from __future__ import annotations

import json

import polars as pl

from pipelines.report import _diversity_section


def test_run_records_selection_and_mixture_and_reports_them(sluice, write_config, tmp_path, alpaca):
    paths = {}
    for source, rows in (("big", alpaca[:2400]), ("small", alpaca[2400:2900])):
        paths[source] = tmp_path / f"{source}.json"
        paths[source].write_text(json.dumps(rows))
    fields = {"instruction": "instruction", "input": "input", "output": "output"}
    inputs = [{"path": str(p), "source": s, "fields": fields, "optional": ["input"], "on_error": "skip"}
              for s, p in paths.items()]
    cfg = write_config(inputs, [
        {"op": "mix", "ratios": {"big": 2, "small": 1}, "total": 2400, "max_repeat": 2, "fields": ["instruction"]},
        {"op": "cluster_sample", "budget": 300, "clusters": 30, "fields": ["instruction", "input"], "dims": 32},
    ], shard_rows=1000)
    code, out, err = sluice("run", cfg, "--no-prefect")
    assert code == 0, err
    folder = tmp_path / "releases" / "test" / "v0001"
    manifest = json.loads((folder / "manifest.json").read_text())
    read, mix, sample = manifest["stages"]

    # Up-sampling: 'small' (fewer than 500 rows after the reader's skips) must give 800 rows, so its rows
    # repeat; the books count the copies as added and still balance.
    small_rows = mix["stats"]["mixture"]["small"]["available_rows"]
    assert 400 < small_rows < 800 and mix["added"] == 800 - small_rows
    assert mix["rows_in"] + mix["added"] == mix["rows_out"] + sum(mix["dropped"].values())
    assert mix["stats"]["mixture"]["small"] | {"tokens": 0, "share_tokens": 0} == {
        "target_share": 0.3333, "available_rows": small_rows, "rows": 800, "share_rows": 0.3333,
        "copies": 800 - small_rows, "tokens": 0, "share_tokens": 0}
    assert mix["stats"]["mixture"]["big"]["rows"] == 1600 and mix["stats"]["mixture"]["big"]["copies"] == 0
    assert sample["rows_in"] == 2400 and sample["rows_out"] == 300

    # Selection record: budget, counts, diversity before and after, cluster sizes that add up.
    stats = sample["stats"]
    assert (stats["budget"], stats["rows_in"], stats["selected"]) == (300, 2400, 300)
    before, after = stats["diversity"]["before"], stats["diversity"]["after"]
    assert before["rows"] == 2400 and after["rows"] == 300
    assert after["distinct_2"] > before["distinct_2"] and after["cluster"]["clusters"] == 100
    assert after["verb_object"]["unique_verbs"] > 50
    assert stats["clusters"] == 30 and sum(stats["cluster_sizes"]) == 2400 and sum(stats["cluster_kept"]) == 300
    assert all(k <= s for k, s in zip(stats["cluster_kept"], stats["cluster_sizes"]))

    # Kept rows carry their cluster id; ids stay unique, including the copies '<id>#2'.
    data = pl.read_parquet(folder / "data")
    assert data["id"].n_unique() == 300 and data["cluster"].null_count() == 0
    counts = data.group_by("cluster").len().sort("cluster")
    kept_by_name = dict(zip(stats["cluster_ids"], stats["cluster_kept"]))
    assert all(kept_by_name[c] == n for c, n in counts.iter_rows())
    rejects = pl.read_parquet(folder / "rejects")
    assert rejects.filter(pl.col("reason") == "cluster_sample:not_selected")["detail"].str.starts_with("cluster=").all()

    page = (folder / "report.html").read_text()
    assert "<h3>cluster_sample: budget 300: 2,400 rows in, 300 selected</h3>" in page
    assert f"<tr><td>distinct-2</td><td>{before['distinct_2']:.4g}</td><td>{after['distinct_2']:.4g}</td></tr>" in page
    assert f"<td>small</td><td>33.3%</td><td>{small_rows:,}</td><td>800 (33.3%)</td>" in page
    assert "<h3>cluster_sample: rows per cluster</h3>" in page

    for stage in manifest["stages"]:  # a manifest written before stages had stats: no section, no error
        stage.pop("stats", None)
    assert _diversity_section(manifest) == ""
