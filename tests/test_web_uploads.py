"""Upload checks without models: display names never become paths, types come from content
(by ingestion's sniffer, so an upload is the kind `rag ingest` would see)."""

from __future__ import annotations

import codecs

import pytest

from ingest.filetypes import sniff
from web.jobs import JobQueue, ascii_filename
from web.uploads import RejectedUpload, check_upload, safe_filename


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
    (b"The header %PDF-1.7 marks a PDF.\n", "note.md", "markdown"),
    (b"The header %PDF-1.7 marks a PDF.\n", "note.txt", "text"),
    (b"Notes\n\nSee %PDF-1.4 in the spec.", "notes", "text"),
    (b"\x00\x01junk\r\n" * 50 + b"%PDF-1.4\n", "scan.pdf", "pdf"),
    (b"\x00\x01junk\r\n" * 50 + b"%PDF-1.4\n", "scan", "pdf"),
])
def test_sniff_goes_by_content(head, name, kind):
    if isinstance(head, str):
        head = head.encode("utf-8")[:-2]  # a character cut at the end of the sample
    checked = check_upload(head, name)
    assert checked.kind == kind
    # The stored copy, <job id><ext>, is the same kind to the loader.
    assert sniff(head, "0123abcd" + checked.ext) == kind


@pytest.mark.parametrize("head, name, words", [
    (b"", "empty.txt", "empty"),
    (bytes(range(256)) * 4, "noise.pdf", "not a PDF"),
    (b"MZ\x90\x00\x03\x00\x00\x00", "tool.exe", "unsupported"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.txt", "unsupported"),
    (b"PK\x03\x04\x14\x00\x06\x00", "report.docx", "unsupported"),
    (b"Minutes of the meeting, saved as text.\n", "notes.pdf", r"^notes\.pdf: not a PDF"),
    (b"x" * 1100 + b"%PDF-1.4\n", "late.pdf", r"^late\.pdf: not a PDF"),
])
def test_sniff_refuses_what_we_cannot_read(head, name, words):
    with pytest.raises(RejectedUpload, match=words) as info:
        check_upload(head, name)
    assert "\n" not in str(info.value)


def test_submit_names_the_stored_copy_itself(tmp_path):
    # The size limit is the API's (413 before submit); see test_web_api.py.
    folder = tmp_path / "uploads"
    folder.mkdir()
    jobs = JobQueue(runtime=None, folder=folder)  # not started: nothing is ingested
    job = jobs.submit("../../x.pdf.html", b"<html><p>hi</p>")
    assert job.status == "queued" and job.filename == "x.pdf.html" and job.kind == "html"
    assert job.size == 15
    assert [p.name for p in folder.iterdir()] == [f"{job.id}.html"]
    assert (folder / f"{job.id}.html").read_bytes() == b"<html><p>hi</p>"
    refused = jobs.submit("notes.pdf", b"Minutes of the meeting, saved as text.")
    assert refused.status == "failed" and refused.stage == "rejected"
    assert refused.reason.startswith("notes.pdf: not a PDF")
    note = jobs.submit("note.md", b"# Note\n\nThe header %PDF-1.7 marks a PDF.")
    assert note.status == "queued" and note.kind == "markdown"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{job.id}.html",
                                                              f"{note.id}.md"])
