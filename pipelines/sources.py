"""Readers for raw web pages and documents: WARC/WET archives, HTML files, plain text and PDF.

Each reader yields `(where, record)` pairs like the tabular readers in `readers.py`; a record that cannot
become a row is a `RowError` instead, so it lands in the rejects with a `read:<kind>` reason (or stops the run
under `on_error: fail`). Records that are not documents at all (a WARC request or metadata record, a non-HTML
response) are `Skipped`: always counted as rejects with their reason, never an error.

Formats (config `format:`, or by extension):
- `warc`  .warc, .warc.gz, .wet(.gz): one row per HTML response (`id` = WARC-Record-ID, `url`, `date`,
          `content_type`, `html` decoded by the charset of the HTTP header, then the page's meta tag, then UTF-8,
          then detection); WET conversion records give `text` instead of `html`.
- `html`  .html, .htm: one row per file (`path`, `html`).
- `text`  .txt, .md: one row per file (`path`, `text`); `text_lines`: one row per non-blank line (`path`, `line`, `text`).
- `pdf`   .pdf: one row per document (`path`, `pages`, `text`); `pdf_pages`: one row per page (`path`, `page`, `text`).
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from operators.errors import InputError
from pipelines.readers import RowError, open_binary

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class Skipped(RowError):
    """A record that is not a document (a WARC request, an image response): counted, never an error."""

    counted = True


def raw_records(path: Path, fmt: str, name: str | None = None) -> Iterator[tuple[str, Any]]:
    """(where, record-or-error) of a raw file; `name` is how `where` and the rows' `path` name the file (the
    URL of an input `path` is a downloaded copy of; default: the path)."""
    readers = {"warc": _warc_records, "html": _html_file, "text": _text_file, "text_lines": _text_lines,
               "pdf": _pdf_document, "pdf_pages": _pdf_pages}
    yield from readers[fmt](path, name or str(path))


# --- WARC / WET -----------------------------------------------------------------------------------------


def _warc_records(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    from fastwarc.warc import ArchiveIterator

    number = 0
    with open(path, "rb") as fh:
        records = iter(ArchiveIterator(fh, parse_http=False))
        while True:
            try:
                record = next(records, None)
            except OSError as err:  # fastwarc: "Invalid WARC header"
                raise InputError(f"{name}: record {number + 1}: not a WARC record ({err}); the file is corrupt "
                                 "or not a WARC file") from None
            if record is None:
                break
            number += 1
            where = f"{name}: record {number} (offset {record.stream_pos})"
            try:
                yield where, _warc_document(record)
            except RowError as err:
                yield where, err
    if not number:
        raise InputError(f"{name}: no WARC records found (not a WARC file, or compressed other than with gzip)")


def _warc_document(record: Any) -> dict[str, Any]:
    kind = str(record.record_type)
    headers = record.headers
    block = record.reader.read()
    if len(block) < record.content_length:
        raise RowError("truncated_record", f"truncated {kind} record: {len(block)} of {record.content_length} bytes "
                       "(the file ends early; fetch it again)")
    doc = {"id": headers.get("WARC-Record-ID", "").strip("<>"), "url": headers.get("WARC-Target-URI", "").strip("<>"),
           "date": headers.get("WARC-Date", "")}
    if kind == "conversion":  # WET: the text is the block
        doc["content_type"] = headers.get("Content-Type", "text/plain")
        doc["text"] = _strict_utf8(block)
        return doc
    if kind == "resource" and headers.get("Content-Type", "").lower().startswith(_HTML_TYPES):
        http = {"content-type": headers.get("Content-Type", "")}
        body = block
    elif kind == "response":
        status, http, body = _split_http(block)
        if status != 200:
            raise Skipped("warc_http_status", f"HTTP status {status} for {doc['url']}")
        if "chunked" in http.get("transfer-encoding", "").lower():
            body = _dechunked(body)
        body = _content_decoded(body, http.get("content-encoding", ""))
    else:
        raise Skipped(f"warc_{kind}", f"{kind} record (not a page) for {doc['url'] or 'the archive'}")
    doc["content_type"] = http.get("content-type", "")
    if not doc["content_type"].lower().startswith(_HTML_TYPES):
        raise Skipped("warc_not_html", f"content type {doc['content_type'] or 'missing'} for {doc['url']}")
    doc["html"] = decode_html(body, _charset(doc["content_type"]))
    return doc


def _split_http(block: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = block.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = block.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise RowError("warc_bad_http", f"no HTTP status line in the response ({lines[0][:60] if lines else ''!r})") from None
    http = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        http[name.strip().lower()] = value.strip()
    return status, http, body


def _dechunked(body: bytes) -> bytes:
    """An HTTP body sent with `Transfer-Encoding: chunked`, as the crawler stored it: size lines removed."""
    out, pos = bytearray(), 0
    while pos < len(body):
        line_end = body.find(b"\r\n", pos)
        try:
            size = int(body[pos:line_end].split(b";")[0], 16) if line_end >= 0 else -1
        except ValueError:
            size = -1
        if size < 0:
            raise RowError("bad_chunked_body", f"malformed chunked HTTP body at byte {pos}")
        if size == 0:
            break
        out += body[line_end + 2:line_end + 2 + size]
        pos = line_end + 2 + size + 2
    return bytes(out)


def _content_decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower().strip()
    if encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "br":
            import brotli

            return brotli.decompress(body)
    except Exception as err:
        raise RowError("content_encoding", f"cannot undo Content-Encoding {encoding}: {err}") from None
    raise RowError("content_encoding", f"unsupported Content-Encoding {encoding!r}")


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset\s*=\s*[\"']?([^\s;\"']+)", content_type, re.IGNORECASE)
    return match.group(1) if match else None


def decode_html(body: bytes, declared: str | None = None) -> str:
    """Bytes of a page -> text: the declared charset (HTTP header), the page's own `<meta charset>`, UTF-8,
    then the detected encoding, the first that decodes without error. A page none of them decodes is a
    `read:unknown_charset` (an unknown declared name) or `read:undecodable` reject, never mojibake."""
    meta = _META_CHARSET.search(body[:4096])
    tried, unknown = [], []
    for name in (declared, meta.group(1).decode("ascii") if meta else None, "utf-8", _detected(body)):
        if not name or name.lower() in tried:
            continue
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            unknown.append(name)
            continue
        tried.append(name.lower())
        try:
            return body.decode(codec).removeprefix("\ufeff")
        except UnicodeDecodeError:
            continue
    if unknown:
        raise RowError("unknown_charset", f"declared charset {unknown[0]!r} is unknown and the bytes are not "
                       f"{' or '.join(tried)}; convert the page to UTF-8")
    raise RowError("undecodable", f"the bytes decode as none of {', '.join(tried)}")


def _detected(body: bytes) -> str | None:
    from resiliparse.parse.encoding import detect_encoding

    return detect_encoding(body[:65536])


def _strict_utf8(block: bytes) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RowError("invalid_utf8", f"not valid UTF-8 (byte {err.start})") from None


# --- files ----------------------------------------------------------------------------------------------


def _html_file(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    body = _read_bytes(path)
    try:
        yield name, {"path": name, "html": decode_html(body)}
    except RowError as err:
        yield name, err


def _text_file(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    try:
        yield name, {"path": name, "text": _plain_text(_read_bytes(path))}
    except RowError as err:
        yield name, err


def _text_lines(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    try:
        text = _plain_text(_read_bytes(path))
    except RowError as err:
        yield name, err
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{name}:{number}", {"path": name, "line": number, "text": line}


def _plain_text(data: bytes) -> str:
    if b"\0" in data[:65536]:
        raise RowError("binary", "binary content (NUL bytes), not text; is this the right file?")
    return _strict_utf8(data.removeprefix(b"\xef\xbb\xbf"))


def _read_bytes(path: Path) -> bytes:
    with open_binary(path) as fh:
        return fh.read()


# --- PDF ------------------------------------------------------------------------------------------------


def _pdf_document(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    try:
        pages = _pdf_texts(path)
        text = "\n\n".join(t for t in pages if t.strip())
        if not text.strip():
            raise RowError("pdf_no_text", f"no text layer in {len(pages)} page(s) (scanned images?); OCR it first")
        yield name, {"path": name, "pages": len(pages), "text": text}
    except RowError as err:
        yield name, err


def _pdf_pages(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    try:
        pages = _pdf_texts(path)
    except RowError as err:
        yield name, err
        return
    for number, text in enumerate(pages, start=1):
        where = f"{name}: page {number}"
        if text.strip():
            yield where, {"path": name, "page": number, "text": text}
        else:
            yield where, RowError("pdf_no_text", "no text on this page (an image only?)")


def _pdf_texts(path: Path) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise RowError("pdf_encrypted", "encrypted PDF (needs a password)")
        return [page.extract_text() or "" for page in reader.pages]
    except RowError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as err:
        raise RowError("pdf_corrupt", f"not a readable PDF ({type(err).__name__}: {err})") from None
