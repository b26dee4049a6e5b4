"""Raw readers (pipelines/sources.py): WARC, HTML, text and PDF files, real and made here, good and bad."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfReader, PdfWriter

from conftest import SHARED
from operators.errors import InputError
from pipelines.readers import IdRegistry, Source, detect_format, read_shards

WARCS = sorted((SHARED / "web" / "dolma_cc_samples" / "warc").glob("*.warc.gz"))
SENTENCES = SHARED / "langid" / "lingua" / "sentences"


def read_all(path: Path, fmt: str, on_error: str = "skip", fields: dict | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    shards = list(read_shards(Source(path, fmt, fields or {}, on_error=on_error), 10_000, IdRegistry()))
    rows = pl.concat([s.rows for s in shards], how="diagonal_relaxed")
    return rows, pl.concat([s.rejects for s in shards])


def reasons(rejects: pl.DataFrame) -> dict[str, int]:
    return dict(rejects.group_by("reason").len().iter_rows())


def test_formats_are_detected_by_extension():
    names = {"a.warc.gz": "warc", "a.warc": "warc", "CC.wet.gz": "warc", "p.html": "html", "p.HTM": "html",
             "n.txt": "text", "r.md": "text", "d.pdf": "pdf", "x.jsonl.gz": "jsonl"}
    assert {n: detect_format(Path(n)) for n in names} == names


def test_warc_gives_one_row_per_html_response_and_counts_the_rest():
    rows, rejects = read_all(WARCS[0], "warc")
    assert not rows["html"].str.contains(r"^[0-9a-f]{1,6}\r?\n").any()  # chunked bodies are de-chunked
    # 48 records (request/response pairs, resources, warcinfo, metadata): every one accounted for
    assert len(rows) + len(rejects) == 48
    assert set(rows.columns) >= {"id", "url", "date", "content_type", "html"}
    assert rows["id"].str.starts_with("urn:uuid:").all() and rows["url"].str.starts_with("http").all()
    assert rows["html"].str.contains("(?i)<html").all()
    assert set(reasons(rejects)) <= {"read:warc_request", "read:warc_warcinfo", "read:warc_metadata", "read:warc_resource"}
    # not documents, so counted even under on_error: fail
    assert len(read_all(WARCS[0], "warc", on_error="fail")[0]) == len(rows)


def test_truncated_warc_is_a_counted_reject_or_a_clear_error(tmp_path):
    data = WARCS[0].read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[:150_000])
    rows, rejects = read_all(cut, "warc")
    assert reasons(rejects)["read:truncated_record"] == 1
    assert 0 < len(rows) < len(read_all(WARCS[0], "warc")[0])
    with pytest.raises(InputError, match=r"cut.warc.gz: record \d+ .*truncated response record"):
        read_all(cut, "warc", on_error="fail")
    plain = tmp_path / "cut.warc"
    plain.write_bytes(gzip.decompress(data)[:300_000])
    assert "read:truncated_record" in reasons(read_all(plain, "warc")[1])


def test_a_file_that_is_not_a_warc_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.warc"
    bad.write_text("this is not an archive\n" * 10)
    with pytest.raises(InputError, match="notes.warc: record 1: not a WARC record"):
        read_all(bad, "warc")


def test_wet_conversion_records_give_text(tmp_path):
    text = (SENTENCES / "zh.txt").read_text().splitlines()[0]
    body = text.encode()
    record = (b"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://zh.example.org/a\r\n"
              b"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:1>\r\nContent-Type: text/plain\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body + b"\r\n\r\n")
    wet = tmp_path / "x.warc.wet.gz"
    wet.write_bytes(gzip.compress(record))
    rows, rejects = read_all(wet, "warc")
    assert rows["text"].to_list() == [text] and rows["id"].to_list() == ["urn:uuid:1"] and rejects.is_empty()


def _response(html: bytes, content_type: bytes = b"text/html", encoding: bytes = b"") -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n" + encoding + b"\r\n" + html
    return (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://x.test/\r\nWARC-Record-ID: <urn:uuid:"
            + str(zlib.crc32(http)).encode() + b">\r\nContent-Type: application/http;msgtype=response\r\n"
            b"Content-Length: " + str(len(http)).encode() + b"\r\n\r\n" + http + b"\r\n\r\n")


def test_warc_charsets_from_header_meta_and_detection(tmp_path):
    ru = (SENTENCES / "ru.txt").read_text().splitlines()[0]
    zh = (SENTENCES / "zh.txt").read_text().splitlines()[0]
    de = (SENTENCES / "de.txt").read_text().splitlines()[0]
    pages = [
        _response(f"<html><p>{ru}</p></html>".encode("koi8-r"), b"text/html; charset=KOI8-R"),
        _response(f'<html><meta charset="gb18030"><p>{zh}</p></html>'.encode("gb18030")),
        _response(f"<html><p>{de}</p></html>".encode("utf-8"), b"text/html; charset=x-unknown-charset"),
        _response(gzip.compress(f"<html><p>{de}</p></html>".encode()), encoding=b"Content-Encoding: gzip\r\n"),
        _response(b"7\r\n<html><\r\nd\r\np>chunked</p>\r\n7\r\n</html>\r\n0\r\n\r\n", encoding=b"Transfer-Encoding: chunked\r\n"),
        _response(b"\x89PNG\r\n\x1a\n....", b"image/png"),
    ]
    path = tmp_path / "mixed.warc"
    path.write_bytes(b"".join(pages))
    rows, rejects = read_all(path, "warc")
    assert [ru in rows["html"][0], zh in rows["html"][1], de in rows["html"][2], de in rows["html"][3]] == [True] * 4
    assert rows["html"][4] == "<html><p>chunked</p></html>"
    assert reasons(rejects) == {"read:warc_not_html": 1}


def test_html_in_an_unknown_charset_that_does_not_decode_is_a_counted_reject(tmp_path):
    page = tmp_path / "klingon.html"
    page.write_bytes(b'<html><meta charset="x-klingon"><p>' + bytes(range(0x80, 0x100)) * 4 + b"</p></html>")
    rows, rejects = read_all(page, "html")
    assert rows.is_empty() and reasons(rejects) == {"read:unknown_charset": 1}
    assert "'x-klingon' is unknown" in rejects["detail"][0]
    with pytest.raises(InputError, match="klingon.html: declared charset 'x-klingon' is unknown"):
        read_all(page, "html", on_error="fail")


def test_html_files_from_a_folder(tmp_path, write_config):
    for lang in ("en", "zh", "fr"):
        line = (SENTENCES / f"{lang}.txt").read_text().splitlines()[3]
        (tmp_path / "pages").mkdir(exist_ok=True)
        (tmp_path / "pages" / f"{lang}.html").write_text(f"<html><body><p>{line}</p></body></html>")
    from pipelines.config import load

    pipeline = load(write_config([{"path": "pages"}]))
    assert [(s.path.name, s.format) for s in pipeline.sources] == [("en.html", "html"), ("fr.html", "html"), ("zh.html", "html")]


def test_text_per_file_and_per_line(tmp_path):
    text = "\n".join((SENTENCES / "zh.txt").read_text().splitlines()[:5]) + "\n\n"
    path = tmp_path / "zh.txt"
    path.write_text(text)
    rows, _ = read_all(path, "text")
    assert rows["text"].to_list() == [text]
    rows, _ = read_all(path, "text_lines")
    assert rows["line"].to_list() == [1, 2, 3, 4, 5] and rows["text"][4] == text.splitlines()[4]


def test_binary_in_a_text_file_is_a_reject_or_a_clear_error(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    rows, rejects = read_all(path, "text")
    assert rows.is_empty() and reasons(rejects) == {"read:binary": 1}
    with pytest.raises(InputError, match="photo.txt: binary content"):
        read_all(path, "text", on_error="fail")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café crème".encode("latin-1"))
    assert reasons(read_all(latin, "text_lines")[1]) == {"read:invalid_utf8": 1}


def _pdf(page_streams: list[bytes], image: bool = False) -> bytes:
    """A hand-built PDF: one page per content stream, Helvetica for text, optionally a 2x2 grey image."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", None,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray /BitsPerComponent 8 "
               b"/Length 4 >>\nstream\n\x00\x80\xff\x40\nendstream"]
    kids = []
    for stream in page_streams:
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im0 4 0 R >> >> >>" % len(objects))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


TEXT_PAGE = b"BT /F1 12 Tf 72 720 Td (The quick brown fox jumps over the lazy dog.) Tj ET"
IMAGE_PAGE = b"q 200 0 0 200 100 400 cm /Im0 Do Q"


def test_pdf_per_document_and_per_page(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(_pdf([TEXT_PAGE, IMAGE_PAGE, TEXT_PAGE.replace(b"quick", b"slow")]))
    rows, rejects = read_all(path, "pdf")
    assert rows["pages"].to_list() == [3] and "quick brown fox" in rows["text"][0] and "slow brown" in rows["text"][0]
    rows, rejects = read_all(path, "pdf_pages")
    assert rows["page"].to_list() == [1, 3] and reasons(rejects) == {"read:pdf_no_text": 1}
    assert "page 2" in rejects["detail"][0]


def test_image_only_encrypted_and_broken_pdfs_are_counted_rejects(tmp_path):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(_pdf([IMAGE_PAGE, IMAGE_PAGE]))
    assert "/Im0" in str(PdfReader(scan).pages[0]["/Resources"])  # really an image page
    locked = tmp_path / "locked.pdf"
    writer = PdfWriter(clone_from=PdfReader(tmp_path / "scan.pdf"))
    writer.encrypt(user_password="secret", algorithm="AES-128")
    writer.write(locked)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(_pdf([TEXT_PAGE])[:60])
    got = {p.name: reasons(read_all(p, "pdf")[1]) for p in (scan, locked, broken)}
    assert got["scan.pdf"] == {"read:pdf_no_text": 1}
    assert got["locked.pdf"] == {"read:pdf_encrypted": 1}
    assert got["broken.pdf"] == {"read:pdf_corrupt": 1}
    with pytest.raises(InputError, match="scan.pdf: no text layer in 2 page"):
        read_all(scan, "pdf", on_error="fail")
