"""Tables: a row label and its numbers on one line, a table's title and column headers
with every chunk cut from it, exact pages and offsets, prose pages as before."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

from pdfgen import make_pdf

from ingest.chunking import chunk_document
from ingest.loaders import load
from ingest.pdf import _text_layer, clean_page_text
from ingest.tables import is_row, table_blocks, table_text
from rag.types import Document, Page

TITLE = ["Kestrel Instruments Ltd", "Consolidated Statement of Cash Flows", "(Thousands)"]
YEARS = ["2023", "2022", "2021"]
ROWS = [(f"{name} line {i}", f"{(i * 137) % 9000 + 100:,}", f"({(i * 71) % 800 + 10})",
         f"{(i * 53) % 4000 + 1000:,}")
        for i, name in enumerate(["Depreciation and amortization", "Stock-based compensation",
                                  "Accounts receivable", "Purchases of equipment",
                                  "Proceeds from sale of assets", "Dividends paid"] * 4)]
PROSE = ("The observatory was founded in 1987 on the northern ridge. Its first telescope, "
         "a 60 cm reflector, saw first light in March 1988 and was used for 25 years. "
         "About 40% of the nights are clear, and the site sits 1,200 m above the sea.")


def _cell(x: float, y: float, text: str, right: bool = False) -> str:
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    if right:  # Helvetica digits are 0.556 em wide: right-align numbers on the column edge
        x -= 5.56 * len(text)
    return f"1 0 0 1 {x:.1f} {y:.1f} Tm ({text}) Tj"


def table_pdf() -> bytes:
    """Page 1 prose (through tests/pdfgen.py), page 2 a statement drawn cell by cell,
    numbers right-aligned in three columns, as a financial filing prints it."""
    base = make_pdf([[PROSE, PROSE], ["placeholder"]])
    ops = ["BT", "/F1 10 Tf"]
    y = 790.0
    for line in TITLE:
        ops.append(_cell(56, y, line))
        y -= 14
    for x, year in zip((380, 460, 540), YEARS):
        ops.append(_cell(x, y, year, right=True))
    y -= 14
    for label, *numbers in ROWS:
        ops.append(_cell(56, y, label))
        for x, number in zip((380, 460, 540), numbers):
            ops.append(_cell(x, y, number, right=True))
        y -= 14
    ops.append("ET")
    content = "\n".join(ops).encode("cp1252")
    old = make_pdf([["placeholder"]])
    old_stream = old[old.index(b"stream\n") + 7:old.index(b"\nendstream")]
    stream = b"<< /Length %d >>\nstream\n" % len(old_stream) + old_stream
    assert base.count(stream) == 1
    pdf = base.replace(stream, b"<< /Length %d >>\nstream\n" % len(content) + content)
    return _fix_xref(pdf)


def _fix_xref(pdf: bytes) -> bytes:
    """Recompute the cross-reference offsets after a content stream changed length."""
    head = pdf[:pdf.index(b"xref\n")]
    offsets = [m.start() for m in re.finditer(rb"(?m)^\d+ 0 obj\n", head)]
    xref = b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    xref += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    trailer = pdf[pdf.index(b"trailer\n"):]
    trailer = re.sub(rb"startxref\n\d+", b"startxref\n%d" % len(head), trailer)
    return head + xref + trailer


def words(text: str) -> int:
    return len(text.split())


def test_a_row_keeps_its_label_and_numbers_on_one_line(tmp_path: Path):
    path = tmp_path / "statement.pdf"
    path.write_bytes(table_pdf())
    doc = load(path)
    table = doc.pages[1].text
    lines = table.split("\n")
    for label, *numbers in ROWS:
        assert " | ".join([label, *numbers]) in lines, label
    assert " | ".join(YEARS) in table
    assert all(line in table for line in TITLE)


def test_a_prose_page_is_read_as_before(tmp_path: Path):
    from pypdf import PdfReader

    path = tmp_path / "statement.pdf"
    path.write_bytes(table_pdf())
    prose = PdfReader(path).pages[0]
    plain = clean_page_text(prose.extract_text())  # the extraction before tables
    assert _text_layer(prose) == plain
    assert load(path).pages[0].text == plain
    assert "|" not in load(path).pages[0].text


def test_chunks_of_a_table_carry_its_title_and_column_headers(tmp_path: Path):
    path = tmp_path / "statement.pdf"
    path.write_bytes(table_pdf())
    doc = load(path)
    chunks = chunk_document(doc, count_tokens=words, max_tokens=60, overlap_tokens=8)
    table_chunks = [c for c in chunks if "Dividends paid" in c.text]
    assert len(table_chunks) >= 3 and all(c.page_start == c.page_end == 2 for c in table_chunks)
    page = doc.pages[1].text
    for c in chunks:  # offsets stay exact: the headers are not pasted into the text
        assert doc.pages[c.page_start - 1].text[c.char_start:c.char_end] == c.text
    first, *rest = [c for c in chunks if c.page_start == 2]
    assert TITLE[1] in first.text and first.heading == ""
    for c in rest:
        assert TITLE[1] in c.heading and "2023 | 2022 | 2021" in c.heading, c.heading
        # Cut between rows, never inside one.
        assert page[c.char_start - 1] == "\n" and page[c.char_end:c.char_end + 1] in ("\n", "")
        assert all(is_row(line) for line in c.text.split("\n"))
    assert not any(c.heading for c in chunks if c.page_start == 1)


def test_table_text_leaves_prose_and_columns_of_prose_alone():
    prose = "\n".join(f"   The committee met on {d} May 2021 and agreed   the budget." for d in
                      range(1, 20))
    assert table_text(prose) is None
    columns = "\n".join(f"Left column text that runs on and on {i}      "
                        f"right column text that also runs on {i}" for i in range(30))
    assert table_text(columns) is None
    few = "Revenue     1,200     1,100\nCosts     (300)     (250)\n" + "A line of prose.\n" * 3
    assert table_text(few) is None  # two rows: not worth changing the extraction
    table = "\n".join(f"  Item {i}          {i * 10:,}        ({i})       —" for i in range(6))
    assert table_text(table).split("\n")[1] == "Item 1 | 10 | (1) | —"
    leaders = "\n".join(f"  Region {i} .............$({i}.5)$     {i * 3}.0" for i in range(6))
    assert table_text(leaders).split("\n")[2] == "Region 2 | $(2.5) | $6.0"


def test_table_blocks_find_each_table_and_its_headers():
    text = ("Segment results\n(Millions) | 2023 | 2022\nCloud | 1,200 | 900\n"
            "Devices | 300 | 350\n\nSome prose between the tables, long enough to read.\n\n"
            "Regional revenue\n | 2023 | 2022\nEurope | 500 | 450\nAsia | 700 | 600\n")
    first, second = table_blocks(text)
    assert first.context == "Segment results / (Millions) | 2023 | 2022"
    assert text[first.start:first.end].endswith("Devices | 300 | 350")
    assert second.context.startswith("Regional revenue")
    doc = Document(path="x.html", title="x", mime="text/html",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[Page(1, text)])
    chunks = chunk_document(doc, count_tokens=words, max_tokens=8, overlap_tokens=0)
    asia = next(c for c in chunks if c.text.startswith("Asia"))
    assert asia.heading == second.context


def test_a_table_chunk_is_embedded_with_its_title_and_column_headers(tmp_path: Path, embedder):
    import numpy as np

    from ingest.pipeline import embed_pieces

    path = tmp_path / "statement.pdf"
    path.write_bytes(table_pdf())
    doc = load(path)
    chunks = chunk_document(doc, count_tokens=words, max_tokens=60, overlap_tokens=8)
    headed = next(c for c in chunks if c.heading and "Purchases of equipment" in c.text)
    bare = dataclasses.replace(headed, heading="")
    with_heading, without = embed_pieces(embedder, [headed, bare])
    question = embedder.embed_batch(
        ["Consolidated statement of cash flows of Kestrel Instruments: purchases of "
         "equipment in 2023"], query=True)[0]
    # Each piece is embedded with the heading in front: closer to a question naming
    # the statement, the company and the year than the bare rows.
    assert with_heading.shape == without.shape
    assert float(np.max(with_heading @ question)) > float(np.max(without @ question)) + 0.05
