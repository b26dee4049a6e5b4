"""Where Sluice reads and writes: local paths and object-store URLs behind one small interface.

A location is a local path (a `Path`; `file://` URLs become one) or a URL (`s3://`, `gs://`, `az://`, `hf://`
for reading), kept as a string. Local paths keep the behaviour they always had (atomic rename, flock); URLs
go through fsspec (s3fs for S3; gcsfs, adlfs or huggingface_hub provide the other schemes when installed).

Credentials never pass through Sluice: fsspec's backends find them where each provider's own tools do (for
S3, botocore's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and
~/.aws/credentials, ~/.aws/config, instance roles); an S3-compatible server is named by AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL. A URL carrying credentials (`s3://key:secret@bucket`, a `?sig=` query) is refused, and every
error message is scrubbed of secret-looking environment values before it is raised.

Object stores have no folder rename, so a folder is committed by `commit_folder`: every file uploaded, each
checked for its size, then the marker file (a release's manifest.json, a cache entry's `_done`) written last
with a conditional create (If-None-Match), which fails if it exists: a version is never overwritten, and a
reader that trusts only folders whose marker exists never sees half of one. Transient faults (HTTP 500/503
SlowDown, throttling, dropped connections, truncated responses) are retried by botocore and s3fs
(AWS_MAX_ATTEMPTS / AWS_RETRY_MODE override the defaults below). A scan of a few columns of a big Parquet
object on S3 (a shard's ids or scores) goes through Polars' own client, which fetches only those columns'
byte ranges; what it does not retry (an HTTP 400 throttle) is read again whole through s3fs.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from operators.errors import SluiceError

if TYPE_CHECKING:
    import polars as pl

Location = Path | str  # a local path, or a URL string ("s3://bucket/key")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
WRITABLE = ("s3", "gs", "gcs", "az", "abfs", "abfss", "memory")
READABLE = WRITABLE + ("hf", "http", "https")
RETRIES = {"mode": "standard", "total_max_attempts": 10}  # botocore's standard mode: 5xx, SlowDown, throttles, resets
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|CREDENTIAL|SAS|ACCOUNT_KEY|API_KEY|PRIVATE", re.I)


class StorageError(SluiceError, OSError):
    """A read or write at a location that failed after retries (or a URL Sluice will not use)."""


class Missing(StorageError, FileNotFoundError):
    """No file or object at the location."""


class NotParquet(SluiceError, ValueError):
    """A file or object that is there but is not Parquet (cut short, garbled): a damage, not a failed read."""


def location(value: str | os.PathLike) -> Location:
    """A config or command-line value as a location: a URL string, or a Path (also for `file://`)."""
    text = os.fspath(value)
    match = _SCHEME.match(text)
    if not match:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme == "file":
        return Path(urlsplit(text).path)
    if scheme not in READABLE:
        raise StorageError(f"{display(text)}: unsupported URL scheme {scheme!r}; use a local path or one of "
                           + ", ".join(f"{s}://" for s in ("s3", "gs", "az", "hf", "file")))
    parts = urlsplit(text)
    if "@" in parts.netloc or parts.query:
        raise StorageError(f"{display(text)}: credentials or parameters in a URL are not accepted (they would end "
                           "up in manifests and logs); give them through the environment or the provider's files")
    return f"{scheme}://{parts.netloc}{parts.path}".rstrip("/") if parts.path not in ("", "/") else f"{scheme}://{parts.netloc}"


def check_writable(loc: Location) -> None:
    """Refuse a URL whose scheme Sluice only reads (hf://, http://) as a place to write."""
    if is_remote(loc) and str(loc).split("://")[0] not in WRITABLE:
        raise StorageError(f"{display(loc)}: {str(loc).split('://')[0]}:// is read-only here; releases and the "
                           "shard cache go to a local folder or s3://, gs://, az://")


def is_remote(loc: Location | str) -> bool:
    return isinstance(loc, str) and _SCHEME.match(loc) is not None and not loc.startswith("file://")


def join(base: Location, *names: str) -> Location:
    if not is_remote(base):
        return Path(base).joinpath(*names)
    return "/".join([str(base).rstrip("/"), *(n.strip("/") for n in names)])


def name(loc: Location) -> str:
    return Path(loc).name if not is_remote(loc) else str(loc).rstrip("/").rsplit("/", 1)[-1]


def parent(loc: Location) -> Location:
    return Path(loc).parent if not is_remote(loc) else str(loc).rstrip("/").rsplit("/", 1)[0]


def display(loc: Location | str) -> str:
    """The location for messages and manifests: user info and query strings (where secrets hide) cut off."""
    text = str(loc)
    if _SCHEME.match(text):
        parts = urlsplit(text)
        text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"  # a port kept: part of the address
    return scrub(text)


def scrub(text: str) -> str:
    """`text` with the values of secret-looking environment variables replaced by ***."""
    for key, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_NAME.search(key) and value in text:
            text = text.replace(value, "***")
    return text


# --- the filesystem behind a URL ---------------------------------------------------------------------


def filesystem(loc: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL."""
    scheme = _SCHEME.match(loc).group(1).lower()
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_", "HF_"))))
    fs = _filesystem(scheme, env, os.getpid())
    return fs, loc if scheme in ("http", "https") else loc[len(scheme) + 3:]  # fsspec's http takes whole URLs


@functools.lru_cache(maxsize=8)
def _filesystem(scheme: str, env: tuple, pid: int) -> Any:
    """One client per scheme, environment (a changed endpoint or key: a new client) and process (a forked
    worker must not use its parent's event loop thread)."""
    import fsspec

    options: dict[str, Any] = {"skip_instance_cache": True}
    if scheme == "s3":
        settings = dict(env)
        if endpoint := _endpoint(settings):
            options["endpoint_url"] = endpoint
        retries = dict(RETRIES)
        retries["mode"] = settings.get("AWS_RETRY_MODE", retries["mode"])
        retries["total_max_attempts"] = int(settings.get("AWS_MAX_ATTEMPTS", retries["total_max_attempts"]))
        options["config_kwargs"] = {"retries": retries, "connect_timeout": 10, "read_timeout": 60}
    try:
        return fsspec.filesystem(scheme, **options)
    except ImportError as err:
        package = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}.get(scheme, err.name)
        raise StorageError(f"{scheme}:// URLs need the {package} package (pip install {package})") from None


def warm(scheme: str) -> None:
    """Build this process's client for `scheme` now (its imports and, for S3, its botocore session: ~0.7 CPU s),
    so that its first read or write does not wait for it. Makes no request."""
    fs, _ = filesystem(f"{scheme}://")
    if scheme == "s3":
        from fsspec.asyn import sync

        sync(fs.loop, fs.set_session)


def _endpoint(env: dict[str, str]) -> str | None:
    """An S3-compatible server named in the environment (None: AWS itself)."""
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


@contextmanager
def _errors(loc: Location, doing: str) -> Iterator[None]:
    """Turn a backend's exception into a StorageError naming the location, with no secret in it."""
    try:
        yield
    except (StorageError, FileExistsError):
        raise
    except FileNotFoundError:
        raise Missing(f"{display(loc)}: not found (while {doing})") from None
    except Exception as err:  # botocore, aiohttp, gcsfs... have no common base; an OSError is one too
        if isinstance(err, OSError) and err.strerror:  # what s3fs and gcsfs raise: errno + the server's message
            what = err.strerror
        else:
            what = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}" if str(err).strip() else type(err).__name__
        raise StorageError(scrub(f"{display(loc)}: cannot {doing} ({what})")) from None


# --- the operations ----------------------------------------------------------------------------------


def exists(loc: Location) -> bool:
    if not is_remote(loc):
        return Path(loc).exists()
    fs, path = filesystem(loc)
    with _errors(loc, "look it up"):
        return fs.exists(path)


def is_file(loc: Location) -> bool:
    if not is_remote(loc):
        return Path(loc).is_file()
    fs, path = filesystem(loc)
    with _errors(loc, "look it up"):
        return fs.isfile(path)


def list_names(folder: Location) -> list[str]:
    """The names directly inside `folder` (files and sub-folders), sorted; [] if there is no such folder."""
    if not is_remote(folder):
        return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
    fs, path = filesystem(folder)
    with _errors(folder, "list it"):
        try:
            entries = fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
    return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})


def glob(pattern: Location) -> list[Location]:
    """Files matching a pattern with * ? [ ] (or the files in a folder, or the file itself), sorted."""
    if not is_remote(pattern):
        raise ValueError("glob() is for URLs; local patterns go through the glob module")
    fs, path = filesystem(pattern)
    scheme = str(pattern).split("://", 1)[0]
    with _errors(pattern, "list it"):
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.find(path)
        else:
            found = [path] if fs.isfile(path) else []
        return sorted(p if "://" in p else f"{scheme}://{p}" for p in found if not fs.isdir(p))  # http: whole URLs


def size(loc: Location) -> int:
    if not is_remote(loc):
        return Path(loc).stat().st_size
    fs, path = filesystem(loc)
    with _errors(loc, "read its size"):
        return int(fs.size(path))


def open_file(loc: Location, mode: str = "rb") -> IO:
    """A file object for reading (`rb`) a local path or a URL in place (the config checks read Parquet footers
    and CSV headers so)."""
    if not is_remote(loc):
        return open(loc, mode)
    fs, path = filesystem(loc)
    with _errors(loc, "open it"):
        return fs.open(path, mode, block_size=8 << 20)


def read_bytes(loc: Location) -> bytes:
    if not is_remote(loc):
        return Path(loc).read_bytes()
    fs, path = filesystem(loc)
    with _errors(loc, "read it"):
        return fs.cat_file(path, **_one_get(loc))


def _one_get(loc: str) -> dict[str, Any]:
    """Options for reading a whole object in one GET: s3fs otherwise asks for its size first (a HEAD per read)
    to split big objects into concurrent ranged GETs, which shard-sized objects do not need."""
    return {"max_concurrency": 1} if loc.startswith("s3://") else {}


def read_many(urls: list[str]) -> dict[str, bytes]:
    """The bytes of every object of `urls` (one store) that can be read, fetched concurrently; what is missing,
    or cannot be read after retries, is left out."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0])
    paths = {filesystem(url)[1]: url for url in urls}
    with _errors(urls[0], "read it"):
        fetched = fs.cat(list(paths), on_error="omit", **_one_get(urls[0]))
    return {paths[path]: data for path, data in fetched.items() if path in paths}


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def write_bytes(loc: Location, data: bytes, exclusive: bool = False) -> None:
    """Write a whole file. `exclusive`: FileExistsError if it exists (a conditional create on object stores)."""
    if not is_remote(loc):
        with open(loc, "xb" if exclusive else "wb") as fh:
            fh.write(data)
        return
    fs, path = filesystem(loc)
    with _errors(loc, "write it"):
        fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")


def write_many(files: dict[str, bytes]) -> None:
    """Write whole objects of one store side by side (one wait for the slowest, not a round trip each); a
    write that fails after retries is a StorageError, once the others have finished or stopped."""
    if not files:
        return
    fs, _ = filesystem(next(iter(files)))
    folder = os.path.commonprefix(list(files))
    folder = folder[:folder.rfind("/") + 1]  # which of them failed, s3fs does not say
    with _errors(folder, f"write its {len(files)} files {', '.join(name(url) for url in files)}"):
        fs.pipe({filesystem(url)[1]: data for url, data in files.items()})


def sha256(loc: Location) -> str:
    digest = hashlib.sha256()
    with open_file(loc) as fh, _errors(loc, "read it"):
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(local: Path, loc: str) -> None:
    fs, path = filesystem(loc)
    with _errors(loc, "upload it"):
        fs.put_file(str(local), path)


ONE_STREAM = 256 << 20  # bytes: an object up to this size downloads in one GET streamed to disk


def download(loc: Location, local: Path, size: int | None = None) -> Path:
    """Copy `loc` (of `size` bytes, when known) to the local file `local`. s3fs splits an object into 50 MiB
    ranged GETs fetched side by side (held in memory) after a first GET it drops; below ONE_STREAM one
    streamed GET costs fewer requests and less CPU (103 MB on loopback moto: 0.5 s of wall and 0.35 CPU s of
    client and server, against 1.2-2 s and 0.7-1.1 s; bench/README, 8-read) and only a bigger object gains
    from parallel streams over a real network."""
    local.parent.mkdir(parents=True, exist_ok=True)
    if not is_remote(loc):
        shutil.copyfile(loc, local)
        return local
    fs, path = filesystem(loc)
    one_stream = {"max_concurrency": 1} if loc.startswith("s3://") and size is not None and size <= ONE_STREAM else {}
    with _errors(loc, "download it"):
        fs.get_file(path, str(local), **one_stream)
    return local


def remove_tree(loc: Location) -> None:
    """Remove a folder and everything in it (no error if it is not there)."""
    if not is_remote(loc):
        shutil.rmtree(loc, ignore_errors=True)
        return
    fs, path = filesystem(loc)
    with _errors(loc, "remove it"):
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass


def commit_folder(local: Path, dest: Location, marker: str) -> None:
    """Publish the finished local folder `local` as `dest`, all at once for a reader that trusts `marker`.

    Local: one rename (FileExistsError if `dest` exists). URL: every other file uploaded and its size
    checked, then `marker` (a file in `local`) written last with a conditional create, so a second commit
    to the same `dest` fails with FileExistsError instead of overwriting. A failure before the marker
    leaves files no reader trusts."""
    if not is_remote(dest):
        try:
            os.rename(local, dest)
        except OSError as err:
            if Path(dest).exists():
                raise FileExistsError(str(dest)) from None
            raise err
        return
    if exists(join(dest, marker)):
        raise FileExistsError(display(dest))
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.relative_to(local).as_posix() != marker)
    fs, _ = filesystem(dest)
    remote = [filesystem(join(dest, p.relative_to(local).as_posix()))[1] for p in files]
    with _errors(dest, "upload it"):
        if files:
            fs.put([str(p) for p in files], remote)
        for path, file in zip(remote, files):
            if fs.info(path)["size"] != file.stat().st_size:
                raise StorageError(f"{display(dest)}/{file.relative_to(local).as_posix()}: uploaded object is "
                                   "incomplete; nothing was published")
    ours = (local / marker).read_bytes()
    try:
        write_bytes(join(dest, marker), ours, exclusive=True)
    except FileExistsError:  # another commit won, or our own write whose answer was lost and was retried
        if read_bytes(join(dest, marker)) != ours:
            raise


_fetched: list[str] = []
_fetching: dict[Path, threading.Lock] = {}  # one download per copy, whichever thread of the process asks first
_fetching_guard = threading.Lock()


# what a filesystem's `info` calls an object's version, most precise first: S3's ETag, Azure's etag, GCS's
# generation, the Hub's blob id, else a modification or creation time
VERSION_FIELDS = ("ETag", "etag", "generation", "blob_id", "LastModified", "last_modified", "updated", "mtime",
                  "created")


CONTENT_FIELDS, TIME_FIELDS = VERSION_FIELDS[:4], VERSION_FIELDS[4:]  # new with every write of the object; times


def object_version(loc: Location) -> str:
    """The object's version as the server says now (one HEAD, never an earlier listing's answer): its size,
    the first of VERSION_FIELDS it has and, after one of CONTENT_FIELDS, its modification time too (some
    S3-compatible gateways keep an ETag through a rewrite of the same size); of a local file, its size and
    modification time."""
    return stated_version(loc)[0]


def stated_version(loc: Location) -> tuple[str, bool]:
    """`object_version`, and whether it names the object's content: a version from CONTENT_FIELDS (a strong
    ETag, a generation, a blob id) changes with every write, so a cache key may use it in place of a hash of
    the bytes; a modification time (a local file's too) may not."""
    with _errors(loc, "look it up"):
        if not is_remote(loc):
            stat = Path(loc).stat()
            return f"{stat.st_size} {stat.st_mtime_ns}", False
        fs, path = filesystem(loc)
        fs.invalidate_cache(path)  # a folder or glob input was listed at the config's load: that listing is old
        info = fs.info(path)
        if info.get("type") == "directory":  # a folder (a prefix of objects) has no version
            raise FileNotFoundError(path)
    field = next((k for k in VERSION_FIELDS if info.get(k)), None)
    value = info[field] if field else None
    names_content = field in CONTENT_FIELDS and not str(value).startswith("W/")
    when = [info[k] for k in TIME_FIELDS if info.get(k)][:1] if field in CONTENT_FIELDS else []
    return " ".join(map(str, [info.get("size"), value, *when])), names_content


def version_size(version: str) -> int | None:
    """The bytes of the object an `object_version` was taken of (None: its store did not say)."""
    size = version.split(" ", 1)[0]
    return int(size) if size.isdigit() else None


def local_copy(loc: Location, expected: str | None = None) -> Path:
    """A local path for reading `loc`: the path itself, or a copy downloaded into a temporary folder that
    is removed when the process exits (for readers that need a real file: Polars scans, pyarrow). The copy
    is reused while its `object_version` stays the same: one HEAD, no download. With `expected` (the
    version a run planned its reads on), a copy of that version is used without a look-up, and else an
    object that has changed since is a StorageError naming it.
    Safe from threads: span tasks of one input on a multi-threaded worker wait for one download."""
    if not is_remote(loc):
        if expected is not None:
            _unchanged(loc, expected, object_version(loc))
        return Path(loc)
    if expected is not None and (copy := _copy_of(loc, expected)).is_file():
        return copy  # the planned version's bytes, checked when downloaded: no look-up
    now = object_version(loc)
    _unchanged(loc, expected, now)
    copy = _copy_of(loc, now)
    with _fetching_guard:
        lock = _fetching.setdefault(copy, threading.Lock())
    with lock:
        if not copy.is_file():  # downloaded beside, then renamed: a failed download leaves no copy to reuse
            part = download(loc, copy.with_name(copy.name + ".part"), version_size(now))
            try:  # the object may have changed between the look-up and the download: then the copy is not `now`
                _unchanged(loc, now, object_version(loc))
                if (size := version_size(now)) is not None and part.stat().st_size != size:  # a body that ended
                    raise StorageError(f"{display(loc)}: cannot download it (got {part.stat().st_size} of its "
                                       f"{size} bytes); run again")  # early without an error to retry
            except StorageError:
                part.unlink()
                raise
            os.replace(part, copy)
    return copy


def _process_folder() -> Path:
    """This process's temporary folder (local copies of inputs), removed when the process exits."""
    with _fetching_guard:  # threads of one process (a fetch ahead beside a task) share one folder
        if not _fetched:
            _fetched.append(tempfile.mkdtemp(prefix="sluice-fetch-"))
            atexit.register(shutil.rmtree, _fetched[0], True)
    return Path(_fetched[0])


def _copy_of(loc: Location, version: str) -> Path:
    return _process_folder() / hashlib.sha256(repr([str(loc), version]).encode()).hexdigest()[:16] / name(loc)


def _unchanged(loc: Location, planned: str | None, now: str | None) -> None:
    if planned is not None and now != planned:
        raise StorageError(f"{display(loc)}: the object changed while the run was reading it (version {planned} "
                           f"when the read was planned, {now} now); run again once it no longer changes")


# --- copies of what this process wrote -------------------------------------------------------------------

HERE = uuid.uuid4().hex  # this process, as a Part names the one that keeps a copy of its file (Part.kept_by)
KEEP_BYTES = min(1 << 30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8)  # a process's kept
# copies, in its memory: 1 GiB, or an eighth of the machine's memory if that is less


@dataclass
class _Copy:
    run: str
    data: bytes
    read: bool = False  # read by a task since: the first to make room for a newer copy


_kept: dict[str, _Copy] = {}  # URL -> this process's copy of what it wrote there, oldest first
_kept_guard = threading.Lock()


def _new_process() -> None:  # a forked child is another process: it keeps its own copies
    global HERE
    HERE = uuid.uuid4().hex
    _kept.clear()


os.register_at_fork(after_in_child=_new_process)


def keep(loc: str, data: bytes, run: str) -> None:
    """Keep `data`, which this process has just written to the URL `loc`, in memory for its own reads of it in
    run `run` (`kept_by` of read_parquet, scan_parquet): a task that runs where the one that wrote its input
    did reads it from memory, not from the store, nor from a disk (a copy there costs a write of every byte,
    and writes are slow on these machines: bench/README #18 cluster, session 12). Up to KEEP_BYTES: other
    runs' copies make room, then this run's copies that were read, oldest first; a copy that still does not
    fit is not kept (the shards a stage has not read yet stay: it reads them in the order the stage before
    wrote them)."""
    with _kept_guard:
        _kept.pop(loc, None)
        if _make_room(len(data), run):
            _kept[loc] = _Copy(run, data)


def _make_room(size: int, run: str) -> bool:
    """Forget copies until `size` more bytes fit in KEEP_BYTES (see keep); False, forgetting none, if they cannot."""
    used = sum(len(c.data) for c in _kept.values())
    spare = [url for url, c in _kept.items() if c.run != run] + \
        [url for url, c in _kept.items() if c.run == run and c.read]
    if used - sum(len(_kept[url].data) for url in spare) + size > KEEP_BYTES:
        return False
    for url in spare:
        if used + size <= KEEP_BYTES:
            break
        used -= len(_kept.pop(url).data)
    return True


def kept(loc: Location) -> str | None:
    """HERE when this process keeps a copy of `loc` (a Part of a file it has just written names it)."""
    return HERE if isinstance(loc, str) and loc in _kept else None


def _kept_copy(loc: Location, kept_by: str | None) -> io.BytesIO | None:
    """This process's copy of `loc`, when `kept_by` names this process and it still keeps one."""
    if kept_by != HERE or not isinstance(loc, str) or (found := _kept.get(loc)) is None:
        return None
    found.read = True
    return io.BytesIO(found.data)


# --- Parquet at a location ---------------------------------------------------------------------------


def read_parquet(loc: Location, columns: list[str] | None = None, kept_by: str | None = None) -> "pl.DataFrame":
    """A Parquet file as a table (of a URL: one GET of the whole object, or this process's copy when `kept_by`
    names it: see keep)."""
    import polars as pl

    if (copy := _kept_copy(loc, kept_by)) is not None:
        return pl.read_parquet(copy, columns=columns)
    if not is_remote(loc):
        return pl.read_parquet(loc, columns=columns)
    return pl.read_parquet(read_bytes(loc), columns=columns)


def _read_ranges(loc: str, columns: list[str]) -> "pl.DataFrame":
    """Some columns of a Parquet object on S3, reading only their byte ranges (and the footer) with Polars'
    own client; what it does not retry (an HTTP 400 throttle) or gives up on is read again whole through s3fs."""
    import polars as pl

    try:
        return pl.read_parquet(loc, columns=columns, storage_options=_polars_s3())
    except Exception:  # noqa: BLE001 (any failure: the whole-object read retries, or raises a clear StorageError)
        return read_parquet(loc, columns=columns)


def _polars_s3() -> dict[str, Any]:
    """Polars' own S3 client options: the endpoint as for s3fs; credentials it finds as botocore does (the
    environment, the provider's files), never passed through Sluice."""
    endpoint = _endpoint(dict(os.environ))
    return {"aws_endpoint_url": endpoint, "allow_http": "true"} if endpoint else {}


RANGES_PAY = 4 << 20  # bytes a scan must skip for ranged reads (2 more requests than one GET) to pay, on
# loopback moto (a request ~5 ms of server CPU, a MB ~2.5 ms of client and server CPU) as over a network
# (a request ~20-50 ms of latency, a MB ~10 ms at 100 MB/s): bench/cluster/s3_bytes.py


def scan_parquet(loc: Location, kept_by: str | None = None) -> "pl.LazyFrame":
    """A lazy scan; of a URL, read when collected: the columns the query wants by ranged reads when that
    skips more than RANGES_PAY bytes (a shard's ids or scores), else the whole object in one GET. The
    footer, read once per scan, gives the schema and each column's bytes; of an object smaller than
    FOOTER_GUESS (rejects, side tables), that read was the whole object, and the rows are read from it.
    This process's copy, when `kept_by` names it (see keep), is read from its memory."""
    import polars as pl

    if not is_remote(loc):
        return pl.scan_parquet(loc)
    from polars.io.plugins import register_io_source

    footer = functools.cache(lambda: _footer_of(loc, kept_by))
    ranges = loc.startswith("s3://")  # Polars' client is set up (endpoint, tests under faults) for S3 only

    def source(columns: list[str] | None, predicate: Any, n_rows: int | None, _batch: int | None) -> Iterator[pl.DataFrame]:
        _, sizes, whole = footer()
        skipped = sum(sizes.values()) - sum(sizes.get(c, 0) for c in columns or sizes)
        if (copy := _kept_copy(loc, kept_by)) is not None:
            frame = pl.read_parquet(copy, columns=columns)
        elif whole is not None:  # the footer's read got the whole object (a small file): no second GET
            frame = pl.read_parquet(io.BytesIO(whole), columns=columns)
        elif ranges and columns is not None and skipped > RANGES_PAY:
            frame = _read_ranges(loc, columns)
        else:
            frame = read_parquet(loc, columns=columns)
        frame = frame if predicate is None else frame.filter(predicate)
        yield frame if n_rows is None else frame.head(n_rows)

    return register_io_source(source, schema=lambda: footer()[0])


def _footer_of(loc: str, kept_by: str | None) -> tuple["pl.Schema", dict[str, int], bytes | None]:
    """_parquet_footer of this process's copy of `loc` when `kept_by` names it (see keep), else of `loc`."""
    return _parquet_footer(_kept_copy(loc, kept_by) or loc)


def _parquet_footer(loc: Location | IO[bytes]) -> tuple["pl.Schema", dict[str, int], bytes | None]:
    """A Parquet file's schema, the compressed bytes of each column, from its footer, and the file's bytes
    when reading the footer read them all (an object smaller than FOOTER_GUESS)."""
    import polars as pl
    import pyarrow.parquet as pq

    sizes: dict[str, int] = {}
    with _footer(loc) as footer:
        schema = pl.Schema(pl.read_parquet_schema(footer))
        if hasattr(footer, "seek"):
            footer.seek(0)
        meta = pq.read_metadata(footer)
        whole = footer.getvalue() if isinstance(footer, io.BytesIO) and len(footer.getvalue()) < FOOTER_GUESS \
            else None
    for group in range(meta.num_row_groups):
        for chunk in map(meta.row_group(group).column, range(meta.num_columns)):
            top = chunk.path_in_schema.split(".")[0]
            sizes[top] = sizes.get(top, 0) + chunk.total_compressed_size
    return schema, sizes, whole


def parquet_schema(loc: Location) -> "pl.Schema":
    """The columns of a Parquet file, from its footer."""
    return _parquet_footer(loc)[0]


def parquet_rows(loc: Location) -> int:
    """Rows in a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    with _footer(loc) as footer:
        return pq.read_metadata(footer).num_rows


@contextmanager
def _footer(loc: Location | IO[bytes]) -> Iterator[Any]:
    """Something a Parquet footer reader takes: a local path or an open file, or the tail of a URL's object
    (one ranged GET, two when the footer is bigger than the first guess) as a BytesIO; errors name the
    location. A footer that does not parse (a file cut short or garbled) is NotParquet, not a StorageError:
    pyarrow says so with a ValueError, or an OSError without an errno (metadata it cannot deserialize)."""
    import polars as pl

    source: Any = loc
    if is_remote(loc):
        fs, path = filesystem(loc)
        with _errors(loc, "read its Parquet footer"):
            tail = fs.cat_file(path, start=-FOOTER_GUESS)  # an object smaller than that: all of it
            if (need := int.from_bytes(tail[-8:-4], "little") + 8) > len(tail) == FOOTER_GUESS:
                tail = fs.cat_file(path, start=-need)
        source = io.BytesIO(tail)
    try:
        yield source
    except (ValueError, pl.exceptions.PolarsError, OSError) as err:
        if isinstance(err, OSError) and (err.errno is not None or isinstance(err, StorageError)):
            raise  # a read that failed (a local disk's error, a file not found), not a damaged file
        what = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NotParquet(f"{display(loc)}: not a Parquet file ({what})") from None


FOOTER_GUESS = 64 << 10  # bytes: a shard's footer with a few dozen columns fits


def write_parquet(frame: "pl.DataFrame", loc: Location, **options: Any) -> None:
    if not is_remote(loc):
        frame.write_parquet(loc, **options)
        return
    write_bytes(loc, parquet_bytes(frame, **options))


def parquet_bytes(frame: "pl.DataFrame", **options: Any) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, **options)
    return buffer.getvalue()


def copy(source: Location, dest: Location) -> None:
    """Copy a file; between two URLs of one store the copy happens on the server."""
    if not is_remote(dest):
        shutil.copyfile(source, dest)
    elif is_remote(source) and source.split("://")[0] == dest.split("://")[0]:
        fs, path = filesystem(dest)
        with _errors(dest, "copy to it"):
            fs.copy(filesystem(source)[1], path)
    else:
        upload(Path(source), dest)



def location_arg(value: str) -> Location:
    """`location` as an argparse type: a URL Sluice will not use is a usage error (exit 2) saying why."""
    import argparse

    try:
        return location(value)
    except StorageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def writable_location(value: str) -> Location:
    """`location_arg` for a place Sluice writes to (not hf://)."""
    import argparse

    where = location_arg(value)
    try:
        check_writable(where)
    except StorageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return where


def tree_bytes(folder: Location) -> int:
    """Bytes of every file under a folder."""
    if not is_remote(folder):
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    fs, path = filesystem(folder)
    with _errors(folder, "measure it"):
        return int(fs.du(path, total=True)) if fs.exists(path) else 0
