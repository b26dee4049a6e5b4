"""Dedup and decontamination inside `sluice run`: cluster and contamination stats in the manifest, and a
second release deduplicated against the first one's published MinHash index."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import GSM8K, TRUTHFULQA

KEY = ["instruction", "input", "output"]


def jsonl(path):
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


@pytest.fixture(scope="module")
def rows(alpaca) -> list[dict]:
    """500 real Alpaca rows with 30+ word outputs (no near-duplicates among them at 0.8)."""
    return [dict(r, id=f"a{i:04d}") for i, r in enumerate(r for r in alpaca if len(r["output"].split()) >= 30)][:500]


def near_copy(row: dict, tag: str, word: str = "indeed") -> dict:
    """The same record re-cased, with its last word replaced: Jaccard well above 0.8, not an exact copy."""
    words = row["output"].split()
    words[-1] = word
    return dict(row, id=tag, instruction=row["instruction"].upper(), output=" ".join(words))


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"path": str(path), "fields": {k: k for k in KEY}, "optional": ["input"]}


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_exact_dedups_clusters_are_counted_from_its_rejects_alone(rows):
    """Exact dedup's survivor is its key's first row, always kept: its summary reads only the rejects (the kept
    rows' ids, in a run on an object store a read of every shard, are not needed) and equals the general one."""
    from operators.base import Decision
    from operators.dedup import ExactDedup
    from operators.dedup.exact import cluster_stats

    batch = pl.DataFrame(rows + [dict(r, id=f"x{i}", output=r["output"].upper() + "!") for i, r in enumerate(rows[:9])]
                         + [dict(rows[0], id="y0")])
    op = ExactDedup(fields=KEY)
    kept, rejected = op.apply(batch, Decision(op.decide(op.index(batch))))
    unread = pl.LazyFrame({"id": ["a0000"]}).map_batches(lambda _: pytest.fail("the kept rows were read"))
    stats = op.stats(unread, rejected.lazy())
    assert stats == cluster_stats(kept.lazy(), rejected.lazy(), "duplicate")
    assert stats == {"clusters": 9, "rows_in_clusters": 19, "largest": 3, "sizes": {"2": 8, "3": 1}}


def test_manifest_records_clusters_and_contamination(sluice, write_config, tmp_path, rows):
    exact = [dict(r, id=f"x{i}", output=r["output"].upper() + "!") for i, r in enumerate(rows[:20])]  # 20 pairs
    near = [near_copy(r, f"n{i}") for i, r in enumerate(rows[20:50])]  # 30 pairs
    near += [near_copy(rows[50], f"m{k}", word) for k, word in enumerate(["truly", "surely", "really"])]  # 4
    gsm = [dict(rows[60 + i], id=f"g{i}", output=q["question"]) for i, q in enumerate(jsonl(GSM8K)[:3])]
    tqa = next(r["Question"] for r in __import__("csv").DictReader(TRUTHFULQA.open(encoding="utf-8")))
    leak = [dict(rows[70], id="t0", instruction=tqa, output="Nothing in particular happens.")]  # not near rows[70]
    src = write(tmp_path / "train.jsonl", rows + exact + near + gsm + leak)
    cfg = write_config([src], [
        {"op": "exact_dedup", "fields": KEY},
        {"op": "minhash_dedup", "fields": KEY},
        {"op": "decontaminate", "benchmarks": ["gsm8k", "truthfulqa"]},
    ])
    code, _, err = sluice("run", cfg, "--no-prefect")
    assert code == 0, err
    stages = {s["stage"]: s for s in manifest(tmp_path / "releases" / "test" / "v0001")["stages"]}
    assert stages["exact_dedup"]["stats"] == {"clusters": 20, "rows_in_clusters": 40, "largest": 2, "sizes": {"2": 20}}
    assert stages["minhash_dedup"]["stats"] == {"clusters": 31, "rows_in_clusters": 64, "largest": 4,
                                                "sizes": {"2": 30, "4-7": 1}}
    assert stages["decontaminate"]["stats"] == {"flagged": 4, "dropped": True, "benchmarks": {
        "gsm8k": {"rows": 3, "items": 3}, "truthfulqa": {"rows": 1, "items": 1}}}
    assert stages["decontaminate"]["dropped"] == {"decontaminate:contaminated": 4}


def test_second_release_dedups_against_the_first(sluice, write_config, tmp_path, rows):
    v1_cfg = write_config([write(tmp_path / "v1.jsonl", rows[:300])], [{"op": "minhash_dedup", "fields": KEY}],
                          name="v1.yaml")
    assert sluice("run", v1_cfg, "--no-prefect")[0] == 0
    v1 = tmp_path / "releases" / "test" / "v0001"
    published = manifest(v1)["tables"]
    assert [t["path"] for t in published] == ["tables/minhash_dedup.index.parquet"] and published[0]["rows"] == 300
    assert sluice("release", "verify", v1)[0] == 0

    # new data: near-copies of 40 v1 rows (ids of their own), 100 fresh rows, and a copy of a fresh row
    copies = [near_copy(r, f"new-{r['id']}") for r in rows[:40]]
    fresh = rows[300:400]
    v2_input = write(tmp_path / "v2.jsonl", copies + fresh + [near_copy(fresh[0], "again")])
    v2_cfg = write_config([v2_input], [{"op": "minhash_dedup", "fields": KEY, "against": str(v1)}], name="v2.yaml")
    code, _, err = sluice("run", v2_cfg, "--no-prefect")
    assert code == 0, err
    v2 = tmp_path / "releases" / "test" / "v0002"
    rejects = pl.read_parquet(v2 / "rejects" / "*.parquet")
    named = dict(zip(rejects["id"], rejects["detail"]))
    assert named == {f"new-{r['id']}": r["id"] for r in rows[:40]} | {"again": fresh[0]["id"]}  # the v1 survivors
    assert sorted(pl.read_parquet(v2 / "data" / "*.parquet")["id"]) == sorted(r["id"] for r in fresh)
    stats = manifest(v2)["stages"][-1]["stats"]
    assert stats["duplicates_of_earlier_rows"] == 40 and stats["clusters"] == 41
    assert pl.read_parquet(v2 / "tables" / "minhash_dedup.index.parquet").height == 100  # v2's own survivors

    # the one-off verb takes the release folder too
    out = tmp_path / "oneoff.parquet"
    code, stdout, err = sluice("dedup", tmp_path / "v2.jsonl", out, "--fields", ",".join(KEY), "--against", v1)
    assert code == 0, err
    assert dict(pl.read_parquet(tmp_path / "oneoff.rejects.parquet").select("id", "detail").iter_rows()) == named
    assert "40 rows duplicate a row of an earlier release" in stdout

    # an index built with other settings is refused when the config loads, naming both settings
    v3_cfg = write_config([v2_input], [{"op": "minhash_dedup", "fields": KEY, "ngram": 3, "against": str(v1)}],
                          name="v3.yaml")
    code, _, err = sluice("run", v3_cfg, "--no-prefect")
    assert code == 2 and "the index was built with auto2 perm128 seed1 25x5 key=instruction+input+output" in err
    assert "this run uses auto3 perm128" in err


def test_a_rewritten_against_index_changes_the_fingerprint(tmp_path, rows):
    from operators.dedup import MinHashDedup

    op = MinHashDedup(fields=KEY)
    frame = pl.DataFrame(rows[:50]).select("id", *KEY)
    path = tmp_path / "old.index.parquet"
    op.decide(op.index(frame.head(20))).tables["index"].sink_parquet(path)
    first = MinHashDedup(fields=KEY, against=str(path)).fingerprint
    assert first != op.fingerprint
    op.decide(op.index(frame)).tables["index"].sink_parquet(path)  # same name, other rows
    assert MinHashDedup(fields=KEY, against=str(path)).fingerprint != first
