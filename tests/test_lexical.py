"""The term analyser (rag/lexical.py) against LanceDB's own full-text analyser."""

from __future__ import annotations

import sys
import warnings

import pyarrow as pa
import pytest

from rag.lexical import (
    _WORD,
    MAX_TOKEN_BYTES,
    STOP_WORDS,
    content_index_terms,
    content_terms,
    fts_text,
    index_terms,
    overlap,
    words,
)

# The index's settings, as rag/store creates it.
FTS_SETTINGS = dict(base_tokenizer="whitespace", stem=True, language="English",
                    remove_stop_words=False, ascii_folding=True, replace=True)

TEXTS = [
    # English inflections: plurals, -ing, -ed, -ies, -ly, -ation, possessives
    "Studies show vaccinated people's vaccination rates rose; the study was vaccinating more.",
    "Running runners ran; she runs generously. Ponies cried, flies fly, skies and skis.",
    "Flowers flowered, harvesting harvested harvests. Organisation, organizational, universal.",
    "The Aurora observatory was completed in 1932 on the summit of Mount Keller.",
    "Interfering internal international evenings; generously communities emergencies.",
    "SHOUTED Capitalised MiXeD cases and the dogs' owners' news.",
    # accents, ligatures, letters folded by hand
    "café naïve Ærø Straße œuvre ﬁnance façade résumé São Paulo Zürich Łódź Þórr",
    "Crème brûlée, jalapeños and smörgåsbord at the cafés; naïvely Ångström.",
    # numbers
    "2,000 people, 3.5 metres, 1932, 150,000 flowers, 0.001% and 1st 2nd 3rd 4th",
    # hyphens, apostrophes, punctuation
    "state-of-the-art well-known e-mail co-operation don't it's O'Neill (a) [b] {c}",
    # Chinese, Japanese, Korean and Thai: bigrams through fts_text
    "天文台建于1932年。它很大，位于山顶。",
    "東京は日本の首都です。カタカナ",
    "한국어 문장입니다",
    "ภาษาไทยง่ายมาก และหอดูดาวสร้างเสร็จในปี 1932",
    # Hindi, Arabic (normalised by fts_text), Greek (no final sigma), Cyrillic
    "हिन्दी भाषा बहुत सुंदर है। वेधशाला 1932 में बनी।",
    "اللغة العربية جميلة جداً، وأُنشئ المرصد عام 1932",
    "ΟΔΟΣ Αθηνών και İstanbul; Москва — столица России",
    # full-width forms, superscripts, tokens at the length limit
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ x² ½ ℃",
    "x" * (MAX_TOKEN_BYTES - 1) + " " + "y" * MAX_TOKEN_BYTES + " " + "é" * 19 + " " + "é" * 20,
    "",
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import lancedb

    db = lancedb.connect(tmp_path_factory.mktemp("lexical"))
    docs = [fts_text(t) for t in TEXTS if t] + [fts_text("The studies were vaccinating")]
    table = db.create_table("chunks", pa.table({"id": list(range(len(docs))), "fts": docs}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_fts_index is deprecated; rag/store uses it
        table.create_fts_index("fts", **FTS_SETTINGS)
    return table


def tokenize(table, text: str) -> list[str]:
    """What the index stores for a column holding `text`."""
    return [t.text for t in table.tokenize(text, column="fts")]


@pytest.mark.parametrize("text", TEXTS)
def test_index_terms_agree_with_lancedb(table, text):
    assert index_terms(text) == tokenize(table, fts_text(text))


def test_inflections_share_the_index_stem(table):
    assert index_terms("vaccinated vaccination vaccinating") == ["vaccin"] * 3
    assert index_terms("studies study studied") == ["studi"] * 3
    assert index_terms("café cafés CAFE") == ["cafe"] * 3
    assert tokenize(table, "studies") == tokenize(table, "study") == ["studi"]


def test_every_word_character_agrees_with_lancedb(table):
    """Lower-casing and ASCII folding for every character fts_text keeps in a word,
    on its own (the stemmer leaves two letters or fewer alone) and inside a word."""
    chars = [chr(c) for c in range(0x80, sys.maxunicode + 1)
             if not 0xD800 <= c < 0xE000 and _WORD.fullmatch(chr(c))]
    for tokens in (chars, ["runn" + c + "ies" for c in chars]):
        for i in range(0, len(tokens), 5000):
            batch = " ".join(tokens[i:i + 5000])
            assert index_terms(batch) == tokenize(table, fts_text(batch))


@pytest.mark.parametrize("query, matches", [
    ("vaccinated", True), ("vaccination", True), ("study", True), ("studying", True),
    ("Cafes", True), ("naive", True), ("Straße", True), ("nonexistentword", False),
    # The index stems before it folds: straße -> straße -> strasse, strasse -> strass.
    ("strasse", False),
])
def test_a_term_the_analyser_finds_is_found_by_a_full_text_query(table, query, matches):
    docs = table.to_arrow()
    indexed = set().union(*(index_terms(d) for d in docs["fts"].to_pylist()))
    assert bool(set(index_terms(query)) & indexed) == matches
    hits = table.search(fts_text(query), query_type="fts", fts_columns="fts").limit(50).to_list()
    assert bool(hits) == matches
    for hit in hits:  # each row found holds one of the query's index terms
        assert set(index_terms(query)) & set(index_terms(hit["fts"]))


def test_words_are_the_unstemmed_lower_cased_fts_tokens():
    assert words("Café’s 2,000 naïve studies 天文台") == \
        ["café", "s", "2", "000", "naïve", "studies", "天文", "文台"]
    assert words("ΟΔΟΣ") == ["οδος"]  # str.lower(): final sigma, unlike the index
    assert index_terms("ΟΔΟΣ") == ["οδοσ"]


def test_content_terms_and_overlap():
    assert len(STOP_WORDS) == 91 and {"the", "of", "s", "two"} <= STOP_WORDS
    assert content_terms("What stimulates the release of hepcidin?") == \
        {"stimulates", "release", "hepcidin"}
    terms = content_terms("Which studies stimulate hepcidin release?")
    assert overlap(terms, "Hepcidin release is stimulated, a study found.") == 0.5
    assert overlap(set(), "anything") == 0.0


def test_content_index_terms_drop_stop_words_before_stemming():
    # "does" would stem to "doe" and "being" to "be": tested unstemmed, both are stop words.
    assert content_index_terms("What does being vaccinated do for the studies?") == \
        {"vaccin", "studi"}
    assert content_index_terms("Les cafés naïfs") == {"les", "cafe", "naif"}
