"""Chunking: token budgets, exact offsets, headings, pages, scripts without spaces."""

from __future__ import annotations

import hashlib
import itertools

from conftest import CORPORA

from ingest.chunking import chunk_document, chunk_source_text
from ingest.loaders import load
from rag.text import PIECE_MAX_CHARS, sentence_pieces
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
    for a, b in itertools.pairwise(chunks):
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


def test_chunk_source_text_joins_pages_with_a_blank_line():
    from ingest.chunking import PAGE_JOIN
    from rag.types import Chunk

    doc = doc_of("first page end", "middle", "last page start")
    chunk = Chunk(doc_id=doc.id, ordinal=0, text="", page_start=1, page_end=3,
                  char_start=6, char_end=4, heading="")
    assert PAGE_JOIN == "\n\n"
    assert chunk_source_text(doc, chunk) == "page end\n\nmiddle\n\nlast"


def test_real_tokenizer_budget_holds_for_every_script(embedder):
    count = embedder.count_tokens
    texts = {
        "zh": "诺曼人是在10世纪和11世纪将自己的名字赋予法国诺曼底的人。" * 40,
        "th": "ชาวนอร์มันเป็นผู้คนที่ให้ชื่อของตนแก่นอร์มังดี ซึ่งเป็นภูมิภาคในฝรั่งเศส " * 30,
        "hi": "नॉर्मन वे लोग थे जिन्होंने फ्रांस में नॉर्मंडी को अपना नाम दिया। " * 30,
        "ar": "النورمان هم الشعب الذي أعطى اسمه لنورماندي في فرنسا؟ " * 30,
        "table": "\n".join(f"Revenue {y} 1,{y % 97:03d} 2,{y % 89:03d} 3,{y % 83:03d}"
                           for y in range(1900, 2000)),
    }
    for lang, text in texts.items():
        doc = doc_of(text)
        chunks = chunk_document(doc, count_tokens=count, max_tokens=64, overlap_tokens=8)
        assert len(chunks) > 2, lang
        assert max(count(c.text) for c in chunks) <= 64, lang
        assert all(text[c.char_start:c.char_end] == c.text for c in chunks), lang
        covered = set()
        for c in chunks:
            covered.update(range(c.char_start, c.char_end))
        assert all(i in covered for i, ch in enumerate(text) if not ch.isspace()), lang
    rows = chunk_document(doc_of(texts["table"]), count_tokens=count, max_tokens=64)
    assert all(c.text.startswith("Revenue") for c in rows)  # cut between rows, not inside


def test_sentence_cuts_for_cjk_and_devanagari_punctuation():
    text = "第一句话很短。第二句话也很短！第三句呢？" * 10
    chunks = chunk_document(doc_of(text), count_tokens=len, max_tokens=40, overlap_tokens=0)
    assert all(c.text.startswith("第") and c.text[-1] in "。！？" for c in chunks)
    hindi = "यह पहला वाक्य है। यह दूसरा वाक्य है। " * 20
    chunks = chunk_document(doc_of(hindi), count_tokens=len, max_tokens=60, overlap_tokens=0)
    assert all(c.text.endswith("।") for c in chunks)


def test_chunks_end_at_paragraph_breaks_when_half_full():
    def para(p):  # 20 words
        return " ".join(f"P{p} sentence {s} here." for s in range(5))

    text = "\n\n".join(para(p) for p in range(6))
    chunks = chunk_document(doc_of(text), count_tokens=words, max_tokens=50, overlap_tokens=8)
    # Two whole paragraphs per chunk (40 words), never a third one cut in half.
    assert [c.text.split()[0] for c in chunks] == ["P0", "P2", "P4"]
    assert all(c.text.endswith("sentence 4 here.") for c in chunks)


def test_sentence_pieces_keep_every_word_once_in_order():
    text = ("Results. The vaccine protected 94% of mice against H7N7! Was it safe?\n\n"
            "Yes: no adverse events were seen in the treated group.   Short. "
            "熊猫主要生活在四川的山区，以竹子为食。长城是中国古代的军事防御工程，全长两万多公里。")
    pieces = sentence_pieces(text)
    assert pieces == [  # pieces under 24 characters join the next one (the last, the one before)
        "Results. The vaccine protected 94% of mice against H7N7!",
        "Was it safe? Yes: no adverse events were seen in the treated group.",
        "Short. 熊猫主要生活在四川的山区，以竹子为食。 "
        "长城是中国古代的军事防御工程，全长两万多公里。"]
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    assert sentence_pieces("  \n ") == [] and sentence_pieces("Hi.") == ["Hi."]


def test_sentence_pieces_cut_long_unpunctuated_text():
    thai = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย" * 40
    table = " ".join(f"row{i} 12.5 13.1" for i in range(200))
    for text in (thai, table):
        pieces = sentence_pieces(text)
        assert len(pieces) > 1 and all(len(p) <= PIECE_MAX_CHARS for p in pieces)
        assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
