"""Releases: atomic, immutable, deterministic, and verify catches any change."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from conftest import ALPACA, ROOT
from operators.errors import ReleaseError
from pipelines import config, release, storage
from pipelines.flow import run_pipeline

ALPACA_INPUT = {"path": str(ALPACA), "fields": {"instruction": "instruction", "input": "input", "output": "output"},
                "optional": ["input"], "on_error": "skip"}
STAGES = [{"op": "normalize", "fields": ["instruction", "input", "output"]},
          {"op": "length_filter", "field": "output", "min_words": 3},
          {"op": "exact_dedup", "fields": ["output"]}]


@pytest.fixture(scope="module")
def alpaca_release(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("alpaca")
    cfg = tmp / "alpaca.yaml"
    cfg.write_text(json.dumps({"dataset": "alpaca", "inputs": [ALPACA_INPUT], "stages": STAGES,
                               "release": {"dir": str(tmp / "releases"), "rows_per_file": 20_000}}))
    folder, _ = run_pipeline(config.load(cfg), use_prefect=False)
    return folder


def test_release_layout_and_manifest(alpaca_release):
    m = json.loads((alpaca_release / "manifest.json").read_text())
    assert alpaca_release.name == "v0001" and m["version"] == "v0001" and m["dataset"] == "alpaca"
    assert [s["path"] for s in m["shards"]] == ["data/part-00000.parquet", "data/part-00001.parquet",
                                                 "data/part-00002.parquet"]
    assert m["rows"] == sum(s["rows"] for s in m["shards"]) == m["stages"][-1]["rows_out"]
    assert m["rows"] + m["rejected_rows"] == 52_002
    assert m["inputs"][0]["rows"] == 52_002 and len(m["inputs"][0]["sha256"]) == 64
    assert m["config"]["stages"][2] == {"name": "exact_dedup", "op": "exact_dedup", "fields": ["output"], "normalize": True}
    assert set(m["fingerprints"]) == {"normalize", "length_filter", "exact_dedup"}
    assert m["schema"]["id"] == "String" and "score_words_output" in m["schema"]
    data = pl.read_parquet(alpaca_release / "data")
    assert len(data) == m["rows"] and data["id"].n_unique() == len(data)
    rejects = pl.read_parquet(alpaca_release / "rejects")
    counts = dict(rejects.group_by("reason").len().iter_rows())
    dropped = {r: n for s in m["stages"] for r, n in s["dropped"].items()}
    assert counts == dropped
    card = (alpaca_release / "README.md").read_text()
    assert card.startswith("---\nlicense: other\nconfigs:") and "path: data/*.parquet" in card
    assert release.verify(alpaca_release) == []


def test_files_are_read_only_and_no_temp_folder_remains(alpaca_release):
    assert all(not p.stat().st_mode & 0o222 for p in alpaca_release.rglob("*") if p.is_file())
    assert sorted(p.name for p in alpaca_release.parent.iterdir()) == [".cache", ".lock", "v0001"]  # no .tmp-*


@pytest.mark.parametrize("victim", ["data/part-00001.parquet", "rejects/part-00000.parquet", "README.md",
                                    "report.html"])
def test_verify_catches_a_flipped_byte(alpaca_release, tmp_path, victim):
    copy = tmp_path / "copy"
    _copy_tree(alpaca_release, copy)
    target = copy / victim
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    target.write_bytes(bytes(raw))
    assert release.verify(copy) == [f"{target}: sha256 differs from the manifest (file changed or corrupt)"]


def test_verify_catches_missing_stray_and_miscounted_files(alpaca_release, tmp_path):
    copy = tmp_path / "copy"
    _copy_tree(alpaca_release, copy)
    (copy / "data" / "part-00002.parquet").unlink()
    (copy / "data" / "extra.parquet").write_bytes(b"PAR1")
    m = json.loads((copy / "manifest.json").read_text())
    m["stages"][1]["rows_out"] -= 1
    (copy / "manifest.json").write_text(json.dumps(m))
    problems = "\n".join(release.verify(copy))
    assert "part-00002.parquet: missing" in problems
    assert "extra.parquet: file not listed in the manifest" in problems
    assert "rows do not balance" in problems


def test_forced_rerun_makes_a_new_version_with_identical_shards(write_config):
    cfg = write_config([{"path": str(ROOT / "data/web/redpajama/*.jsonl"), "fields": {"text": "text"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 50}, {"op": "exact_dedup"}])
    pipeline = config.load(cfg)
    first, _ = run_pipeline(pipeline, use_prefect=False)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert run_pipeline(pipeline, use_prefect=False) == (first, None)  # unchanged: nothing published
    second, _ = run_pipeline(pipeline, use_prefect=False, force=True)
    assert (first.name, second.name) == ("v0001", "v0002")
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before  # v0001 untouched
    m1, m2 = (json.loads((f / "manifest.json").read_text()) for f in (first, second))
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]
    assert m1["config_hash"] == m2["config_hash"]
    assert release.versions(first.parent) == ["v0001", "v0002"]
    assert release.resolve("test", first.parent.parent) == second


def test_failed_publish_leaves_no_version(write_config, monkeypatch):
    cfg = write_config([{"path": str(ROOT / "data/web/redpajama/*.jsonl"), "fields": {"text": "text"}}])
    pipeline = config.load(cfg)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(release, "_seal", disk_full)
    with pytest.raises(OSError):
        run_pipeline(pipeline, use_prefect=False)
    dataset_dir = pipeline.release_dir / "test"
    assert release.versions(dataset_dir) == [] and not list(dataset_dir.glob(".tmp-*"))
    assert not list(dataset_dir.glob(".cache/.spill-*"))  # the read shards it parked on disk are gone too


def test_resolve_explains_what_it_looked_for(tmp_path):
    with pytest.raises(ReleaseError, match="no release found at 'nope'"):
        release.resolve("nope", tmp_path)


def _copy_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


def test_small_shards_make_one_row_group_per_file_not_one_per_shard(write_config, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"text": "Row number {i}."}}\n' for i in range(250)))
    cfg = write_config([{"path": str(path)}], shard_rows=7, release={"dir": str(tmp_path / "releases"),
                                                                      "rows_per_file": 100})
    folder, _ = run_pipeline(config.load(cfg), use_prefect=False)
    files = sorted((folder / "data").glob("*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [100, 100, 50]
    assert all(pq.read_metadata(f).num_row_groups == 1 for f in files)
    assert pl.read_parquet(files)["text"].to_list() == [f"Row number {i}." for i in range(250)]


def test_release_files_cut_across_parts_and_row_groups_keep_every_row_in_order(monkeypatch, tmp_path):
    """Each release file is its own task (`write_file`, on Dask a worker's): the plan cuts parts of any size,
    empty ones too, at file ends, and a file's row groups at ROW_GROUP rows from its start."""
    from pipelines.engine import Part, map_local

    monkeypatch.setattr(release, "ROW_GROUP", 30)
    rows = pl.read_json(ALPACA).select("instruction").with_row_index("id").with_columns(pl.col("id").cast(pl.String))
    sizes = [45, 0, 70, 12]
    parts, start = [], 0
    for n in sizes:
        parts.append(Part(n, path=tmp_path / f"part{len(parts)}.parquet"))
        rows.slice(start, n).write_parquet(parts[-1].path)
        start += n
    folder = tmp_path / "version"
    folder.mkdir()
    entries = release._write_parts(parts, rows.schema, folder, folder, "data", 50, map_local)
    assert [e["rows"] for e in entries] == [50, 50, 27]
    files = [folder / e["path"] for e in entries]
    assert [[pq.ParquetFile(f).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(f).num_row_groups)]
            for f in files] == [[30, 20], [30, 20], [27]]
    assert pl.read_parquet(files).equals(rows.head(sum(sizes)))
    assert all(e["sha256"] == storage.sha256(f) and e["bytes"] == f.stat().st_size for e, f in zip(entries, files))
