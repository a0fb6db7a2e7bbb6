"""One passage per page of a paged document (rag/passages.py), on a real LanceDB with MiniLM."""

from __future__ import annotations

import hashlib

import pytest

from rag.passages import PAGE_PASSAGE_CHARS, page_passages, stitch
from rag.retrieve import search
from rag.types import Chunk, Document, Page

pytestmark = pytest.mark.slow

VALVE = "The XK-4471 relief valve is serviced every nine hundred operating hours."
GASKET = "The XK-4471 relief valve gasket is replaced at every second service of the valve."
FILLER = "The orchestra rehearsed the symphony twice before the opening night concert."
OTHER = ["Glaciers carve U-shaped valleys as they slowly move downhill under their own weight.",
         "Photosynthesis converts light energy into chemical energy stored in sugars."]
QUESTION = "How often is the XK-4471 relief valve serviced, and its gasket replaced?"


def add(runtime, name: str, pages: list[list[str]], mime: str) -> Document:
    """A document of `pages` (paragraphs each), one chunk per paragraph."""
    texts = ["\n\n".join(paragraphs) for paragraphs in pages]
    doc = Document(path=f"/docs/{name}", title=name, mime=mime,
                   sha256=hashlib.sha256("\f".join(texts).encode()).hexdigest(),
                   pages=[Page(n, text) for n, text in enumerate(texts, 1)])
    chunks = []
    for number, (paragraphs, text) in enumerate(zip(pages, texts), 1):
        pos = 0
        for para in paragraphs:
            start = text.index(para, pos)
            pos = start + len(para)
            chunks.append(Chunk(doc.id, len(chunks), para, number, number, start, pos))
    vectors = runtime.embedder.embed_batch([c.text for c in chunks])
    runtime.store.add_documents([(doc, chunks, vectors, "\f".join(texts).encode())])
    runtime.store.chunks.refresh_indexes()
    return doc


def test_chunks_of_one_page_are_one_passage_spanning_the_page_between_them(runtime):
    page = [VALVE, FILLER, GASKET]
    doc = add(runtime, "manual.pdf", [[OTHER[0]], page, [OTHER[1]]], "application/pdf")
    passages = search(QUESTION, runtime, k=3)
    first = passages[0]
    assert first.page_start == first.page_end == 2
    assert first.scores["chunks"] >= 2
    assert VALVE in first.text and GASKET in first.text
    text = doc.pages[1].text
    # One exact stretch of the page, the paragraph no search ranked in between included.
    assert first.text == text[first.char_start:first.char_end] == text
    assert [p.page_start for p in passages].count(2) == 1
    assert {p.page_start for p in passages} == {1, 2, 3}


def test_a_gap_between_a_pages_ranked_chunks_is_read_from_the_store(runtime):
    doc = add(runtime, "manual.pdf", [[OTHER[0]], [VALVE, FILLER, GASKET]], "application/pdf")
    store = runtime.store
    rows = {r["text"]: r for r in store.chunks.of_document(doc.id, page=2)}
    assert list(rows) == [VALVE, FILLER, GASKET]  # in page order
    fused = [(rows[GASKET], {"fused": 2.0}), (rows[VALVE], {"fused": 1.0})]
    docs = {d.id: d for d in store.documents.list()}
    [passage] = page_passages(fused, 3, store, docs, {"valve"}, 1.0)
    assert passage.text == doc.pages[1].text  # the filler the search did not rank, too
    assert (passage.char_start, passage.char_end) == (0, len(doc.pages[1].text))
    assert passage.score == 2.0 and passage.scores["chunks"] == 2


def test_a_document_without_pages_keeps_its_chunks_apart(runtime):
    add(runtime, "manual.txt", [[VALVE, FILLER, GASKET, *OTHER]], "text/plain")
    passages = search(QUESTION, runtime, k=3)
    texts = [p.text for p in passages]
    assert VALVE in texts and GASKET in texts  # two passages, not one
    assert all("chunks" not in p.scores for p in passages)


def test_a_page_is_cited_once_even_where_its_chunks_lie_too_far_apart(runtime):
    far = " ".join([FILLER] * (PAGE_PASSAGE_CHARS // len(FILLER) + 1))
    add(runtime, "long.pdf", [[VALVE, far, GASKET], [OTHER[0]], [OTHER[1]]], "application/pdf")
    passages = search(QUESTION, runtime, k=3)
    on_page = [p for p in passages if p.page_start == 1]
    assert len(on_page) == 1
    assert on_page[0].text in (VALVE, GASKET)  # the best one alone: the page is too long
    assert len(passages) == 3  # the next page's passages take the freed places


def test_stitch_fills_what_no_chunk_covers_with_line_breaks():
    page = "Alpha beta.\n\nGamma delta.\nEpsilon."
    rows = [{"char_start": 0, "char_end": 11, "text": page[0:11]},
            {"char_start": 6, "char_end": 25, "text": page[6:25]},  # overlaps the first
            {"char_start": 26, "char_end": 34, "text": page[26:34]}]
    assert stitch(rows, 0, 34) == page
    assert stitch(rows[:1] + rows[2:], 0, 34) == "Alpha beta.\n\n" + "\n" * 13 + "Epsilon."
    assert stitch(rows, 6, 20) == page[6:20]
