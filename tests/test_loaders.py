"""Loaders on real files: pages, encodings, HTML main text, Markdown headings, refusals."""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

import pytest

from conftest import CORPORA
from ingest.errors import LoadError, UnsupportedFile
from ingest.loaders import decode_text, iter_load, load
from ingest.pdfgen import write_pdf


def test_pdf_keeps_one_page_per_physical_page(tmp_path):
    pdf = write_pdf(tmp_path / "three.pdf", [["Alpha page text."], [], ["Gamma page text."]],
                    title="Three Pages")
    doc = load(pdf)
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert "Alpha" in doc.pages[0].text and "Gamma" in doc.pages[2].text
    assert doc.pages[1].text == "" and doc.empty_pages == 1
    assert doc.title == "Three Pages" and doc.mime == "application/pdf"


def test_encrypted_pdf_needs_its_password(tmp_path):
    pdf = write_pdf(tmp_path / "locked.pdf", [["Secret budget: 42 crowns."]], password="pw1")
    with pytest.raises(LoadError, match="^encrypted: password required$"):
        load(pdf)
    with pytest.raises(LoadError, match="^encrypted: wrong password$"):
        load(pdf, passwords=["nope"])
    assert "42 crowns" in load(pdf, passwords=["nope", "pw1"]).pages[0].text


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF", "PDF"),
    (b"hello, not a pdf", "not a PDF"),
])
def test_bad_pdfs_are_refused_with_one_line(tmp_path, data, reason):
    path = tmp_path / "bad.pdf"
    path.write_bytes(data)
    with pytest.raises(LoadError) as info:
        load(path)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_other_types_are_skipped(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(100))
    with pytest.raises(UnsupportedFile, match=r"unsupported file type: \.jpg"):
        load(path)


@pytest.mark.parametrize("encoded", [
    codecs.BOM_UTF8 + "Grüße aus Köln".encode("utf-8"),
    codecs.BOM_UTF16_LE + "Grüße aus Köln".encode("utf-16-le"),
    codecs.BOM_UTF16_BE + "Grüße aus Köln".encode("utf-16-be"),
    "Grüße aus Köln".encode("utf-8"),
    "Grüße aus Köln".encode("latin-1"),
])
def test_text_encodings_are_detected(encoded):
    assert decode_text(encoded) == "Grüße aus Köln"


def test_markdown_heading_paths(tmp_path):
    doc = load(CORPORA / "kestrel-bay-handbook.md")
    paths = [h[2] for h in doc.headings]
    assert "Kestrel Bay Research Station Handbook > Daily life > Quiet hours" in paths
    quiet = next(h for h in doc.headings if h[2].endswith("Quiet hours"))
    assert doc.pages[0].text[quiet[1]:].startswith("### Quiet hours")


def test_html_keeps_title_and_article_but_no_script_style_or_chrome():
    doc = load(CORPORA / "orlow-harbour-tides.html")
    text = doc.pages[0].text
    assert doc.title == "Orlow Harbour: Tide Notes for Small Boats"
    assert "spring tide at Orlow reaches 4.2 metres" in text
    for junk in ("trackingId", "track()", "font-family", "cookies", "Contact", "Copyright"):
        assert junk not in text


def test_html_declared_charset_is_honoured(tmp_path):
    path = tmp_path / "old.html"
    path.write_bytes('<html><head><meta charset="windows-1252"><title>Caf\u00e9</title></head>'
                     '<body><p>Cr\u00e8me br\u00fbl\u00e9e for everyone.</p></body></html>'
                     .encode("cp1252"))
    doc = load(path)
    assert doc.title == "Café" and "Crème brûlée" in doc.pages[0].text


def test_iter_load_reports_every_file_and_survives_a_hang(tmp_path, monkeypatch):
    good = write_pdf(tmp_path / "good.pdf", [["Fine text."]])
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7 garbage")
    note = tmp_path / "note.txt"
    note.write_text("plain note")
    fifo = tmp_path / "stuck.txt"
    os.mkfifo(fifo)  # reading it blocks forever: stands in for a parser that hangs
    results = dict(iter_load([good, bad, note, fifo], timeout_s=3, workers=2))
    assert results[good].pages[0].text == "Fine text."
    assert results[note].pages[0].text == "plain note"
    assert isinstance(results[bad], LoadError)
    assert re.fullmatch(r"timed out after 3 s", str(results[fifo]))


def eval_pdfs(eval_dir: Path) -> tuple[list[Path], list[str]]:
    root = eval_dir / "pdf_robustness"
    rows = [line.split("\t") for line in (root / "MANIFEST.tsv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    passwords = sorted({r[col[k]] for r in rows for k in ("user_password", "owner_password")
                        if len(r) > col[k] and r[col[k]]})
    return [root / r[col["path"]] for r in rows], passwords


@pytest.mark.slow
def test_robustness_corpus_every_pdf_ingested_or_refused(eval_dir):
    paths, passwords = eval_pdfs(eval_dir)
    results = dict(iter_load(paths, passwords=passwords, timeout_s=60, workers=2))
    assert set(results) == set(paths)
    for path, result in results.items():
        if isinstance(result, Exception):
            assert str(result) and "\n" not in str(result), path
    encrypted_ok = [p for p, r in results.items() if not isinstance(r, Exception)]
    assert len(encrypted_ok) > len(paths) // 2
