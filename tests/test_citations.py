"""Markers, sentences, support and spans (rag/citations.py)."""

from __future__ import annotations

import pytest

from rag.citations import best_span, cite, clean_markers, marker_numbers, split_sentences
from rag.types import Passage

AURORA = ("The Aurora observatory was completed in 1932 on the summit of Mount Keller. "
          "Its main telescope has a 2.4 metre mirror, ground in Jena. "
          "Visitors may tour the dome on Saturdays.")
SAFFRON = ("Saffron is harvested by hand from the crocus flower in autumn. "
           "A kilogram needs about 150,000 flowers.")


def passage(i: int, text: str, title: str, page: int = 3) -> Passage:
    return Passage(f"d{i}:0", f"d{i}", title, f"/docs/{i}.pdf", text, page, page, 0, len(text))


SOURCES = [passage(1, AURORA, "Aurora Observatory History"),
           passage(2, SAFFRON, "Spices of the World", page=12)]


@pytest.mark.parametrize("group, numbers", [
    ("1", [1]), ("1, 2", [1, 2]), ("1,2,3", [1, 2, 3]), ("1-3", [1, 2, 3]),
    ("2 - 4", [2, 3, 4]), ("Source 2", [2]), ("1; 4", [1, 4]),
])
def test_marker_numbers(group, numbers):
    assert marker_numbers(group) == numbers


def test_markers_are_parsed_in_every_form():
    text = "A [1]. B [1, 2]. C [1][2]. D [1-2]. E [Source 2]."
    sentences = split_sentences(clean_markers(text, 2))
    assert [s.markers for s in sentences] == [(1,), (1, 2), (1, 2), (1, 2), (2,)]


def test_out_of_range_markers_are_dropped_from_the_text():
    assert clean_markers("Built in 1932 [1][7]. Big [0, 2]. Odd [9].", 2) == \
        "Built in 1932 [1]. Big [2]. Odd."
    text, citations = cite("It was completed in 1932 [4].", SOURCES)
    assert text == "It was completed in 1932."
    assert all(c.marker in (1, 2) for c in citations)


def test_markers_after_the_full_stop_belong_to_the_sentence_before():
    sentences = split_sentences("First claim. [1] Second claim [2].\n[1]")
    assert [(s.claim, s.markers) for s in sentences] == \
        [("First claim.", (1,)), ("Second claim.", (2, 1))]


def test_sentences_split_on_decimals_and_cjk_correctly():
    assert [s.claim for s in split_sentences("It has a 2.4 m mirror. It is old.")] == \
        ["It has a 2.4 m mirror.", "It is old."]
    assert len(split_sentences("天文台建于1932年。它很大。")) == 2


def test_spans_point_to_the_right_offsets():
    start, end = best_span("The mirror was ground in Jena.", AURORA)
    assert AURORA[start:end] == "Its main telescope has a 2.4 metre mirror, ground in Jena."
    text, [citation] = cite("Saffron needs about 150,000 flowers per kilogram [2].", SOURCES)
    assert (citation.marker, citation.passage, citation.doc_id, citation.page) == (2, 1, "d2", 12)
    assert SAFFRON[citation.span_start:citation.span_end] == citation.quote == \
        "A kilogram needs about 150,000 flowers."
    assert text[citation.sentence_start:citation.sentence_end] == text


def test_a_wrong_number_is_not_supported_even_with_the_same_words():
    _, [citation] = cite("The Aurora observatory was completed in 1950 on Mount Keller [1].",
                         SOURCES)
    assert citation.lexical > 0.6 and not citation.supported


def test_lexical_only_without_an_embedder():
    _, citations = cite("The Aurora observatory was completed in 1932 [1]. "
                        "Paris is the capital of France [2].", SOURCES)
    assert [c.supported for c in citations] == [True, False]


@pytest.mark.slow
def test_support_check_with_the_real_embedder(embedder):
    copied = "The Aurora observatory was completed in 1932 on the summit of Mount Keller [1]."
    paraphrase = "Visitors can tour the dome every Saturday [1]."
    unrelated = "Bananas are the most popular fruit in Ecuador [2]."
    _, citations = cite(f"{copied} {paraphrase} {unrelated}", SOURCES, embedder)
    supported = {c.sentence: c.supported for c in citations}
    assert supported == {copied.replace(" [1]", ""): True,
                         paraphrase.replace(" [1]", ""): True,
                         unrelated.replace(" [2]", ""): False}
    by_sentence = {c.sentence: c for c in citations}
    assert by_sentence[copied.replace(" [1]", "")].cosine > 0.95
    assert by_sentence[unrelated.replace(" [2]", "")].cosine < 0.4


@pytest.mark.slow
def test_an_uncited_sentence_that_matches_a_source_gets_an_inferred_citation(embedder):
    text, citations = cite("The observatory on Mount Keller was completed in 1932. "
                           "I hope this helps.", SOURCES, embedder)
    assert text == "The observatory on Mount Keller was completed in 1932. I hope this helps."
    [citation] = citations  # nothing is inferred for the pleasantry
    assert citation.inferred and citation.supported and citation.marker == 1
    assert citation.quote.startswith("The Aurora observatory was completed in 1932")


def test_span_prefers_the_sentence_holding_the_claims_numbers():
    from rag.citations import best_span

    text = ("Aurora Observatory: A Short History\nThe observatory stands on a ridge. "
            "It was completed in 1987 after eleven years of planning.")
    start, end = best_span("The Aurora observatory was completed in 1987.", text)
    assert "completed in 1987" in text[start:end]
    assert "Short History" not in text[start:end]


VACCINES = ("Vaccination of children was studied in 2020 across twelve regions. "
            "The study found fewer hospital admissions among vaccinated children.")


def test_claims_match_other_inflections_as_the_index_does():
    from rag.citations import terms
    from rag.lexical import index_terms

    # "studies"/"study" and "vaccinated"/"vaccination" share a stem in the full-text index.
    claim = "Studies of vaccinating children found fewer admissions."
    assert terms(claim) == {"studi", "vaccin", "children", "found", "fewer", "admiss"}
    assert terms(claim) <= set(index_terms(VACCINES))
    _, [citation] = cite(claim.replace(".", " [1]."), [passage(1, VACCINES, "Vaccines")])
    assert citation.lexical == 1.0 and citation.supported
    # The old first-six-letters rule kept "study" and "studie" apart.
    assert terms("study") == terms("studies") == terms("studied") == {"studi"}
    # Stop words stay out, whatever their inflection.
    assert terms("The study was done") == {"studi", "done"}


def test_shared_splitter_keeps_markers_after_the_full_stop_with_their_sentence():
    text = "The observatory opened in 1932. [1] Its mirror is 2.4 m wide.[2] It is old [1]."
    sentences = split_sentences(text)
    assert [(s.claim, s.markers) for s in sentences] == [
        ("The observatory opened in 1932.", (1,)), ("Its mirror is 2.4 m wide.", (2,)),
        ("It is old.", (1,))]
    assert all(text[s.start:s.end] == s.text for s in sentences)


@pytest.mark.parametrize("text, claims, markers", [
    ("天文台建于1932年。[1]它很大！[2]", ["天文台建于1932年。", "它很大！"], [(1,), (2,)]),
    ("वेधशाला 1932 में बनी। [1] यह बहुत बड़ी है। [2]",
     ["वेधशाला 1932 में बनी।", "यह बहुत बड़ी है।"], [(1,), (2,)]),
    ("تم بناء المرصد عام 1932؟ [1] نعم", ["تم بناء المرصد عام 1932؟", "نعم"], [(1,), ()]),
])
def test_shared_splitter_handles_cjk_danda_and_arabic(text, claims, markers):
    sentences = split_sentences(text)
    assert [s.claim for s in sentences] == claims
    assert [s.markers for s in sentences] == markers
    assert all(text[s.start:s.end] == s.text for s in sentences)


def test_every_line_of_an_answer_is_its_own_sentence():
    text = ("Key facts:\n- Completed in 1932 [1]\n- A 2.4 metre mirror [1]\n"
            "2. Tours on Saturdays\n[1]\nNo full stop here\nnor here [2]")
    sentences = split_sentences(text)
    assert [(s.claim, s.markers) for s in sentences] == [
        ("Key facts:", ()), ("- Completed in 1932", (1,)), ("- A 2.4 metre mirror", (1,)),
        ("2. Tours on Saturdays", (1,)),  # the marker alone on its line joins it
        ("No full stop here", ()), ("nor here", (2,))]
    assert all(text[s.start:s.end] == s.text for s in sentences)
    _, citations = cite(text, SOURCES)
    assert [(c.sentence, c.supported) for c in citations] == [  # claims lose the list prefix
        ("Completed in 1932", True), ("A 2.4 metre mirror", True),
        ("Tours on Saturdays", True), ("nor here", False)]


def test_marker_pattern_is_public():
    from rag.citations import MARKER

    assert [m.group(1) for m in MARKER.finditer("a [1] b [1, 2] c [Source 3] d [4-5]")] == \
        ["1", "1, 2", "3", "4-5"]


def test_a_sentence_is_supported_only_when_one_of_its_citations_is():
    from rag.citations import sentence_support, support_level

    text, citations = cite("The Aurora observatory was completed in 1932 [1]. "
                           "Paris is the capital of France [2]. The answer is: 2.00%.", SOURCES)
    sentences = sentence_support(text, citations)
    assert [(s.text, s.markers, s.supported) for s in sentences] == [
        ("The Aurora observatory was completed in 1932 [1].", (1,), True),
        ("Paris is the capital of France [2].", (2,), False),  # cited, but the check failed
        ("The answer is: 2.00%.", (), False)]  # matched to no source
    assert all(text[s.start:s.end] == s.text for s in sentences)
    assert support_level(sentences) == "some"
    assert sentences[1].to_json() == {"start": sentences[1].start, "end": sentences[1].end,
                                      "text": "Paris is the capital of France [2].",
                                      "markers": [2], "supported": False}


def test_support_levels_and_inferred_citations():
    from rag.citations import sentence_support, support_level

    # An unmarked sentence one source backs strongly is supported through its inferred citation.
    text, citations = cite("The Aurora observatory was completed in 1932 on Mount Keller.",
                           SOURCES)
    assert [c.inferred for c in citations] == [True]
    assert support_level(sentence_support(text, citations)) == "all"
    text, citations = cite("The answer is: 2.00%. Paris is in France [1].", SOURCES)
    assert support_level(sentence_support(text, citations)) == "none"
    # A refusal claims nothing: its sentences are neither supported nor unsupported.
    refusal = sentence_support("The documents do not contain an answer.", [], refused=True)
    assert [s.supported for s in refusal] == [None] and support_level(refusal) is None
    assert support_level(sentence_support("", [])) is None
