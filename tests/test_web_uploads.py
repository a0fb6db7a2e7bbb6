"""Upload checks without models: display names never become paths, types come from content."""

from __future__ import annotations

import codecs
import io

import pytest

from web.jobs import ascii_filename
from web.uploads import RejectedUpload, UploadTooLarge, safe_filename, save_upload, sniff


@pytest.mark.parametrize("given, shown", [
    ("../../evil.txt", "evil.txt"),
    ("..\\..\\windows\\system32\\x.pdf", "x.pdf"),
    ("/etc/passwd", "passwd"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("..", "upload"),
    ("", "upload"),
    (None, "upload"),
    (".bashrc", "bashrc"),
    ("a\x00b\nc.txt", "a_b_c.txt"),
    ('quo"te<>.md', "quo_te__.md"),
    ("Zürich notes.md", "Zürich notes.md"),
])
def test_safe_filename_keeps_only_a_harmless_basename(given, shown):
    assert safe_filename(given) == shown


def test_long_names_keep_their_extension():
    name = safe_filename("x" * 500 + ".pdf")
    assert len(name) <= 120 and name.endswith(".pdf")


def test_ascii_filename_is_header_safe():
    import re

    name = ascii_filename('../a "b";\r\nc.pdf')
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and name.startswith("a") \
        and name.endswith("c.pdf")
    assert ascii_filename("Zürich.md") == "Z_rich.md"
    assert ascii_filename("../..") == "upload"


@pytest.mark.parametrize("head, name, kind", [
    (b"%PDF-1.7\n...", "anything.bin", "pdf"),
    (b"\n\n%PDF-1.4\n", "scan.pdf", "pdf"),
    (b"<!DOCTYPE html><html><p>x</p>", "page.txt", "html"),
    (b"  <html><body>x", "noext", "html"),
    (b"<p>fragment</p>", "page.htm", "html"),
    (b"# Title\n\ntext", "notes.md", "markdown"),
    (b"plain words", "notes", "text"),
    ("Grüße aus Köln".encode(), "de.txt", "text"),
    ("caf\u00e9 cr\u00e8me".encode("cp1252"), "fr.txt", "text"),
    (codecs.BOM_UTF16_LE + "hello".encode("utf-16-le"), "u16.txt", "text"),
    ("hello world, no BOM".encode("utf-16-le"), "u16.txt", "text"),
    ("é" * 10 + "x", "cut.txt", "text"),
])
def test_sniff_goes_by_content(head, name, kind):
    if isinstance(head, str):
        head = head.encode("utf-8")[:-2]  # a character cut at the end of the sample
    assert sniff(head, name).kind == kind


@pytest.mark.parametrize("head, name, words", [
    (b"", "empty.txt", "empty"),
    (bytes(range(256)) * 4, "noise.pdf", "not a PDF"),
    (b"MZ\x90\x00\x03\x00\x00\x00", "tool.exe", "unsupported"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.txt", "unsupported"),
    (b"PK\x03\x04\x14\x00\x06\x00", "report.docx", "unsupported"),
])
def test_sniff_refuses_what_we_cannot_read(head, name, words):
    with pytest.raises(RejectedUpload, match=words):
        sniff(head, name)


def test_save_upload_names_the_file_itself_and_enforces_the_limit(tmp_path):
    folder = tmp_path / "uploads"
    path, kind, size = save_upload(io.BytesIO(b"<html><p>hi</p>"), folder, "job1",
                                   "../../x.pdf.html", max_bytes=100)
    assert path == folder / "job1.html" and kind.kind == "html" and size == 15
    with pytest.raises(UploadTooLarge):
        save_upload(io.BytesIO(b"a" * 20_000), folder, "job2", "big.txt", max_bytes=10_000)
    assert sorted(p.name for p in folder.iterdir()) == ["job1.html"]  # nothing half-written
