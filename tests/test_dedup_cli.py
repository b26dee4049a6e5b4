"""`sluice dedup`: near-duplicates out, rejects naming survivors, clusters for every row, incremental runs."""

from __future__ import annotations

import json

import polars as pl
import pytest


@pytest.fixture
def alpaca_file(tmp_path, alpaca):
    """600 real rows (no ids) and 60 copies with new casing/punctuation, as JSON lines."""
    rows = [r for r in alpaca if len(r["output"].split()) >= 30][:600]
    copies = [dict(r, instruction=r["instruction"].upper(), output=r["output"].replace(".", "!")) for r in rows[:60]]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + copies))
    return path


def test_dedup_writes_survivors_rejects_and_clusters(sluice, tmp_path, alpaca_file):
    out, clusters = tmp_path / "out.parquet", tmp_path / "clusters.parquet"
    code, stdout, _ = sluice("dedup", alpaca_file, out, "--fields", "instruction,input,output", "--clusters", clusters)
    assert code == 0
    kept, rejects, table = pl.read_parquet(out), pl.read_parquet(tmp_path / "out.rejects.parquet"), pl.read_parquet(clusters)
    assert len(kept) == 600 and len(rejects) == 60
    assert set(rejects["reason"]) == {"minhash_dedup:near_duplicate"}
    assert set(rejects["detail"]) <= set(kept["id"])  # every reject names a row that survived
    assert {"instruction", "input", "output", "id"} <= set(kept.columns)
    assert len(table) == 660 and set(table["id"]) == set(kept["id"]) | set(rejects["id"])
    assert table.filter(pl.col("cluster_size") == 2)["cluster"].n_unique() == 60
    assert "near-duplicate clusters: 60 (120 rows, the largest 2)" in stdout


def test_incremental_run_against_a_saved_index(sluice, tmp_path, alpaca_file):
    first, index = tmp_path / "v1.parquet", tmp_path / "v1.index.parquet"
    assert sluice("dedup", alpaca_file, first, "--fields", "instruction,output", "--save-index", index)[0] == 0
    new = tmp_path / "new.jsonl"
    rows = pl.read_parquet(first).head(5).select("instruction", "output")
    fresh = pl.DataFrame({"instruction": ["Name three rivers that flow through more than four countries in Europe"],
                          "output": ["The Danube, the Rhine and the Elbe each cross several European countries."]})
    pl.concat([rows.with_columns(pl.col("output").str.to_uppercase()), fresh]).write_ndjson(new)
    out = tmp_path / "v2.parquet"
    code, stdout, _ = sluice("dedup", new, out, "--fields", "instruction,output", "--against", index)
    assert code == 0
    rejects = pl.read_parquet(tmp_path / "v2.rejects.parquet")
    assert len(pl.read_parquet(out)) == 1 and len(rejects) == 5
    assert set(rejects["detail"]) == set(pl.read_parquet(first).head(5)["id"])  # survivors from the old release


def test_exact_mode_and_bad_options(sluice, tmp_path, alpaca_file):
    code, stdout, _ = sluice("dedup", alpaca_file, tmp_path / "exact.parquet", "--text-field", "output", "--exact")
    assert code == 0 and "exact_dedup" in stdout
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--against", tmp_path / "missing.parquet")
    assert code == 2 and "no such index file" in err
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--fields", "nope")
    assert code == 1 and "column not found" in err
    code, _, err = sluice("dedup", alpaca_file, tmp_path / "o.parquet", "--text-field", "output", "--threshold", "2")
    assert code == 2 and "threshold" in err


def test_same_output_bytes_with_one_or_three_workers(sluice, tmp_path, alpaca_file, monkeypatch):
    """Shards run on threads (--workers); the outputs, rejects and clusters are byte for byte the same with 1 or
    3 workers, with English rows and Chinese and German lingua passages with planted copies, in 9 shards."""
    import threading

    from pipelines import executors
    from test_dedup_minhash import lingua_passages

    threads = set()

    def recorded(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return call_cached(*args, **kwargs)

    call_cached = executors.call_cached
    monkeypatch.setattr(executors, "call_cached", recorded)

    passages = lingua_passages("zh", 20) + lingua_passages("de", 20)
    copies = [p[:-2] + "。" if p[-1] == "。" else p.upper() for p in passages[::4]]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(alpaca_file.read_text() + "".join(json.dumps({"instruction": t, "input": "", "output": t}) + "\n"
                                                       for t in passages + copies))
    outputs = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}" / "out.parquet"
        code, stdout, _ = sluice("dedup", mixed, out, "--fields", "instruction,input,output", "--shard-rows", "80",
                                 "--workers", workers, "--clusters", out.with_name("clusters.parquet"))
        assert code == 0 and "wrote 640 rows" in stdout
        outputs.append([(out.parent / name).read_bytes() for name in ("out.parquet", "out.rejects.parquet",
                                                                      "clusters.parquet")])
    assert outputs[0] == outputs[1]
    assert {f"minhash_dedup.{step}_{i}" for step in ("index", "apply") for i in range(3)} <= threads  # 3 threads
    rejected = pl.read_parquet(tmp_path / "w3" / "out.rejects.parquet")
    assert rejected["id"].n_unique() == 70  # 60 English, 5 Chinese and 5 German copies
