"""Document profiles: a question that names a document's distinguishing terms (its issuer,
its year) ranks that document's passages first among look-alike documents; one that names
none is ranked as before. Real LanceDB, real MiniLM."""

from __future__ import annotations

import dataclasses

import pytest

from rag.profiles import Named, ProfileIndex, name_words, profile_terms, profile_text, vocabulary
from rag.retrieve import DEFAULT_FUSION, profile_prior, search
from tests.test_retrieve import add

pytestmark = pytest.mark.slow

ISSUERS = ("Ostrava Mining", "Kelpie Foods", "Harrow Shipping")
YEARS = (2019, 2021)


def filing(issuer: str, year: int, capex: int) -> list[str]:
    """A report like its neighbours: only the cover and a few mentions tell them apart;
    the passage that answers names neither the issuer nor the year."""
    return [f"Annual report of {issuer} Corporation for the fiscal year ended December 31,"
            f" {year}.",
            f"{issuer} operates through three segments. {issuer} employs staff in four"
            " countries.",
            f"Capital expenditure for the year was {capex} million dollars, mostly on new"
            " equipment.",
            "Revenue grew in every segment, and the board proposed an unchanged dividend."]


@pytest.fixture
def filings(runtime):
    docs = {}
    for i, issuer in enumerate(ISSUERS):
        for j, year in enumerate(YEARS):
            # Opaque names: the profile cannot lean on the file name.
            docs[issuer, year] = add(runtime, f"report-{len(docs)}.txt",
                                     filing(issuer, year, 100 + 10 * i + j))
    return runtime, docs


def first_capex(passages):
    return next(p for p in passages if p.text.startswith("Capital expenditure"))


def test_a_question_naming_issuer_and_year_ranks_that_filing_first(filings):
    runtime, docs = filings
    off = dataclasses.replace(DEFAULT_FUSION, profiles=False)
    wrong_without = 0
    for (issuer, year), doc in docs.items():
        question = f"What was the capital expenditure of {issuer} in FY{year}?"
        top = first_capex(search(question, runtime, k=10))
        assert top.doc_id == doc.id, (issuer, year)
        assert top.scores["prior"] > 0
        wrong_without += first_capex(search(question, runtime, k=10, fusion=off)).doc_id != doc.id
    # Without profiles the look-alike passages tie on everything but their numbers.
    assert wrong_without >= 2


def test_a_question_naming_no_document_gets_no_profile_prior(filings):
    runtime, _ = filings
    assert profile_prior("What was the capital expenditure for the year?", runtime) == {}
    question = "Which segments grew?"
    off = dataclasses.replace(DEFAULT_FUSION, profiles=False)
    assert [p.chunk_id for p in search(question, runtime, k=6)] == \
        [p.chunk_id for p in search(question, runtime, k=6, fusion=off)]


def test_profile_terms_split_periods_and_forms():
    terms = profile_terms("FY2018 10-K of 3M, Q2 2023")
    assert {"fy2018", "fy", "2018", "3m", "q2", "2023"} <= set(terms)
    assert name_words("/x/AMCOR_2023Q2_10Q.pdf") == "AMCOR 2023Q2 10Q"
    # A quarter meets its question however it is written against its year.
    for written in ("AMCOR 2023Q2 10Q", "Q2 of FY2023", "Q2'2023", "Q22023"):
        assert {"q2", "2023"} <= set(profile_terms(written)), written
    text = profile_text("Annual report", "/d/acme_2019.pdf", ["Cover   page\n" * 400, "Second"])
    assert text.startswith("Annual report\nacme 2019\nCover page Cover page")
    assert len(text) < 2100  # the first pages are cut at PROFILE_CHARS


def test_terms_every_document_shares_count_for_nothing():
    vocab = {d: vocabulary([f"The company reported revenue. {name} {name} revenue."])
             for d, name in (("a", "Ostrava"), ("b", "Kelpie"), ("c", "Harrow"))}
    index = ProfileIndex({d: ("", v) for d, v in vocab.items()})
    assert set(index.scores("Kelpie revenue")) == {"b"}
    assert index.scores("company revenue") == {}


def test_a_question_is_routed_by_the_latest_year_it_names():
    profiles = {str(y): ("", kelpie_report(y)) for y in (2018, 2020, 2022)}
    profiles["other"] = ("", vocabulary(["Harrow Shipping annual report 2018."] * 30))
    index = ProfileIndex(profiles)
    assert max(index.scores("Kelpie revenue in FY2018?").items(), key=lambda e: e[1])[0] == "2018"
    best = max(index.scores("Kelpie revenue growth from FY2020 to FY2022").items(),
               key=lambda e: e[1])[0]
    assert best == "2022"
    # 2022 is named by the 2018 report too (its notes due 2022), but only in passing.
    scores = index.scores("Kelpie revenue in 2022")
    assert scores["2022"] > scores["2018"]
    # Without a year, the three are alike; a year alone routes nowhere.
    assert len(set(index.scores("Kelpie revenue").values())) == 1
    assert "other" not in index.scores("Kelpie revenue in 2018")


def kelpie_report(year: int) -> dict[str, int]:
    # An annual report names its own year most, its comparatives less and a far
    # maturity date once or twice.
    pages = [f"Kelpie Corporation annual report {year}. Revenue {year} and {year - 1}."] * 30
    pages += [f"Notes due {year + 4}."] * 2
    return vocabulary(pages)


def test_an_issuers_filings_are_one_family_and_a_question_naming_it_is_sure():
    profiles = {str(y): ("", kelpie_report(y)) for y in range(2016, 2022)}
    others = ("Harrow", "Ostrava", "Tamsin", "Brisk", "Quillon", "Marnoch", "Vetch", "Ulmo",
              "Sorrel", "Pinnace", "Dunlin", "Corrie", "Alder", "Bracken", "Cinder", "Dapple",
              "Egret", "Fennel", "Gorse", "Heron", "Ibex", "Juniper", "Kestrel", "Linnet",
              "Merlin", "Nettle", "Osprey", "Plover", "Quince", "Rowan")
    for name in others:  # a library of 36: twelve documents are a third of it
        profiles[name] = ("", vocabulary([f"{name} annual report."] * 30))
    index = ProfileIndex(profiles)
    families = index.families(profiles)
    assert len({families[str(y)] for y in range(2016, 2022)}) == 1
    assert len(set(families.values())) == 1 + len(others)
    # Six filings of one issuer come close to the best: more than the five documents a
    # prior may name, but one family, so the question still singles them out, the
    # 2021 report first, and the prior is sure (no other family is named).
    prior = index.prior("Kelpie revenue in FY2021", most=5, gap=0.0, sharpness=2.0)
    assert len(prior) == 6 and max(prior, key=prior.get) == "2021"
    assert prior.certainty == 1.0
    # A lone document named is no family: the passages' flatness alone weighs it.
    alone = ProfileIndex({k: v for k, v in profiles.items() if k == "2021" or k in others})
    assert alone.prior("Kelpie revenue in FY2021", gap=0.0).certainty == 0.0
    # A question naming more families than a prior may hold names nothing in a library
    # of distinct documents; where the best one has look-alikes, the best families stay.
    assert alone.prior("Harrow, Ostrava, Tamsin, Brisk, Ulmo and Vetch", gap=0.0) == {}
    crowded = "Kelpie revenue in FY2021 against Harrow, Ostrava, Tamsin, Brisk, Ulmo and Vetch"
    prior = index.prior(crowded, most=5, gap=0.0)
    assert max(prior, key=prior.get) == "2021"
    assert len({families[d] for d in prior}) == 5 and 0 < prior.certainty < 1


def test_the_profile_prior_weighs_in_only_where_the_passages_cannot_choose():
    from rag.retrieve import _add_prior

    def candidates(scores):
        return [({"doc_id": f"d{i}"}, {"fused": s}) for i, s in enumerate(scores)]

    # Six look-alike documents: their passages score about the same, so the named
    # document (d3) is lifted to the top.
    alike = candidates([1.0, 0.95, 0.9, 0.9, 0.85, 0.8])
    _add_prior(alike, {}, {"d3": 1.0}, DEFAULT_FUSION)
    assert max(alike, key=lambda e: e[1]["fused"])[0]["doc_id"] == "d3"
    # One document's passage stands out (the fifth best scores under half of it):
    # the profile adds nothing, whatever it names.
    distinct = candidates([1.0, 0.5, 0.45, 0.4, 0.35, 0.3])
    _add_prior(distinct, {}, {"d3": 1.0}, DEFAULT_FUSION)
    assert [s["fused"] for _, s in distinct] == [1.0, 0.5, 0.45, 0.4, 0.35, 0.3]
    # Unless the question named one family of look-alikes and nothing else: then it
    # decides among them, however one of them (or another document) stands out.
    sure = candidates([1.0, 0.5, 0.45, 0.4, 0.35, 0.3])
    _add_prior(sure, {}, Named({"d3": 1.0, "d4": 0.2}, certainty=1.0), DEFAULT_FUSION)
    assert max(sure, key=lambda e: e[1]["fused"])[0]["doc_id"] == "d3"
    # A conversation's prior is weighed by its document's match as before...
    _add_prior(distinct, {"d1": 1.0}, {}, DEFAULT_FUSION)
    assert distinct[1][1]["prior"] == 0.5
    # ...but where the passages cannot choose, its document keeps at least
    # history_flat of it, however poorly its own passages match.
    alike = candidates([1.0, 0.95, 0.9, 0.9, 0.85, 0.2])
    _add_prior(alike, {"d5": 1.0}, {}, DEFAULT_FUSION)
    assert alike[5][1]["prior"] == DEFAULT_FUSION.history_flat > 0.2
