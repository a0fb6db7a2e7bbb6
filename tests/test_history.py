"""Follow-up questions: the document prior and the conversation's turns, on a real LanceDB
with the real MiniLM (history in the prompt: tests/test_prompt.py; in rag eval:
tests/test_evaluate.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rag.retrieve import DEFAULT_FUSION, fuse, history_prior, merge_priors, search
from rag.types import Turn
from tests.test_retrieve import add

pytestmark = pytest.mark.slow

# Two studies that both answer "What was the sample size of the study?": only the
# conversation can tell which one is meant.
VALVES = ["The XK-4471 relief valve is serviced every nine hundred operating hours.",
          "The sample size of the valve study was 120 valves from four plants."]
CATS = ["Domestic cats sleep up to sixteen hours a day, mostly in the afternoon.",
        "The sample size of the cat study was 85 cats from two shelters."]
GLACIERS = ["Glaciers carve U-shaped valleys as they slowly move downhill under their own weight.",
            "Meltwater from glaciers feeds rivers through the dry summer months."]
AMBIGUOUS = "What was the sample size of the study?"
EARLIER = {"valves": Turn("How often is the XK-4471 relief valve serviced?",
                          "Every nine hundred operating hours [1]."),
           "cats": Turn("How long do domestic cats sleep?", "Up to sixteen hours a day [1].")}


@pytest.fixture
def studies(runtime):
    docs = {"valves": add(runtime, "valves.txt", VALVES), "cats": add(runtime, "cats.txt", CATS),
            "glaciers": add(runtime, "glaciers.txt", GLACIERS)}
    return runtime, docs


def other(name: str) -> str:
    return "cats" if name == "valves" else "valves"


def name_of(passage, docs) -> str:
    return next(name for name, doc in docs.items() if doc.id == passage.doc_id)


def test_a_same_subject_follow_up_is_searched_in_the_earlier_turns_document(studies):
    runtime, docs = studies
    alone = search(AMBIGUOUS, runtime, k=3)
    first = name_of(alone[0], docs)
    # Whichever study the question alone ranks first, a conversation about the other
    # one brings that one's sample size to the top.
    wanted = other(first)
    turn = dataclasses.replace(EARLIER[wanted], doc_ids=(docs[wanted].id,))
    followed = search(AMBIGUOUS, runtime, k=3, history=[turn])
    assert name_of(followed[0], docs) == wanted and "sample size" in followed[0].text
    assert followed[0].scores["prior"] > 0.5
    assert "prior" not in alone[0].scores
    # A turn passed as plain messages (no doc_ids) gets its documents by retrieval.
    bare = search(AMBIGUOUS, runtime, k=3, history=[EARLIER[wanted]])
    assert name_of(bare[0], docs) == wanted


def test_a_change_of_subject_is_not_dragged_back(studies):
    runtime, docs = studies
    question = "How do glaciers shape valleys?"
    alone = search(question, runtime, k=3)
    assert name_of(alone[0], docs) == "glaciers"
    for name in ("valves", "cats"):
        turn = dataclasses.replace(EARLIER[name], doc_ids=(docs[name].id,))
        followed = search(question, runtime, k=3, history=[turn])
        assert [p.chunk_id for p in followed[:2]] == [p.chunk_id for p in alone[:2]]
        # The turn adds nothing to the new subject's document (the question's own
        # profile prior on it, if any, is the same with or without the turn).
        assert followed[0].scores.get("prior", 0.0) == alone[0].scores.get("prior", 0.0)


def test_the_latest_turn_counts_most(studies):
    runtime, docs = studies
    turns = [dataclasses.replace(EARLIER[name], doc_ids=(docs[name].id,))
             for name in ("cats", "valves")]
    prior = history_prior(turns, runtime)
    assert prior == {docs["valves"].id: 1.0, docs["cats"].id: 0.5}
    assert name_of(search(AMBIGUOUS, runtime, k=1, history=turns)[0], docs) == "valves"
    assert name_of(search(AMBIGUOUS, runtime, k=1, history=turns[::-1])[0], docs) == "cats"
    # Beyond history_turns, a turn is forgotten.
    old = dataclasses.replace(DEFAULT_FUSION, history_turns=1)
    assert history_prior(turns, runtime, old) == {docs["valves"].id: 1.0}


def test_a_turns_documents_are_ranked_by_its_exchange(studies):
    runtime, docs = studies
    # The turn retrieved both studies; its answer is about the cats.
    turn = Turn("Which study had more subjects?", "The cat study counted 85 cats.",
                (docs["valves"].id, docs["cats"].id))
    assert history_prior([turn], runtime) == {docs["cats"].id: 1.0, docs["valves"].id: 0.5}


def test_doc_prior_boosts_a_document(studies):
    runtime, docs = studies
    first = name_of(search(AMBIGUOUS, runtime, k=1)[0], docs)
    wanted = other(first)
    boosted = search(AMBIGUOUS, runtime, k=3, doc_prior={docs[wanted].id: 1.0})
    assert name_of(boosted[0], docs) == wanted
    assert boosted[0].score == pytest.approx(boosted[0].scores["fused"])
    # A prior of 0 (or of a document that is not stored) changes nothing.
    same = search(AMBIGUOUS, runtime, k=3, doc_prior={docs[wanted].id: 0.0, "nope": 1.0})
    assert [p.chunk_id for p in same] == [p.chunk_id for p in search(AMBIGUOUS, runtime, k=3)]
    # A prior's document competes even when none of its chunks made either list.
    narrow = dataclasses.replace(DEFAULT_FUSION, depth=1)
    plain = search("glaciers carve valleys", runtime, k=5, fusion=narrow)
    assert {name_of(p, docs) for p in plain} == {"glaciers"}
    widened = search("glaciers carve valleys", runtime, k=5, fusion=narrow,
                     doc_prior={docs["cats"].id: 1.0})
    assert "cats" in {name_of(p, docs) for p in widened}
    # It is the same mechanism history uses, merged by the larger value.
    assert merge_priors({"a": 0.5, "b": 2.0}, {"a": 0.75, "c": -1}) == {"a": 0.75, "b": 1.0}


def test_extra_candidates_leave_the_listed_ones_scores_alone():
    unit = np.eye(4, dtype=np.float32)

    def row(i, doc, vector, score=None):
        r = {"id": i, "doc_id": doc, "vector": vector, "pieces": vector[None, :]}
        return r | ({"_score": score} if score is not None else {})

    vrows = [row("a1", "a", unit[0]), row("a2", "a", (unit[0] + unit[1]) / np.sqrt(2))]
    trows = [row("a2", "a", unit[1], 3.0), row("a1", "a", unit[0], 1.0)]
    plain = {r["id"]: s["fused"] for r, s in fuse(unit[0], vrows, trows, {"a", "b"})}
    extra = [row("b1", "b", unit[2], 0.5), row("a1", "a", unit[0])]
    with_extra = fuse(unit[0], vrows, trows, {"a", "b"}, extra=extra)
    scores = {r["id"]: s for r, s in with_extra}
    assert {i: scores[i]["fused"] for i in plain} == plain
    # The extra one is scored against the listed ones' bounds, clipped: it has no rank.
    assert scores["b1"]["piece"] == 0.0 and scores["b1"]["fused"] == 0.0
    assert "vector_rank" not in scores["b1"] and "text_rank" not in scores["b1"]


class CapturingEngine:
    """Takes the request start_answer queues, so its prompt can be read; generates nothing."""

    def __init__(self):
        from tests.test_prompt import WordTokenizer

        self.tokenizer = WordTokenizer()
        self.requests = []

    def submit(self, request):
        self.requests.append(request)
        return object()


def test_start_answer_searches_and_prompts_with_the_history(studies):
    from rag.answering import start_answer

    runtime, docs = studies
    runtime._engine = CapturingEngine()
    wanted = other(name_of(search(AMBIGUOUS, runtime, k=1)[0], docs))
    turn = dataclasses.replace(EARLIER[wanted], doc_ids=(docs[wanted].id,))
    run = start_answer(AMBIGUOUS, runtime, history=[turn])
    assert run.prompt.sources[0].doc_id == docs[wanted].id
    assert run.prompt.turns == 1
    user = runtime._engine.requests[-1].messages[-1]["content"]
    said = turn.answer.replace(" [1]", "")  # the earlier answer, its markers removed
    assert user.startswith(f"Conversation so far:\n\nUser: {turn.question}\nAssistant: {said}")
    plain = start_answer(AMBIGUOUS, runtime)
    assert plain.prompt.turns == 0 and "Conversation so far" not in plain.prompt.text
    assert plain.prompt.sources[0].doc_id != docs[wanted].id
