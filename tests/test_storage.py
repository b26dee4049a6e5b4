"""pipelines/storage.py: one interface for local paths and URLs, against a real S3 API on loopback (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.storage import StorageError
from conftest import DCLM
from s3server import FAKE_KEYS


def test_location_parses_paths_and_urls_and_refuses_credentials_in_urls():
    assert storage.location("data/x.jsonl") == Path("data/x.jsonl")
    assert storage.location("file:///tmp/x.jsonl") == Path("/tmp/x.jsonl")
    assert storage.location("s3://bucket/releases/") == "s3://bucket/releases"
    assert storage.location("hf://datasets/org/name/train.parquet") == "hf://datasets/org/name/train.parquet"
    with pytest.raises(StorageError, match="unsupported URL scheme 'ftp'"):
        storage.location("ftp://host/x")
    with pytest.raises(StorageError, match="credentials or parameters") as caught:
        storage.location("s3://AKIAEXAMPLE:hunter2-very-secret@bucket/x")
    assert "hunter2" not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)
    with pytest.raises(StorageError, match="credentials or parameters") as caught:
        storage.location("az://container/x?sig=abcdef0123456789")
    assert "abcdef0123456789" not in str(caught.value)


def test_local_paths_behave_as_before(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    storage.write_bytes(folder / "x.bin", b"hello")
    with pytest.raises(FileExistsError):
        storage.write_bytes(folder / "x.bin", b"again", exclusive=True)
    assert storage.read_bytes(folder / "x.bin") == b"hello"
    assert storage.list_names(folder) == ["x.bin"] and storage.list_names(tmp_path / "none") == []
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "marker").write_text("m")
    storage.commit_folder(staged, tmp_path / "final", "marker")
    assert (tmp_path / "final" / "marker").read_text() == "m" and not staged.exists()


def test_s3_round_trip_of_a_real_input_and_a_committed_folder(s3, tmp_path):
    data = DCLM.read_bytes()[:2_000_000]
    url = s3.url("inputs", "dclm.jsonl")
    storage.write_bytes(url, data)
    assert storage.size(url) == len(data) and storage.is_file(url) and not storage.is_file(s3.url("inputs"))
    with storage.open_file(url) as fh:
        assert fh.read() == data
    assert storage.glob(s3.url("inputs", "*.jsonl")) == [url] and storage.glob(s3.url("inputs")) == [url]
    assert storage.sha256(url) == storage.sha256(_local(tmp_path, data))

    staged = tmp_path / "v0001"
    (staged / "data").mkdir(parents=True)
    (staged / "data" / "part-00000.parquet").write_bytes(data[:1000])
    (staged / "manifest.json").write_text("{}")
    dest = s3.url("releases", "d", "v0001")
    storage.commit_folder(staged, dest, "manifest.json")
    assert storage.list_names(dest) == ["data", "manifest.json"]
    assert storage.read_bytes(storage.join(dest, "data", "part-00000.parquet")) == data[:1000]
    with pytest.raises(FileExistsError):  # a version is never overwritten
        storage.commit_folder(staged, dest, "manifest.json")
    with pytest.raises(FileExistsError):
        storage.write_bytes(storage.join(dest, "manifest.json"), b"{}", exclusive=True)


def test_a_lazy_scan_of_parquet_on_s3_gives_what_a_local_scan_gives(s3, tmp_path, monkeypatch):
    """A scan of a URL reads the footer for the schema and the whole object once when collected, with the
    query's columns, filter and row limit applied as a local scan applies them; a footer bigger than the
    first ranged read is read again whole."""
    import polars as pl

    rows = pl.read_ndjson(DCLM, n_rows=300).select("text", "label", pl.col("text").str.len_chars().alias("chars"))
    local, url = tmp_path / "rows.parquet", s3.url("cache", "rows.parquet")
    rows.write_parquet(local)
    storage.upload(local, url)
    for guess in (storage.FOOTER_GUESS, 16):
        monkeypatch.setattr(storage, "FOOTER_GUESS", guess)
        query = [lambda f: f, lambda f: f.filter(pl.col("chars") > 2000).select("label", "chars"), lambda f: f.head(7)]
        for q in query:
            assert q(storage.scan_parquet(url)).collect().equals(q(pl.scan_parquet(local)).collect())
        assert storage.parquet_schema(url) == storage.parquet_schema(local) == rows.schema
    with pytest.raises(StorageError, match="rows-missing.parquet"):
        storage.parquet_schema(s3.url("cache", "rows-missing.parquet"))


def test_a_narrow_scan_on_s3_reads_its_columns_only_when_that_pays_and_survives_every_fault(s3, tmp_path, monkeypatch):
    """A scan wanting some columns of an object reads only their byte ranges (Polars' client) when that skips
    more than RANGES_PAY bytes, else the whole object in one GET, as it does for all columns; under every
    fault kind, including the HTTP 400 throttle Polars' client does not retry, it gives the local file's rows
    (read again whole through s3fs, which retries)."""
    import polars as pl

    rows = pl.read_ndjson(DCLM).select("text", "label", pl.col("text").str.len_chars().alias("chars"))
    local, url = tmp_path / "rows.parquet", s3.url("narrow", "rows.parquet")
    rows.write_parquet(local)
    storage.upload(local, url)
    expected = rows.select("label", "chars")
    whole, read = [], storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda loc: whole.append(loc) or read(loc))
    assert storage.scan_parquet(url).select("label", "chars").collect().equals(expected) and whole == [url]  # small
    monkeypatch.setattr(storage, "RANGES_PAY", 0)
    assert storage.scan_parquet(url).select("label", "chars").collect().equals(expected) and whole == [url]
    everything = storage.scan_parquet(url).select("chars", "text", "label").collect()  # nothing skipped: one GET
    assert everything.equals(rows.select("chars", "text", "label")) and whole == [url, url]
    for kinds in (("throttle",), ("500", "503", "throttle", "drop", "lost", "cut")):
        with s3.faults(every=1 if kinds == ("throttle",) else 2, kinds=kinds, limit=4 if kinds == ("throttle",) else 12) as proxy:
            for _ in range(8):
                assert storage.scan_parquet(url).select("label", "chars").collect().equals(expected)
        assert set(proxy.injected) == set(kinds), proxy.injected
    assert storage.parquet_rows(url) == storage.parquet_rows(local) == rows.height > 0


def test_a_narrow_scan_signs_with_keys_from_the_provider_files_too(s3, tmp_path, monkeypatch):
    """Polars' client finds credentials as botocore does: keys only in ~/.aws/credentials (here a file named by
    AWS_SHARED_CREDENTIALS_FILE) still give a ranged read, not a silent fall back to a whole-object GET (an
    option Polars did not know, `aws_allow_http`, turned its credential provider off)."""
    import polars as pl

    rows = pl.read_ndjson(DCLM).select("text", "label")
    local, url = tmp_path / "rows.parquet", s3.url("files", "rows.parquet")
    rows.write_parquet(local)
    storage.upload(local, url)
    keys = tmp_path / "credentials"
    keys.write_text(f"[default]\naws_access_key_id = {FAKE_KEYS['AWS_ACCESS_KEY_ID']}\n"
                    f"aws_secret_access_key = {FAKE_KEYS['AWS_SECRET_ACCESS_KEY']}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(keys))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setattr(storage, "RANGES_PAY", 0)
    whole, read = [], storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda loc: whole.append(loc) or read(loc))
    assert storage.scan_parquet(url).select("label").collect().equals(rows.select("label"))
    assert whole == []


def test_a_missing_object_is_a_clear_error_without_secrets(s3):
    with pytest.raises(StorageError, match=r"s3://.*/nothing/here: not found") as caught:
        storage.read_bytes(s3.url("nothing", "here"))
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


def test_transient_faults_are_retried(s3, tmp_path):
    """500, 503 SlowDown, throttling, dropped connections, lost answers and truncated bodies: every request
    that fails is retried, and what was written reads back byte for byte."""
    data = DCLM.read_bytes()[:3_000_000]
    with s3.faults(every=2) as proxy:
        for i in range(4):
            storage.write_bytes(s3.url("f", f"{i}.jsonl"), data[i::4])
        for i in range(4):
            assert storage.read_bytes(s3.url("f", f"{i}.jsonl")) == data[i::4]
        assert storage.sha256(s3.url("f", "0.jsonl")) == storage.sha256(_local(tmp_path, data[0::4]))
    assert set(proxy.injected) == {"500", "503", "throttle", "drop", "lost", "cut"}, proxy.injected


def _local(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "local.bin"
    path.write_bytes(data)
    return path


def test_a_scheme_without_its_package_says_which_package():
    with pytest.raises(StorageError, match=r"gs:// URLs need the gcsfs package \(pip install gcsfs\)"):
        storage.exists("gs://bucket/releases")


def test_retries_run_out_as_one_clear_line_without_the_secret(s3, sluice, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with s3.faults(every=1, kinds=("503",)) as proxy:
        code, out, err = sluice("release", "list", "--releases", s3.url("releases"))
    assert code == 1 and proxy.injected["503"] >= 2
    assert err.startswith(f"sluice: error: {s3.url('releases')}: cannot list it (") and "reduce your request rate" in err, err
    assert len(err.strip().splitlines()) == 1 and os.environ["AWS_SECRET_ACCESS_KEY"] not in out + err


def test_a_url_sluice_cannot_use_is_a_usage_error(sluice, write_config, capsys):
    for args, reason in ((["release", "list", "--releases", "ftp://host/releases"], "unsupported URL scheme 'ftp'"),
                         (["run", str(write_config([{"path": str(DCLM)}])), "--releases", "hf://datasets/org/name"],
                          "hf:// is read-only here")):
        with pytest.raises(SystemExit) as exit_:
            sluice(*args)
        assert exit_.value.code == 2 and reason in capsys.readouterr().err
    config = write_config([{"path": str(DCLM)}], release={"dir": "hf://datasets/org/name"})
    code, out, err = sluice("run", config)
    assert code == 2 and "release.dir: hf://datasets/org/name: hf:// is read-only here" in err


def test_a_cache_on_s3_looks_many_entries_up_at_once_as_one_by_one(s3, tmp_path):
    """`ShardCache.lookup` (the driver's check before a stage's tasks) answers what `files` answers per key,
    on a bucket (markers fetched concurrently) and on local disk alike; an entry without its marker is none."""
    import polars as pl

    from pipelines.cache import DONE, ShardCache

    rows = pl.read_ndjson(DCLM, n_rows=50).select("text")
    for cache in (ShardCache(s3.url("releases", "d", ".cache")), ShardCache(tmp_path / ".cache")):
        cache.put("a", (rows, rows.head(3)))
        cache.put("b", (rows.head(7),))
        keys = ["a", "missing", "b"]
        assert cache.lookup(keys) == [cache.files(k) for k in keys]
        assert [len(f) if f else None for f in cache.lookup(keys)] == [2, None, 1]
    storage.remove_tree(storage.join(s3.url("releases", "d", ".cache"), "b", DONE))  # a half-written entry
    assert ShardCache(s3.url("releases", "d", ".cache")).lookup(["b", "a"])[0] is None


class Uploads:
    """A store's `_pipe_file` whose uploads each take 0.05 s more, counted while in flight (`note`: told each
    upload's path and how many are in flight with it)."""

    def __init__(self, real, note=None):
        self.real, self.note, self.flying, self.most = real, note, 0, 0

    async def __call__(self, path, data, **kwargs):
        import asyncio

        self.flying += 1
        self.most = max(self.most, self.flying)
        if self.note:
            await self.note(path, self.flying)
        await asyncio.sleep(0.05)
        try:
            return await self.real(path, data, **kwargs)
        finally:
            self.flying -= 1


def test_a_cache_entry_on_s3_uploads_its_files_side_by_side_then_its_marker(s3, tmp_path, monkeypatch):
    """An entry's files go up at once (one wait for the biggest, not a round trip for each in turn), retried
    under faults; its `_done` marker only once all of them are there: an upload that fails leaves no entry."""
    import polars as pl

    from pipelines.cache import DONE, ShardCache

    rows = pl.read_ndjson(DCLM, n_rows=50).select("text")
    frames = (rows, rows.head(0), rows.head(3), rows.head(7))
    cache = ShardCache(s3.url("cache"))
    with s3.faults(every=3, kinds=("500", "503", "throttle", "drop", "lost"), methods=("PUT",)) as proxy:
        fs, _ = storage.filesystem(cache.folder)  # the client of the proxy's endpoint
        uploads = []

        async def note(path, flying):
            uploads.append((path.rsplit("/", 1)[-1], flying, await fs._exists(f"{path.rsplit('/', 1)[0]}/{DONE}")))

        monkeypatch.setattr(fs, "_pipe_file", Uploads(fs._pipe_file, note))
        files = cache.put("k", frames)
    assert sorted(uploads) == [(f"{i}.parquet", i + 1, False) for i in range(4)]  # side by side, no marker yet
    assert sum(proxy.injected.values()) >= 1 and cache.lookup(["k"]) == [files]
    assert [storage.read_parquet(f).to_dicts() for f in files] == [f.to_dicts() for f in frames]

    fs, _ = storage.filesystem(cache.folder)  # (no proxy now)
    real = fs._pipe_file

    async def refused(path, data, **kwargs):
        if path.endswith("/1.parquet"):
            raise PermissionError(path)
        return await real(path, data, **kwargs)

    monkeypatch.setattr(fs, "_pipe_file", refused)
    with pytest.raises(StorageError, match=r"cache/refused/: cannot write its 3 files 0.parquet, 1.parquet, 2.parquet"):
        cache.put("refused", frames[:3])
    assert cache.lookup(["refused"]) == [None]


@pytest.mark.parametrize("where", ["bucket", "folder"])
def test_an_entry_is_written_file_by_file_and_found_only_once_committed(where, s3, tmp_path, monkeypatch):
    """A read task of a whole gzip file makes many shards: each is written (uploaded) as it is read, none waits
    in memory or a scratch folder; its books, known last, are its first file; the entry exists once committed,
    and a task that fails before leaves none."""
    import polars as pl

    from pipelines.cache import ShardCache

    rows = pl.read_ndjson(DCLM, n_rows=50).select("text")
    cache = ShardCache(s3.url("cache") if where == "bucket" else tmp_path / "cache")
    fs, _ = storage.filesystem(s3.url("cache"))
    held = Uploads(fs._pipe_file)
    monkeypatch.setattr(fs, "_pipe_file", held)
    with cache.entry("many", first=1) as entry:
        for i in range(5):
            entry.add(rows.head(i + 1), rows.head(i))
            assert cache.lookup(["many"]) == [None]  # no entry yet
        files = entry.commit((rows.head(0),))
    assert held.most == (2 if where == "bucket" else 0)  # a shard's files at once, one shard at a time
    assert cache.lookup(["many"]) == [files]
    assert [storage.parquet_rows(f) for f in files] == [0] + [n for i in range(5) for n in (i + 1, i)]
    with pytest.raises(RuntimeError), cache.entry("failed", first=1) as entry:
        entry.add(rows)
        raise RuntimeError("the input broke off")
    assert cache.lookup(["failed"]) == [None]
    if where == "folder":
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["many"]  # no temporary folder left


def test_threads_asking_for_the_same_copy_share_one_download(s3, tmp_path, monkeypatch):
    """Span tasks of one input at a URL run side by side on a worker's threads: one download, the whole file
    for every one of them (two threads writing one `.part` gave a copy of NUL bytes or a missing file)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    data = DCLM.read_bytes()[:1_000_000]
    url = s3.url("inputs", "dclm.jsonl")
    storage.write_bytes(url, data)
    monkeypatch.setattr(storage, "_fetched", [str(tmp_path)])  # a fresh process's copies
    real, calls = storage.download, []

    def slow_download(loc, local, size=None):  # a download long enough for every thread to ask meanwhile
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return real(loc, local, size)

    monkeypatch.setattr(storage, "download", slow_download)
    with ThreadPoolExecutor(4) as pool:
        copies = list(pool.map(lambda _: storage.local_copy(url), range(4)))
    assert len(set(copies)) == 1 and copies[0].read_bytes() == data
    assert len(calls) == 1


def test_an_input_copy_is_one_streamed_get_that_resumes_after_a_fault(s3, tmp_path, monkeypatch):
    """A worker's copy of an input below storage.ONE_STREAM is one GET streamed to disk: s3fs would drop a
    first GET, then fetch 50 MiB ranges side by side (4 GETs for the 103 MB input of bench/cluster, 2-3x the
    wall and 4x the server's CPU on loopback moto). A body cut or a connection dropped mid-way resumes."""
    data = DCLM.read_bytes()
    url = s3.url("inputs", "dclm.jsonl")
    storage.write_bytes(url, data)
    for every, kinds in ((10**9, ("500",)), (1, ("cut", "drop", "500"))):
        monkeypatch.setattr(storage, "_fetched", [str(tmp_path / str(every))])  # a fresh process's copies
        with s3.faults(every=every, kinds=kinds, methods=("GET",), limit=3) as proxy:
            fs, _ = storage.filesystem(url)  # the client of the proxy's endpoint
            monkeypatch.setattr(fs, "default_block_size", len(data) // 3)  # s3fs's parts as for 150 MB
            assert storage.local_copy(url).read_bytes() == data
        assert proxy.requests == 3 + sum(proxy.injected.values()), proxy.requests  # HEAD, GET, HEAD (+ retries)


def test_a_download_that_ends_early_without_an_error_leaves_no_copy(s3, tmp_path, monkeypatch):
    """A body cut short with no error to retry (a proxy closing cleanly, say) is told by its size: a StorageError
    naming the URL, and no copy (nor part of one) to be reused."""
    data = DCLM.read_bytes()
    url = s3.url("inputs", "dclm.jsonl")
    storage.write_bytes(url, data)
    monkeypatch.setattr(storage, "_fetched", [str(tmp_path)])
    fs, _ = storage.filesystem(url)
    real = fs.get_file

    def cut_short(rpath, lpath, **kwargs):
        real(rpath, lpath, **kwargs)
        with open(lpath, "r+b") as fh:
            fh.truncate(len(data) // 2)

    monkeypatch.setattr(fs, "get_file", cut_short)
    with pytest.raises(StorageError, match=f"^{url}: cannot download it \\(got {len(data) // 2} of its {len(data)} bytes"):
        storage.local_copy(url)
    assert not list(tmp_path.rglob("*.*"))


def test_a_dask_worker_set_up_for_s3_builds_its_client_while_warming_up(s3):
    """executors.warm_up (sent to every worker when a run connects) builds the process's S3 client, without a
    request, so that a worker's first task does not wait ~0.7 s for botocore's imports and session."""
    import asyncio

    from pipelines.executors import warm_up

    with s3.faults(every=10**9) as proxy:  # a new endpoint in the environment: a client not built yet
        fs, _ = storage.filesystem(s3.url("x"))
        assert fs._s3 is None
        asyncio.run(warm_up())
        assert fs._s3 is not None and proxy.requests == 0


def test_an_objects_version_is_its_size_etag_and_modification_time(s3, tmp_path):
    """A version that names the content (an ETag) keys a URL input's read in the cache, so it also carries the
    modification time: some S3-compatible gateways keep the ETag through a rewrite of the same size. A local
    file's version is its size and mtime, which does not name its content."""
    url = s3.url("v.bin")
    storage.write_bytes(url, b"first")
    fs, path = storage.filesystem(url)
    info = fs.info(path)
    version, names_content = storage.stated_version(url)
    assert names_content and version == f"5 {info['ETag']} {info['LastModified']}" and storage.version_size(version) == 5
    fs.info = lambda path, **kwargs: info | {"LastModified": "2031-01-01 00:00:00+00:00"}  # same size and ETag
    try:
        assert storage.stated_version(url) == (f"5 {info['ETag']} 2031-01-01 00:00:00+00:00", True)
    finally:
        del fs.info
    (tmp_path / "f").write_bytes(b"first")
    assert not storage.stated_version(tmp_path / "f")[1] and storage.version_size("None None") is None


def test_a_scan_of_a_small_object_reads_it_once(s3):
    """A scan reads an object's footer first (its schema and column sizes); for an object smaller than that
    read (FOOTER_GUESS: a shard's rejects, a side table) it got the whole object, and the rows come from it:
    one GET, was two (the driver read each of a 1M-row run's 20 dedup rejects files twice for the stage's
    stats). A bigger object is still read again (its rows, or the columns a ranged read pays for)."""
    import polars as pl

    small = pl.DataFrame({"id": [f"r{i}" for i in range(300)], "reason": ["exact_dedup:duplicate"] * 300})
    url = s3.url("scan", "small.parquet")
    storage.write_parquet(small, url)
    big = pl.DataFrame({"id": [f"r{i}" for i in range(20_000)], "text": [f"row {i} " * 8 for i in range(20_000)]})
    big_url = s3.url("scan", "big.parquet")
    storage.write_parquet(big, big_url, compression="uncompressed")
    assert storage.size(url) < storage.FOOTER_GUESS < storage.size(big_url)
    with s3.faults(every=10**9) as proxy:
        assert storage.scan_parquet(url).filter(pl.col("id") != "r0").collect().equals(small[1:])
        assert proxy.requests == 1
        assert storage.scan_parquet(big_url).select("id").collect().equals(big.select("id"))
        assert proxy.requests == 3  # its footer, then its rows


def test_a_process_reads_what_it_wrote_to_a_bucket_from_its_own_copy(s3, monkeypatch):
    """A cache entry or spill a process writes to a bucket is kept in its memory (storage.keep) and named by
    the Part it makes (kept_by): that process reads it with no request, any other reads the store. Copies are
    kept up to KEEP_BYTES: another run's make room, then this run's that were read; a copy that does not fit
    is not kept, and one forgotten while its Part waits is read from the store."""
    import polars as pl

    from pipelines.cache import ShardCache
    from pipelines.engine import Part, stored

    monkeypatch.setattr(storage, "_kept", {})
    rows = pl.read_ndjson(DCLM, n_rows=400).select("text").with_row_index("id")
    cache = ShardCache(s3.url("cache"))
    part = stored(rows, cache.put("k", (rows,))[0])
    spilled = stored(rows.head(5), cache.spill(rows.head(5)))
    assert part.kept_by == spilled.kept_by == storage.HERE
    with s3.faults(every=10**9) as proxy:
        assert part.load().equals(rows) and spilled.load().equals(rows.head(5))
        assert part.scan().select("id").collect().equals(rows.select("id"))
        assert proxy.requests == 0
        assert Part(len(rows), path=part.path).load().equals(rows)  # not named as kept: read from the store
        assert proxy.requests == 1

    size = storage.size(part.path)
    monkeypatch.setattr(storage, "KEEP_BYTES", size + size // 2)
    later = ShardCache(s3.url("cache"))
    later.started += 1  # another run
    again = stored(rows, later.put("k2", (rows,))[0])
    assert again.kept_by == storage.HERE and storage.kept(part.path) is None  # the first run's copies made room
    assert stored(rows, later.put("k3", (rows,))[0]).kept_by is None  # no room left in this run's own
    with s3.faults(every=10**9) as proxy:
        assert part.load().equals(rows) and proxy.requests == 1  # its copy gone: from the store
        assert again.scan().collect().equals(rows) and proxy.requests == 1  # its copy: no request
    assert stored(rows, later.put("k4", (rows,))[0]).kept_by == storage.HERE  # a copy read since makes room
    assert storage.kept(again.path) is None
    with s3.faults(every=10**9) as proxy:
        assert again.scan().collect().equals(rows) and again.load().equals(rows)  # forgotten while it waited
        assert proxy.requests >= 2
