"""Hybrid retrieval on a real LanceDB with the real MiniLM: fusion, scripts, filters, orphans."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rag.retrieve import (
    _add_piece_scores,
    content_terms,
    fuse,
    is_relevant,
    search,
    sentence_scores,
    weights,
)
from rag.text import chunk_piece_spans, flatten
from rag.types import Chunk, Document, Page

pytestmark = pytest.mark.slow

ENGLISH = [
    "The XK-4471 relief valve is serviced every nine hundred operating hours.",
    "The feline dozed all afternoon on the woollen carpet near the fireplace.",
    "Quarterly revenue grew because the company opened stores in three new regions.",
    "Glaciers carve U-shaped valleys as they slowly move downhill under their own weight.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "The orchestra rehearsed the symphony twice before the opening night concert.",
]
CHINESE = ["长城是中国古代的军事防御工程，全长两万多公里。",
           "熊猫主要生活在四川的山区，以竹子为食。",
           "上海是中国最大的经济中心之一，港口吞吐量世界第一。"]
THAI = ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและมีประชากรมากที่สุด",
        "ช้างเป็นสัตว์ประจำชาติของไทยและเคยใช้ในการทำสงคราม",
        "ต้มยำกุ้งเป็นอาหารไทยที่มีรสเปรี้ยวและเผ็ด"]


def make_doc(name: str, paragraphs: list[str]) -> tuple[Document, list[Chunk]]:
    text = "\n\n".join(paragraphs)
    doc = Document(path=f"/docs/{name}", title=name.rsplit(".", 1)[0], mime="text/plain",
                   sha256=hashlib.sha256(text.encode()).hexdigest(), pages=[Page(1, text)])
    chunks, pos = [], 0
    for i, para in enumerate(paragraphs):
        start = text.index(para, pos)
        pos = start + len(para)
        chunks.append(Chunk(doc.id, i, para, 1, 1, start, pos))
    return doc, chunks


def add(runtime, name: str, paragraphs: list[str]) -> Document:
    doc, chunks = make_doc(name, paragraphs)
    vectors = runtime.embedder.embed_batch([c.text for c in chunks])
    runtime.store.add_documents([(doc, chunks, vectors, text_bytes(doc))])
    runtime.store.chunks.refresh_indexes()
    return doc


def text_bytes(doc: Document) -> bytes:
    return doc.pages[0].text.encode()


@pytest.fixture
def corpus(runtime):
    docs = {"en": add(runtime, "english.txt", ENGLISH), "zh": add(runtime, "chinese.txt", CHINESE),
            "th": add(runtime, "thai.txt", THAI)}
    return runtime, docs


def test_lexical_only_match_is_found(corpus):
    runtime, _ = corpus
    top = search("XK-4471", runtime, k=3)
    assert top[0].text == ENGLISH[0]
    assert top[0].scores["text"] > 0 and top[0].scores["text_rank"] == 1


def test_paraphrase_only_match_is_found(corpus):
    runtime, _ = corpus
    top = search("Where did the cat sleep?", runtime, k=3)
    assert top[0].text == ENGLISH[1]  # no content word in common: the vector side found it
    assert top[0].scores["vector_rank"] == 1


@pytest.mark.parametrize("question, expected", [
    ("长城有多长？", CHINESE[0]), ("熊猫吃什么？", CHINESE[1]),
    ("เมืองหลวงของประเทศไทยคืออะไร", THAI[0]), ("สัตว์ประจำชาติของไทยคืออะไร", THAI[1]),
])
def test_chinese_and_thai_found_through_bigrams(corpus, question, expected):
    runtime, _ = corpus
    top = search(question, runtime, k=3)
    assert top[0].text == expected
    assert top[0].scores["text"] > 0


def test_passages_carry_location_and_scores(corpus):
    runtime, docs = corpus
    p = search("glaciers carve valleys", runtime, k=1)[0]
    assert p.doc_id == docs["en"].id and p.path == "/docs/english.txt" and p.title == "english"
    assert docs["en"].pages[0].text[p.char_start:p.char_end] == p.text
    assert p.score == p.scores["fused"] > 0 and 0.3 < p.scores["vector"] <= 1.0


def test_doc_ids_filter(corpus):
    runtime, docs = corpus
    other = add(runtime, "more.txt", ["Glaciers are rivers of ice that carve valleys slowly."])
    both = search("glaciers carve valleys", runtime, k=10)
    assert {p.doc_id for p in both} >= {docs["en"].id, other.id}
    only = search("glaciers carve valleys", runtime, k=10, doc_ids=[other.id])
    assert only and {p.doc_id for p in only} == {other.id}


def test_orphan_chunks_are_never_returned(corpus):
    runtime, docs = corpus
    store = runtime.store
    # An interrupted ingest: chunks written, document row never written.
    doc, chunks = make_doc("orphan.txt", ["The XK-4471 relief valve orphan copy, nine hundred"
                                          " operating hours."])
    vectors = runtime.embedder.embed_batch([chunks[0].text])
    store.chunks.add([store.chunks.rows(doc, chunks, vectors)])
    store.chunks.refresh_indexes()
    assert doc.id not in store.documents.ids()
    for question in ("XK-4471 relief valve orphan copy", "Where did the cat sleep?"):
        assert all(p.doc_id != doc.id for p in search(question, runtime, k=20))
    assert search("XK-4471 relief valve", runtime, k=1)[0].doc_id == docs["en"].id


def test_fuse_ranks_after_dropping_orphans():
    unit = np.eye(4, dtype=np.float32)

    def rows(ids, key):
        return [{"id": i, "doc_id": i[0], key: 0.5, "vector": unit[1],
                 "pieces": unit[[1, 2]]} for i in ids]

    fused = fuse(unit[2], rows(["x1", "a1", "a2"], "_distance"), rows(["a2", "x2"], "_score"),
                 {"a"})
    assert [r["id"] for r, _ in fused] == ["a2", "a1"]
    assert fused[0][1]["vector_rank"] == 2 and fused[0][1]["text_rank"] == 1
    # The chunk vector misses the question; its second piece matches it exactly.
    assert fused[0][1]["vector"] == 0.0 and fused[0][1]["piece"] == 1.0


def test_best_piece_ranks_a_chunk_whose_mean_vector_misses(runtime):
    unit = np.eye(runtime.embedder.dim, dtype=np.float32)
    doc_a, chunks_a = make_doc("a.txt", ["alpha one", "alpha two"])
    doc_b, chunks_b = make_doc("b.txt", ["beta one"])
    # Chunk a:1 has pieces along axes 0 and 1; b:0 one piece halfway between axes 2 and 3.
    mixed = (unit[2] + unit[3]) / np.sqrt(2)
    runtime.store.add_documents([(doc_a, chunks_a, [unit[[5]], unit[[0, 1]]], b"a"),
                                 (doc_b, chunks_b, [mixed[None, :]], b"b")])
    rows = runtime.store.chunks.vector_search(unit[1], 3)
    assert rows[0]["id"] == f"{doc_a.id}:1"
    assert rows[0]["pieces"].shape == (2, runtime.embedder.dim)
    assert np.allclose(rows[0]["vector"], (unit[0] + unit[1]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(runtime.store.chunks.vector_search(unit[3], 1)[0]["pieces"], mixed[None, :])
    # A chunk with no vectors is refused before anything is written.
    with pytest.raises(ValueError, match="/docs/a.txt: a chunk without vectors"):
        runtime.store.add_documents([(doc_a, chunks_a, [unit[[5]], unit[:0]], b"a")])
    assert runtime.store.chunks.count() == 3 and len(runtime.store.documents.list()) == 2


def test_foreign_questions_lean_on_full_text_with_english_only_embedder():
    assert weights("熊猫吃什么？", "all-MiniLM-L6-v2") < weights("What do pandas eat?",
                                                             "all-MiniLM-L6-v2")
    assert weights("熊猫吃什么？", "multilingual-e5-base") == weights("x", "multilingual-e5-base")


def test_relevance_signal(corpus):
    runtime, _ = corpus
    assert is_relevant(search("How often is the relief valve serviced?", runtime))
    assert is_relevant(search("熊猫吃什么？", runtime))
    assert not is_relevant(search("Which striker won the 1998 football World Cup final?",
                                  runtime))
    assert not is_relevant([])


def test_sentence_scores_prefer_one_sentence_holding_the_rare_terms():
    terms = content_terms("What stimulates the release of hepcidin?")
    together = "Iron is stored in the liver. Inflammation stimulates the release of hepcidin."
    spread = "Hepcidin is a hormone. Many signals stimulate cells. Its release is regulated."
    unrelated = "The tide tables list high water at Orlow Harbour."
    scores = sentence_scores(terms, [spread, together, unrelated])
    assert scores[1] == pytest.approx(1.0)
    assert scores[1] > scores[0] > scores[2] == 0.0
    # A term every candidate shares tells them apart less than a rare one.
    common = ["hepcidin release A.", "hepcidin B.", "hepcidin C.", "stimulates D."]
    scores = sentence_scores({"hepcidin", "stimulates"}, common)
    assert scores[3] > scores[1] > 0  # "stimulates" is rare here, "hepcidin" everywhere


def test_joint_score_prefers_the_piece_close_in_meaning_and_in_words():
    unit = np.eye(4, dtype=np.float32)
    answer = "Inflammation stimulates the release of hepcidin."
    other = "The tide tables list high water at Orlow Harbour."
    # Both chunks: one piece exactly along the question, one orthogonal to it, and
    # the question's words in one piece. Only in `same` is that the close piece.
    same = ({"id": "same", "text": f"{answer} {other}", "pieces": unit[[0, 1]]},
            {"piece": 1.0, "fused": 0.0})
    split = ({"id": "split", "text": f"{other} {answer}", "pieces": unit[[0, 1]]},
             {"piece": 1.0, "fused": 0.0})
    for row, _ in (same, split):
        row["piece_spans"] = flatten(chunk_piece_spans(row["text"]))
    fused = [split, same]
    _add_piece_scores(fused, unit[0], content_terms("What stimulates the release of hepcidin?"),
                      sentence_weight=0.6, joint_weight=0.15)
    assert same[1]["sentence"] == split[1]["sentence"] > 0
    assert same[1]["joint"] > split[1]["joint"]
    assert same[1]["fused"] > split[1]["fused"]


def test_multilingual_is_judged_by_the_models_own_name(tmp_path):
    from rag.retrieve import is_multilingual

    assert is_multilingual("mlx-community/multilingual-e5-base-mlx")
    assert not is_multilingual("sentence-transformers/all-MiniLM-L6-v2")
    # A folder above the model (here named like a multilingual model) says nothing.
    english = tmp_path / "xlm-models" / "all-MiniLM-L6-v2"
    english.mkdir(parents=True)
    assert not is_multilingual(str(english))
    snapshot = tmp_path / "models--org--multilingual-e5-small" / "snapshots" / "0a1b"
    snapshot.mkdir(parents=True)
    assert is_multilingual(str(snapshot))
