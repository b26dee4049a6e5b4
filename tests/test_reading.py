"""Reading as tasks (pipelines/reading.py): one task per file or span, Polars' readers with the row-by-row reader
for what they reject, ids made unique across inputs in one step, read results cached per task."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest

from conftest import DCLM, GSM8K, SHARED
from operators.errors import InputError, SluiceError
from pipelines import readers, storage
from pipelines.cache import ShardCache
from pipelines.readers import WHOLE, IdRegistry, Source, read_shards
from pipelines.engine import map_local
from pipelines.reading import plan, read_inputs, read_task

UDHR = SHARED / "langid" / "udhr" / "udhr.jsonl"
WEB = sorted((DCLM.parents[1]).rglob("*.jsonl"))  # DCLM, Dolma and Data-Juicer samples: nested fields, numbers


def rows_of(outcome) -> pl.DataFrame:
    return pl.concat([p.load() for p in outcome.parts], how="diagonal_relaxed")


@pytest.mark.parametrize("path", WEB, ids=lambda p: p.name)
def test_polars_and_the_row_reader_read_the_same_rows_and_ids(path, monkeypatch):
    src = Source(path, "jsonl", {"text": "text"}, on_error="skip")
    fast = pl.concat([s.rows for s in read_shards(src, 200, IdRegistry())], how="diagonal_relaxed")
    monkeypatch.setattr(readers, "_fast_shard", lambda *args: None)  # every batch through the row-by-row reader
    slow = pl.concat([s.rows for s in read_shards(src, 200, IdRegistry())], how="diagonal_relaxed")
    assert fast.equals(slow) and fast.schema == slow.schema


def test_a_bad_line_inside_a_span_is_a_reject_naming_its_line(tmp_path):
    lines = GSM8K.read_text().splitlines()
    lines[700] = lines[700][:-5]  # line 701: cut short
    lines[1000] = json.dumps({"question": 7, "answer": "a number, not text"})  # line 1001
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = Source(path, "jsonl", {"text": "question"}, on_error="skip")
    tasks, _ = plan(src, 300)
    assert [t.span.line for t in tasks] == [1, 301, 601, 901, 1201]  # a task per 300 lines
    outcome = read_inputs([src], 300)
    rejects = pl.concat([p.load() for p in outcome.rejected])
    assert rejects["detail"].to_list() == [f"{path}:701: malformed JSON: Unterminated string starting at column 343",
                                           f"{path}:1001: field 'question' must be a string, got int: 7"]
    assert len(rows_of(outcome)) == 1317 and outcome.inputs[0]["rows"] == 1319
    whole = pl.concat([s.rows for s in read_shards(src, 10_000, IdRegistry())])
    assert rows_of(outcome).equals(whole)  # the same rows and ids as one reader over the whole file


def test_ids_are_unique_across_inputs_in_input_order(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text('{"id": "r1", "text": "one"}\n{"text": "same text"}\n')
    second.write_text('{"id": "r2", "text": "two"}\n{"id": "r1", "text": "again r1"}\n{"text": "same text"}\n')
    sources = [Source(p, "jsonl", {"text": "text"}, source="s", on_error="skip") for p in (first, second)]
    outcome = read_inputs(sources, 10)
    rows = rows_of(outcome)
    hashed = rows["id"][1]
    assert rows["id"].to_list() == ["r1", hashed, "r2", f"{hashed}-2"]  # identical rows both kept, told apart
    rejects = pl.concat([p.load() for p in outcome.rejected])
    assert rejects.select("reason", "detail").rows() == [
        ("read:duplicate_id", f"{second}:2: duplicate id 'r1' (first seen at {first}:1)")]
    assert outcome.ledger.stages[0].dropped == {"read:duplicate_id": 1}
    failing = [Source(p, "jsonl", {"text": "text"}, source="s") for p in (first, second)]
    with pytest.raises(InputError, match=f"{second}:2: duplicate id 'r1' \\(first seen at {first}:1\\)"):
        read_inputs(failing, 10)


def test_a_changed_input_rereads_only_that_input(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    shutil.copy(GSM8K, a)
    lines = DCLM.read_text().splitlines()
    b.write_text("\n".join(lines) + "\n")
    sources = [Source(a, "jsonl", {"text": "question"}), Source(b, "jsonl", {"text": "text"})]
    cache = ShardCache(tmp_path / "cache")
    fresh = read_inputs(sources, 400, cache)
    tasks_a, tasks_b = (len(plan(s, 400)[0]) for s in sources)
    assert (fresh.reused, fresh.computed) == (0, tasks_a + tasks_b)
    again = read_inputs(sources, 400, cache)
    assert (again.reused, again.computed) == (tasks_a + tasks_b, 0) and again.keys == fresh.keys
    b.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
    changed = read_inputs(sources, 400, cache)
    assert (changed.reused, changed.computed) == (tasks_a, tasks_b)
    assert changed.keys[:tasks_a] == fresh.keys[:tasks_a]  # the first input's shards, and what follows them, stay
    assert len(rows_of(changed)) == len(rows_of(fresh)) - 1


def test_a_text_of_separator_characters_is_empty_whichever_reader_reads_it(tmp_path):
    """Python's str.strip() strips U+001C-U+001F, Polars' strip_chars() does not: the fast path must still call
    such a text empty, so a row's fate does not depend on a malformed line elsewhere in its batch."""
    good = {"text": "a real sentence of text"}
    path = tmp_path / "sep.jsonl"
    for extra in ([], ["{bad"]):  # alone, then beside a line that sends the batch to the row-by-row reader
        path.write_text("\n".join([json.dumps(good), json.dumps({"text": "\u001f \u001c"}), *extra]) + "\n")
        shards = list(read_shards(Source(path, "jsonl", {"text": "text"}, on_error="skip"), 100, IdRegistry()))
        rejects = pl.concat([s.rejects for s in shards], how="diagonal_relaxed")
        assert sum(len(s.rows) for s in shards) == 1
        assert "read:empty_field" in rejects["reason"].to_list()


def test_an_input_at_a_url_is_named_by_its_url_and_its_rejects_are_the_same_in_every_run(s3, monkeypatch):
    """Read from a local copy, named by the URL: reject details, `where` and reject ids do not depend on the
    temporary folder the copy lands in (a new one per process)."""
    wanted = ("en", "zh", "ru", "ar", "hi")
    first = {}
    for record in map(json.loads, UDHR.read_text().splitlines()):
        first.setdefault(record["lang"], record)
    lines = [json.dumps(first[lang], ensure_ascii=False) for lang in wanted]
    lines.insert(2, lines[1][:-9])  # line 3: cut short
    lines.insert(4, json.dumps({"lang": "zh", "text": 1948}))  # line 5: a number, not text
    url = s3.url("inputs", "udhr.jsonl")
    storage.write_bytes(url, ("\n".join(lines) + "\n").encode())
    src = Source(url, "jsonl", {"text": "text"}, on_error="skip")

    def read() -> tuple[pl.DataFrame, pl.DataFrame]:
        monkeypatch.setattr(storage, "_fetched", [])  # as in a new process: the copy goes to a new folder
        outcome = read_inputs([src], 2)
        return rows_of(outcome), pl.concat([p.load() for p in outcome.rejected])

    (rows, rejects), (rows_again, rejects_again) = read(), read()
    assert rows["lang"].to_list() == list(wanted) and rows.equals(rows_again)
    malformed, mistyped = rejects["detail"].to_list()
    assert malformed.startswith(f"{url}:3: malformed JSON: ") and "sluice-fetch-" not in malformed
    assert mistyped == f"{url}:5: field 'text' must be a string, got int: 1948"
    assert rejects.equals(rejects_again)  # the same reject ids and details


def test_an_input_at_a_url_overwritten_after_planning_stops_the_read_naming_the_url(s3, monkeypatch):
    """The driver plans a URL input's spans on its own copy; a worker reads its own copy. If the object is
    overwritten in between, a worker must not read the new object at the old spans (rows cut in the middle,
    rows lost or read twice, and cached under the planned sha256): its task carries the planned version."""
    lines = []
    for record in map(json.loads, UDHR.read_text().splitlines()):
        if record["lang"] in ("en", "zh", "ru", "ar", "hi") and len(lines) < 40:
            lines.append(json.dumps(record, ensure_ascii=False))
    url = s3.url("inputs", "udhr.jsonl")
    storage.write_bytes(url, ("\n".join(lines) + "\n").encode())
    src = Source(url, "jsonl", {"text": "text"}, on_error="skip")
    assert len(rows_of(read_inputs([src], 7))) == len(lines)  # unchanged: read as planned (6 span tasks)

    def overwritten_first(fn, jobs, label, cache=None, inline=False, **kwargs):
        """The run's map_fn, after someone rewrote the input (the same rows, another order), in processes
        with no copy of the input yet (a copy of the planned version is read without a look-up)."""
        storage.write_bytes(url, ("\n".join(reversed(lines)) + "\n").encode())
        monkeypatch.setattr(storage, "_fetched", [])
        return map_local(fn, jobs, label, cache, inline, **kwargs)

    with pytest.raises(SluiceError, match=f"^{url}: the object changed while the run was reading it"):
        read_inputs([src], 7, map_fn=overwritten_first)

    # overwritten between a worker's look-up of the object and its download (a new process: no copy yet)
    tasks, _ = plan(src, 7)
    download = storage.download

    def overwritten_then_downloaded(loc, local, size=None):
        storage.write_bytes(url, ("\n".join(lines[:-1]) + "\n").encode())
        return download(loc, local, size)

    monkeypatch.setattr(storage, "_fetched", [])
    monkeypatch.setattr(storage, "download", overwritten_then_downloaded)
    with pytest.raises(SluiceError, match=f"^{url}: the object changed while the run was reading it"):
        read_task(tasks[1], None, 7)
    assert not list(Path(storage._fetched[0]).rglob("*.*"))  # no copy (nor part of one) left to be reused


def test_the_planner_and_the_unchanged_check_name_an_input_by_the_same_sha256(s3, tmp_path):
    """`sluice run` skips a run whose inputs' sha256 equal the last release's: the planner's (the manifest's,
    computed while finding the spans of a JSONL file) and the check's (readers.input_sha256) must agree, for
    every way of planning, local and at a URL."""
    jsonl = b"".join(UDHR.read_bytes().splitlines(keepends=True)[:300])
    files = {"udhr.jsonl": jsonl, "udhr.jsonl.gz": gzip.compress(jsonl)}
    pl.read_ndjson(jsonl).write_parquet(tmp_path / "udhr.parquet")
    files["udhr.parquet"] = (tmp_path / "udhr.parquet").read_bytes()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        storage.write_bytes(s3.url(name), data)
        for path in (tmp_path / name, s3.url(name)):
            src = Source(path, "parquet" if name.endswith("parquet") else "jsonl", {"text": "text"})
            tasks, _ = plan(src, 100)
            sha = read_inputs([src], 100).inputs[0]["sha256"]  # the planner's, or the first task's
            assert sha == readers.input_sha256(path) == hashlib.sha256(data).hexdigest(), path
            assert len(tasks) > 1 or name.endswith(".gz")  # spans: the JSONL and Parquet planners ran


def test_a_read_into_a_bucket_cache_reads_no_file_back_to_count_its_rows(s3, monkeypatch):
    """A read task knows the rows of the files it writes to the cache and keeps them in its books: neither
    the task nor a resume reads a Parquet footer to count them (3 GETs per read task on a bucket)."""
    url = s3.url("inputs", "udhr.jsonl")
    storage.write_bytes(url, b"".join(UDHR.read_bytes().splitlines(keepends=True)[:500]))
    src = Source(url, "jsonl", {"text": "text", "lang": "lang"}, on_error="skip")
    cache = ShardCache(s3.url("cache"))
    asked = []
    monkeypatch.setattr(storage, "parquet_rows", lambda loc: asked.append(loc) or 0)
    with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
        first = read_inputs([src], 100, cache)
    with s3.faults(every=10**9) as again_proxy:
        again = read_inputs([src], 100, cache)
    assert not asked and first.computed == again.reused == 5
    assert proxy.requests <= 36 and again_proxy.requests <= 20, (proxy.requests, again_proxy.requests)  # 34 and 16
    # here; 39 when the driver read each shard's ids back from the bucket (the tasks give them now); 44 with a
    # file for each shard's rejects, none or not; 49 and 17 when each task asked for the input's
    # version though it held a copy of it; 76 and 39 when footers were read,
    # 56 and 24 when the ids were scanned (a footer and a GET each) and the planner looked the input up 5 times
    rows = rows_of(first)
    assert len(rows) == 500 and rows["lang"].n_unique() > 100 and rows.equals(rows_of(again))
    assert [p.rows for p in first.parts] == [p.rows for p in again.parts] == [100] * 5


def test_a_read_entry_on_a_bucket_keeps_a_rejects_file_only_for_a_shard_with_rejects(s3):
    """A shard without rejects (the usual case) uploads no empty rejects file (a PUT per read task); read
    back, its rejects are none, and a shard's that has them are what reading without a cache gives."""
    lines = UDHR.read_text().splitlines()[:40]
    lines[13] = lines[13][:-5]  # line 14: cut short
    url = s3.url("inputs", "udhr.jsonl")
    storage.write_bytes(url, ("\n".join(lines) + "\n").encode())
    src = Source(url, "jsonl", {"text": "text"}, on_error="skip")
    cache = ShardCache(s3.url("cache"))
    first, again, plain = read_inputs([src], 10, cache), read_inputs([src], 10, cache), read_inputs([src], 10)
    assert (first.computed, again.reused) == (4, 4)
    files = storage.glob(s3.url("cache", "*", "*.parquet"))
    assert len(files) == 4 * 3 + 1  # per task: books, rows, ids; the second task's rejects
    for outcome in (first, again):
        assert rows_of(outcome).equals(rows_of(plain)) and len(rows_of(outcome)) == 39
        assert [p.load().to_dicts() for p in outcome.rejected] == [p.load().to_dicts() for p in plain.rejected]
        assert [p.rows for p in outcome.rejected] == [1]


def test_a_gzipped_input_is_gzip_to_the_planner_the_reader_and_the_config_check_alike(tmp_path):
    """One `.gz` rule (readers.gzipped): the upper-case suffix too."""
    from pipelines import checks

    path = tmp_path / "gsm8k.JSONL.GZ"
    path.write_bytes(gzip.compress(GSM8K.read_bytes()))
    src = Source(path, "jsonl", {"text": "question"})
    tasks, _ = plan(src, 300)
    assert [t.span for t in tasks] == [readers.WHOLE]  # no byte spans inside a compressed file
    assert rows_of(read_inputs([src], 300)).equals(rows_of(read_inputs([Source(GSM8K, "jsonl", {"text": "question"})], 300)))
    assert checks._file_columns(src) == {"question", "answer"}
    assert readers.detect_format(path) == "jsonl"


def test_a_listed_input_overwritten_is_seen_by_its_version_and_a_local_one_too(s3, tmp_path):
    """The version a read is planned on is the server's answer now, not a listing made earlier (a folder or
    glob input is listed when the config loads; s3fs answers later look-ups from that listing): else the
    driver plans new bytes under the old version and workers fail, or a change goes unseen. A local input
    rewritten after planning stops the read as a URL's does."""
    url = s3.url("listed", "part-0.jsonl")
    storage.write_bytes(url, b'{"text": "first"}\n')
    assert storage.glob(s3.url("listed", "*.jsonl")) == [url]  # the listing, as a glob input's load makes it
    before = storage.object_version(url)
    fs, path = storage.filesystem(url)
    another_writer = type(fs)(skip_instance_cache=True, **fs.storage_options)  # not this process's client
    another_writer.pipe_file(path, b'{"text": "second, longer"}\n')
    assert storage.object_version(url) != before

    local = tmp_path / "rows.jsonl"
    local.write_text('{"text": "first"}\n{"text": "second"}\n')
    src = Source(local, "jsonl", {"text": "text"})
    tasks, _ = plan(src, 1)
    local.write_text('{"text": "another first"}\n{"text": "second"}\n')
    with pytest.raises(SluiceError, match=f"^{local}: the object changed while the run was reading it"):
        read_task(tasks[1], None, 1)



def test_a_local_input_rewritten_while_its_task_reads_it_is_not_cached(tmp_path):
    """A task reading a local file in several shards checks the file's version again when it has read them:
    rows of two versions of the file must not be cached under the sha256 planned on the first."""
    local = tmp_path / "rows.jsonl"
    local.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(30)))
    version = storage.object_version(local)
    shards = read_shards(Source(local, "jsonl", {"text": "text"}), 10, None, WHOLE, version)
    assert next(shards).rows_read == 10
    local.write_text("".join(json.dumps({"text": f"new row {i}"}) + "\n" for i in range(30)))
    with pytest.raises(SluiceError, match=f"^{local}: the object changed while the run was reading it"):
        list(shards)


def test_a_parquet_input_at_a_url_is_planned_from_its_footer_and_hashed_beside_its_tasks(s3, tmp_path):
    """The planner of a Parquet object looks it up once and reads its footer: no download before the tasks
    start. Their cache keys name the URL and the object's version, which S3 changes with every write (its
    ETag and modification time); the sha256 the manifest names is the first task's, of its worker's copy. A
    rewritten object is read again."""
    frame = pl.read_ndjson(b"".join(UDHR.read_bytes().splitlines(keepends=True)[:300]))
    frame.write_parquet(tmp_path / "udhr.parquet")
    data = (tmp_path / "udhr.parquet").read_bytes()
    url = s3.url("inputs", "udhr.parquet")
    storage.write_bytes(url, data)
    src = Source(url, "parquet", {"text": "text"})
    with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
        tasks, sha = plan(src, 100)
    assert proxy.requests == 2 and len(tasks) == 3  # a HEAD and the footer (were 5 HEADs and the whole object)
    assert {t.identity for t in tasks} == {f"{url} {storage.object_version(url)}"}
    assert sha is None and [t.hashes for t in tasks] == [True, False, False]
    local_tasks, local_sha = plan(Source(tmp_path / "udhr.parquet", "parquet", {"text": "text"}), 100)
    assert local_sha == hashlib.sha256(data).hexdigest() and {t.identity for t in local_tasks} == {local_sha}
    assert not any(t.hashes for t in local_tasks)  # a local file: named by its sha256, hashed by the planner

    cache = ShardCache(s3.url("cache"))
    for store in (None, cache):
        first = read_inputs([src], 100, store)
        assert first.inputs[0]["sha256"] == local_sha and first.inputs[0]["bytes"] == len(data)
        assert rows_of(first)["text"].to_list() == frame["text"].to_list()
    again = read_inputs([src], 100, cache)
    assert (again.reused, first.computed) == (3, 3) and again.inputs[0]["sha256"] == local_sha
    frame.reverse().write_parquet(tmp_path / "reversed.parquet")
    storage.write_bytes(url, (tmp_path / "reversed.parquet").read_bytes())
    changed = read_inputs([src], 100, cache)
    assert changed.computed == 3 and rows_of(changed)["text"].to_list() == frame["text"].reverse().to_list()
    assert changed.inputs[0]["sha256"] == hashlib.sha256((tmp_path / "reversed.parquet").read_bytes()).hexdigest()


@pytest.mark.parametrize("where", ["local", "bucket"])
@pytest.mark.parametrize("damage", ["a shard file missing", "a file too many"])  # on a bucket: as its _done counts
def test_a_damaged_read_cache_entry_is_read_again_and_made_anew(where, damage, request, tmp_path, caplog):
    """A read entry whose files are not the ones its books name (damaged, or edited by hand) is a miss, not a
    bare StopIteration or extra files taken silently: its task reads the input again and writes the entry anew
    (a cache only saves work), and the run's log names the entry."""
    path = tmp_path / "gsm8k.jsonl.gz"
    path.write_bytes(gzip.compress(GSM8K.read_bytes()))  # one task, 5 shards: its entry has 1 + 5 x 2 files
    src = Source(path, "jsonl", {"text": "question"})
    folder = request.getfixturevalue("s3").url("cache") if where == "bucket" else tmp_path / "cache"
    cache = ShardCache(folder)
    first = read_inputs([src], 300, cache)
    [key] = {storage.name(storage.parent(p.path)) for p in first.parts}
    entry = storage.join(folder, key)
    count = len(cache.files(key))
    assert count == 11
    if where == "local":
        if damage == "a shard file missing":
            (entry / f"{count - 1}.parquet").unlink()
        else:
            shutil.copy(entry / "1.parquet", entry / f"{count}.parquet")
    else:  # its `_done` marker names the number of files
        storage.write_bytes(storage.join(entry, "_done"), str(count - 1 if damage == "a shard file missing" else count + 1).encode())
    again = read_inputs([src], 300, cache)
    assert (again.reused, again.computed) == (0, 1)
    assert f"the read cache entry {storage.display(entry)} is damaged" in caplog.text
    assert rows_of(again).equals(rows_of(first)) and again.keys == first.keys
    assert len(cache.files(key)) == count  # made anew
    third = read_inputs([src], 300, cache)
    assert (third.reused, third.computed) == (1, 0) and rows_of(third).equals(rows_of(first))


class Chunked(http.server.BaseHTTPRequestHandler):
    """Files over HTTP/1.1 in chunks, with no Content-Length (as servers of generated or compressed answers
    do): the store states no size. `etag`: a strong ETag, which names the content."""

    protocol_version = "HTTP/1.1"
    files: dict[str, bytes] = {}
    etag: str | None = None

    def do_HEAD(self) -> None:
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Transfer-Encoding", "chunked")
        if self.etag:
            self.send_header("ETag", self.etag)
        self.end_headers()

    def do_GET(self) -> None:
        body = self.files.get(self.path, b"")
        try:
            self.do_HEAD()
            for start in range(0, len(body), 1 << 16):
                chunk = body[start:start + (1 << 16)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # a client that wanted the headers only (fsspec's look-up) and closed
            pass

    def log_message(self, *args) -> None:
        pass


class Quiet(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that closed its connection early
        pass


@pytest.mark.parametrize("name, etag", [("gsm8k.jsonl", None), ("gsm8k.jsonl.gz", None), ("gsm8k.jsonl.gz", '"v1"')],
                         ids=["lines found by the planner", "hashed by the planner", "hashed by its first task"])
def test_an_input_over_http_without_a_stated_size_has_its_bytes_in_the_manifest(name, etag, tmp_path, monkeypatch,
                                                                                request):
    """The manifest names every input's bytes, also when its store states no size (http(s) without
    Content-Length): they are the size of the copy whose sha256 was made, the planner's or, for an input whose
    version names its content (a strong ETag), its first task's, kept in its cache entry's books."""
    data = gzip.compress(GSM8K.read_bytes()) if name.endswith(".gz") else GSM8K.read_bytes()
    monkeypatch.setattr(Chunked, "files", {f"/{name}": data})
    monkeypatch.setattr(Chunked, "etag", etag)
    server = Quiet(("127.0.0.1", 0), Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{name}"
        assert storage.version_size(storage.object_version(url)) is None  # the store states no size
        src = Source(url, "jsonl", {"text": "question"})
        tasks, sha = plan(src, 300)
        assert tasks[0].hashes == (sha is None) == (etag is not None)
        cache = ShardCache(tmp_path / "cache")
        for store in (None, cache, cache):  # the last: from the cache entry's books
            about = read_inputs([src], 300, store).inputs[0]
            assert (about["bytes"], about["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        if etag:  # a run's manifest, the input named in its config
            from pipelines import config
            from pipelines.flow import run_pipeline

            write_config = request.getfixturevalue("write_config")
            release, _ = run_pipeline(config.load(write_config([{"path": url, "fields": {"text": "question"}}])),
                                      root=tmp_path / "releases", use_prefect=False)
            [about] = json.loads((release / "manifest.json").read_text())["inputs"]
            assert (about["bytes"], about["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
            assert about["path"] == url  # with its port
    finally:
        server.shutdown()
        server.server_close()
