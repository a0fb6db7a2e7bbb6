"""Upload checks without models: display names never become paths, types come from content
(by ingestion's sniffer, so an upload is the kind `rag ingest` would see)."""

from __future__ import annotations

import codecs
import io

import pytest

from ingest.filetypes import sniff
from web.jobs import JobQueue, Limits, ascii_filename, numbered
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


def _queue(tmp_path, **limits):
    from types import SimpleNamespace

    from rag.store import Store

    store = Store(tmp_path / "db", dim=4)
    values = dict(file_bytes=1 << 20, request_files=10, queued_jobs=100,
                  pending_bytes=1 << 30, min_free_bytes=0)
    values.update(limits)
    return JobQueue(SimpleNamespace(store=store), Limits(**values)).open()


def _files(*items):
    return [(name, io.BytesIO(data), len(data)) for name, data in items]


def test_accept_names_the_stored_copy_itself(tmp_path):
    jobs = _queue(tmp_path)  # not started: nothing is ingested
    folder = jobs.table.folder
    (job, refused_type, note), refused = jobs.accept(_files(
        ("../../x.pdf.html", b"<html><p>hi</p>"),
        ("notes.pdf", b"Minutes of the meeting, saved as text."),
        ("note.md", b"# Note\n\nThe header %PDF-1.7 marks a PDF.")))
    assert refused == []
    assert job["status"] == "queued" and job["filename"] == "x.pdf.html"
    assert job["kind"] == "html" and job["size"] == 15
    assert (folder / f"{job['id']}.html").read_bytes() == b"<html><p>hi</p>"
    assert refused_type["status"] == "failed" and refused_type["progress"]["stage"] == "rejected"
    assert refused_type["reason"].startswith("notes.pdf: not a PDF")
    assert note["status"] == "queued" and note["kind"] == "markdown"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{job['id']}.html",
                                                              f"{note['id']}.md"])
    # The records are in the store: a new queue over the same store sees them.
    again = JobQueue(jobs.runtime, jobs.limits).open()
    assert [r.id for r in again.table.unfinished()] == [job["id"], note["id"]]
    assert again.get(refused_type["id"])["status"] == "failed"


def test_each_file_is_refused_on_its_own(tmp_path):
    jobs = _queue(tmp_path, file_bytes=100, request_files=3, queued_jobs=2)
    accepted, refused = jobs.accept(_files(
        ("a.txt", b"a" * 50), ("big.txt", b"b" * 101), ("c.txt", b"c" * 50),
        ("d.txt", b"d" * 50), ("e.txt", b"e" * 50)))
    assert [j["filename"] for j in accepted] == ["a.txt", "c.txt"]
    assert [(r.filename, r.status) for r in refused] == [
        ("big.txt", 413), ("d.txt", 413), ("e.txt", 413)]
    assert "larger than" in refused[0].error and "more than 3 files" in refused[1].error
    more, refused = jobs.accept(_files(("f.txt", b"f")))
    assert more == [] and refused[0].status == 429 and "limit 2" in refused[0].error
    assert not list(jobs.table.folder.glob("*.part"))


def test_pending_bytes_and_free_disk_are_storage_limits(tmp_path):
    jobs = _queue(tmp_path, pending_bytes=120)
    accepted, refused = jobs.accept(_files(("a.txt", b"a" * 100), ("b.txt", b"b" * 30)))
    assert len(accepted) == 1 and refused[0].status == 507 and "b.txt" in refused[0].error
    full = _queue(tmp_path / "2", min_free_bytes=1 << 62)
    accepted, refused = full.accept(_files(("a.txt", b"a")))
    assert accepted == [] and refused[0].status == 507 and "storage full" in refused[0].error


def test_numbered_names():
    assert numbered("upload/r.pdf", set()) == "upload/r.pdf"
    assert numbered("upload/r.pdf", {"upload/r.pdf"}) == "upload/r (2).pdf"
    assert numbered("upload/r.pdf", {"upload/r.pdf", "upload/r (2).pdf"}) == "upload/r (3).pdf"
    assert numbered("upload/notes", {"upload/notes"}) == "upload/notes (2)"


def test_prune_removes_a_finished_jobs_copy_at_once(tmp_path):
    # A stop between a job's final record and the removal of its copy leaves the copy.
    jobs = _queue(tmp_path)
    (done, waiting), _ = jobs.accept(_files(("a.txt", b"a"), ("b.txt", b"b")))
    jobs.table.update(done["id"], status="done", finished_at=1e9)
    stray = jobs.table.folder / "stray.part"
    stray.write_bytes(b"x")  # unknown and new: may be an upload being accepted
    jobs.table.prune(now=1e9)
    assert sorted(p.name for p in jobs.table.folder.iterdir()) == sorted(
        [f"{waiting['id']}.txt", "stray.part"])
