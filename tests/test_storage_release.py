"""Inputs, shard cache and releases on a real S3 API (moto on loopback): a run, its release verified, listed,
shown, inspected and diffed on the bucket; faults retried with no row lost; no half-written version visible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import DCLM
from operators.errors import ReleaseError
from pipelines import config, release, storage
from pipelines.flow import run_pipeline

STAGES = [{"op": "normalize", "fields": ["text"]},
          {"op": "length_filter", "field": "text", "min_words": 50},
          {"op": "exact_dedup", "fields": ["text"]}]


def _config(tmp_path: Path, inputs: str, releases: str, name: str = "web.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"dataset": "web", "shard_rows": 120,
                                    "inputs": [{"path": inputs, "fields": {"text": "text"}}],
                                    "stages": STAGES, "release": {"dir": releases, "rows_per_file": 200}}))
    return path


def _upload_input(s3) -> str:
    url = s3.url("inputs", "dclm", "majority_data.jsonl")
    storage.write_bytes(url, DCLM.read_bytes())
    return url


def _shards(manifest: dict) -> list[tuple[str, int, str]]:
    return [(s["path"], s["rows"], s["sha256"]) for s in manifest["shards"] + manifest["rejects"]]


@pytest.fixture(scope="module")
def local_release(tmp_path_factory) -> Path:
    """The same pipeline on local disk: what the bucket's release must equal."""
    tmp = tmp_path_factory.mktemp("local")
    folder, _ = run_pipeline(config.load(_config(tmp, str(DCLM), str(tmp / "releases"))), use_prefect=False)
    return folder


def test_a_run_from_and_to_the_bucket_equals_the_local_run(s3, tmp_path, local_release, sluice, capsys):
    releases = s3.url("releases")
    _upload_input(s3)
    pipeline = config.load(_config(tmp_path, s3.url("inputs", "dclm", "*.jsonl"), releases))  # a pattern on the bucket
    folder, outcome = run_pipeline(pipeline, use_prefect=False)
    assert folder == s3.url("releases", "web", "v0001")
    remote, local = release.read_manifest(folder), release.read_manifest(local_release)
    assert _shards(remote) == _shards(local)  # byte-identical shards and rejects
    assert remote["rows"] + remote["rejected_rows"] == 499 and remote["rows"] == local["rows"] > 0
    assert remote["inputs"][0]["path"] == s3.url("inputs", "dclm", "majority_data.jsonl")
    assert remote["inputs"][0]["sha256"] == local["inputs"][0]["sha256"]
    assert storage.list_names(s3.url("releases", "web", ".cache"))  # the shard cache is on the bucket too

    code, out, err = sluice("release", "list", "--releases", releases)
    assert code == 0 and f"web/v0001  {remote['rows']:>12,} rows" in out and folder in out
    code, out, err = sluice("release", "verify", "web", "--releases", releases)
    files = len(remote["shards"]) + len(remote["rejects"])
    assert code == 0 and out.startswith(f"OK {folder}: {files} files re-hashed"), (out, err)
    code, out, err = sluice("release", "show", folder)
    assert code == 0 and f"rows {remote['rows']:,} in {len(remote['shards'])} shard(s)" in out and "card s3://" in out
    code, out, err = sluice("inspect", folder, "--rejects", "--where", "reason LIKE 'length_filter%'", "--limit", "1")
    assert code == 0 and "length_filter:" in out, err
    code, out, err = sluice("inspect", storage.join(folder, "data", "part-00000.parquet"), "--limit", "1")
    assert code == 0 and "── 1  id " in out, err
    code, out, err = sluice("release", "diff", str(local_release), folder)
    assert code == 0 and "rows: +0 added, -0 removed, ~0 changed" in out, out

    # a re-run resumes from the cache on the bucket and publishes v0002 with the same shards
    folder2, outcome2 = run_pipeline(pipeline, use_prefect=False, force=True)
    assert folder2.endswith("/web/v0002") and outcome2.computed == 0 and outcome2.reused > 0
    assert _shards(release.read_manifest(folder2)) == _shards(remote)

    # the fake secret key is nowhere: not in an object of the bucket, not in the output, not in the local files
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    objects = storage.glob(s3.url())
    assert len(objects) > 20 and not [o for o in objects if secret in storage.read_bytes(o)]
    out, err = capsys.readouterr()
    assert secret.decode() not in out + err


def test_faults_on_every_request_kind_are_retried_and_no_row_is_lost(s3, tmp_path, local_release):
    """500, 503 SlowDown, throttling, dropped connections, lost answers and truncated bodies on every 4th
    request of the run (read, cache, publish; 3 of each kind): the release equals the local run and verifies."""
    pipeline = config.load(_config(tmp_path, _upload_input(s3), s3.url("releases")))
    with s3.faults(every=4, limit=18) as proxy:
        folder, outcome = run_pipeline(pipeline, use_prefect=False)
        problems = release.verify(folder)
    assert problems == []
    assert proxy.injected == {kind: 3 for kind in ("500", "503", "throttle", "drop", "lost", "cut")}, proxy.injected
    manifest = release.read_manifest(folder)
    assert _shards(manifest) == _shards(release.read_manifest(local_release))
    assert manifest["rows"] + manifest["rejected_rows"] == 499


def test_a_version_whose_manifest_never_arrived_is_invisible_and_its_number_never_reused(s3, tmp_path, monkeypatch,
                                                                                         sluice):
    pipeline = config.load(_config(tmp_path, _upload_input(s3), s3.url("releases")))
    write_bytes = storage.write_bytes

    def lose_manifest(loc, data, exclusive=False):  # the writer dies as it writes the manifest
        if str(loc).endswith("manifest.json"):
            raise storage.StorageError(f"{loc}: cannot write it (connection reset)")
        write_bytes(loc, data, exclusive)

    monkeypatch.setattr(storage, "write_bytes", lose_manifest)
    with pytest.raises(release.ReleaseWriteError, match=r"web/v0001: cannot write the release .*nothing was published"):
        run_pipeline(pipeline, use_prefect=False)
    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    dataset = s3.url("releases", "web")
    assert "v0001" in storage.list_names(dataset) and storage.list_names(storage.join(dataset, "v0001", "data"))
    assert release.versions(dataset) == [] and release.listing(s3.url("releases")) == []
    with pytest.raises(ReleaseError, match="no release found"):
        release.resolve("web", s3.url("releases"))
    code, out, err = sluice("inspect", "web", "--releases", s3.url("releases"))
    assert code == 2 and "not a Parquet file, a folder of Parquet files or a release" in err

    folder, _ = run_pipeline(pipeline, use_prefect=False)  # the next run takes the next number
    assert folder == storage.join(dataset, "v0002") and release.versions(dataset) == ["v0002"]
    assert release.verify(folder) == []


def test_verify_names_a_truncated_object_and_versions_are_never_overwritten(s3, tmp_path, sluice):
    pipeline = config.load(_config(tmp_path, _upload_input(s3), s3.url("releases")))
    folder, _ = run_pipeline(pipeline, use_prefect=False)
    code, out, err = sluice("cache", "list", "--releases", s3.url("releases"))
    assert code == 0 and out.startswith("web  ") and s3.url("releases", "web", ".cache") in out, out + err
    code, out, err = sluice("cache", "clear", "web", "--releases", s3.url("releases"))
    assert code == 0 and out.startswith("web: cleared ") and not storage.exists(s3.url("releases", "web", ".cache"))
    assert release.verify(folder) == []  # clearing the cache touches no release
    shard = storage.join(folder, "data", "part-00000.parquet")
    storage.write_bytes(shard, storage.read_bytes(shard)[:1000])  # someone rewrites half an object
    assert release.verify(folder) == [f"{shard}: size 1000 bytes, manifest says "
                                      f"{release.read_manifest(folder)['shards'][0]['bytes']}"]
    with pytest.raises(FileExistsError):
        storage.write_bytes(storage.join(folder, "manifest.json"), b"{}", exclusive=True)
    assert release._claim(s3.url("releases", "web")) == "v0002"  # a claimed number is taken: the next is v0003
    assert release.next_version(s3.url("releases", "web")) == "v0003"


def test_a_run_whose_retries_run_out_publishes_nothing_and_the_next_resumes_from_the_bucket(s3, tmp_path, monkeypatch,
                                                                                            local_release):
    pipeline = config.load(_config(tmp_path, _upload_input(s3), s3.url("releases")))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retry: the 12th upload's 500 ends the run (a read task's)
    with s3.faults(every=12, kinds=("500",), methods=("PUT",), limit=1), \
            pytest.raises(storage.StorageError, match="internal error"):
        run_pipeline(pipeline, use_prefect=False)
    assert release.versions(s3.url("releases", "web")) == []
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    folder, outcome = run_pipeline(pipeline, use_prefect=False)
    assert outcome.reused > 0 and release.verify(folder) == []
    assert _shards(release.read_manifest(folder)) == _shards(release.read_manifest(local_release))


def test_an_unchanged_input_at_a_url_is_told_by_its_version_without_downloading_it(s3, tmp_path, monkeypatch):
    """A re-run of an unchanged dataset publishes nothing; for an input on a bucket it asks the object's version
    (kept in the manifest: S3's ETag and modification time), not for its bytes to hash. A rewrite is noticed."""
    url = _upload_input(s3)
    pipeline = config.load(_config(tmp_path, url, str(tmp_path / "releases")))
    first, _ = run_pipeline(pipeline, use_prefect=False)
    manifest = release.read_manifest(first)
    assert manifest["inputs"][0]["version"] == storage.object_version(url)
    monkeypatch.setattr(storage, "_fetched", [])  # a new process: no local copy of the input
    def download(loc, local, size=None):
        raise AssertionError(f"{loc} downloaded")

    monkeypatch.setattr(storage, "download", download)
    with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
        assert run_pipeline(pipeline, use_prefect=False) == (first, None)
    assert proxy.requests == 1  # the input's HEAD (the release is local)
    monkeypatch.undo()
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    storage.write_bytes(url, DCLM.read_bytes().replace(b"the", b"The", 1))
    second, outcome = run_pipeline(pipeline, use_prefect=False)
    assert second != first and outcome is not None
    assert release.read_manifest(second)["inputs"][0]["sha256"] != manifest["inputs"][0]["sha256"]
