"""Chunking: token budgets, exact offsets, headings, pages, scripts without spaces."""

from __future__ import annotations

import hashlib

from conftest import CORPORA
from ingest.chunking import chunk_document, chunk_source_text
from ingest.loaders import load
from rag.types import Document, Page


def words(text: str) -> int:  # a stand-in tokenizer: one token per word or CJK/Thai char
    return sum(1 if w.isascii() else len(w) for w in text.split())


def doc_of(*pages: str, headings=()) -> Document:
    return Document(path="x.txt", title="x", mime="text/plain",
                    sha256=hashlib.sha256("".join(pages).encode()).hexdigest(),
                    pages=[Page(i + 1, t) for i, t in enumerate(pages)], headings=headings)


def test_offsets_map_back_to_the_exact_chunk_text():
    text = "\n\n".join(f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} has words."
                                                     for s in range(12)) for p in range(6))
    doc = doc_of(text, "Second page. It is short.")
    chunks = chunk_document(doc, count_tokens=words, max_tokens=40, overlap_tokens=8)
    assert len(chunks) > 6
    for c in chunks:
        assert doc.pages[c.page_start - 1].text[c.char_start:c.char_end] == c.text
        assert chunk_source_text(doc, c) == c.text
        assert words(c.text) <= 44
    assert chunks[-1].page_start == 2 and chunks[-1].text == "Second page. It is short."
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap_by_whole_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = chunk_document(doc_of(text), count_tokens=words, max_tokens=30, overlap_tokens=10)
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end  # overlap
        assert b.text.startswith("Sentence number")


def test_thai_and_chinese_without_spaces_stay_within_budget():
    chinese = "诺曼人是在10世纪和11世纪将自己的名字赋予法国诺曼底的人" * 30
    thai = "ชาวนอร์มันเป็นผู้คนที่ให้ชื่อของตนแก่นอร์มังดีซึ่งเป็นภูมิภาคในฝรั่งเศส" * 20
    for text in (chinese, thai, chinese.replace("人", "人。")):
        doc = doc_of(text)
        chunks = chunk_document(doc, count_tokens=words, max_tokens=100, overlap_tokens=10)
        assert len(chunks) > 3
        assert all(words(c.text) <= 110 for c in chunks)
        assert "".join(c.text for c in chunks).replace(" ", "") != ""
        assert all(text[c.char_start:c.char_end] == c.text for c in chunks)


def test_markdown_chunks_carry_their_heading_path(embedder):
    doc = load(CORPORA / "kestrel-bay-handbook.md")
    chunks = chunk_document(doc, count_tokens=embedder.count_tokens, max_tokens=60,
                            overlap_tokens=8)
    quiet = next(c for c in chunks if "Quiet hours run from 22:00" in c.text)
    assert quiet.heading == "Kestrel Bay Research Station Handbook > Daily life > Quiet hours"
    # A new section starts a new chunk: no chunk holds text of two sections.
    assert not any("Breakfast" in c.text and "Quiet hours run" in c.text for c in chunks)


def test_pdf_chunks_keep_their_page_numbers():
    doc = load(CORPORA / "aurora-observatory.pdf")
    chunks = chunk_document(doc, count_tokens=words, max_tokens=60, overlap_tokens=8)
    where = {c.page_start for c in chunks if "1987" in c.text}
    assert where == {1}
    assert {c.page_start for c in chunks if "C/1996 H2" in c.text} == {3}
