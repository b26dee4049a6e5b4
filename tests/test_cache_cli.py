"""`sluice cache`: a run says how big its shard cache is; `list` shows it, `clear` frees it and nothing else."""

from __future__ import annotations

from conftest import ROOT
from pipelines.release import dataset_lock


def _run(sluice, write_config, *flags: str) -> str:
    cfg = write_config([{"path": str(ROOT / "data/web/dolma/*.jsonl"), "fields": {"text": "text"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 100}])
    code, out, err = sluice("run", cfg, "--no-prefect", *flags)
    assert code == 0, err
    return out


def _size(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_cache_size_is_said_listed_and_cleared(sluice, write_config, tmp_path):
    out = _run(sluice, write_config)
    releases = tmp_path / "releases"
    cache = releases / "test" / ".cache"
    size = _size(cache)
    assert size > 0
    assert f"shard cache: {size / 1024:,.1f} KB in {cache}" in out and "`sluice cache clear test` frees it" in out
    code, out, _ = sluice("cache", "list", "--releases", releases)
    assert code == 0 and out.split()[:6] == ["test", f"{size / 1024:,.1f}", "KB", str(cache), "total", f"{size / 1024:,.1f}"]

    code, _, err = sluice("cache", "clear", "nothing", "--releases", releases)
    assert code == 2 and f"no dataset nothing under {releases}; datasets: test" in err
    code, _, err = sluice("cache", "clear", "--releases", releases)
    assert code == 2 and "or pass --all" in err
    with dataset_lock(releases / "test"):  # a run is writing the dataset: its cache stays
        code, _, err = sluice("cache", "clear", "test", "--releases", releases)
    assert code == 1 and "another run" in err and cache.is_dir()

    code, out, _ = sluice("cache", "clear", "test", "--releases", releases)
    assert code == 0 and out == f"test: cleared {size / 1024:,.1f} KB ({cache})\n" and not cache.exists()
    code, out, _ = sluice("release", "verify", "test/v0001", "--releases", releases)
    assert code == 0 and out.startswith("OK ")  # the published release is untouched
    code, out, _ = sluice("cache", "--releases", releases)
    assert code == 0 and out == f"no shard cache under {releases}\n"
    # The next run (forced: nothing changed) computes every shard again and publishes the same rows.
    _run(sluice, write_config, "--force")
    assert cache.is_dir() and _size(cache) == size
